"""The ``kernels`` dataset kind, the ``kernel-dnn`` network and the ``dnn`` dose method."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from persodose.dl.dataset_kinds.kernels import SYMMETRIES, apply_symmetry, source_classes  # noqa: E402
from persodose.dl.datasets import make_dataset, open_dataset  # noqa: E402
from persodose.dl.kernel_dnn import CONTEXT, WINDOW, far_field_weights, kernel_features  # noqa: E402
from persodose.dose.dnn import _far_kernel, near_field_dose  # noqa: E402
from persodose.errors import InputError  # noqa: E402

TINY = {"nuclide": "F-18", "decays": "4000", "reference_decays": "40000", "kernels_per_patient": "4",
        "anchors_per_patient": "2", "symmetries": "2"}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """Two tiny virtual patients (12 mm voxels)."""
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("kpop")
    for k, split in ((1, "train"), (2, "val")):
        write_virtual_patient(make_virtual_patient(voxel_mm=12, seed=k), root / f"p{k}")
        man = json.loads((root / f"p{k}" / "manifest.json").read_text())
        (root / f"p{k}" / "manifest.json").write_text(json.dumps({**man, "split": split}))
    return root


@pytest.fixture(scope="module")
def dataset(population, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kcache")
    mp = pytest.MonkeyPatch()
    mp.setenv("PERSODOSE_CACHE", str(cache))
    try:
        out = tmp_path_factory.mktemp("kds") / "ds"
        make_dataset("kernels", sorted(p for p in population.iterdir() if p.is_dir()), out, TINY, seed=5)
        yield open_dataset(out)
    finally:
        mp.undo()


def _examples(ds):
    return [ex for split in ("train", "val", "test") for ex in ds.iter_examples(split)]


def test_kernel_examples_shapes_classes_and_copies(dataset):
    exs = _examples(dataset)
    assert len(exs) == 2 * (4 + 2) * 2
    assert dataset.input_shape == (2, CONTEXT, CONTEXT, CONTEXT) and dataset.target_shape == (WINDOW ** 3, 1, 1, 1)
    metas = [m for _, _, m in exs]
    assert {m["class"] for m in metas} <= {"bone", "lung", "interface", "soft", "homogeneous"}
    assert sum(m["class"] == "homogeneous" for m in metas) == 2 * 2 * 2
    assert [m["symmetry"] for m in metas[:2]][0] == 0  # the identity first
    for x, y, m in exs:
        assert np.all(np.isfinite(y)) and np.all(y >= 0)
        assert abs(x[0, 5, 5, 5] - m["density_g_cm3"]) < 1e-3  # the context is centred on the source
        assert m["unc_centre"] < 0.05 and m["decays"] == 4000


def test_local_deposition_limit_at_large_voxels(dataset):
    """At 12 mm voxels of soft tissue or bone a positron deposits nearly all its energy in its own
    voxel, so the centre's energy ratio to the soft-tissue kernel is about 1 (its dose ratio about
    1.04 / rho); in lung (12 mm of 0.2 g/cm3: 2.4 mm of water) positrons leave the voxel and the
    centre receives less."""
    checked = 0
    for x, y, m in _examples(dataset):
        centre = y.reshape((WINDOW,) * 3)[3, 3, 3]
        if m["class"] in ("homogeneous", "soft", "bone") and m["density_g_cm3"] >= 0.9:
            checked += 1
            assert centre == pytest.approx(1.0, rel=0.1), m
        elif m["class"] in ("homogeneous", "lung") and m["density_g_cm3"] < 0.4:
            assert 0.3 < centre < 0.9, m
    assert checked >= 4


def test_symmetric_copies_transform_context_and_window_alike(dataset):
    exs = _examples(dataset)
    for (x0, y0, m0), (x1, y1, m1) in zip(exs[::2], exs[1::2]):
        assert m0["centre_zyx"] == m1["centre_zyx"] and m0["symmetry"] == 0
        sym = SYMMETRIES[m1["symmetry"]]
        assert np.array_equal(apply_symmetry(x0, sym, lead=1), x1)
        assert np.array_equal(apply_symmetry(y0.reshape((WINDOW,) * 3), sym).reshape(-1, 1, 1, 1), y1)


def test_apply_symmetry_moves_a_marked_voxel():
    a = np.zeros((3, 4, 5))
    a[0, 1, 3] = 1
    b = apply_symmetry(a, ((2, 0, 1), (True, False, False)))
    assert b.shape == (5, 3, 4) and b[4 - 3, 0, 1] == 1 and b.sum() == 1  # new axes (x, z, y), the first reflected


def test_source_classes():
    rho = np.full((9, 9, 9), 1.0, np.float32)
    rho[:, :, :3] = 0.26
    rho[0, 0, 8] = 1.9
    rho[8, 8, 8] = 0.001
    cls = source_classes(rho)
    assert cls[4, 4, 0] == 1 and cls[4, 4, 6] == 3 and cls[8, 8, 8] == -1
    assert cls[4, 4, 2] == 2 and cls[4, 4, 3] == 2  # both sides of the lung border
    assert cls[0, 0, 8] == 2  # bone voxel next to soft tissue: an interface


def test_network_on_a_map_equals_the_network_on_each_context():
    from persodose.dl.networks import build_network

    torch.manual_seed(0)
    spec, _, model = build_network("kernel-dnn", {"width": 8, "rank": 6})
    model.eval()
    rho = np.random.default_rng(1).uniform(0.2, 1.9, (13, 12, 14)).astype(np.float32)
    f = kernel_features(rho)
    with torch.no_grad():
        whole = model(torch.from_numpy(f[None]))[0].numpy()
        assert whole.shape == (WINDOW ** 3, 3, 2, 4)
        one = model(torch.from_numpy(f[None, :, 2:13, 1:12, 3:14]))[0, :, 0, 0, 0].numpy()
    np.testing.assert_allclose(whole[:, 2, 1, 3], one, rtol=1e-5, atol=1e-6)


def _random_model(width=6, rank=5, seed=0):
    from persodose.dl.networks import apply_scales, build_network

    torch.manual_seed(seed)
    _, _, model = build_network("kernel-dnn", {"width": width, "rank": rank})
    apply_scales(model, [1.3, 2.0], np.linspace(0.5, 2.0, WINDOW ** 3))
    return model.eval()


def test_near_field_scatters_each_source_window_to_its_targets():
    """The factorised sum (rank + 1 convolutions) equals each source's own 343 energy ratios
    scattered one by one onto its targets (times 1.04 / rho of the target), the network run on
    that source's context alone."""
    rng = np.random.default_rng(3)
    rho = rng.uniform(0.5, 1.5, (9, 10, 8)).astype(np.float32)
    a = np.zeros(rho.shape, np.float32)
    a[4, 5, 3], a[0, 0, 7], a[8, 9, 0], a[8, 1, 1] = 2.0, 1.0, 3.0, 0.5
    k = rng.uniform(1.0, 3.0, (WINDOW,) * 3).astype(np.float32)
    model = _random_model()
    got = near_field_dose(model, a, rho, k, chunk_slices=3)
    feats = kernel_features(np.pad(rho, 5, constant_values=0.0012))
    want = np.zeros(a.shape)
    h = WINDOW // 2
    for s in np.argwhere(a > 0):
        z, y, x = s
        with torch.no_grad():
            r = model(torch.from_numpy(feats[None, :, z:z + 11, y:y + 11, x:x + 11]))[0, :, 0, 0, 0].numpy()
        for i in range(WINDOW ** 3):
            t = s + np.array([i // 49, (i // 7) % 7, i % 7]) - h
            if np.all(t >= 0) and np.all(t < a.shape):
                want[tuple(t)] += a[tuple(s)] * k.reshape(-1)[i] * r[i] * 1.04 / rho[tuple(t)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_unit_ratios_in_soft_tissue_give_the_soft_tissue_convolution():
    """Energy ratios of 1 in 1.04 g/cm3 (the homogeneous soft-tissue answer) turn near + far into plain SSV."""
    from persodose.dose.convolution import fft_convolve_many

    rng = np.random.default_rng(4)
    a = rng.uniform(0, 1, (12, 11, 13)).astype(np.float32)
    rho = np.full(a.shape, 1.04, np.float32)
    kern = rng.uniform(0.1, 1.0, (9, 9, 9)).astype(np.float32)
    full, far = _far_kernel(kern)
    model = _random_model()
    with torch.no_grad():
        model.core.basis.weight.zero_()
        model.core.basis.bias.copy_(1.0 / model.target_scale.reshape(-1))
    near = near_field_dose(model, a, rho, full[1:8, 1:8, 1:8])
    total = near + fft_convolve_many(a, [far])[0] * far_field_weights("F-18", rho)
    np.testing.assert_allclose(total, fft_convolve_many(a, [full])[0], rtol=1e-4, atol=1e-5)


def test_far_field_weights_follow_mu_en():
    rho = np.array([0.05, 0.26, 1.04, 1.4, 1.92], np.float32)
    w = far_field_weights("F-18", rho)
    assert w[0] == 0 and w[2] == pytest.approx(1.0)
    assert 0.98 < w[1] < 1.02  # lung: soft tissue of lower density, same mu_en/rho within 1 %
    assert 0.9 < w[4] < w[3] < 1.0  # bone: fewer electrons per gram (Compton at 511 keV)
    assert np.all(far_field_weights("Y-90", rho)[1:] == 1.0)  # no photons: the soft-tissue kernel as it is


def test_dnn_refuses_a_nuclide_without_weights():
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.grid import Kind, make_grid

    g = make_grid((8, 8, 8), (3.0, 3.0, 3.0), kind=Kind.TIA, fill=1.0)
    with pytest.raises(InputError, match="shipped weights for"):
        get_spec("dnn").run(DoseInputs(tia=g, nuclide="Y-90", density=g.with_array(np.ones(g.shape), Kind.DENSITY)),
                            None)


def test_kind_settings_are_checked():
    from persodose.dl.dataset_kinds.kernels import KernelSettings

    with pytest.raises(InputError, match="fractions"):
        KernelSettings(fractions=(1, 1))
    with pytest.raises(InputError, match="symmetries"):
        KernelSettings(symmetries=49)
    assert KernelSettings(fractions="1,0,0,1").fractions == (1.0, 0.0, 0.0, 1.0)


def test_trained_weights_run_as_the_dnn_method(dataset, tmp_path, monkeypatch):
    """``persodose train kernel-dnn`` on the tiny dataset, then the ``dnn`` method with those weights:
    finite, linear in the activity, zero in air, and the voxel size the weights say."""
    from persodose.dl.train import TrainSettings, train
    from persodose.dose.kernels import KernelSet
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.grid import Kind, make_grid
    from persodose.mc.kernels import cached_kernel

    monkeypatch.setenv("PERSODOSE_CACHE", str(tmp_path / "cache"))
    res = train("kernel-dnn", dataset.path, tmp_path / "w.pt", TrainSettings(epochs=1, batch_size=4, seed=0),
                network_settings={"width": 4})
    side = json.loads(res.sidecar.read_text())
    assert side["voxel_mm"] == 12.0 and side["dataset_settings"]["nuclide"] == "F-18"
    rho = np.full((10, 10, 10), 1.0, np.float32)
    rho[:, :, :2] = 0.001
    rho[:, :, 7:] = 1.6
    a = np.zeros(rho.shape, np.float32)
    a[3:7, 3:7, 3:7] = 1e6
    g = make_grid(rho.shape, (12.0,) * 3, kind=Kind.TIA)
    kern = KernelSet.of([cached_kernel("F-18", 12.0, "soft_tissue", 9, 20_000)])
    spec = get_spec("dnn")

    def dose(scale):
        return spec.run(DoseInputs(tia=g.with_array(a * scale, Kind.TIA), nuclide="F-18",
                                   density=g.with_array(rho, Kind.DENSITY), kernels=kern),
                        {"weights": str(res.weights)})

    one, two = dose(1.0), dose(2.0)
    plain = spec.run(DoseInputs(tia=g.with_array(a, Kind.TIA), nuclide="F-18", density=g.with_array(rho, Kind.DENSITY),
                                kernels=kern), {"weights": str(res.weights), "far_weights": "none"})
    far_bone = (slice(None), slice(None), slice(8, None))  # bone voxels: the far field of distant sources reaches them
    w = far_field_weights("F-18", rho[far_bone])
    assert np.all(w < 1)  # F-18 in bone: mu_en/rho below soft tissue's
    np.testing.assert_array_less(np.asarray(one.dose.array)[far_bone], np.asarray(plain.dose.array)[far_bone])
    with pytest.raises(InputError, match="far_weights"):
        spec.make_settings({"far_weights": "spectrum"})
    # lung voxels take their far field (beyond the 7^3 window) from the lung kernel, unweighted;
    # every other voxel is the same with either choice
    rl = rho.copy()
    rl[:, :, 2:4] = 0.26
    lungs = KernelSet.of([kern["soft_tissue"], cached_kernel("F-18", 12.0, "lung", 9, 20_000)])
    tia1 = g.with_array(a, Kind.TIA)
    by = {lf: np.asarray(spec.run(DoseInputs(tia=tia1, nuclide="F-18", density=g.with_array(rl, Kind.DENSITY),
                                             kernels=lungs), {"weights": str(res.weights), "lung_far": lf}).dose.array)
          for lf in ("lung", "soft_tissue")}
    from persodose.dose.convolution import fft_convolve_many
    from persodose.dose.dnn import _far_kernel

    def far_of(k):
        return fft_convolve_many(a, [_far_kernel(k.gy_per_bq_s)[1]])[0]

    lung_vox = (rl >= 0.1) & (rl < 0.65)
    want = far_of(lungs["lung"]) - far_of(lungs["soft_tissue"]) * far_field_weights("F-18", rl)
    pos = lung_vox & (by["lung"] > 0) & (by["soft_tissue"] > 0)  # the untrained net's dose, clipped at 0, aside
    assert pos.sum() > 0.5 * lung_vox.sum()
    np.testing.assert_allclose((by["lung"] - by["soft_tissue"])[pos], want[pos], rtol=1e-4,
                               atol=1e-6 * float(by["lung"].max()))
    assert np.array_equal(by["lung"][~lung_vox], by["soft_tissue"][~lung_vox])
    assert np.abs(want[lung_vox]).max() > 0  # the test would see a lung kernel that changed nothing
    assert spec.media(spec.make_settings({})) == ("soft_tissue", "lung")
    assert spec.media(spec.make_settings({"lung_far": "soft_tissue"})) == ("soft_tissue",)
    with pytest.raises(InputError, match="lung_far=lung needs the lung kernel"):
        spec.run(DoseInputs(tia=tia1, nuclide="F-18", density=g.with_array(rl, Kind.DENSITY), kernels=kern),
                 {"weights": str(res.weights)})
    with pytest.raises(InputError, match="lung_far"):
        spec.make_settings({"lung_far": "bone"})
    d1 = np.asarray(one.dose.array)
    assert np.all(np.isfinite(d1)) and d1.max() > 0 and d1.min() >= 0 and np.all(d1[:, :, :2] == 0)
    np.testing.assert_allclose(np.asarray(two.dose.array), 2 * d1, rtol=1e-5, atol=1e-12)
    assert one.info["network_voxel_mm"] == 12.0 and not one.info["resampled"]
    # another voxel: the TIA is brought to the network's 12 mm (total kept) and the dose back
    g8 = make_grid((15, 15, 15), (8.0,) * 3, kind=Kind.TIA)
    a8 = np.zeros(g8.shape, np.float32)
    a8[5:10, 5:10, 5:10] = 1e6
    r8 = spec.run(DoseInputs(tia=g8.with_array(a8, Kind.TIA), nuclide="F-18",
                             density=g8.with_array(np.full(g8.shape, 1.04, np.float32), Kind.DENSITY),
                             kernels=KernelSet.of([cached_kernel("F-18", 8.0, "soft_tissue", 9, 20_000)])),
                  {"weights": str(res.weights)})
    assert r8.info["resampled"] and r8.info["network_voxel_mm"] == 12.0
    d8 = np.asarray(r8.dose.array)
    assert np.all(np.isfinite(d8)) and d8.min() >= 0 and d8.max() > 0
    # weights whose energy ratios are 1 everywhere: in 1.04 g/cm3 the whole method (window, far
    # field, mu_en weights, energy-to-dose factor) must give SSV's dose
    state = torch.load(res.weights, weights_only=True)
    state["core.basis.weight"].zero_()
    state["core.basis.bias"].copy_(1.0 / state["target_scale"].reshape(-1))
    unit = tmp_path / "unit.pt"
    torch.save(state, unit)
    (tmp_path / "unit.pt.json").write_text(json.dumps({k: v for k, v in side.items() if k != "sha256"}))
    soft = g.with_array(np.full(rho.shape, 1.04, np.float32), Kind.DENSITY)
    tia = g.with_array(a, Kind.TIA)
    got = spec.run(DoseInputs(tia=tia, nuclide="F-18", density=soft, kernels=kern), {"weights": str(unit)})
    ssv = get_spec("ssv").run(DoseInputs(tia=tia, nuclide="F-18", density=soft, kernels=kern), None)
    np.testing.assert_allclose(np.asarray(got.dose.array), np.asarray(ssv.dose.array), rtol=1e-4,
                               atol=1e-6 * float(np.max(ssv.dose.array)))
    bare = {k: v for k, v in side.items() if k != "sha256"}
    bare["dataset_settings"] = {**bare["dataset_settings"], "nuclide": ""}
    (tmp_path / "unit.pt.json").write_text(json.dumps(bare))
    with pytest.raises(InputError, match="do not say the nuclide"):
        spec.run(DoseInputs(tia=tia, nuclide="F-18", density=soft, kernels=kern), {"weights": str(unit)})
    with pytest.raises(InputError, match="trained for F-18, not Lu-177"):
        spec.run(DoseInputs(tia=g.with_array(a, Kind.TIA), nuclide="Lu-177", density=g.with_array(rho, Kind.DENSITY),
                            kernels=kern), {"weights": str(res.weights)})


def test_network_declarations_are_checked():
    from persodose.dl.networks import register_network

    with pytest.raises(ValueError, match="channel_window"):
        register_network("x-window", lambda s: None, dataset_kind="kernels", in_channels=2, out_channels=343,
                         channel_window=(7, 7, 6))
    with pytest.raises(ValueError, match="output_crop"):
        register_network("x-crop", lambda s: None, dataset_kind="kernels", in_channels=2, out_channels=1,
                         output_crop=-1)


def test_dataset_shapes_must_fit_the_crop():
    from persodose.dl.networks import check_shapes, get_network

    spec = get_network("kernel-dnn")
    check_shapes(spec, (2, 11, 11, 11), (343, 1, 1, 1))
    check_shapes(spec, (2, 15, 13, 11), (343, 5, 3, 1))
    with pytest.raises(InputError, match="less 5 voxel"):
        check_shapes(spec, (2, 11, 11, 11), (343, 11, 11, 11))


def test_border_sources_are_soft_tissue_beside_bone_or_lung(population, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSODOSE_CACHE", str(tmp_path / "cache"))
    opts = {**TINY, "border_fraction": "1", "anchors_per_patient": "0", "symmetries": "1"}
    ds = open_dataset(make_dataset("kernels", sorted(p for p in population.iterdir() if p.is_dir()),
                                   tmp_path / "ds", opts, seed=5).path)
    exs = _examples(ds)
    assert len(exs) == 2 * 4 and {m["class"] for _, _, m in exs} == {"border"}
    for x, _, m in exs:
        ctx = x[0, 4:7, 4:7, 4:7]  # the source's 3x3x3 neighbourhood
        assert 0.65 <= m["density_g_cm3"] < 1.2
        assert ctx.max() >= 1.2 or ((ctx >= 0.1) & (ctx < 0.65)).any()
    with pytest.raises(InputError, match="border_fraction"):
        from persodose.dl.dataset_kinds.kernels import KernelSettings

        KernelSettings(border_fraction=1.5)
