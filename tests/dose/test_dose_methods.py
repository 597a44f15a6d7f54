"""Tests of the classical internal-dose methods (LED, SSV, DSV, MSV, organ MIRD) and kernels."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.signal

from persodose.dose import (ActivityInAirWarning, DSVSettings, KernelSet, LEDSettings, MSVSettings, VoxelKernel,
                            available_methods, get_method, get_spec, read_octant_table, register_method,
                            write_octant_table)
from persodose.dose import registry
from persodose.dose.convolution import (clear_kernel_cache, fft_convolve, fft_convolve_many,
                                        kernel_cache_info, transform_shape)
from persodose.dose.kernels import (MSV_REFERENCE_DENSITIES_G_CM3, exponential_kernel, full_from_octant,
                                    local_deposition_kernel)
from persodose.dose.led import energy_per_decay_mev
from persodose.dose.msv import msv_bins
from persodose.dose.organ_mird import organ_doses, sphere_escape_probability, sphere_self_dose
from persodose.errors import GeometryError, InputError, UnitsError
from persodose.grid import Grid, Kind

NUCLIDE = "Lu-177"
VOXEL_MM = 4.0
SHAPE = (20, 22, 24)
RHO_ST = 1.04
BUILTIN = ("led", "ssv", "dsv", "msv")
#: Lu-177 energy per decay from ICRP Publication 107, MeV: electrons (beta-, IC, Auger), photons.
LU177_ELECTRON_MEV = 0.147923
LU177_PHOTON_MEV = 0.035098
MEV_J = 1.602176634e-13


# --------------------------------------------------------------------------- fixtures in code
def make(array, kind, spacing=VOXEL_MM) -> Grid:
    return Grid(np.asarray(array), (spacing,) * 3, (-10.0, 5.0, 2.0), np.eye(3), kind)


def tia_grid(array) -> Grid:
    return make(np.asarray(array, dtype=np.float32), Kind.TIA)


def density_grid(array) -> Grid:
    return make(np.asarray(array, dtype=np.float32), Kind.DENSITY)


def point_tia(value=1e9, at=(10, 11, 12), shape=SHAPE) -> np.ndarray:
    a = np.zeros(shape, dtype=np.float32)
    a[at] = value
    return a


def blob_tia(seed=0, shape=SHAPE) -> np.ndarray:
    """Random non-negative activity, zero within 6 voxels of the border."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, dtype=np.float32)
    inner = tuple(slice(6, n - 6) for n in shape)
    a[inner] = rng.random(a[inner].shape).astype(np.float32) * 1e8
    return a


def e_all() -> float:
    return energy_per_decay_mev(NUCLIDE, "all")


def kernel_set(scales=None) -> KernelSet:
    """Four MSV media with analytic kernels of different widths, same total energy."""
    scales = scales or {"lung": 5.0, "soft_tissue": 1.5, "bone_1": 1.0, "bone_2": 0.7}
    return KernelSet.of(
        exponential_kernel(e_all(), VOXEL_MM, MSV_REFERENCE_DENSITIES_G_CM3[m], scale_mm=s, half_width=4,
                           medium=m, nuclide=NUCLIDE)
        for m, s in scales.items())


def run(name, tia, density=None, kernels=None, settings=None):
    if kernels is None:
        kernels = kernel_set()
    if density is None:
        density = density_grid(np.full(tia.shape, RHO_ST))
    return get_method(name)(tia, nuclide=NUCLIDE, density=density, kernels=kernels, settings=settings)


def methods_under_test():
    """The classical methods, with analytic kernels (exact checks); every registered method,
    Monte Carlo and plug-ins included, runs the contract in tests/dose/test_contract.py."""
    return list(BUILTIN)


# --------------------------------------------------------------------------- registry
def test_builtin_methods_registered():
    assert set(BUILTIN) <= set(available_methods())
    assert get_method("SSV") is get_method("ssv")


def test_unknown_method_is_input_error():
    with pytest.raises(InputError, match="unknown dose method 'foo'.*led"):
        get_method("foo")


