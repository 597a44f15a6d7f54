"""Deep-dose CT: the ``ct-sp`` inputs (rotation, CF), the ``ct-deepdose`` network, the whole-body
sum and ``persodose ct --method dl``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from persodose.ct.deepdose import (UniformMap, conversion_factor, crop_slices, position_inputs,  # noqa: E402
                                   single_position)
from persodose.errors import InputError  # noqa: E402
from persodose.grid import Grid, Kind  # noqa: E402

VOXEL = 12.0
TINY = {"kvp": "120", "voxel_mm": str(VOXEL), "positions_per_patient": "3", "photons_per_map": "20000",
        "uniform_photons": "100000", "depth": "9", "patch": "16", "patches_per_map": "1"}


def _positions(n_per_rotation=8, start=0.0, kvp=120.0):
    from persodose.ct.acquisition import acquisition_from_dicom
    from persodose.ct.scanner import guess_scanner
    from persodose.ct.trajectory import helical_positions
    from persodose.workflows.ct import _series_for

    g = Grid(np.zeros((10, 8, 8), np.float32), (VOXEL,) * 3, (-42.0, -42.0, -60.0), kind=Kind.CT)
    acq = acquisition_from_dicom(_series_for(g, None), {"kvp": kvp, "pitch": 1.0, "total_collimation_mm": 40.0,
                                                        "rotation_time_s": 0.5, "tube_current_ma": 100.0,
                                                        "bowtie": "body"})
    return helical_positions(acq, guess_scanner(None, None), n_per_rotation=n_per_rotation, start_angle_rad=start)


def _water_slab(shape=(9, 21, 21), radius_vox=6.0):
    nz, ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    disc = (yy - ny // 2) ** 2 + (xx - nx // 2) ** 2 <= radius_vox ** 2
    rho = np.where(disc[None], 1.0, 0.0).astype(np.float32) * np.ones((nz, 1, 1), np.float32)
    origin = (-(nx // 2) * VOXEL, -(ny // 2) * VOXEL, -(nz // 2) * VOXEL)
    return Grid(rho, (VOXEL,) * 3, origin, kind=Kind.DENSITY, unit="g/cm3")


def test_rotated_cylinder_map_follows_the_focal_spot():
    """A synthetic cylinder map hot at the anterior side (y < 0, the focal spot at angle 0) must be
    hot at the focal spot's side at any angle: +x at 90 degrees (focal spot at x = xc + R sin)."""
    pos = _positions()
    n = 21
    zz, yy, xx = np.mgrid[:9, :n, :n] - np.array([4, n // 2, n // 2])[:, None, None, None]
    dose = np.exp(-((yy + 6) ** 2 + xx ** 2) / 8.0 - zz ** 2 / 4.0).astype(np.float32)
    umap = UniformMap(dose, VOXEL, 1, 0.0, {})
    density = _water_slab()
    near = np.flatnonzero(np.abs(pos.position_xyz_mm[:, 2]) < 2 * VOXEL)
    assert near.size >= 4
    for k in near:
        th = float(pos.gantry_angle_rad[k]) % (2 * math.pi)
        p = position_inputs(density, pos, k, umap, depth=9)
        u = p["uniform"][4]
        iy, ix = np.unravel_index(np.argmax(u), u.shape)
        xc, yc = pos.isocentre_xy_mm
        fx, fy = pos.position_xyz_mm[k, :2]
        hot = density.index_to_physical(np.array([[4, iy, ix]], float))[0]
        # the hot spot lies between the isocentre and the focal spot, about 6 voxels out
        direction = np.array([fx - xc, fy - yc]) / math.hypot(fx - xc, fy - yc)
        along = np.dot(hot[:2] - np.array([xc, yc]), direction)
        across = abs(np.cross(direction, hot[:2] - np.array([xc, yc])))
        assert along == pytest.approx(6 * VOXEL, abs=1.5 * VOXEL), (th, hot)
        assert across <= 1.5 * VOXEL, (th, hot)
        assert p["cf"] > 1.0


def test_conversion_factor_is_one_at_the_cylinder_surface_and_grows_with_the_air_gap():
    """CF = 1 when the patient's skin is where the 715 mm cylinder's is; larger when it lies
    farther from the source, between exp(mu(E_max) d) and exp(mu(E_min) d) of water."""
    from persodose.ct.deepdose import CYLINDER_DIAMETER_MM, _water_mu_per_mm

    pos = single_position(_positions(), 0)
    r = float(pos.source_to_isocentre_mm)
    for radius_mm, want_delta in ((CYLINDER_DIAMETER_MM / 2, 0.0), (150.0, CYLINDER_DIAMETER_MM / 2 - 150.0)):
        n = int(2 * radius_mm / VOXEL) + 5
        n += 1 - n % 2
        g = _water_slab((3, n, n), radius_mm / VOXEL)
        cf, delta = conversion_factor(pos, 0, g)
        assert delta == pytest.approx(want_delta, abs=VOXEL)
        if want_delta == 0:
            assert cf == pytest.approx(1.0, abs=0.1)
        else:
            e = np.asarray(pos.spectrum.energy_mev)
            lo, hi = math.exp(_water_mu_per_mm(np.array([e.max()]))[0] * delta), \
                math.exp(_water_mu_per_mm(np.array([e.min()]))[0] * delta)
            assert lo < cf < hi
    assert r > CYLINDER_DIAMETER_MM / 2


def test_separable_sampling_equals_trilinear_interpolation():
    rng = np.random.default_rng(1)
    umap = UniformMap(rng.random((11, 15, 15)).astype(np.float32), VOXEL, 1, 0.0, {})
    xy = rng.uniform(-6.5 * VOXEL, 6.5 * VOXEL, (200, 2))
    z = rng.uniform(-4.5 * VOXEL, 4.5 * VOXEL, 5)
    pts = np.concatenate([np.broadcast_to(xy[None], (5, 200, 2)), np.broadcast_to(z[:, None, None], (5, 200, 1))], 2)
    np.testing.assert_allclose(umap.sample_separable(xy, z), umap.sample(pts), rtol=1e-5, atol=1e-6)
    assert np.all(umap.sample_separable(np.array([[0.0, 20 * VOXEL]]), np.array([0.0, 9 * VOXEL])) == 0)


def test_crop_slices_marks_the_padding():
    k, v = crop_slices(5, 0, 5)
    assert k.tolist() == [0, 0, 0, 1, 2] and v.tolist() == [False, False, True, True, True]


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """Two tiny virtual patients (12 mm voxels), one train and one val."""
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("ctpop")
    for k, split in ((1, "train"), (2, "val")):
        write_virtual_patient(make_virtual_patient(voxel_mm=VOXEL, seed=k), root / f"p{k}")
        man = json.loads((root / f"p{k}" / "manifest.json").read_text())
        (root / f"p{k}" / "manifest.json").write_text(json.dumps({**man, "split": split}))
    return root


@pytest.fixture(scope="module")
def trained(population, tmp_path_factory):
    """The tiny ``ct-sp`` dataset and one epoch of a narrow ``ct-deepdose`` on it."""
    from persodose.dl.datasets import make_dataset, open_dataset
    from persodose.dl.train import TrainSettings, train

    base = tmp_path_factory.mktemp("ctds")
    mp = pytest.MonkeyPatch()
    mp.setenv("PERSODOSE_CACHE", str(base / "cache"))
    try:
        make_dataset("ct-sp", sorted(p for p in population.iterdir() if p.is_dir()), base / "ds", TINY, seed=3)
        res = train("ct-deepdose", base / "ds", base / "w.pt", TrainSettings(epochs=1, batch_size=2, seed=0, threads=1),
                    network_settings={"width_1": 4, "width_2": 4, "width_4": 4, "head": 4}, show_progress=False)
        yield open_dataset(base / "ds"), res, base / "cache"
    finally:
        mp.undo()


def test_ct_sp_examples(trained):
    ds, _, _ = trained
    exs = [ex for split in ("train", "val") for ex in ds.iter_examples(split)]
    assert len(exs) == 2 * 3
    assert ds.input_shape == (2, 9, 16, 16) and ds.target_shape == (1, 9, 16, 16)
    for x, y, m in exs:
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and y.min() >= 0
        assert np.all(y[0][x[0] < 0.05] == 0)  # air is zero in the target
        assert m["cf"] > 1 and m["photons"] == 20000 and 0 < m["energy_inside_crop"] <= 1
        # the cylinder map x CF and the patient's MC are of the same order in the beam's body voxels
        beam = (x[0] >= 0.9) & (x[1] > 0.3 * x[1].max())
        if beam.sum() > 20:
            ratio = np.median(y[0][beam] / x[1][beam])
            assert 0.2 < ratio < 5, ratio


def test_untrained_network_gives_the_cylinder_map_in_the_body():
    """The linear head starts at zero: SP = SP_uniform x CF in the body, 0 in air; the head is a plain convolution."""
    from persodose.dl.networks import build_network

    _, _, model = build_network("ct-deepdose", {"width_1": 4, "width_2": 4, "width_4": 4, "head": 4})
    head = model.core.net.blocks[-1]
    assert isinstance(head, torch.nn.Conv3d) and head.kernel_size == (1, 1, 1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 21  # 20 of the network (19 3x3x3 + the 1x1x1) + the linear head
    dil = [m.dilation[0] for m in convs if m.kernel_size == (3, 3, 3)]
    assert dil.count(1) == 7 and dil.count(2) == 6 and dil.count(4) == 6
    x = torch.rand(2, 2, 9, 12, 12)
    x[:, 0, :, :, :3] = 0.0  # air
    with torch.no_grad():
        y = model(x)
    np.testing.assert_allclose(y.numpy()[:, 0], (x[:, 1] * (x[:, 0] >= 0.05)).numpy(), rtol=1e-5)


def test_whole_body_sum_is_linear_in_the_currents_and_has_tails(trained, population):
    from persodose.ct.deepdose import uniform_map
    from persodose.ct.dose import patient_phantom
    from persodose.dl.ct_deepdose import whole_body_dose
    from persodose.dl.evaluate import _load_model
    from persodose.dl.dataset_kinds.ct_sp import scan_positions
    from persodose.io.load import load_ct

    ds, res, cache = trained
    ct, _ = load_ct(population / "p1" / "nifti" / "ct.nii.gz")
    phantom, _ = patient_phantom(ct, VOXEL)
    man = json.loads((population / "p1" / "manifest.json").read_text())
    _, _, pos = scan_positions(ct, man, 120.0, 8, 0.0)
    mp = pytest.MonkeyPatch()
    mp.setenv("PERSODOSE_CACHE", str(cache))
    try:
        umap = uniform_map(pos, VOXEL, 97, 100_000)
    finally:
        mp.undo()
    _, model, _, _ = _load_model("ct-deepdose", res.weights, None, "cpu")
    model.eval()
    sel = np.arange(len(pos)) % 7 == 0
    pos = dataclasses.replace(pos, **{k: getattr(pos, k)[sel] for k in ("position_xyz_mm", "gantry_angle_rad",
                                                                      "table_z_mm", "direction_xyz", "collimation_mm",
                                                                      "weight", "time_s", "start_index")}, _tables={})
    w = np.linspace(1.0, 2.0, len(pos))
    both = whole_body_dose(model, phantom.density, pos, umap, np.stack([w, 2 * w]), 9, 97)
    one = whole_body_dose(model, phantom.density, pos, umap, w, 9, 97)
    slab = whole_body_dose(model, phantom.density, pos, umap, w, 9, 0)
    np.testing.assert_allclose(both[0], one, rtol=1e-6)
    np.testing.assert_allclose(both[1], 2 * one, rtol=1e-6)
    assert np.all(one >= slab) and one.sum() > 1.05 * slab.sum()  # the tails add dose beyond the slabs
    assert np.all(one[np.asarray(phantom.density.array) < 0.05] == 0)
    with pytest.raises(InputError, match="weights for"):
        whole_body_dose(model, phantom.density, pos, umap, w[:-1], 9, 0)


def test_ct_method_dl_end_to_end_and_refusals(trained, population, tmp_path, capsys):
    from tests.ct.test_ct_dose import _assert_one_line_error, _run_cli

    _, res, cache = trained
    p = population / "p2"
    names = json.loads((p / "manifest.json").read_text())["label_names"]
    (tmp_path / "names.json").write_text(json.dumps(names))
    mp = pytest.MonkeyPatch()
    mp.setenv("PERSODOSE_CACHE", str(cache))
    try:
        base = ["ct", "--ct", str(p / "ct"), "--labels", str(p / "nifti/labels.nii.gz"), "--label-names",
                str(tmp_path / "names.json"), "--ctdi-photons", "30000", "--batches", "3", "--dose-voxel-mm", "12",
                "--method", "dl", "--weights", str(res.weights)]
        code, out, err = _run_cli(base + ["--out", str(tmp_path / "o")], capsys)
        assert code in (0, None), err
        doc = json.loads((tmp_path / "o" / "organs.json").read_text())
        liver = {r["name"]: r for r in doc["rows"]}["liver"]
        assert liver["mass_weighted_mean_Gy"] > 0 and liver["uncertainty_percent"] is None
        prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
        assert prov["statistics"]["method"] == "dl" and prov["statistics"]["n_per_rotation"] == 8
        assert not (tmp_path / "o" / "uncertainty.nii.gz").exists()
        code, _, err = _run_cli(base[:-2] + ["--kvp", "100", "--out", str(tmp_path / "o2")], capsys)
        _assert_one_line_error(code, err, "no ct-deepdose weights for 100 kV")
        code, _, err = _run_cli(base + ["--kvp", "90", "--out", str(tmp_path / "o3")], capsys)
        _assert_one_line_error(code, err, "for 120 kV", "90 kV")
        code, _, err = _run_cli(base[:-6] + ["--dose-voxel-mm", "10", *base[-4:], "--out", str(tmp_path / "o4")], capsys)
        _assert_one_line_error(code, err, "12 mm dose grid")
        code, _, err = _run_cli(base[:-4] + ["--method", "nn", "--out", str(tmp_path / "o5")], capsys)
        _assert_one_line_error(code, err, "--method must be mc or dl")
        for d in ("o2", "o3", "o4", "o5"):
            assert not (tmp_path / d).exists()
    finally:
        mp.undo()
