"""A corpus of bad inputs against every command, built in code.

Each case asserts what a user must get for a mistake: exit code 2, one line on stderr
(warnings aside) that starts with ``persodose: error:`` and names the option or path it is
about, no traceback, no output left anywhere, and every input file unchanged (checksums of
the whole tree before and after). The commands run in-process (:func:`persodose.cli.main.main`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from persodose.grid import Grid, Kind
from persodose.io.image import write_image
from tests.io.test_image_io import _nifti as nifti_with_header  # a NIfTI with patched header fields


# ------------------------------------------------------------------------------- the world
def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha1 of every file under ``root`` (folders as '<dir>')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _edit_all(folder: Path, fn) -> None:
    for f in sorted(folder.iterdir()):
        if f.suffix == ".dcm":
            ds = pydicom.dcmread(f)
            fn(f, ds)
            ds.save_as(f)


def _make_ct_variants(w: dict, root: Path) -> None:
    ct = w["ct"]
    files = sorted(ct.glob("*.dcm"))

    def variant(name, fn_all=None, fn_one=None):
        dst = root / name
        shutil.copytree(ct, dst)
        if fn_all is not None:
            _edit_all(dst, lambda f, ds: fn_all(ds))
        if fn_one is not None:
            f = dst / files[len(files) // 2].name
            ds = pydicom.dcmread(f)
            fn_one(ds)
            ds.save_as(f)
        w[name] = dst

    def slope0(ds):
        ds.RescaleSlope = 0

    def no_rescale(ds):
        for kw in ("RescaleSlope", "RescaleIntercept"):
            if kw in ds:
                delattr(ds, kw)

    variant("ct_slope0_all", fn_all=slope0)
    variant("ct_slope0_one", fn_one=slope0)
    variant("ct_norescale_all", fn_all=no_rescale)
    variant("ct_norescale_one", fn_one=no_rescale)
    # a slice cut short, as after an interrupted copy
    variant("ct_truncated")
    f = w["ct_truncated"] / files[5].name
    f.write_bytes(f.read_bytes()[:700])
    # a slice whose pixel data is short
    variant("ct_shortpixels")
    f = w["ct_shortpixels"] / files[7].name
    ds = pydicom.dcmread(f)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(f)
    # two CT series in one folder
    variant("ct_two_series")
    uid = pydicom.uid.generate_uid()
    for k, src in enumerate(files[:10]):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesDescription = "second series"
        ds.save_as(w["ct_two_series"] / f"B_{k:03d}.dcm")
    # one slice
    one = root / "ct_one_slice"
    one.mkdir()
    shutil.copy(files[40], one / files[40].name)
    w["ct_one_slice"] = one


def _make_emission_variants(w: dict, root: Path) -> None:
    neg = root / "nm_negative"
    shutil.copytree(w["tp"][0], neg)
    f = next(neg.glob("*.dcm"))
    ds = pydicom.dcmread(f)
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -5000
    ds.save_as(f)
    w["nm_negative"] = neg
    em = Grid(np.full((6, 8, 8), -3.0, np.float32), (10.0, 10.0, 10.0), kind=Kind.ACTIVITY_CONCENTRATION,
              unit="Bq/mL")
    w["em_negative_nii"] = write_image(em, root / "em_negative.nii.gz")


def _make_images(w: dict, root: Path) -> None:
    from persodose.io.load import load_ct
    from persodose.physics.materials import ct_to_density_and_materials, materials_table

    ct_grid, _ = load_ct(w["ct"])
    dens, mats, mat_list = ct_to_density_and_materials(ct_grid)
    w["density"] = write_image(dens, root / "density.nii.gz")
    w["materials"] = write_image(mats, root / "materials.nii.gz")
    (root / "materials.nii.gz.json").write_text(json.dumps(materials_table(mat_list)))
    tia = w["tia"]
    from persodose.io.image import read_image

    t = read_image(tia)
    w["tia_zero"] = write_image(t.with_array(np.zeros_like(t.array)), root / "tia_zero.nii.gz")
    far = Grid(np.ones((4, 4, 4), np.float32) * 1e6, (10.0, 10.0, 10.0), (9000.0, 9000.0, 9000.0), kind=Kind.TIA,
               unit="Bq s")
    w["tia_far"] = write_image(far, root / "tia_far.nii.gz")
    bad = mats.array.copy()
    bad[5, 5, 5] = 99
    w["materials_bad"] = write_image(mats.with_array(bad), root / "materials_bad.nii.gz")
    (root / "materials_bad.nii.gz.json").write_text(json.dumps(materials_table(mat_list)))
    w["materials_badjson"] = write_image(mats, root / "materials_badjson.nii.gz")
    (root / "materials_badjson.nii.gz.json").write_text("{not json")
    w["tia_furlongs"] = nifti_with_header(root / "tia_furlongs.nii", "persodose kind=tia unit=furlongs")
    w["tia_nan_voxel"] = nifti_with_header(root / "tia_nan_voxel.nii", patch={80: np.nan, 280: np.nan})
    w["tia_zero_voxel"] = nifti_with_header(root / "tia_zero_voxel.nii", patch={84: 0.0, 300: 0.0})
    w["ct_nii"] = write_image(ct_grid, root / "ct.nii.gz")
    nan_ct = ct_grid.array.copy()
    nan_ct[3, 3, 3] = np.nan
    w["ct_nan_nii"] = write_image(ct_grid.with_array(nan_ct), root / "ct_nan.nii.gz")
    air = Grid(np.full((6, 8, 8), -1000.0, np.float32), (10.0, 10.0, 10.0), kind=Kind.CT, unit="HU")
    w["ct_air_nii"] = write_image(air, root / "ct_air.nii.gz")
    w["labels_far"] = write_image(Grid(np.ones((3, 3, 3), np.uint8), (10.0, 10.0, 10.0), (8000.0, 0.0, 0.0),
                                       kind=Kind.LABELS), root / "labels_far.nii.gz")
    lab = read_image(w["labels"])
    w["labels_zero"] = write_image(lab.with_array(np.zeros_like(lab.array)), root / "labels_zero.nii.gz")
    w["labels_badnames"] = write_image(lab, root / "labels_badnames.nii.gz")
    (root / "labels_badnames.nii.gz.json").write_text("[1, 2")
    dose = Grid(np.ones((5, 6, 7), np.float32), (4.0, 4.0, 4.0), kind=Kind.DOSE, unit="Gy")
    w["dose_a"] = write_image(dose, root / "dose_a.nii.gz")
    w["dose_small"] = write_image(Grid(np.ones((3, 3, 3), np.float32), kind=Kind.DOSE, unit="Gy"),
                                  root / "dose_small.nii.gz")
    w["tia_like_dose"] = write_image(Grid(np.ones((5, 6, 7), np.float32), (4.0, 4.0, 4.0), kind=Kind.TIA),
                                     root / "tia_like_dose.nii.gz")
    w["dose_mgy"] = write_image(Grid(np.ones((5, 6, 7), np.float32), (4.0, 4.0, 4.0), kind=Kind.DOSE, unit="mGy"),
                                root / "dose_mgy.nii.gz")


def _make_files(w: dict, root: Path) -> None:
    (root / "cal_huge.csv").write_text("HU,density\n-1000,0.001\n0,1.0\n3000,1000000\n")
    (root / "cal_decreasing.csv").write_text("HU,density\n-1000,0.001\n500,1.2\n0,1.0\n")
    (root / "cal_junk.csv").write_text("this is not a calibration\n")
    (root / "cal_negative.csv").write_text("HU,density\n-1000,-0.5\n0,1.0\n3000,2.5\n")
    for name in ("cal_huge", "cal_decreasing", "cal_junk", "cal_negative"):
        w[name] = root / f"{name}.csv"
    (root / "junk_plugin.py").write_text("raise RuntimeError('this plug-in is broken')\n")
    w["junk_py"] = root / "junk_plugin.py"
    junk = root / "junk.dcm"
    junk.write_bytes(b"not DICOM at all " * 40)
    w["junk"] = junk
    for name in ("empty", "empty.nii.gz", "empty.txt"):  # folders where a file output is asked for
        (root / name).mkdir()
    w["empty"] = root / "empty"
    (root / "afile").write_text("a file, not a folder")
    w["afile"] = root / "afile"
    (root / "someone_else").mkdir()
    (root / "someone_else" / "thesis.txt").write_text("years of work")
    w["foreign"] = root / "someone_else"
    w["missing"] = root / "does_not_exist"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("corpus")
    write_virtual_patient(make_virtual_patient(voxel_mm=10), root / "patient")
    p = root / "patient"
    w = {"root": root, "patient": p, "ct": p / "ct", "tp": [p / "spect" / f"tp{k}" for k in range(1, 5)],
         "labels": p / "nifti" / "labels.nii.gz", "tia": p / "nifti" / "truth_tia.nii.gz",
         "spect_nii": p / "nifti" / "tp1_image.nii.gz", "out": root / "outs"}
    inputs = root / "in"
    inputs.mkdir()
    _make_ct_variants(w, inputs)
    _make_emission_variants(w, inputs)
    _make_images(w, inputs)
    _make_files(w, inputs)
    return w


# ------------------------------------------------------------------------------- the cases
def _internal(w, *extra, ct=None, emission=None, out=None):
    args = ["internal", "--ct", ct or w["ct"], "--nuclide", "Lu-177", "--calibration-cps-per-mbq", "10",
            "--method", "led"]
    for e in (emission if emission is not None else w["tp"][:2]):
        args += ["--emission", e]
    return args + ["--out", out or w["out"] / "int"] + list(extra)


def _ct(w, *extra, ct=None, out=None):
    return ["ct", "--ct", ct or w["ct"], "--photons", "1000", "--ctdi-photons", "1000", "--batches", "2",
            "--dose-voxel-mm", "20", "--out", out or w["out"] / "ct"] + list(extra)


def _mc(w, *extra, tia=None, density=None, materials=None, out=None, decays="1000"):
    return ["mc", "--tia", tia or w["tia"], "--density", density or w["density"], "--materials",
            materials or w["materials"], "--nuclide", "Lu-177", "--decays", decays, "--batches", "2",
            "--out", out or w["out"] / "mc"] + list(extra)


def _density(w, *extra, ct=None, out=None):
    return ["density", "--ct", ct or w["ct"], "--out", out or w["out"] / "d.nii.gz"] + list(extra)


def _compare(w, *extra, ref=None, test=None):
    return ["compare", "--reference", ref or w["dose_a"], "--test", test or w["dose_a"]] + list(extra)


def _kernel(w, *extra, out=None):
    return ["kernel", "--nuclide", "Lu-177", "--voxel-mm", "4", "--size", "3", "--decays", "1000",
            "--out", out or w["out"] / "k.txt"] + list(extra)


ALL_OUT_COMMANDS = {
    "internal": lambda w, out: _internal(w, out=out),
    "ct": lambda w, out: _ct(w, out=out),
    "mc": lambda w, out: _mc(w, out=out),
    "compare": lambda w, out: _compare(w, "--out", out),
    "phantom": lambda w, out: ["phantom", "--out", out],
    "demo": lambda w, out: ["demo", "--out", out],
}
FILE_OUT_COMMANDS = {
    "density": lambda w, out: _density(w, out=Path(f"{out}.nii.gz")),
    "kernel": lambda w, out: _kernel(w, out=Path(f"{out}.txt")),
}

CASES = [
    # ---- outputs that would destroy an input
    ("mc-out-is-inputs-folder", lambda w: _mc(w, out=w["density"].parent), ["--out", "contains the input"]),
    ("mc-out-is-tia", lambda w: _mc(w, out=w["tia"]), ["--out", "--tia"]),
    ("mc-out-contains-inputs", lambda w: _mc(w, out=w["root"]), ["--out", "contains the input"]),
    ("mc-out-inside-ct", lambda w: ["mc", "--tia", w["tia"], "--ct", w["ct"], "--nuclide", "Lu-177", "--decays",
                                    "1000", "--out", w["ct"] / "dose"], ["--out", "sits inside", "--ct"]),
    ("mc-checkpoint-is-tia", lambda w: _mc(w, "--checkpoint", w["tia"]), ["--checkpoint", "--tia"]),
    ("mc-checkpoint-inside-out", lambda w: _mc(w, "--checkpoint", w["out"] / "mc" / "c.npz"), ["--checkpoint"]),
    ("mc-out-is-materials-table", lambda w: _mc(w, out=Path(str(w["materials"]) + ".json")), ["--out"]),
    ("internal-out-is-ct", lambda w: _internal(w, out=w["ct"]), ["--out", "--ct"]),
    ("internal-out-is-emission", lambda w: _internal(w, out=w["tp"][1]), ["--out", "--emission"]),
    ("internal-out-contains-ct", lambda w: _internal(w, out=w["patient"]), ["--out", "contains"]),
    ("internal-out-inside-ct", lambda w: _internal(w, out=w["ct"] / "dose"), ["--out", "sits inside"]),
    ("internal-out-is-labels", lambda w: _internal(w, "--labels", w["labels"], out=w["labels"]),
     ["--out", "--labels"]),
    ("internal-out-is-label-names", lambda w: _internal(w, "--labels", w["labels"],
                                                        out=Path(str(w["labels"]) + ".json")), ["--out", "--labels"]),
    ("internal-out-is-emission-ct", lambda w: _internal(w, "--emission-ct", w["ct_nii"], "--emission-ct",
                                                        w["ct_nii"], out=w["ct_nii"]), ["--out", "--emission-ct"]),
    ("ct-out-is-ct", lambda w: _ct(w, out=w["ct"]), ["--out", "--ct"]),
    ("ct-out-contains-ct", lambda w: _ct(w, out=w["patient"]), ["--out", "contains"]),
    ("ct-out-inside-ct", lambda w: _ct(w, out=w["ct"] / "sub"), ["--out", "sits inside"]),
    ("ct-out-is-labels", lambda w: _ct(w, "--labels", w["labels"], out=w["labels"]), ["--out", "--labels"]),
    ("compare-out-is-reference", lambda w: _compare(w, "--out", w["dose_a"]), ["--out", "--reference"]),
    ("compare-out-contains-test", lambda w: _compare(w, "--out", w["dose_a"].parent), ["--out", "contains"]),
    ("compare-out-is-realisation", lambda w: _compare(w, "--realisation", w["dose_mgy"], "--realisation",
                                                      w["dose_a"], "--out", w["dose_mgy"]), ["--out"]),
    ("density-out-is-ct", lambda w: _density(w, ct=w["ct_nii"], out=w["ct_nii"]), ["--out", "--ct"]),
    ("density-out-equals-materials-out", lambda w: _density(w, "--materials-out", w["out"] / "d.nii.gz"),
     ["--out", "--materials-out"]),
    ("density-materials-out-is-ct", lambda w: _density(w, "--materials-out", w["ct_nii"], ct=w["ct_nii"]),
     ["--materials-out", "--ct"]),
    ("density-out-inside-dicom-ct", lambda w: _density(w, out=w["ct"] / "d.nii.gz"), ["--out", "sits inside"]),
    ("density-out-is-calibration", lambda w: _density(w, "--calibration", w["cal_huge"], out=w["cal_huge"]),
     ["--out"]),
    # ---- outputs that cannot be written
    *[(f"{name}-out-foreign-folder", (lambda f: lambda w: f(w, w["foreign"]))(fn), ["--out", "did not write"])
      for name, fn in ALL_OUT_COMMANDS.items()],
    *[(f"{name}-out-under-a-file", (lambda f: lambda w: f(w, w["afile"] / "sub" / "x"))(fn), ["--out", "is a file"])
      for name, fn in {**ALL_OUT_COMMANDS, **FILE_OUT_COMMANDS}.items()],
    *[(f"{name}-out-not-writable", (lambda f: lambda w: f(w, Path("/proc/persodose/x")))(fn),
       ["--out", "not writable"]) for name, fn in {**ALL_OUT_COMMANDS, **FILE_OUT_COMMANDS}.items()],
    *[(f"{name}-out-is-a-file", (lambda f: lambda w: f(w, w["afile"]))(fn), ["--out", "not a folder"])
      for name, fn in ALL_OUT_COMMANDS.items()],
    *[(f"{name}-out-is-a-folder", (lambda f: lambda w: f(w, w["empty"]))(fn), ["--out", "is a folder"])
      for name, fn in FILE_OUT_COMMANDS.items()],
    # ---- option values
    ("mc-decays-abc", lambda w: _mc(w, decays="abc"), ["--decays"]),
    ("mc-decays-zero", lambda w: _mc(w, decays="0"), ["--decays"]),
    ("mc-decays-negative", lambda w: _mc(w, decays="-5"), ["--decays"]),
    ("mc-decays-1e20", lambda w: _mc(w, decays=str(10**20)), ["--decays"]),
    ("mc-decays-float", lambda w: _mc(w, decays="1e20"), ["--decays"]),
    ("mc-batches-zero", lambda w: _mc(w, "--batches", "0"), ["--batches"]),
    ("mc-decays-fewer-than-batches", lambda w: _mc(w, "--batches", "100", decays="5"), ["--decays", "--batches"]),
    ("ct-photons-fewer-than-batches", lambda w: _ct(w, "--photons", "3", "--batches", "5"), ["--photons", "--batches"]),
    ("internal-mc-decays-fewer-than-batches", lambda w: [("mc" if a == "led" else a) for a in _internal(
        w, "--method-option", "mc.decays=3", "--method-option", "mc.batches=8")], ["mc.decays"]),
    ("internal-times-h-count", lambda w: _internal(w, "--times-h", "4,5,6"), ["--times-h", "--emission"]),
    ("compare-realisation-of-another-kind", lambda w: _compare(w, "--realisation", w["tia_like_dose"],
                                                               "--realisation", w["dose_a"]), ["tia_like_dose"]),
    ("internal-same-time-twice", lambda w: _internal(w, emission=[w["tp"][0], w["tp"][0]]), ["tp1", "same time"]),
    ("internal-method-option-unknown", lambda w: _internal(w, "--method-option", "led.energi=all"), ["led.energi"]),
    ("internal-method-option-bad-value", lambda w: _internal(w, "--method-option", "led.energy=photons"),
     ["led.energy"]),
    ("internal-method-options-missing", lambda w: _internal(w, "--method-options", w["missing"]),
     ["--method-options"]),
    ("internal-labels-auto-unknown", lambda w: _internal(w, "--labels", "auto:nosuch"), ["nosuch"]),
    ("plugin-missing", lambda w: ["--plugin", w["missing"], "methods"], ["does_not_exist"]),
    ("plugin-broken", lambda w: ["--plugin", w["junk_py"], "methods"], ["junk_plugin.py"]),
    ("mc-seed-negative", lambda w: _mc(w, "--seed", "-1"), ["--seed"]),
    ("mc-unknown-nuclide", lambda w: [("Xx-999" if a == "Lu-177" else a) for a in _mc(w)], ["Xx-999"]),
    ("mc-unknown-backend", lambda w: _mc(w, "--backend", "tpu"), ["tpu"]),
    ("mc-resume-without-checkpoint", lambda w: _mc(w, "--resume"), ["--checkpoint"]),
    ("mc-resume-missing-checkpoint", lambda w: _mc(w, "--resume", "--checkpoint", w["out"] / "none.npz"),
     ["--checkpoint"]),
    ("mc-missing-tia-option", lambda w: ["mc", "--nuclide", "Lu-177", "--decays", "10", "--out", w["out"] / "m"],
     ["--tia"]),
    ("mc-unknown-option", lambda w: _mc(w, "--frobnicate", "3"), ["--frobnicate"]),
    ("ct-photons-1e20", lambda w: _ct(w, "--photons", str(10**20)), ["--photons"]),
    ("ct-photons-zero", lambda w: _ct(w, "--photons", "0"), ["--photons"]),
    ("ct-ctdi-photons-abc", lambda w: _ct(w, "--ctdi-photons", "abc"), ["--ctdi-photons"]),
    ("ct-dose-voxel-nan", lambda w: _ct(w, "--dose-voxel-mm", "nan"), ["--dose-voxel-mm"]),
    ("ct-dose-voxel-zero", lambda w: _ct(w, "--dose-voxel-mm", "0"), ["--dose-voxel-mm"]),
    ("ct-kvp-negative", lambda w: _ct(w, "--kvp", "-120"), ["--kvp"]),
    ("ct-kvp-inf", lambda w: _ct(w, "--kvp", "inf"), ["--kvp"]),
    ("ct-pitch-zero", lambda w: _ct(w, "--pitch", "0"), ["--pitch"]),
    ("ct-ctdivol-nan", lambda w: _ct(w, "--ctdivol", "nan"), ["--ctdivol"]),
    ("ct-sp-maps-negative", lambda w: _ct(w, "--sp-maps", "-2"), ["--sp-maps"]),
    ("ct-rotation-zero", lambda w: _ct(w, "--rotation-s", "0"), ["--rotation-s"]),
    ("internal-decays-zero", lambda w: _internal(w, "--decays", "0"), ["--decays"]),
    ("internal-dose-voxel-negative", lambda w: _internal(w, "--dose-voxel-mm", "-4"), ["--dose-voxel-mm"]),
    ("internal-dose-voxel-inf", lambda w: _internal(w, "--dose-voxel-mm", "inf"), ["--dose-voxel-mm"]),
    ("internal-calibration-zero", lambda w: [("0" if a == "10" else a) for a in _internal(w)],
     ["--calibration-cps-per-mbq"]),
    ("internal-injected-nan", lambda w: _internal(w, "--injected-mbq", "nan"), ["--injected-mbq"]),
    ("internal-times-h-junk", lambda w: _internal(w, "--times-h", "one,two"), ["--times-h"]),
    ("internal-times-h-negative", lambda w: _internal(w, "--times-h", "-1,24"), ["--times-h"]),
    ("internal-injection-time-junk", lambda w: _internal(w, "--injection-time", "yesterday"), ["--injection-time"]),
    ("internal-unknown-method", lambda w: [("nope" if a == "led" else a) for a in _internal(w)], ["nope"]),
    ("internal-unknown-tia-method", lambda w: _internal(w, "--tia-method", "magic"), ["magic"]),
    ("internal-unknown-registration", lambda w: _internal(w, "--registration", "warp"), ["warp"]),
    ("internal-unknown-nuclide", lambda w: [("Zz-1" if a == "Lu-177" else a) for a in _internal(w)], ["Zz-1"]),
    ("internal-no-emission", lambda w: _internal(w, emission=[]), ["--emission"]),
    ("kernel-size-even", lambda w: _kernel(w, "--size", "4"), ["--size"]),
    ("kernel-size-zero", lambda w: _kernel(w, "--size", "0"), ["--size"]),
    ("kernel-voxel-nan", lambda w: _kernel(w, "--voxel-mm", "nan"), ["--voxel-mm"]),
    ("kernel-voxel-zero", lambda w: _kernel(w, "--voxel-mm", "0"), ["--voxel-mm"]),
    ("kernel-density-negative", lambda w: _kernel(w, "--density", "-1"), ["--density"]),
    ("kernel-decays-1e20", lambda w: _kernel(w, "--decays", str(10**20)), ["--decays"]),
    ("kernel-unknown-medium", lambda w: _kernel(w, "--medium", "cheese"), ["cheese"]),
    ("kernel-bad-suffix", lambda w: _kernel(w, out=w["out"] / "k.docx"), ["--out"]),
    ("density-bad-suffix", lambda w: _density(w, out=w["out"] / "d.png"), ["--out"]),
    ("compare-threshold-above-one", lambda w: _compare(w, "--threshold", "1.5"), ["--threshold"]),
    ("compare-threshold-nan", lambda w: _compare(w, "--threshold", "nan"), ["--threshold"]),
    ("compare-gamma-junk", lambda w: _compare(w, "--gamma-criteria", "a,b"), ["--gamma-criteria"]),
    ("compare-gamma-zero", lambda w: _compare(w, "--gamma-criteria", "0,3"), ["--gamma-criteria"]),
    ("compare-one-realisation", lambda w: _compare(w, "--realisation", w["dose_a"]), ["--realisation"]),
    ("phantom-voxel-nan", lambda w: ["phantom", "--out", w["out"] / "p", "--voxel-mm", "nan"], ["--voxel-mm"]),
    ("phantom-seed-negative", lambda w: ["phantom", "--out", w["out"] / "p", "--seed", "-3"], ["--seed"]),
    ("phantom-unknown-tracer", lambda w: ["phantom", "--out", w["out"] / "p", "--tracer", "tea"], ["tea"]),
    ("demo-voxel-huge", lambda w: ["demo", "--out", w["out"] / "dm", "--voxel-mm", "100"], ["--voxel-mm"]),
    ("demo-unknown-tracer", lambda w: ["demo", "--out", w["out"] / "dm", "--tracer", "tea"], ["tea"]),
    ("unknown-command", lambda w: ["frobnicate"], ["frobnicate"]),
    ("series-missing", lambda w: ["series", w["missing"]], ["does_not_exist"]),
    ("series-empty", lambda w: ["series", w["empty"]], ["empty"]),
    # ---- corrupt or unusable images
    ("ct-missing-path", lambda w: _ct(w, ct=w["missing"]), ["does_not_exist"]),
    ("ct-empty-folder", lambda w: _ct(w, ct=w["empty"]), ["empty"]),
    ("ct-junk-file", lambda w: _ct(w, ct=w["junk"]), ["junk.dcm"]),
    ("density-slope0-all", lambda w: _density(w, ct=w["ct_slope0_all"]), ["ct_slope0_all"]),
    ("density-slope0-one", lambda w: _density(w, ct=w["ct_slope0_one"]), ["ct_slope0_one"]),
    ("density-norescale-all", lambda w: _density(w, ct=w["ct_norescale_all"]), ["ct_norescale_all"]),
    ("density-norescale-one", lambda w: _density(w, ct=w["ct_norescale_one"]), ["ct_norescale_one"]),
    ("density-truncated-slice", lambda w: _density(w, ct=w["ct_truncated"]), ["ct_truncated"]),
    ("density-short-pixels", lambda w: _density(w, ct=w["ct_shortpixels"]), ["ct_shortpixels"]),
    ("density-two-series", lambda w: _density(w, ct=w["ct_two_series"]), ["ct_two_series"]),
    ("density-nan-ct", lambda w: _density(w, ct=w["ct_nan_nii"]), ["ct_nan"]),
    ("density-calibration-huge", lambda w: _density(w, "--calibration", w["cal_huge"]), ["cal_huge"]),
    ("density-calibration-decreasing", lambda w: _density(w, "--calibration", w["cal_decreasing"]),
     ["cal_decreasing"]),
    ("density-calibration-junk", lambda w: _density(w, "--calibration", w["cal_junk"]), ["cal_junk"]),
    ("density-calibration-negative", lambda w: _density(w, "--calibration", w["cal_negative"]), ["cal_negative"]),
    ("density-calibration-missing", lambda w: _density(w, "--calibration", w["missing"]), ["does_not_exist"]),
    ("ct-slope0-all", lambda w: _ct(w, ct=w["ct_slope0_all"]), ["ct_slope0_all"]),
    ("ct-truncated-slice", lambda w: _ct(w, ct=w["ct_truncated"]), ["ct_truncated"]),
    ("ct-one-slice", lambda w: _ct(w, ct=w["ct_one_slice"]), ["ct_one_slice"]),
    ("ct-no-body", lambda w: _ct(w, "--kvp", "120", "--pitch", "1", "--collimation-mm", "40", "--rotation-s", "0.5",
                                 "--ctdivol", "5", ct=w["ct_air_nii"]), ["ct_air"]),
    ("ct-labels-far", lambda w: _ct(w, "--labels", w["labels_far"]), ["labels_far"]),
    ("ct-labels-zero", lambda w: _ct(w, "--labels", w["labels_zero"]), ["labels_zero"]),
    ("ct-labels-bad-names", lambda w: _ct(w, "--labels", w["labels_badnames"]), ["labels_badnames"]),
    ("ct-labels-junk", lambda w: _ct(w, "--labels", w["junk"]), ["junk.dcm"]),
    ("internal-ct-norescale-one", lambda w: _internal(w, ct=w["ct_norescale_one"]), ["ct_norescale_one"]),
    ("internal-ct-one-slice", lambda w: _internal(w, ct=w["ct_one_slice"]), ["ct_one_slice"]),
    ("internal-ct-two-series", lambda w: _internal(w, ct=w["ct_two_series"]), ["ct_two_series"]),
    ("internal-nm-negative", lambda w: _internal(w, emission=[w["nm_negative"], w["tp"][1]]), ["nm_negative"]),
    ("internal-nifti-emission-negative", lambda w: _internal(w, "--times-h", "4", emission=[w["em_negative_nii"]]),
     ["em_negative"]),
    ("internal-emission-missing", lambda w: _internal(w, emission=[w["missing"]]), ["does_not_exist"]),
    ("internal-emission-empty", lambda w: _internal(w, emission=[w["empty"]]), ["empty"]),
    ("internal-emission-is-ct", lambda w: _internal(w, emission=[w["ct"]]), ["PET or NM"]),
    ("internal-labels-far", lambda w: _internal(w, "--labels", w["labels_far"]), ["labels_far"]),
    ("internal-labels-zero", lambda w: _internal(w, "--labels", w["labels_zero"]), ["labels_zero"]),
    ("internal-label-names-missing", lambda w: _internal(w, "--labels", w["labels"], "--label-names", w["missing"]),
     ["does_not_exist"]),
    ("mc-tia-furlongs", lambda w: _mc(w, tia=w["tia_furlongs"]), ["tia_furlongs"]),
    ("mc-tia-nan-voxel", lambda w: _mc(w, tia=w["tia_nan_voxel"]), ["tia_nan_voxel"]),
    ("mc-tia-zero-voxel", lambda w: _mc(w, tia=w["tia_zero_voxel"]), ["tia_zero_voxel"]),
    ("mc-tia-far", lambda w: _mc(w, tia=w["tia_far"]), ["tia_far"]),
    ("mc-tia-zero", lambda w: _mc(w, tia=w["tia_zero"]), ["tia_zero"]),
    ("mc-tia-is-density", lambda w: _mc(w, tia=w["density"]), ["density.nii.gz"]),
    ("mc-tia-missing", lambda w: _mc(w, tia=w["missing"]), ["does_not_exist"]),
    ("mc-tia-junk", lambda w: _mc(w, tia=w["junk"]), ["junk.dcm"]),
    ("mc-materials-index", lambda w: _mc(w, materials=w["materials_bad"]), ["materials_bad"]),
    ("mc-materials-bad-table", lambda w: _mc(w, materials=w["materials_badjson"]), ["materials_badjson"]),
    ("mc-density-is-ct", lambda w: _mc(w, density=w["ct_nii"]), ["ct.nii.gz"]),
    ("mc-density-and-ct", lambda w: _mc(w, "--ct", w["ct"]), ["--ct"]),
    ("mc-tia-units-wrong", lambda w: _mc(w, "--tia-units", "Gy"), ["Gy"]),
    ("compare-shape-mismatch", lambda w: _compare(w, test=w["dose_small"]), ["dose_small"]),
    ("compare-kind-mismatch", lambda w: _compare(w, test=w["tia_like_dose"]), ["tia_like_dose"]),
    ("compare-reference-missing", lambda w: _compare(w, ref=w["missing"]), ["does_not_exist"]),
    ("compare-labels-far", lambda w: _compare(w, "--labels", w["labels_far"]), ["labels_far"]),
]


@pytest.mark.parametrize("name, build, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name(world, name, build, words, capsys):
    from persodose.cli.main import main

    argv = [str(a) for a in build(world)]
    before = _tree(world["root"])
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("persodose: warning:")]
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("persodose: error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _tree(world["root"]) == before  # nothing written, nothing changed


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)
