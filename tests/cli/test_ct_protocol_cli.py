"""``persodose ct`` on a real head CT (issue 19): head recognised without FilterType or body part,
``--bowtie`` / ``--ctdi-phantom`` overrides, bad values as one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("spekpy")
pytest.importorskip("xraylib")

from tests.ct.test_ct_dose import _assert_one_line_error, _run_cli  # noqa: E402
from tests.ct.test_ct_protocol import _series_from_slice, _testfile  # noqa: E402

FAST = ["--photons", "6000", "--ctdi-photons", "6000", "--batches", "2", "--dose-voxel-mm", "10",
        "--pitch", "1", "--collimation-mm", "20", "--rotation-s", "1", "--ctdivol", "50"]


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    """A real head CT slice (pydicom's 693_J2KI.dcm) as a 5-slice series, head tags removed."""
    return _series_from_slice(_testfile("693_J2KI.dcm"), tmp_path_factory.mktemp("head") / "ct")


def test_cli_recognises_a_real_head_ct_and_reports_ssde(head_dir, tmp_path, capsys):
    with pytest.warns(UserWarning, match="--bowtie head|body"):
        code, out, err = _run_cli(["ct", "--ct", str(head_dir), "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code in (0, None), err
    assert "scan type head (patient:" in out and "CTDI phantom 16 cm" in out and "SSDE" in out
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["ctdi"]["diameter_mm"] == 160.0 and prov["acquisition"]["bowtie"] == "head"
    assert prov["acquisition"]["provenance"]["bowtie_rule"].startswith("patient")
    assert prov["size_specific_dose"]["ssde_mGy"] > 0


def test_cli_overrides_the_scan_type_and_the_phantom(head_dir, tmp_path, capsys):
    code, out, err = _run_cli(["ct", "--ct", str(head_dir), "--out", str(tmp_path / "o"), "--bowtie", "body",
                               "--ctdi-phantom", "16", *FAST], capsys)
    assert code in (0, None), err
    assert "scan type body (--bowtie body)" in out and "CTDI phantom 16 cm (--ctdi-phantom)" in out
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["acquisition"]["bowtie"] == "body" and prov["ctdi"]["diameter_mm"] == 160.0
    assert prov["inputs"]["ctdi_phantom_cm"] == 16


@pytest.mark.parametrize("option,value,word", [("--bowtie", "medium", "--bowtie"), ("--ctdi-phantom", "20", "--ctdi-phantom")])
def test_cli_bad_scan_type_values(head_dir, tmp_path, capsys, option, value, word):
    code, _, err = _run_cli(["ct", "--ct", str(head_dir), "--out", str(tmp_path / "o"), option, value, *FAST], capsys)
    _assert_one_line_error(code, err, word)
    assert not (tmp_path / "o").exists()