def test_register_new_method_and_refuse_name_clash(monkeypatch):
    saved = registry.METHODS.snapshot()
    monkeypatch.setattr(registry.METHODS, "_items", saved)

    @register_method("test_double")
    def double(tia, *, nuclide, density, kernels, settings=None):
        return tia.with_array(tia.array * 2, Kind.DOSE)

    assert "test_double" in available_methods()
    out = get_method("test_double")(tia_grid(np.ones((2, 2, 2))), nuclide=NUCLIDE, density=None, kernels=None)
    assert np.all(out.array == 2)
    with pytest.raises(ValueError, match="already registered"):
        register_method("led")(double)


def test_settings_from_mapping_strings_and_unknown_key():
    led = get_spec("led")
    assert led.make_settings({"energy": "electron"}).energy == "electron"
    assert led.make_settings({"air_threshold_g_cm3": "0.05"}).air_threshold_g_cm3 == 0.05  # parsed by type
    with pytest.raises(InputError, match="unknown setting.*led.enrgy.*energy"):
        led.make_settings({"enrgy": "all"})
    with pytest.raises(InputError, match="led.energy"):
        LEDSettings(energy="photons")
    msv = get_spec("msv").make_settings({"density_scaling": "true", "bin_edges_g_cm3": "0.5,1.2,1.6",
                                         "media": "lung,soft_tissue,bone_low,bone", "block_z": "none"})
    assert msv == MSVSettings(media=("lung", "soft_tissue", "bone_low", "bone"), bin_edges_g_cm3=(0.5, 1.2, 1.6),
                              density_scaling=True, block_z=None)
    with pytest.raises(InputError, match="msv.density_scaling.*maybe"):
        get_spec("msv").make_settings({"density_scaling": "maybe"})
    with pytest.raises(InputError, match="msv.block_z"):
        get_spec("msv").make_settings({"block_z": "ten"})
    assert registry.parse_method_options(["msv.density_scaling=true", "mc.decays=5"]) == {
        "msv": {"density_scaling": "true"}, "mc": {"decays": "5"}}
    with pytest.raises(InputError, match="METHOD.SETTING=VALUE"):
        registry.parse_method_options(["density_scaling=true"])


# --------------------------------------------------------------------------- properties, every method
@pytest.mark.parametrize("name", methods_under_test())
def test_zero_tia_gives_zero_dose(name):
    tia = tia_grid(np.zeros(SHAPE))
    dose = run(name, tia)
    assert dose.kind is Kind.DOSE and dose.unit == "Gy"
    assert dose.same_geometry(tia)
    assert dose.array.dtype == np.float32
    assert not np.any(dose.array)


@pytest.mark.parametrize("name", methods_under_test())
def test_dose_is_linear_in_tia(name):
    rng = np.random.default_rng(3)
    rho = rng.uniform(0.2, 2.0, SHAPE).astype(np.float32)
    a = blob_tia(1)
    d1 = run(name, tia_grid(a), density_grid(rho)).array
    d2 = run(name, tia_grid(2 * a), density_grid(rho)).array
    assert d1.max() > 0
    np.testing.assert_allclose(d2, 2 * d1, rtol=1e-5, atol=1e-6 * d1.max())
    # superposition
    b = blob_tia(2)
    db = run(name, tia_grid(b), density_grid(rho)).array
    dab = run(name, tia_grid(a + b), density_grid(rho)).array
    np.testing.assert_allclose(dab, d1 + db, rtol=1e-4, atol=1e-5 * dab.max())


@pytest.mark.parametrize("name", methods_under_test())
def test_homogeneous_soft_tissue_all_methods_agree_with_ssv(name):
    """Density 1.04 everywhere: DSV and MSV are SSV; with a local-deposition kernel LED is too."""
    a = blob_tia(4)
    ks = kernel_set()
    local = KernelSet.of([local_deposition_kernel(e_all(), VOXEL_MM, RHO_ST, nuclide=NUCLIDE)])
    kernels = local if name == "led" else ks
    ssv = run("ssv", tia_grid(a), kernels=kernels).array
    other = run(name, tia_grid(a), kernels=kernels).array
    assert ssv.max() > 0
    np.testing.assert_allclose(other, ssv, rtol=2e-5, atol=1e-6 * ssv.max())


