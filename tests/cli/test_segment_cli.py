"""``persodose segment``, ``segment-lesions`` and ``compare-labels`` end to end (in-process).

Inputs: the canonical virtual patient at 10 mm written to disk (DICOM CT and SPECT, NIfTI).
Every bad input must give exit code 2 and one line on stderr, no traceback; no input is ever
modified; every output is read back the way ``internal``/``ct`` read ``--labels``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from persodose.cli._common import read_labels
from persodose.io.image import read_image
from persodose.io.load import load_ct


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("segpatient")
    write_virtual_patient(make_virtual_patient(voxel_mm=10), root / "p")
    p = root / "p"
    return {"root": p, "ct": p / "ct", "ct_nii": p / "nifti" / "ct.nii.gz", "labels": p / "nifti" / "labels.nii.gz",
            "spect": p / "nifti" / "tp1_image.nii.gz", "digest": _digest(p)}


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persodose: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_list(cli):
    r = cli("segment", "--list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line and not line.startswith(" ")}
    assert rows["threshold"].split()[1] == "yes" and "lung_left" in rows["threshold"]
    assert "totalsegmentator" in rows and "ribs" in rows["totalsegmentator"]
    assert rows["totalsegmentator"].split()[1] in ("yes", "no")


def test_segment_nifti_is_usable_as_labels(cli, patient, tmp_path):
    out = tmp_path / "seg.nii.gz"
    r = cli("segment", "--ct", patient["ct"], "--out", out)
    assert r.returncode == 0, r.stderr
    assert "lung_left" in r.stdout and "volume_ml" in r.stdout
    names = json.loads(Path(str(out) + ".json").read_text())
    assert names == {"1": "body", "4": "lung_left", "5": "lung_right", "40": "bone", "41": "air_cavity"}
    ct, _ = load_ct(patient["ct"])
    lab, back = read_labels(out, ct)  # what internal/ct do with --labels FILE
    assert back == {int(k): v for k, v in names.items()} and lab.same_geometry(ct)
    prov = json.loads(Path(str(out) + ".provenance.json").read_text())
    assert prov["command"] == "segment" and prov["settings"]["segmenter"] == "threshold"
    volume = float((np.asarray(lab.array) == 4).sum()) * lab.voxel_volume_ml
    line = next(x for x in r.stdout.splitlines() if " lung_left " in x)
    assert float(line.split()[-1]) == pytest.approx(volume, abs=0.06)
    assert _digest(patient["root"]) == patient["digest"]


def test_segment_dicom_seg_round_trip(cli, patient, tmp_path):
    out = tmp_path / "seg.dcm"
    r = cli("segment", "--ct", patient["ct"], "--out", out, "--organs", "lung_left,lung_right")
    assert r.returncode == 0, r.stderr
    ct, _ = load_ct(patient["ct"])
    lab, names = read_labels(out, ct)
    assert sorted(names.values()) == ["lung_left", "lung_right"]
    ref, ref_names = read_labels(patient["labels"], ct)
    truth = {v: k for k, v in ref_names.items()}
    a = np.asarray(lab.resample_to(ct).array if not lab.same_geometry(ct) else lab.array)
    b = np.asarray(ref.array)
    from persodose.metrics.segmentation import dice

    assert dice(a == {v: k for k, v in names.items()}["lung_left"], b == truth["lung_left"]) > 0.9
    assert _digest(patient["root"]) == patient["digest"]


def test_compare_labels_table_and_json(cli, patient, tmp_path):
    seg = tmp_path / "s.nii.gz"
    assert cli("segment", "--ct", patient["ct_nii"], "--out", seg).returncode == 0
    js = tmp_path / "scores.json"
    r = cli("compare-labels", "--test", seg, "--reference", patient["labels"], "--json", js)
    assert r.returncode == 0, r.stderr
    doc = json.loads(js.read_text())
    lungs = doc["organs"]["lung_right"]
    assert lungs["dice"] > 0.95 and 0 <= lungs["hd95_mm"] <= 20.0
    assert doc["organs"]["liver"]["dice"] == 0.0 and doc["organs"]["liver"]["hd95_mm"] is None
    assert set(lungs) >= {"dice", "jaccard", "precision", "recall", "hd95_mm"}
    row = next(x for x in r.stdout.splitlines() if x.startswith("lung_right "))
    assert float(row.split()[1]) == pytest.approx(lungs["dice"], abs=6e-4)
    r = cli("compare-labels", "--test", patient["labels"], "--reference", patient["labels"])
    assert r.returncode == 0
    for line in r.stdout.splitlines()[1:]:
        parts = line.split()
        assert parts[1] == "1.000" and parts[5] == "0.0", line
    assert _digest(patient["root"]) == patient["digest"]


def test_segment_lesions_seeded_and_automatic(cli, patient, tmp_path):
    spect = read_image(patient["spect"])
    labels, names = read_labels(patient["labels"], spect)
    on = labels.resample_to(spect)
    value = {v: k for k, v in names.items()}
    from scipy import ndimage

    c = on.index_to_physical(np.array(ndimage.center_of_mass(np.asarray(on.array) == value["lesion_liver"])))
    out = tmp_path / "les.nii.gz"
    r = cli("segment-lesions", "--emission", patient["spect"], "--within", f"{patient['labels']}:liver,lesion_liver",
            "--seeds", ",".join(f"{v:.2f}" for v in c), "--names", "liver_met", "--out", out)
    assert r.returncode == 0, r.stderr
    lab, back = read_labels(out, spect)
    assert back == {1: "liver_met"}
    from persodose.metrics.segmentation import dice

    d = dice(np.asarray(lab.array) == 1, np.asarray(on.array) == value["lesion_liver"])
    assert d > 0.85, d
    out2 = tmp_path / "auto.nii.gz"
    r = cli("segment-lesions", "--emission", patient["spect"], "--within", f"{patient['labels']}:liver,lesion_liver",
            "--out", out2)
    assert r.returncode == 0, r.stderr
    assert "lesion_1" in r.stdout and "background" in r.stdout
    prov = json.loads(Path(str(out2) + ".provenance.json").read_text())
    assert prov["settings"]["fraction"] == 0.42 and prov["lesions"][0]["name"] == "lesion_1"
    assert _digest(patient["root"]) == patient["digest"]


@pytest.mark.parametrize("args, words", [
    (("segment", "--ct", "{root}/nope", "--out", "{tmp}/a.nii.gz"), ["does not exist"]),
    (("segment", "--ct", "{ct}", "--out", "{tmp}/a.txt"), ["--out", ".dcm"]),
    (("segment", "--ct", "{ct}", "--out", "{tmp}/a.nii.gz", "--backend", "magic"), ["unknown segmenter", "threshold"]),
    (("segment", "--ct", "{ct}", "--out", "{tmp}/a.nii.gz", "--settings", "nope=1"), ["nope"]),
    (("segment", "--ct", "{ct}", "--out", "{tmp}/a.nii.gz", "--settings", "novalue"), ["NAME=VALUE"]),
    (("segment", "--ct", "{ct}", "--out", "{tmp}/a.nii.gz", "--organs", "liver"), ["cannot deliver", "liver"]),
    (("segment", "--ct", "{ct_nii}", "--out", "{tmp}/a.dcm"), ["DICOM SEG needs a DICOM CT"]),
    (("segment", "--ct", "{ct_nii}", "--out", "{ct_nii}"), ["outputs never replace"]),
    (("segment", "--ct", "{spect}", "--out", "{tmp}/a.nii.gz"), ["tp1_image.nii.gz", "not ct"]),
    (("segment", "--out", "{tmp}/a.nii.gz"), ["give --ct and --out"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{tmp}/l.nii.gz", "--seeds", "1,2"), ["x,y,z"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{tmp}/l.nii.gz", "--seeds", "0,0,99999"),
     ["outside the image"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{tmp}/l.nii.gz", "--names", "a"), ["--names"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{tmp}/l.nii.gz", "--fraction", "1.5"), ["fraction"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{tmp}/l.nii.gz", "--within", "{labels}:kidney_x"),
     ["no label named 'kidney_x'"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{tmp}/l.nii.gz", "--background-multiple", "1e5"),
     ["no lesion found"]),
    (("segment-lesions", "--emission", "{spect}", "--out", "{spect}"), ["outputs never replace"]),
    (("segment-lesions", "--emission", "{spect}", "--within", "{labels}", "--out", "{labels}"),
     ["outputs never replace"]),
    (("segment-lesions", "--emission", "{ct_nii}", "--out", "{tmp}/l.nii.gz"), ["ct.nii.gz"]),
    (("compare-labels", "--test", "{labels}", "--reference", "{ct}"), ["--reference"]),
    (("compare-labels", "--test", "{tmp}/none.nii.gz", "--reference", "{labels}"), ["does not exist", "none.nii.gz"]),
    (("compare-labels", "--test", "{labels}", "--reference", "{labels}", "--json", "{labels}"),
     ["outputs never replace"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, patient, tmp_path, args, words):
    fill = {k: str(v) for k, v in patient.items() if isinstance(v, Path)} | {"tmp": str(tmp_path)}
    r = cli(*(a.format(**fill) for a in args))
    _one_line_error(r, *words)
    assert list(tmp_path.iterdir()) == []
    assert _digest(patient["root"]) == patient["digest"]


def test_nan_hd95_prints_a_dash(cli, patient, tmp_path):
    r = cli("compare-labels", "--test", patient["labels"], "--reference", patient["labels"])
    assert r.returncode == 0 and not any(math.isnan(float(p)) for line in r.stdout.splitlines()[1:]
                                         for p in line.split()[1:] if p != "-")


from tests.segmentation.test_totalsegmentator import _add_fast_weights, install_fake_totalsegmentator  # noqa: E402


@pytest.fixture
def fake_ts(monkeypatch, tmp_path):
    return install_fake_totalsegmentator(monkeypatch, tmp_path)


def test_totalsegmentator_not_installed_is_one_line(cli, patient, tmp_path):
    from persodose.segmentation import get_segmenter

    if get_segmenter("totalsegmentator").installed:
        pytest.skip("TotalSegmentator is installed here")
    r = cli("segment", "--ct", patient["ct_nii"], "--out", tmp_path / "t.nii.gz", "--backend", "totalsegmentator")
    _one_line_error(r, "persodose[totalseg]")
    assert list(tmp_path.iterdir()) == []


def test_totalsegmentator_without_weights_then_with_fake_weights(cli, patient, tmp_path, fake_ts):
    calls, weights = fake_ts
    out = tmp_path / "out" / "t.nii.gz"
    r = cli("segment", "--ct", patient["ct"], "--out", out, "--backend", "totalsegmentator")
    _one_line_error(r, "weights not found", str(weights), "totalseg_download_weights")
    assert not out.exists() and calls["api"] == []
    _add_fast_weights(weights)
    r = cli("segment", "--ct", patient["ct"], "--out", out, "--backend", "totalsegmentator", "--settings", "threads=2")
    assert r.returncode == 0, r.stderr
    ct, _ = load_ct(patient["ct"])
    lab, names = read_labels(out, ct)
    assert set(names.values()) == {"lung_left", "lung_right", "spine", "ribs", "colon", "kidney_right"}
    assert calls["api"][-1][2]["nr_thr_resamp"] == 2
    assert _digest(patient["root"]) == patient["digest"]
