"""DblurDoseNet: the network's sliding window, residual and mask, and the dose method."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from persodose.dl.dblurdosenet import HALF_WINDOW, DblurDoseNetSettings, unet_levels  # noqa: E402
from persodose.dl.networks import build_network, get_network  # noqa: E402
from persodose.errors import InputError  # noqa: E402
from persodose.grid import Grid, Kind  # noqa: E402

TINY = {"features_3d": 2, "first_filters": 4, "max_filters": 8, "levels": 2}


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    _, _, model = build_network("dblurdosenet", {**TINY, **kw})
    return model.eval()


def _sample(d=14, h=20, w=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, d, h, w, generator=g)
    x[:, 1] = 1.6 * x[:, 1]  # densities 0..1.6 g/cm3, some below the 0.1 air mask
    return x


def test_paper_levels_and_registration():
    assert unet_levels(DblurDoseNetSettings()) == [16, 32, 64, 128, 128]
    spec = get_network("dblurdosenet")
    assert (spec.in_channels, spec.out_channels, spec.depth_margin, spec.dataset_kind) == (3, 1, 5, "spect-doserate")
    with pytest.raises(InputError, match="mode"):
        DblurDoseNetSettings(mode="4d")


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_whole_stack_equals_the_sliding_window_of_11_slice_packs(mode):
    model = _net(mode=mode)
    x = _sample()
    d = x.shape[2]
    with torch.no_grad():
        whole = model(x)
        for z in (0, 3, 7, d - 1):
            idx = np.clip(np.arange(z - HALF_WINDOW, z + HALF_WINDOW + 1), 0, d - 1)  # replicated end slices
            pack = model.normalised(x[:, :, idx], margin=HALF_WINDOW) * model.target_scale
            assert pack.shape[2] == 1
            torch.testing.assert_close(whole[:, :, z], pack[:, :, 0], rtol=1e-5, atol=1e-6)


def test_margin_gives_the_inner_slices():
    model = _net()
    x = _sample(d=18)
    with torch.no_grad():
        inner = model.normalised(x, margin=5)
        whole = model.normalised(x)
    assert inner.shape[2] == 8
    torch.testing.assert_close(inner, whole[:, :, 5:13], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="margin"):
        model.normalised(x, margin=3)


def test_residual_adds_the_dsv_channel_and_air_is_zero():
    model = _net()
    with torch.no_grad():
        for p in model.core.unet.head.parameters():
            p.zero_()
        x = _sample()
        y = model(x)
    air = x[:, 1:2] < 0.1
    assert torch.all(y[air] == 0) and air.any()
    torch.testing.assert_close(y[~air], x[:, 2:3][~air])
    plain = _net(residual=False)
    with torch.no_grad():
        for p in plain.core.unet.head.parameters():
            p.zero_()
        assert torch.count_nonzero(plain(x)) == 0


def test_any_in_plane_size_is_padded_and_cropped_back():
    model = _net()
    with torch.no_grad():
        y = model(_sample(h=13, w=29))
    assert tuple(y.shape) == (2, 1, 14, 13, 29)


def test_scale_rule_keeps_density_and_ties_dsv_to_the_target():
    spec = get_network("dblurdosenet")
    s_in, s_out = spec.scale_rule(np.array([3.0, 0.9, 7.0]), np.array([5.0]))
    assert list(s_in) == [3.0, 1.0, 5.0] and list(s_out) == [5.0]


# --------------------------------------------------------------------------- the dose method
def _weights(tmp_path, voxel_mm=4.8):
    model = _net(seed=3)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    from persodose.dl.weights_registry import sha256_file

    side = {"network": "dblurdosenet", "network_settings": {**DblurDoseNetSettings().__dict__, **TINY},
            "sha256": sha256_file(path), "voxel_mm": voxel_mm}
    (tmp_path / "tiny.pt.json").write_text(json.dumps(side))
    return path


def _patient(voxel=4.8, shape=(20, 24, 24)):
    rho = np.full(shape, 1.04, np.float32)
    rho[:, :, :3] = 0.001  # air at one side
    rho[8:12, 8:16, 8:16] = 1.6  # bone
    a = np.zeros(shape, np.float32)
    a[6:12, 6:14, 10:18] = 2e6
    density = Grid(rho, (voxel,) * 3, kind=Kind.DENSITY)
    return density, a


def _inputs(density, a, times=(4 * 3600.0, 24 * 3600.0, 96 * 3600.0)):
    from persodose.dose.kernels import KernelSet
    from persodose.dose.registry import DoseInputs
    from persodose.dose.kernels import exponential_kernel
    from persodose.dose.led import energy_per_decay_mev

    lam = np.log(2) / (159.5 * 3600)
    acts = tuple(density.with_array(a * np.exp(-lam * t), Kind.ACTIVITY) for t in times)
    tia = density.with_array(a / lam, Kind.TIA)
    k = exponential_kernel(energy_per_decay_mev("Lu-177"), density.spacing_zyx_mm, medium="soft_tissue")
    return DoseInputs(tia, "Lu-177", density=density, kernels=KernelSet.of([k]), activities=acts, times_s=times)


def test_method_integrates_the_dose_rates_and_scales_with_activity(tmp_path):
    from persodose.dose.registry import get_spec

    w = _weights(tmp_path)
    density, a = _patient()
    spec = get_spec("dblurdosenet")
    out = spec.run(_inputs(density, a), {"weights": str(w)})
    d = out.dose.array
    assert out.dose.kind is Kind.DOSE and np.all(np.isfinite(d)) and np.all(d >= 0)
    assert np.all(d[density.array < 0.1] == 0)
    assert out.info["integration"] == "voxel-wise mono" and not out.info["resampled"]
    twice = spec.run(_inputs(density, 2 * a), {"weights": str(w)}).dose.array
    np.testing.assert_allclose(twice, 2 * d, rtol=1e-4, atol=1e-12 * float(d.max()))
    zero = spec.run(_inputs(density, 0 * a), {"weights": str(w)}).dose.array
    assert not np.any(zero)


def test_chunking_does_not_change_the_dose_rate(tmp_path):
    from persodose.dose.dblurdosenet import dose_rate_map

    model = _net(seed=4)
    density, a = _patient()
    dsv = a * 1e-12
    r1 = dose_rate_map(model, a, density.array, dsv, chunk_slices=3)
    r2 = dose_rate_map(model, a, density.array, dsv, chunk_slices=64)
    np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-9 * float(r2.max()))


def test_method_on_another_voxel_size_resamples(tmp_path):
    from persodose.dose.registry import get_spec

    w = _weights(tmp_path)
    density, a = _patient(voxel=4.0, shape=(24, 28, 28))
    out = get_spec("dblurdosenet").run(_inputs(density, a), {"weights": str(w)})
    assert out.info["resampled"] and out.dose.same_geometry(density)
    assert np.all(np.isfinite(out.dose.array))


def test_method_refuses_a_tia_alone_and_missing_weights(tmp_path):
    from persodose.dose.registry import DoseInputs, get_spec

    density, a = _patient()
    with pytest.raises(InputError, match="time point"):
        get_spec("dblurdosenet").run(DoseInputs(density.with_array(a, Kind.TIA), "Lu-177", density=density),
                                     {"weights": "x"})
    with pytest.raises(InputError):
        get_spec("dblurdosenet").run(_inputs(density, a), {"weights": str(tmp_path / "none.pt")})
    import dataclasses

    with pytest.raises(InputError, match="Lu-177 SPECT only, not F-18"):
        get_spec("dblurdosenet").run(dataclasses.replace(_inputs(density, a), nuclide="F-18"), {"weights": "x"})


# --------------------------------------------------------------------------- the dataset kind
KIND_OPTIONS = {"slab_slices": "14", "crop_voxels": "16", "slabs_per_frame": "2", "frames": "2,4",
                "camera": "blur", "decays": "40000", "mc_batches": "4"}


@pytest.fixture(scope="module")
def kind_dataset(tmp_path_factory):
    pytest.importorskip("h5py")
    from persodose.dl.datasets import make_dataset
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("lu")
    write_virtual_patient(make_virtual_patient(voxel_mm=12, seed=3), root / "p3")
    out = tmp_path_factory.mktemp("ds") / "ds"
    make_dataset("spect-doserate", [root / "p3"], out, KIND_OPTIONS, seed=5)
    return root, out


def test_spect_doserate_examples(kind_dataset):
    from persodose.dl.datasets import open_dataset

    _, out = kind_dataset
    ds = open_dataset(out)
    assert ds.input_shape == (3, 14, 16, 16) and ds.target_shape == (1, 14, 16, 16)
    split = ds.patients[0]["split"]
    x, y = ds.load_split(split)
    metas = ds.metas(split)
    assert x.shape[0] == 4 and [m["frame"] for m in metas] == [2, 2, 4, 4]
    for xi, yi, m in zip(x, y, metas):
        assert np.all(yi[0][xi[1] < 0.1] == 0)  # no dose rate in air
        assert m["spect_total_mbq"] > 0 and 3e6 <= m["spect_counts"] <= 2e7 and m["decays"] == 40000
        assert np.all(np.isfinite(xi)) and np.all(xi[0] >= 0)
        body = xi[1] > 0.5
        # the DSV rate and the MC rate of the true activity are the same order in the body
        assert 0.2 < xi[2][body].sum() / yi[0][body].sum() < 5.0
    assert metas[0]["camera"]["model"] == "blur"


def test_spect_doserate_is_reproducible_and_refuses_fdg(kind_dataset, tmp_path):
    from persodose.dl.datasets import make_dataset, read_shard
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root, out = kind_dataset
    again = tmp_path / "again"
    make_dataset("spect-doserate", [root / "p3"], again, KIND_OPTIONS, seed=5)
    a, b = read_shard(out / "shard_00000.h5"), read_shard(again / "shard_00000.h5")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    write_virtual_patient(make_virtual_patient(tracer="fdg", voxel_mm=12, seed=1), tmp_path / "fdg")
    with pytest.raises(InputError, match="Lu-177"):
        make_dataset("spect-doserate", [tmp_path / "fdg"], tmp_path / "bad", KIND_OPTIONS, seed=5)


def test_spect_doserate_settings_are_checked():
    from persodose.dl.dataset_kinds.spect_doserate import SpectDoseRateSettings

    with pytest.raises(InputError, match="crop_voxels"):
        SpectDoseRateSettings(crop_voxels=40)
    with pytest.raises(InputError, match="camera"):
        SpectDoseRateSettings(camera="pinhole")
    with pytest.raises(InputError):
        SpectDoseRateSettings(views=-1)


def test_training_ties_the_scales_and_records_the_voxel(kind_dataset, tmp_path):
    from persodose.dl.train import TrainSettings, train

    _, out = kind_dataset
    from persodose.dl.datasets import open_dataset

    ds = open_dataset(out)
    if not ds.count("train") or not ds.count("val"):  # one patient: give it both roles through a copy
        import json as _json
        import shutil

        two = tmp_path / "two"
        shutil.copytree(out, two)
        m = _json.loads((two / "manifest.json").read_text())
        shutil.copy(two / m["patients"][0]["shard"], two / "shard_val.h5")
        m["patients"][0]["split"] = "train"
        m["patients"].append({**m["patients"][0], "id": "copy", "split": "val", "shard": "shard_val.h5"})
        (two / "manifest.json").write_text(_json.dumps(m))
        out = two
    res = train("dblurdosenet", out, tmp_path / "w.pt", TrainSettings(epochs=1, batch_size=2, threads=1),
                network_settings=TINY, show_progress=False)
    side = json.loads(res.sidecar.read_text())
    s_in, s_out = side["input_scale"], side["target_scale"]
    assert s_in[1] == 1.0 and s_in[2] == pytest.approx(s_out[0]) and s_in[0] != 1.0
    assert side["voxel_mm"] == pytest.approx(12.0) and side["dataset_settings"]["camera"] == "blur"
    assert np.isfinite(side["final_validation_loss"])


def test_samples_must_be_deeper_than_the_margins():
    from persodose.dl.networks import check_shapes

    spec = get_network("dblurdosenet")
    with pytest.raises(InputError, match="leaves 5 slices"):
        check_shapes(spec, (3, 10, 16, 16), (1, 10, 16, 16))
    check_shapes(spec, (3, 12, 16, 16), (1, 12, 16, 16))


# --------------------------------------------------------------------------- the shipped weights
def test_shipped_weights_are_registered_with_their_provenance():
    from persodose.dl.weights_registry import WEIGHTS_DIR, get_weights, verify_weights
    from persodose.dose.dblurdosenet import DEFAULT_WEIGHTS

    v = verify_weights(DEFAULT_WEIGHTS)
    entry = get_weights(DEFAULT_WEIGHTS)
    assert entry.network == "dblurdosenet" and "train_dblurdosenet.py" in entry.training_command
    side = json.loads((WEIGHTS_DIR / f"{entry.file}.json").read_text())
    assert side["sha256"] == v.sha256 == entry.sha256 and side["voxel_mm"] == pytest.approx(4.8)
    assert (WEIGHTS_DIR / side["data_manifest_file"]).is_file()
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.pt"))
    assert total <= 20 * 2 ** 20  # all shipped networks together at most 20 MB


@pytest.fixture(scope="module")
def canonical_patient_frame():
    """The built-in patient (seed 0, never in a training population) at 4.8 mm, its 24 h frame:
    the true activity, a blur-model SPECT of it (seeded) and the density."""
    from persodose.phantoms import make_virtual_patient
    from persodose.phantoms.spect_camera import SPECTCamera, simulate_spect, spect_to_ct_grid

    vp = make_virtual_patient(voxel_mm=4.8, seed=0)
    truth = vp.truth_activity[1]
    density = vp.density
    spect = spect_to_ct_grid(simulate_spect(truth, density, SPECTCamera(model="blur"), total_counts=1e7,
                                            rng=np.random.default_rng(1)), truth)
    return vp, truth, spect, density


def test_shipped_network_undoes_the_spect_blur_in_the_kidneys(canonical_patient_frame):
    """Held-out check of the shipped weights: the kidneys' mean dose rate from the SPECT is nearer
    the dose rate of the true activity than DSV's (the reference here is DSV on the true activity,
    within a few per cent of Monte Carlo for Lu-177 in soft tissue; docs/validation_dl.md has the
    Monte Carlo figures)."""
    from persodose.dl.dataset_kinds.spect_doserate import dsv_dose_rate
    from persodose.dose.dblurdosenet import DEFAULT_WEIGHTS, _load, dose_rate_map

    vp, truth, spect, density = canonical_patient_frame
    rho = np.asarray(density.array, np.float32)
    ref = np.asarray(dsv_dose_rate(truth, density, "Lu-177").array)
    dsv = np.asarray(dsv_dose_rate(spect.with_array(spect.array, Kind.ACTIVITY), density, "Lu-177").array, np.float32)
    model, _, _ = _load(DEFAULT_WEIGHTS, "cpu")
    cnn = dose_rate_map(model, np.asarray(spect.array, np.float32), rho, dsv)
    lab = np.asarray(vp.labels.array)
    by = {n: k for k, n in vp.label_names.items()}
    for organ in ("kidney_left", "kidney_right"):
        m = lab == by[organ]
        e_dsv = abs(dsv[m].mean() / ref[m].mean() - 1)
        e_cnn = abs(cnn[m].mean() / ref[m].mean() - 1)
        assert e_dsv > 0.1  # the blur costs DSV more than 10 % here
        assert e_cnn <= 0.5 * e_dsv, (organ, e_cnn, e_dsv)


def test_normalisation_field_follows_the_spect_extent():
    from persodose.dose.dblurdosenet import dose_rate_map

    model = _net(seed=5)
    density, a = _patient(shape=(30, 24, 24))
    a[:] = 0
    a[10:19, 6:14, 10:18] = 2e6  # a SPECT 9 slices long inside a 30-slice grid
    dsv = a * 1e-12
    short = dose_rate_map(model, a, density.array, dsv, chunk_slices=8, field_slices=12)
    whole = dose_rate_map(model, a, density.array, dsv, chunk_slices=8, field_slices=None)
    np.testing.assert_allclose(short, whole, rtol=1e-5, atol=1e-9 * float(whole.max()))
    a[:] = 1e5  # longer than the field: normalised chunk by chunk, still exactly scale-equivariant
    d1 = dose_rate_map(model, a, density.array, a * 1e-12, chunk_slices=8, field_slices=12)
    d3 = dose_rate_map(model, 3 * a, density.array, 3 * a * 1e-12, chunk_slices=8, field_slices=12)
    np.testing.assert_allclose(d3, 3 * d1, rtol=1e-4, atol=1e-9 * float(d3.max()))