# --------------------------------------------------------------------------- SSV
def test_ssv_shift_invariance():
    k = kernel_set()["soft_tissue"]
    d0 = run("ssv", tia_grid(point_tia(at=(8, 9, 10))), kernels=k).array
    d1 = run("ssv", tia_grid(point_tia(at=(10, 12, 11))), kernels=k).array
    np.testing.assert_allclose(d1[2:, 3:, 1:], d0[:-2, :-3, :-1], rtol=1e-5, atol=1e-7 * d0.max())
    # and the dose around the point is the kernel itself
    np.testing.assert_allclose(d0[4:13, 5:14, 6:15], k.gy_per_bq_s * 1e9, rtol=1e-4, atol=1e-6 * d0.max())
    assert d0.min() >= 0  # float32 FFT round-off below zero is clipped for non-negative activity


def test_ssv_conserves_energy_like_led():
    """A kernel summing to E / voxel mass puts the same total energy as LED in a large medium."""
    a = blob_tia(5)
    rho = np.full(SHAPE, RHO_ST, dtype=np.float32)
    mass_kg = RHO_ST * VOXEL_MM ** 3 / 1000.0 * 1e-3
    ssv = run("ssv", tia_grid(a)).array
    led = run("led", tia_grid(a), density_grid(rho)).array
    e_ssv = float(np.sum(ssv, dtype=np.float64)) * mass_kg
    e_led = float(np.sum(led, dtype=np.float64)) * mass_kg
    expected = float(a.sum(dtype=np.float64)) * e_all() * MEV_J
    assert e_led == pytest.approx(expected, rel=1e-5)
    assert e_ssv == pytest.approx(e_led, rel=1e-4)
    assert not np.allclose(ssv, led, rtol=0.01)  # spread out, not local


def test_ssv_ignores_density_and_refuses_missing_kernel():
    a = tia_grid(point_tia())
    d1 = run("ssv", a, density_grid(np.full(SHAPE, 0.3))).array
    d2 = run("ssv", a, density_grid(np.full(SHAPE, 1.9))).array
    np.testing.assert_array_equal(d1, d2)
    with pytest.raises(InputError, match="needs voxel S-value kernels"):
        get_method("ssv")(a, nuclide=NUCLIDE, density=None, kernels=None)
    lung_only = KernelSet.of([kernel_set()["lung"]])
    with pytest.raises(InputError, match="no 'soft_tissue' kernel"):
        get_method("ssv")(a, nuclide=NUCLIDE, density=None, kernels=lung_only)


# --------------------------------------------------------------------------- LED
def test_led_hand_computation():
    a = np.zeros(SHAPE, dtype=np.float32)
    a[3, 4, 5] = 2.5e9
    rho = np.full(SHAPE, 1.2, dtype=np.float32)
    mass_kg = 1.2 * (VOXEL_MM ** 3 / 1000.0) * 1e-3  # 0.0768 g
    d_all = run("led", tia_grid(a), density_grid(rho)).array
    d_el = run("led", tia_grid(a), density_grid(rho), settings={"energy": "electron"}).array
    hand_all = 2.5e9 * (LU177_ELECTRON_MEV + LU177_PHOTON_MEV) * MEV_J / mass_kg
    hand_el = 2.5e9 * LU177_ELECTRON_MEV * MEV_J / mass_kg
    assert d_all[3, 4, 5] == pytest.approx(hand_all, rel=1e-4)
    assert d_el[3, 4, 5] == pytest.approx(hand_el, rel=1e-4)
    assert np.count_nonzero(d_all) == 1


def test_led_needs_density():
    with pytest.raises(InputError, match="needs a density"):
        get_method("led")(tia_grid(point_tia()), nuclide=NUCLIDE, density=None, kernels=None)


