# All set-up happens here: a fresh machine needs only python3.11 and make.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: venv install install-test demo test validate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# PyTorch is pinned to the CPU build available offline on these machines.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,mc,ct,dask,spect,pacs,dl,record]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/persodose demo --out demo_out

# Tests run on every core (pytest-xdist): on the 2-core CI machine two workers.
test: install
	$(BIN)/python -m pytest -q -m "not validate" -n auto tests

validate: install
	$(BIN)/python -m pytest -q -m validate tests

bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_out build dist src/*.egg-info .pytest_cache
