"""Datasets: registry of kinds, the persodose-dataset/1 format, splits, resume, Dask, checksums, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")

from persodose.dl import datasets as dsm  # noqa: E402
from persodose.dl.datasets import (FORMAT, KINDS, assign_split, get_kind, make_dataset, open_dataset,  # noqa: E402
                                   patient_seeds, read_shard, register_kind, write_shard)
from persodose.errors import InputError  # noqa: E402

SETTINGS = {"patch_voxels": "8", "patches_per_patient": "3"}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """Three tiny virtual patients (12 mm voxels) in one folder, no declared split."""
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("phantoms")
    for k in (1, 2, 3):
        write_virtual_patient(make_virtual_patient(voxel_mm=12, seed=k), root / f"p{k}")
    return root


def _dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard_*.h5"))}


@pytest.fixture(scope="module")
def reference(population, tmp_path_factory):
    """An uninterrupted in-process run (seed 7): the bytes every other run must give."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    make_dataset("density-led", _dirs(population), out, SETTINGS, seed=7)
    return out


# --------------------------------------------------------------------------- format
def test_round_trip_format(population, reference):
    ds = open_dataset(reference)
    m = json.loads((reference / "manifest.json").read_text())
    assert ds.manifest == m
    for key in ("format", "kind", "settings", "seed", "patients", "input_shape", "target_shape", "software",
                "physics_version", "created_utc"):
        assert key in m, key
    from persodose.mc.version import PHYSICS_VERSION

    assert (m["format"], m["kind"], m["seed"], m["physics_version"], m["complete"]) == \
        (FORMAT, "density-led", 7, PHYSICS_VERSION, True)
    assert m["settings"] == {"patch_voxels": 8, "patches_per_patient": 3, "energy": "all", "min_density_g_cm3": 0.5,
                             "with_labels": True}
    assert "numpy" in m["software"] and "python" in m["software"]
    assert m["input_shape"] == [2, 8, 8, 8] and m["target_shape"] == [1, 8, 8, 8]
    assert [p["id"] for p in m["patients"]] == ["p1", "p2", "p3"]
    assert [p["seed"] for p in m["patients"]] == [1, 2, 3]  # the virtual patients' own seeds
    assert [p["shard"] for p in m["patients"]] == ["shard_00000.h5", "shard_00001.h5", "shard_00002.h5"]
    assert [p["example_seed"] for p in m["patients"]] == patient_seeds(7, 3)
    for p in m["patients"]:
        assert p["n"] == 3 and p["split"] in ("train", "val", "test") and len(p["sha256"]) == 64
        x, y, metas, attrs = read_shard(reference / p["shard"])
        assert x.dtype == np.float32 and x.shape == (3, 2, 8, 8, 8) and y.shape == (3, 1, 8, 8, 8)
        assert attrs["patient_id"] == p["id"] and attrs["patient_seed"] == p["seed"]
        assert attrs["example_seed"] == p["example_seed"] and len(metas) == 3
    import h5py

    with h5py.File(reference / "shard_00000.h5", "r") as f:
        d = f["inputs"]
        assert d.compression == "gzip" and d.chunks == (1, 2, 8, 8, 8)
    # reading split by split gives every example once; iter_examples agrees with load_split
    total = sum(ds.count(s) for s in dsm.SPLITS)
    assert total == 9
    for s in dsm.SPLITS:
        x, y = ds.load_split(s)
        assert x.shape == (ds.count(s), 2, 8, 8, 8) and y.shape == (ds.count(s), 1, 8, 8, 8)
        it = list(ds.iter_examples(s))
        assert len(it) == len(x)
        for (xi, yi, meta), xj, yj in zip(it, x, y):
            assert np.array_equal(xi, xj) and np.array_equal(yi, yj) and "corner_zyx" in meta


def test_shards_carry_the_truth_labels_of_each_patch(population, reference, tmp_path):
    import nibabel as nib

    from persodose.dl.datasets import read_shard_labels

    ds = open_dataset(reference)
    lab, names = ds.load_labels("train" if ds.count("train") else "test")
    assert lab is not None and lab.dtype == np.uint16 and lab.shape[1:] == (8, 8, 8)
    assert names[7] == "liver" and names[1] == "body"
    entry = ds.patients[0]
    shard_lab, _ = read_shard_labels(reference / entry["shard"])
    _, _, metas, _ = read_shard(reference / entry["shard"])
    full = np.asarray(nib.load(str(population / entry["id"] / "nifti" / "labels.nii.gz")).dataobj)
    full = np.transpose(full, (2, 1, 0))  # NIfTI x, y, z -> z, y, x
    for k, meta in enumerate(metas):
        z, y, x = meta["corner_zyx"]
        assert np.array_equal(shard_lab[k], full[z:z + 8, y:y + 8, x:x + 8])
        assert "labels" not in meta
    out = tmp_path / "nolab"
    make_dataset("density-led", _dirs(population)[:1], out, {**SETTINGS, "with_labels": "false"}, seed=7)
    assert open_dataset(out).load_labels("train" if open_dataset(out).count("train") else "test") == (None, {})