# --------------------------------------------------------------------------- DSV
def test_dsv_scales_ssv_by_density():
    rng = np.random.default_rng(7)
    rho = rng.uniform(0.15, 2.0, SHAPE).astype(np.float32)
    rho[:, :, :3] = 0.05  # air, below the 0.1 g/cm3 threshold
    a = blob_tia(8)
    ssv = run("ssv", tia_grid(a)).array
    dsv = run("dsv", tia_grid(a), density_grid(rho)).array
    expected = np.where(rho < 0.1, 0.0, ssv * RHO_ST / rho)
    np.testing.assert_allclose(dsv, expected, rtol=1e-5, atol=1e-7 * ssv.max())
    assert np.all(dsv[:, :, :3] == 0)
    # another reference density and threshold from settings
    dsv2 = run("dsv", tia_grid(a), density_grid(rho),
               settings=DSVSettings(reference_density_g_cm3=1.0, air_threshold_g_cm3=0.01)).array
    np.testing.assert_allclose(dsv2, ssv / rho, rtol=1e-5, atol=1e-7 * ssv.max())


# --------------------------------------------------------------------------- MSV
def _tissue_phantom():
    rho = np.full(SHAPE, RHO_ST, dtype=np.float32)
    rho[:, :, :8] = 0.3  # lung
    rho[:, :, 16:20] = 1.35  # bone_1
    rho[:, :, 20:] = 1.85  # bone_2
    return rho


def test_msv_picks_the_kernel_of_each_density_bin():
    ks = kernel_set()
    media, edges = msv_bins(ks)
    assert media == ["lung", "soft_tissue", "bone_1", "bone_2"]
    np.testing.assert_allclose(edges, [0.65, 1.22, 1.66])
    rho = _tissue_phantom()
    a = blob_tia(9)
    msv = run("msv", tia_grid(a), density_grid(rho), kernels=ks).array
    ref = {m: scipy.signal.fftconvolve(a.astype(np.float64), ks[m].gy_per_bq_s.astype(np.float64), mode="same")
           for m in media}
    lung = rho == np.float32(0.3)
    assert lung.sum() > 0
    np.testing.assert_allclose(msv[lung], ref["lung"][lung], rtol=1e-4, atol=1e-6 * msv.max())
    # the lung dose is not the soft-tissue one
    assert np.max(np.abs(ref["lung"][lung] - ref["soft_tissue"][lung])) > 0.05 * msv.max()
    for m, val in (("soft_tissue", RHO_ST), ("bone_1", 1.35), ("bone_2", 1.85)):
        sel = rho == np.float32(val)
        np.testing.assert_allclose(msv[sel], ref[m][sel], rtol=1e-4, atol=1e-6 * msv.max())
    # optional density scaling within each bin
    scaled = run("msv", tia_grid(a), density_grid(rho), kernels=ks,
                 settings={"density_scaling": True}).array
    np.testing.assert_allclose(scaled[lung], ref["lung"][lung] * 0.26 / 0.3, rtol=1e-4, atol=1e-6 * msv.max())


def test_msv_custom_edges_and_bad_edges():
    ks = kernel_set()
    rho = _tissue_phantom()
    a = blob_tia(10)
    # every tissue voxel in the soft-tissue bin
    d = run("msv", tia_grid(a), density_grid(rho), kernels=ks,
            settings={"bin_edges_g_cm3": (0.11, 5.0, 6.0)}).array
    ssv = run("ssv", tia_grid(a), kernels=ks).array
    np.testing.assert_allclose(d, ssv, rtol=1e-4, atol=1e-6 * ssv.max())
    with pytest.raises(InputError, match="3 density edge"):
        run("msv", tia_grid(a), density_grid(rho), kernels=ks, settings={"bin_edges_g_cm3": (0.5, 1.0)})


