"""persodose record add / report through the CLI: idempotent add, one-line errors, report files."""

import json

import pytest

pytest.importorskip("sqlalchemy")

from tests.record.fixtures import write_dicom, write_result  # noqa: E402


def test_record_add_and_report(tmp_path, cli):
    d = write_dicom(tmp_path / "ct" / "1.dcm")
    res = write_result(tmp_path / "ctres", "ct", {"lung_left": (0.01, 2.0), "red_marrow": (0.005, 3.0)}, d)
    db = tmp_path / "rec.sqlite"
    r = cli("record", "add", res, "--db", db)
    assert r.returncode == 0, r.stderr
    assert "added" in r.stdout
    r = cli("record", "add", res, "--db", db)
    assert r.returncode == 0 and "already in the record" in r.stdout
    r = cli("record", "report", "--patient", "P17", "--out", tmp_path / "rep", "--db", db)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["n_exams"] == 1 and "not a prediction" in r.stdout


def test_record_bad_inputs_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("PERSODOSE_RECORD", str(tmp_path / "env.sqlite"))
    for args in (("record", "add", tmp_path / "nope"),
                 ("record", "report", "--patient", "P1", "--out", tmp_path / "o"),
                 ("record", "add", tmp_path, "--sex", "Q")):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
    d = write_dicom(tmp_path / "ct" / "1.dcm")
    res = write_result(tmp_path / "ctres", "ct", {"lung_left": (0.01, 2.0)}, d)
    assert cli("record", "add", res).returncode == 0 and (tmp_path / "env.sqlite").exists()
    r = cli("record", "report", "--patient", "P17", "--out", res)  # over an input folder: refused
    assert r.returncode == 2
    r = cli("record", "report", "--patient", "nobody", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "not in the dose record" in r.stderr