def test_examples_are_density_tia_and_led_dose(population, reference):
    """Inputs are the patient's density and TIA at the patch, the target its LED dose."""
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.io.image import read_image
    from persodose.physics.materials import ct_to_density_and_materials

    folder = population / "p2"
    ct, tia = read_image(folder / "nifti/ct.nii.gz"), read_image(folder / "nifti/truth_tia.nii.gz")
    rho, _, _ = ct_to_density_and_materials(ct)
    dose = get_spec("led").run(DoseInputs(tia=tia, nuclide="Lu-177", density=rho)).dose.array
    x, y, metas, _ = read_shard(reference / "shard_00001.h5")
    for xi, yi, meta in zip(x, y, metas):
        z0, y0, x0 = meta["corner_zyx"]
        sl = (slice(z0, z0 + 8), slice(y0, y0 + 8), slice(x0, x0 + 8))
        assert np.array_equal(xi[0], rho.array[sl].astype(np.float32))
        assert np.array_equal(xi[1], tia.array[sl].astype(np.float32))
        assert np.array_equal(yi[0], dose[sl])
        assert rho.array[sl].max() >= 0.5  # the drawn centre (a dense voxel) stays inside its patch
    assert float(y.max()) > 0


def test_hdf5_writes_are_byte_identical(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 2, 4, 4, 4), dtype=np.float32), rng.random((2, 1, 4, 4, 4), dtype=np.float32)
    attrs = {"patient_id": "a", "patient_seed": -1, "example_seed": 1, "split": "train", "meta_json": "[]"}
    h1 = write_shard(tmp_path / "a.h5", x, y, attrs)
    time.sleep(1.1)  # HDF5 timestamps have a resolution of one second
    h2 = write_shard(tmp_path / "b.h5", x, y, attrs)
    assert h1 == h2 and (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_same_seed_same_bytes_other_seed_other_bytes(population, reference, tmp_path):
    make_dataset("density-led", _dirs(population), tmp_path / "again", SETTINGS, seed=7)
    assert _shard_bytes(tmp_path / "again") == _shard_bytes(reference)
    make_dataset("density-led", _dirs(population), tmp_path / "other", SETTINGS, seed=8)
    other = _shard_bytes(tmp_path / "other")
    assert all(other[k] != v for k, v in _shard_bytes(reference).items())


# --------------------------------------------------------------------------- splits
def test_split_is_by_patient_declared_or_by_rule(population, tmp_path):
    pop = tmp_path / "pop"
    for k, split in zip((1, 2, 3), ("test", "train", "val")):
        shutil.copytree(population / f"p{k}", pop / f"p{k}")
        m = json.loads((pop / f"p{k}" / "manifest.json").read_text())
        m["split"] = split
        (pop / f"p{k}" / "manifest.json").write_text(json.dumps(m))
    ds = make_dataset("density-led", _dirs(pop), tmp_path / "ds", SETTINGS, seed=1)
    assert {p["id"]: p["split"] for p in ds.patients} == {"p1": "test", "p2": "train", "p3": "val"}
    assert ds.split("train") == [tmp_path / "ds" / "shard_00001.h5"]
    assert ds.split("test") == [tmp_path / "ds" / "shard_00000.h5"]
    # every example of a patient is in that patient's split
    x, _ = ds.load_split("val")
    x3, _, _, _ = read_shard(tmp_path / "ds" / "shard_00002.h5")
    assert np.array_equal(x, x3)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        ds.split("dev")
    # the rule without a declared split: depends on the id only, fractions kept
    ids = [f"patient-{i}" for i in range(4000)]
    splits = [assign_split(i) for i in ids]
    assert splits == [assign_split(i) for i in ids]
    share = {s: splits.count(s) / len(ids) for s in dsm.SPLITS}
    assert abs(share["test"] - 0.1) < 0.02 and abs(share["val"] - 0.1) < 0.02
    assert assign_split("x", declared="test") == "test"
    assert {assign_split(i, val_fraction=0, test_fraction=0) for i in ids[:50]} == {"train"}


def test_split_from_the_population_file(population, tmp_path):
    """A population's own split (population.json beside the folders, its names) is kept."""
    pop = tmp_path / "pop"
    for k in (1, 2, 3):
        shutil.copytree(population / f"p{k}", pop / f"p{k}")
    m = json.loads((pop / "p3" / "manifest.json").read_text())
    (pop / "p3" / "manifest.json").write_text(json.dumps(dict(m, split="train")))  # the patient's own wins
    (pop / "population.json").write_text(json.dumps({
        "format": "persodose virtual population v1",
        "patients": [{"folder": "p1", "split": "validation"}, {"folder": "p2", "split": "test"},
                     {"folder": "p3", "split": "test"}]}))
    ds = make_dataset("density-led", _dirs(pop), tmp_path / "ds", SETTINGS, seed=1)
    assert {p["id"]: p["split"] for p in ds.patients} == {"p1": "val", "p2": "test", "p3": "train"}


def test_declared_split_must_be_known(population, tmp_path):
    shutil.copytree(population / "p1", tmp_path / "pop" / "p1")
    m = json.loads((tmp_path / "pop/p1/manifest.json").read_text())
    m["split"] = "holdout"
    (tmp_path / "pop/p1/manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="split 'holdout' is not one of train, val, test"):
        make_dataset("density-led", _dirs(tmp_path / "pop"), tmp_path / "ds", SETTINGS)


# --------------------------------------------------------------------------- resume
class _Killed(Exception):
    pass


def test_resume_after_kill_gives_the_same_bytes(population, reference, tmp_path):
    out = tmp_path / "ds"
    done = []

    def kill_after_first(entry):
        done.append(entry["shard"])
        raise _Killed()

    with pytest.raises(_Killed):
        make_dataset("density-led", _dirs(population), out, SETTINGS, seed=7, on_shard=kill_after_first)
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is False and [p["shard"] for p in m["patients"]] == done == ["shard_00000.h5"]
    with pytest.raises(InputError, match="incomplete") as err:
        open_dataset(out)
    assert "\n" not in str(err.value)
    assert len(open_dataset(out, allow_incomplete=True).patients) == 1
    kept = (out / "shard_00000.h5").stat().st_mtime_ns
    (out / ".shard_00001.h5.tmp-dead").write_bytes(b"half a shard")  # a killed writer's temporary file
    (out / "shard_00002.h5").write_bytes(b"renamed but not in the manifest")  # killed before the manifest
    ds = make_dataset("density-led", _dirs(population), out, SETTINGS, seed=7)
    assert ds.manifest["complete"] is True and len(ds.patients) == 3
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert (out / "shard_00000.h5").stat().st_mtime_ns == kept  # kept, not made again
    assert not list(out.glob(".*tmp-*"))
    ref = json.loads((reference / "manifest.json").read_text())
    assert [dict(p, source=None) for p in ds.patients] == [dict(p, source=None) for p in ref["patients"]]
    # a corrupt shard of a finished dataset is made again on the next run
    (out / "shard_00001.h5").write_bytes(b"garbage")
    make_dataset("density-led", _dirs(population), out, SETTINGS, seed=7)
    assert _shard_bytes(out) == _shard_bytes(reference)


def test_resume_refuses_other_arguments(population, reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    with pytest.raises(InputError, match="different seed"):
        make_dataset("density-led", _dirs(population), out, SETTINGS, seed=8)
    with pytest.raises(InputError, match="different settings"):
        make_dataset("density-led", _dirs(population), out, {"patch_voxels": 4}, seed=7)
    with pytest.raises(InputError, match="other patients"):
        make_dataset("density-led", _dirs(population)[:2], out, SETTINGS, seed=7)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        make_dataset("density-led", _dirs(population), foreign, SETTINGS, seed=7)


# --------------------------------------------------------------------------- Dask
def test_dask_local_cluster_is_bitwise_identical(population, reference, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    # two threads in one process: shards made side by side (this test failed about 1 run in 3
    # until write_shard stopped HDF5's chunk cache choosing the order chunks reach the file)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        ds = make_dataset("density-led", _dirs(population), tmp_path / "dask", SETTINGS, seed=7, scheduler=client)
    assert _shard_bytes(tmp_path / "dask") == _shard_bytes(reference)
    assert [p["sha256"] for p in ds.patients] == [p["sha256"] for p in open_dataset(reference).patients]


def test_dask_local_worker_processes_are_bitwise_identical(population, reference, tmp_path):
    """``scheduler="local"`` (``--dask local``): one single-threaded worker process per core."""
    pytest.importorskip("dask.distributed")
    make_dataset("density-led", _dirs(population), tmp_path / "procs", SETTINGS, seed=7, scheduler="local")
    assert _shard_bytes(tmp_path / "procs") == _shard_bytes(reference)


# --------------------------------------------------------------------------- refusals
def test_reader_refusals_are_one_line(reference, tmp_path):
    def refused(path, match):
        with pytest.raises(InputError, match=match) as err:
            open_dataset(path)
        assert "\n" not in str(err.value)

    refused(tmp_path, "is not a persodose dataset")
    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    shard = bad / "shard_00001.h5"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    refused(bad, "shard_00001.h5 of patient p2 is corrupt")
    assert len(open_dataset(bad, verify=False).patients) == 3  # the checksum is what caught it
    shard.unlink()
    refused(bad, "shard_00001.h5 of patient p2 is missing")
    m = json.loads((reference / "manifest.json").read_text())
    for fmt in ("persodose-dataset/2", None):
        other = tmp_path / f"fmt{fmt is None}"
        shutil.copytree(reference, other)
        (other / "manifest.json").write_text(json.dumps(dict(m, format=fmt)))
        refused(other, "is not a persodose-dataset/1 dataset")
    (other / "manifest.json").write_text("{not json")
    refused(other, "cannot be read")


def test_unknown_kind_lists_the_known():
    with pytest.raises(InputError, match="unknown dataset kind 'nope'; known: .*density-led"):
        get_kind("nope")


def test_kind_settings_are_validated():
    kind = get_kind("density-led")
    assert kind.make_settings({"patch_voxels": "4"}).patch_voxels == 4
    for bad in ({"patch_voxels": "1"}, {"energy": "photon"}, {"nope": "1"}, {"patches_per_patient": "x"}):
        with pytest.raises(InputError):
            kind.make_settings(bad)


def test_registering_a_kind(population, tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        n: int = 2

    KINDS.load()  # the built-in kinds, so that "density-led" is taken even in a fresh worker
    saved = KINDS.snapshot()
    try:
        @register_kind("test-ones", settings=Cfg, needs=("labels",))
        def ones(patient, settings, seed):
            lab = patient["labels"].array
            rng = np.random.default_rng(seed)
            return [(np.ones((1, 2, 2, 2), np.float32) * rng.random(), (lab[:2, :2, :2] > 0)[None], {})
                    for _ in range(settings.n)]

        ds = make_dataset("test-ones", _dirs(population)[:1], tmp_path / "ds", {"n": "4"}, seed=3)
        assert ds.patients[0]["n"] == 4 and ds.input_shape == (1, 2, 2, 2)
        with pytest.raises(ValueError, match="already registered"):
            register_kind("density-led", settings=Cfg)(ones)
        with pytest.raises(ValueError, match="unknown needs"):
            register_kind("x", settings=Cfg, needs=("pet",))

        @register_kind("test-bad", settings=Cfg)
        def bad(patient, settings, seed):
            return [(np.ones((2, 2, 2), np.float32), np.ones((1, 2, 2, 2), np.float32), {})]

        with pytest.raises(InputError, match=r"must be \(C, D, H, W\)"):
            make_dataset("test-bad", _dirs(population)[:1], tmp_path / "bad", None)
    finally:
        KINDS.restore(saved)


# --------------------------------------------------------------------------- CLI
def test_cli_make_and_info(cli, population, reference, tmp_path):
    out = tmp_path / "cli"
    r = cli("dataset", "make", "density-led", "--phantoms", population, "--out", out, "--seed", 7,
            "--option", "patch_voxels=8", "--option", "patches_per_patient=3")
    assert r.returncode == 0, r.stderr
    assert "3 patients" in r.stdout
    assert _shard_bytes(out) == _shard_bytes(reference)
    r = cli("dataset", "info", out)
    assert r.returncode == 0 and "density-led" in r.stdout and "[2, 8, 8, 8]" in r.stdout
    r = cli("dataset", "kinds")
    assert r.returncode == 0 and "density-led" in r.stdout and "patch_voxels" in r.stdout


@pytest.mark.parametrize("case", ["unknown-kind", "no-patient", "out-is-input", "out-in-input", "bad-option",
                                  "unknown-option", "not-a-dataset"])
def test_cli_bad_inputs_exit_2_one_line(cli, population, tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    make = ["dataset", "make", "density-led", "--phantoms", population, "--out", tmp_path / "o"]
    args, match = {
        "unknown-kind": (["dataset", "make", "nope", "--phantoms", population, "--out", tmp_path / "o"],
                         "unknown dataset kind 'nope'; known: ct-sp, density-led"),
        "no-patient": (["dataset", "make", "density-led", "--phantoms", empty, "--out", tmp_path / "o"],
                       "holds no patient folder"),
        "out-is-input": (["dataset", "make", "density-led", "--phantoms", population, "--out", population],
                         "outputs never replace or sit in inputs"),
        "out-in-input": (["dataset", "make", "density-led", "--phantoms", population, "--out", population / "p1" / "x"],
                         "sits inside the input --phantoms"),
        "bad-option": (make + ["--option", "patch_voxels"], "must read KEY=VALUE"),
        "unknown-option": (make + ["--option", "size=3"], "unknown setting"),
        "not-a-dataset": (["dataset", "info", empty], "is not a persodose dataset"),
    }[case]
    r = cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persodose: error:") and match in lines[0], r.stderr
    assert not (tmp_path / "o").exists()