# --------------------------------------------------------------------------- air
@pytest.mark.parametrize("name", ["led", "dsv", "msv"])
def test_activity_in_air_warns_and_gets_no_dose(name):
    rho = np.full(SHAPE, RHO_ST, dtype=np.float32)
    rho[10, 11, 12] = 0.0012
    with pytest.warns(ActivityInAirWarning, match="activity in air"):
        d = run(name, tia_grid(point_tia(at=(10, 11, 12))), density_grid(rho)).array
    assert d[10, 11, 12] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d2 = run(name, tia_grid(point_tia(at=(5, 5, 5))), density_grid(rho)).array
    assert d2[10, 11, 12] == 0 and d2.max() > 0


# --------------------------------------------------------------------------- input errors
def test_bad_inputs_raise_persodose_errors():
    a = point_tia()
    act = make(a, Kind.ACTIVITY)
    with pytest.raises(UnitsError, match="time-integrated activity"):
        run("led", act)
    bad = a.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        run("ssv", tia_grid(bad))
    other = Grid(np.ones(SHAPE, np.float32), (VOXEL_MM,) * 3, (0.0, 0.0, 0.0), np.eye(3), Kind.DENSITY)
    with pytest.raises(GeometryError):
        run("dsv", tia_grid(a), other)
    with pytest.raises(InputError, match="negative"):
        run("led", tia_grid(a), density_grid(np.full(SHAPE, -1.0)))
    ks = KernelSet.of([exponential_kernel(e_all(), VOXEL_MM, nuclide="Y-90")])
    with pytest.raises(InputError, match="Y-90"):
        run("ssv", tia_grid(a), kernels=ks)


# --------------------------------------------------------------------------- kernels
def test_kernel_for_another_voxel_size_is_refused():
    k4 = exponential_kernel(e_all(), 4.0, half_width=2)
    tia3 = make(point_tia().astype(np.float32), Kind.TIA, spacing=3.0)
    with pytest.raises(InputError, match=r"4 mm.*3 mm"):
        get_method("ssv")(tia3, nuclide=NUCLIDE, density=None, kernels=k4)


def test_kernel_units_and_energy():
    k = exponential_kernel(e_all(), VOXEL_MM, RHO_ST, half_width=3)
    np.testing.assert_allclose(k.gy_per_bq_s, k.s_mgy_per_mbq_s * 1e-9, rtol=1e-6)
    assert k.energy_per_decay_mev() == pytest.approx(e_all(), rel=1e-5)
    s0 = local_deposition_kernel(1.0, 2.0, 1.0).s_mgy_per_mbq_s[0, 0, 0]
    # 1 MeV in 8 mg: 1.602e-13 J / 8e-6 kg = 2.0027e-8 Gy per decay = 20.027 mGy/(MBq s)
    assert s0 == pytest.approx(1.602176634e-13 / 8e-6 / 1e-9, rel=1e-6)
    with pytest.raises(InputError, match="odd"):
        VoxelKernel(np.ones((4, 5, 5)), 4.0)
    with pytest.raises(InputError, match="negative"):
        VoxelKernel(-np.ones((3, 3, 3)), 4.0)


def test_full_from_octant_mirrors():
    o = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    f = full_from_octant(o)
    assert f.shape == (3, 5, 7)
    assert f[1, 2, 3] == o[0, 0, 0]
    assert f[0, 0, 0] == o[1, 2, 3] == f[2, 4, 6] == f[0, 4, 0]
    np.testing.assert_array_equal(f, f[::-1, ::-1, ::-1])


def test_octant_table_round_trip(tmp_path):
    k = exponential_kernel(e_all(), 4.42, 1.04, half_width=3, nuclide=NUCLIDE)
    path = write_octant_table(k, tmp_path / "lu177_4.42mm.txt")
    back = read_octant_table(path, 4.42)
    np.testing.assert_allclose(back.s_mgy_per_mbq_s, k.s_mgy_per_mbq_s, rtol=1e-7)
    assert back.voxel_mm == (4.42, 4.42, 4.42)
    assert back.nuclide == "Lu-177" and back.medium == "soft_tissue" and back.density_g_cm3 == 1.04
    with pytest.raises(InputError, match=r"4.42 mm.*4 mm"):
        read_octant_table(path, 4.0)


