"""persodose tests: the tree mirrors src/persodose (tests/mc for persodose.mc, ...)."""

from pathlib import Path

#: Reference data files of the tests (published tables typed in, with their sources).
DATA_DIR = Path(__file__).parent / "data"
