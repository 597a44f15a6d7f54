"""The far field of a capped kernel (persodose.dose.far_field, persodose.mc.kernels.cached_kernel)."""

import numpy as np
import pytest

from persodose.dose.convolution import fft_convolve
from persodose.dose.far_field import FarField, aligned_half, box_fractions, coarse_factor, coarse_size
from persodose.dose.kernels import VoxelKernel
from persodose.errors import InputError

V = 4.0  # fine voxel, mm
F = 3  # coarse factor


def _g(r_mm):
    """A smooth radial kernel (attenuated inverse square, finite at 0)."""
    return np.exp(-r_mm / 60.0) / (r_mm ** 2 + 16.0)


def _fine_kernel(half: int) -> np.ndarray:
    i = np.arange(-half, half + 1) * V
    z, y, x = np.meshgrid(i, i, i, indexing="ij")
    return _g(np.sqrt(z * z + y * y + x * x))


def _coarse_kernel(n: int) -> np.ndarray:
    """The fine kernel's values averaged over each coarse voxel's F^3 fine voxels (as a Monte Carlo
    kernel at the coarse voxel would hold the mean dose over its voxel)."""
    h = n // 2
    fine = _fine_kernel(h * F + F // 2)
    return fine.reshape(n, F, n, F, n, F).mean(axis=(1, 3, 5))


def test_box_fractions_are_the_overlap_volumes():
    w = box_fractions(5, 10.0, 12.0)  # coarse voxels centred at 0, +-10, +-20 mm; the cube reaches 12 mm
    assert w[2, 2, 2] == pytest.approx(1.0)
    assert w[2, 2, 3] == pytest.approx(0.7)  # the voxel 5..15 mm: 7 mm of 10 inside
    assert w[2, 3, 3] == pytest.approx(0.49)
    assert w[2, 2, 4] == 0.0
    assert w.sum() == pytest.approx((24.0 / 10.0) ** 3)  # the cube's volume in voxels


def _check_case(a: np.ndarray, near_half: int, far_half: int):
    big = _fine_kernel(far_half)
    c, h = far_half, near_half
    near = big[c - h:c + h + 1, c - h:c + h + 1, c - h:c + h + 1]
    ff = FarField.from_coarse_kernel(_coarse_kernel(coarse_size(V, (far_half + 0.5) * V)), F, V, (h + 0.5) * V,
                                     (far_half + 0.5) * V)
    exact = fft_convolve(a, big).astype(np.float64)
    inner = fft_convolve(a, near).astype(np.float64)
    return exact, inner, ff.dose(a).astype(np.float64)


@pytest.mark.parametrize("halves", [(16, 28), (15, 30)], ids=["boxes-on-coarse-faces", "boxes-through-coarse-voxels"])
def test_near_kernel_plus_far_field_equals_the_wide_kernel(halves):
    """A kernel cropped to ``2 h + 1`` voxels plus the far field of the shell to the wide kernel's box
    reproduces the wide kernel: a uniform source's shell dose within 0.6 % (boxes on coarse faces),
    randomly placed blocks within 1 % of the maximum dose."""
    assert coarse_factor(V) == F
    aligned = halves == (16, 28)
    if aligned:
        assert aligned_half(17, F, up=False) == 16 and aligned_half(27, F, up=True) == 28
    a = np.zeros((72, 66, 60))
    a[15:57, 15:51, 15:45] = 1.0
    exact, inner, far = _check_case(a, *halves)
    shell = exact - inner  # what the far field must supply
    assert shell.sum() > 0.1 * exact.sum()  # a test where the shell matters
    core = np.zeros(a.shape, bool)
    core[25:47, 25:41, 25:35] = True
    centres = (np.indices(a.shape) % F == F // 2).all(axis=0) & core  # the coarse voxels' centres
    at_centres = np.abs(far[centres] / shell[centres] - 1.0)
    between = np.abs(far[core & ~centres] / shell[core & ~centres] - 1.0)
    if aligned:  # exact at the coarse centres; between them the interpolation of the shell's kinks
        assert abs(far.sum() / shell.sum() - 1.0) < 0.003
        assert at_centres.max() < 1e-4
        assert np.median(between) < 0.03 and between.max() < 0.1
        assert np.abs(inner + far - exact)[core].max() < 0.005 * exact.max()
    else:  # boxes through coarse voxels: the bias that aligned_half removes
        assert np.median(at_centres) > 0.01
    rng = np.random.default_rng(3)
    a = np.zeros((72, 66, 60))
    for _ in range(6):  # blocks of activity at random places and sizes
        z, y, x = rng.integers(0, 50, 3)
        s = rng.integers(2, 8)
        a[z:z + s, y:y + s, x:x + s] += rng.uniform(1, 5)
    exact, inner, far = _check_case(a, *halves)
    if aligned:
        assert abs((inner + far).sum() / exact.sum() - 1.0) < 0.005
        assert np.abs(inner + far - exact).max() < 0.01 * exact.max()


def test_far_field_refuses_a_kernel_it_does_not_fit():
    n = coarse_size(V, 122.0)
    ff = FarField.from_coarse_kernel(_coarse_kernel(n), F, V, 62.0, 122.0)
    VoxelKernel(_fine_kernel(15) * 1e3, (V, V, V), far_field=ff)  # box 31 voxels of 4 mm: 62 mm
    with pytest.raises(InputError, match="does not fit"):
        VoxelKernel(_fine_kernel(14) * 1e3, (V, V, V), far_field=ff)
    with pytest.raises(InputError, match="does not reach"):
        FarField.from_coarse_kernel(_coarse_kernel(5), F, V, 62.0, 122.0)
    with pytest.raises(InputError, match="must exceed"):
        FarField.from_coarse_kernel(_coarse_kernel(n), F, V, 122.0, 62.0)


def test_cached_kernel_adds_the_far_field_only_where_the_cap_cuts(tmp_path, monkeypatch):
    """With the cap at 11 voxels of 6 mm, an F-18 kernel (meant to reach 200 mm) is cropped to 9
    voxels (its box on the faces of 18 mm voxels) and gets the shell 27-207 mm from an 18 mm
    kernel; its energy then matches the uncapped kernel's (69 voxels, the same box)."""
    from persodose.mc import kernels as mk

    monkeypatch.setattr(mk, "MAX_KERNEL_SIZE", 11)
    k = mk.cached_kernel("F-18", 6.0, "soft_tissue", n_decays=20_000, cache_dir=tmp_path)
    assert k.shape == (9, 9, 9) and k.far_field is not None
    assert (k.far_field.factor, k.far_field.near_half_mm, k.far_field.far_half_mm) == (3, 27.0, 207.0)
    assert mk.cached_kernel("F-18", 6.0, "soft_tissue", n_decays=20_000, cache_dir=tmp_path,
                            far_field=False).far_field is None
    assert mk.cached_kernel("F-18", 6.0, "soft_tissue", size=9, n_decays=20_000, cache_dir=tmp_path).far_field is None
    wide = mk.cached_kernel("F-18", 6.0, "soft_tissue", size=69, n_decays=20_000, cache_dir=tmp_path)
    mass_coarse = (18.0 ** 3) / 1000.0 * k.density_g_cm3
    e_near = float(k.gy_per_bq_s.astype(np.float64).sum()) * k.voxel_mass_g
    e_far = float(k.far_field.tail_gy_per_bq_s.sum()) * mass_coarse
    e_wide = float(wide.gy_per_bq_s.astype(np.float64).sum()) * wide.voxel_mass_g
    assert e_far > 0.2 * e_near  # 511 keV photons carry a good part of the energy past 55 mm
    assert e_near + e_far == pytest.approx(e_wide, rel=0.03)
    # and the methods use it: SSV of a point source carries the shell's energy
    from persodose.dose.svalue import convolve_kernel

    a = np.zeros((75, 75, 75))  # holds the far field's whole reach
    a[37, 37, 37] = 1.0
    with_ff = convolve_kernel(a, k).astype(np.float64).sum() * k.voxel_mass_g
    capped = mk.cached_kernel("F-18", 6.0, "soft_tissue", n_decays=20_000, cache_dir=tmp_path, far_field=False)
    without = convolve_kernel(a, capped).astype(np.float64).sum() * k.voxel_mass_g
    assert with_ff == pytest.approx(e_near + e_far, rel=0.01)
    assert without == pytest.approx(float(capped.gy_per_bq_s.astype(np.float64).sum()) * k.voxel_mass_g, rel=1e-4)