def test_octant_table_published_style_and_errors(tmp_path):
    p = tmp_path / "table.txt"
    lines = ["# Voxel size 3 mm", "# units: mGy/(MBq s)"]
    lines += [f"{i} {j} {k} {1.0 / (1 + i + 2 * j + 3 * k):.6e}" for k in range(3) for j in range(3) for i in range(3)]
    p.write_text("\n".join(lines) + "\n")
    k = read_octant_table(p, 3.0, nuclide="177Lu")
    assert k.shape == (5, 5, 5)
    # i counts along x (last axis), k along z (first axis)
    assert k.s_mgy_per_mbq_s[2, 2, 4] == pytest.approx(1 / 3)
    assert k.s_mgy_per_mbq_s[4, 2, 2] == pytest.approx(1 / 7)
    with pytest.raises(InputError, match="3 mm.*4 mm"):
        read_octant_table(p, 4.0)
    p.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError, match="misses 1"):
        read_octant_table(p, 3.0)
    p.write_text("# units: Gy/(Bq s)\n0 0 0 1.0\n")
    with pytest.raises(UnitsError):
        read_octant_table(p, 3.0)
    p.write_text("0 0 -1 1.0\n")
    with pytest.raises(InputError, match=">= 0"):
        read_octant_table(p, 3.0)
    with pytest.raises(InputError, match="not found"):
        read_octant_table(tmp_path / "missing.txt", 3.0)


def test_kernel_set_refuses_mixed_voxel_sizes():
    with pytest.raises(GeometryError, match="different voxel sizes"):
        KernelSet({"a": exponential_kernel(1.0, 4.0, half_width=1), "b": exponential_kernel(1.0, 3.0, half_width=1)})


# --------------------------------------------------------------------------- convolution
@pytest.mark.parametrize("vshape,kshape,block_z", [
    ((17, 30, 41), (9, 9, 9), None),
    ((17, 30, 41), (7, 5, 9), 4),
    ((6, 8, 10), (15, 13, 11), None),   # kernel larger than the volume
    ((12, 9, 10), (4, 6, 5), None),     # even sizes, as scipy centres them
    ((12, 9, 10), (4, 6, 5), 5),
])
def test_fft_convolve_equals_scipy(vshape, kshape, block_z):
    rng = np.random.default_rng(11)
    v = rng.random(vshape, dtype=np.float32)
    k = rng.random(kshape, dtype=np.float32)
    ref = scipy.signal.fftconvolve(v.astype(np.float64), k.astype(np.float64), mode="same")
    out = fft_convolve(v, k, block_z=block_z)
    assert out.shape == vshape and out.dtype == np.float32
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_fft_convolve_many_and_kernel_cache():
    rng = np.random.default_rng(12)
    v = rng.random((10, 12, 14), dtype=np.float32)
    ks = [rng.random((5, 5, 5), dtype=np.float32) for _ in range(3)]
    clear_kernel_cache()
    outs = fft_convolve_many(v, ks)
    for k, o in zip(ks, outs):
        ref = scipy.signal.fftconvolve(v, k, mode="same")
        assert np.max(np.abs(o - ref)) <= 1e-5 * np.max(np.abs(ref))
    info = kernel_cache_info()
    assert info["misses"] == 3 and info["entries"] == 3
    fft_convolve(2 * v, ks[0])
    assert kernel_cache_info()["hits"] == 1
    assert transform_shape((130, 512, 512), (99, 99, 99))[0] < 130 + 98  # shorter than "full"
    with pytest.raises(InputError):
        fft_convolve(v[0], ks[0])
    with pytest.raises(InputError, match="backend"):
        fft_convolve(v, ks[0], backend="cupy")


def test_fft_convolve_torch_matches_scipy():
    pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    v = rng.random((9, 11, 13), dtype=np.float32)
    k = rng.random((5, 7, 5), dtype=np.float32)
    ref = scipy.signal.fftconvolve(v, k, mode="same")
    out = fft_convolve(v, k, backend="torch", device="cpu")
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


# --------------------------------------------------------------------------- organ MIRD
def test_sphere_escape_probability_limits_and_monte_carlo():
    assert sphere_escape_probability(0.0) == pytest.approx(1.0)
    assert sphere_escape_probability(1e-3) == pytest.approx(1 - 0.75e-3, rel=1e-6)
    assert sphere_escape_probability(200.0) == pytest.approx(3 / 800, rel=1e-3)
    # continuity at the series switch
    assert sphere_escape_probability(0.00999) == pytest.approx(sphere_escape_probability(0.01001), rel=1e-4)
    # Monte Carlo: uniform points in a unit sphere, isotropic directions, tau = 1
    rng = np.random.default_rng(0)
    n = 200_000
    p = rng.normal(size=(n, 3))
    p *= (rng.random(n) ** (1 / 3) / np.linalg.norm(p, axis=1))[:, None]
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    pu = np.sum(p * u, axis=1)
    dist = -pu + np.sqrt(pu ** 2 + 1 - np.sum(p * p, axis=1))
    assert float(np.mean(np.exp(-dist))) == pytest.approx(float(sphere_escape_probability(1.0)), abs=3e-3)


def _sphere_phantom(radius_vox=5.0):
    z, y, x = np.indices(SHAPE)
    c = np.array(SHAPE) / 2.0 - 0.5
    inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius_vox ** 2
    labels = make(inside.astype(np.uint8) * 3, Kind.LABELS)
    tia = tia_grid(np.where(inside, 2e8, 0.0))
    rho = density_grid(np.full(SHAPE, RHO_ST))
    return inside, labels, tia, rho


def test_organ_mird_uniform_sphere_vs_led_mean():
    inside, labels, tia, rho = _sphere_phantom()
    pytest.importorskip("xraylib")
    led_all = run("led", tia, rho).array[inside].mean(dtype=np.float64)
    led_el = run("led", tia, rho, settings={"energy": "electron"}).array[inside].mean(dtype=np.float64)
    (none,) = organ_doses(tia, labels, rho, NUCLIDE, photon_model="none", label_names={3: "tumour"},
                          lesion_labels=[3])
    assert none.name == "tumour" and none.kind == "lesion" and none.label == 3
    assert none.mass_g == pytest.approx(inside.sum() * 0.064 * RHO_ST, rel=1e-6)
    assert none.dose_gy == pytest.approx(led_el, rel=1e-5)
    (sph,) = organ_doses(tia, labels, rho, NUCLIDE)
    assert led_el < sph.dose_gy < led_all
    assert 0 < sph.photon_absorbed_fraction < 0.2
    (chord,) = organ_doses(tia, labels, rho, NUCLIDE, photon_model="mean_chord")
    assert chord.photon_absorbed_fraction > sph.photon_absorbed_fraction  # 4/3 mu R vs 3/4 mu R
    # the stand-alone sphere model gives the same number
    alone = sphere_self_dose(sph.tia_bq_s, sph.mass_g, NUCLIDE, density_g_cm3=RHO_ST)
    assert alone.dose_gy == pytest.approx(sph.dose_gy, rel=1e-9)


def test_organ_mird_photon_fraction_grows_with_mass():
    pytest.importorskip("xraylib")
    fr = [sphere_self_dose(1e9, m, "Tc-99m").photon_absorbed_fraction for m in (1.0, 100.0, 3000.0)]
    assert fr[0] < fr[1] < fr[2] < 1.0
    with pytest.raises(InputError):
        sphere_self_dose(1e9, -1.0, NUCLIDE)
    _, labels, tia, rho = _sphere_phantom()
    with pytest.raises(InputError, match="photon model"):
        organ_doses(tia, labels, rho, NUCLIDE, photon_model="exact")
    with pytest.raises(UnitsError):
        organ_doses(tia, rho, rho, NUCLIDE)
    assert math.isfinite(fr[0])
