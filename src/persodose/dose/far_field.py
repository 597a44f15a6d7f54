"""The photon far field of a voxel kernel beyond its own box, on a coarse grid.

A kernel of ``2h + 1`` voxels per side holds the dose out to ``(h + 1/2)`` voxels from its
source along each axis. For nuclides with photons the kernels are meant to reach 200 mm
(:func:`persodose.mc.kernels.default_kernel_size`; shorter reaches left the virtual FDG
patient's organ doses 9-20 % low at 100 mm), but a kernel is capped at 101 voxels, so below
4 mm voxels it stops short: 150 mm at 3 mm, where every kernel method was 2-5 % low in the
soft-tissue organs of held-out patients (docs/validation_dl.md). Past a few centimetres the
kernel is a smooth function of distance (scattered and attenuated photons; the electrons'
ranges are millimetres), so the shell between the kernel's box and the intended reach is
carried on a grid ``f`` times coarser:

    D_far(x) = interp[ (sum_f A) (*) T ](x),   T(K) = S_c(K) * (w_R(K) - w_r(K)),

``A`` the activity per fine voxel summed into coarse voxels of ``f`` x ``f`` x ``f``, ``S_c``
the Monte Carlo kernel of the same medium computed at the coarse voxel, ``w_r(K)`` the fraction
of coarse voxel ``K``'s volume inside the fine kernel's box (half-width ``r``) and ``w_R(K)``
inside the intended box (half-width ``R``), so that ``T`` holds exactly the shell the fine
kernel lacks; the coarse dose is interpolated (trilinearly) to the fine voxels' centres. The
method's own handling of the target (DSV's density scaling, MSV's media, air masks) then
applies to the sum as it would to a kernel of the intended size.

Check: on the demo's FDG patient at 4 mm, the kernels cropped to 75 voxels (150 mm) plus this
far field out to 198 mm give organ means within 0.03 % (mean over 25 structures) of the 99-voxel
kernels' for SSV, DSV and MSV, against 3.8-4.2 % without it (``python validation/far_field_check.py``;
docs/validation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from persodose.errors import InputError

__all__ = ["FarField", "box_fractions", "aligned_half", "coarse_factor", "coarse_size", "COARSE_VOXEL_MM"]

#: Largest coarse voxel aimed at, mm (:func:`coarse_factor`: 9 mm for 3 mm voxels, 12 mm for
#: 4 mm, 10 mm for 2 mm): the far field varies over centimetres (511 keV photons have a mean free
#: path of about 10 cm in soft tissue), and the coarse grid of a whole body stays about 1e5 voxels.
COARSE_VOXEL_MM = 12.0


def box_fractions(n: int, coarse_mm: float, half_mm: float) -> np.ndarray:
    """Fraction of each voxel of a centred ``n^3`` grid of cubic ``coarse_mm`` voxels that lies
    inside the centred cube of half-width ``half_mm`` (exact: a product of 1-D overlaps)."""
    c = (np.arange(n) - n // 2) * coarse_mm
    lo, hi = c - coarse_mm / 2.0, c + coarse_mm / 2.0
    o = np.clip(np.minimum(hi, half_mm) - np.maximum(lo, -half_mm), 0.0, None) / coarse_mm
    return o[:, None, None] * o[None, :, None] * o[None, None, :]


@dataclass(frozen=True)
class FarField:
    """The shell of a kernel between half-widths ``near_half_mm`` and ``far_half_mm``, on a grid
    ``factor`` times coarser than the kernel's.

    Attributes:
        tail_gy_per_bq_s: ``T`` above, Gy per Bq s per coarse source voxel, odd cube, float64.
        factor: coarse voxel / fine voxel (an integer >= 2).
        near_half_mm: half-width of the fine kernel's box, mm.
        far_half_mm: half-width the kernel is extended to, mm.
        source: where the coarse kernel came from.
    """

    tail_gy_per_bq_s: np.ndarray
    factor: int
    near_half_mm: float
    far_half_mm: float
    source: str = ""

    @classmethod
    def from_coarse_kernel(cls, coarse_gy_per_bq_s: np.ndarray, factor: int, fine_voxel_mm: float,
                           near_half_mm: float, far_half_mm: float, source: str = "") -> "FarField":
        """The shell ``near_half_mm`` < |x|_inf <= ``far_half_mm`` of a kernel given on the coarse
        grid (cubic voxels of ``factor * fine_voxel_mm``), which must reach ``far_half_mm``."""
        k = np.asarray(coarse_gy_per_bq_s, np.float64)
        f = int(factor)
        if k.ndim != 3 or len(set(k.shape)) != 1 or k.shape[0] % 2 == 0:
            raise InputError(f"a far-field kernel must be an odd cube, got shape {k.shape}")
        if f < 2:
            raise InputError(f"the far field's grid must be at least 2x coarser than the kernel's, got {factor}")
        if not 0.0 < near_half_mm < far_half_mm:
            raise InputError(f"far field: the reach {far_half_mm} mm must exceed the kernel's {near_half_mm} mm")
        coarse_mm = f * float(fine_voxel_mm)
        if (k.shape[0] // 2 + 0.5) * coarse_mm < far_half_mm:
            raise InputError(f"the coarse kernel ({k.shape[0]} voxels of {coarse_mm:g} mm) does not reach "
                             f"{far_half_mm:g} mm")
        n = k.shape[0]
        tail = k * (box_fractions(n, coarse_mm, far_half_mm) - box_fractions(n, coarse_mm, near_half_mm))
        return cls(tail, f, float(near_half_mm), float(far_half_mm), source)

    def dose(self, tia_bq_s: np.ndarray, workers: int = -1) -> np.ndarray:
        """The far field's dose (Gy, float32) on the fine grid of ``tia_bq_s`` (Bq s per voxel)."""
        from persodose.dose.convolution import fft_convolve

        a = np.asarray(tia_bq_s, np.float64)
        f = self.factor
        if not np.any(a):
            return np.zeros(a.shape, np.float32)
        padded = np.pad(a, [(0, (-n) % f) for n in a.shape])
        coarse = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f,
                                padded.shape[2] // f, f).sum(axis=(1, 3, 5))
        out = fft_convolve(coarse, self.tail_gy_per_bq_s, workers=workers).astype(np.float32)
        # trilinear interpolation, one axis at a time: fine voxel i lies at coarse coordinate
        # (i - (f - 1) / 2) / f (coarse voxel k holds fine voxels k f .. k f + f - 1); beyond the
        # outermost coarse centres the value is held (the coarse grid's edge)
        for axis, n in enumerate(a.shape):
            m = out.shape[axis]
            x = np.clip((np.arange(n, dtype=np.float64) - (f - 1) / 2.0) / f, 0.0, m - 1)
            i0 = np.minimum(np.floor(x).astype(np.int64), max(m - 2, 0))
            w = (x - i0).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = n
            w = w.reshape(shape)
            out = np.take(out, i0, axis=axis) * (1.0 - w) + np.take(out, np.minimum(i0 + 1, m - 1), axis=axis) * w
        out = np.ascontiguousarray(out, dtype=np.float32)
        if float(np.min(a)) >= 0:
            np.maximum(out, 0.0, out=out)
        return out


def coarse_factor(voxel_mm: float) -> int:
    """Fine voxels per coarse voxel along an axis: the odd number nearest below
    :data:`COARSE_VOXEL_MM` / ``voxel_mm``, at least 3 (odd, so that boxes can end on coarse faces:
    :func:`aligned_half`)."""
    return max(3, 2 * int(math.floor((COARSE_VOXEL_MM / float(voxel_mm) - 1.0) / 2.0)) + 1)


def aligned_half(half: int, factor: int, up: bool) -> int:
    """The half-width (fine voxels) nearest ``half`` (at most it, or with ``up`` at least it) whose
    box ends on the faces of the coarse voxels of :meth:`FarField.dose` (``half = k f + (f - 1) / 2``).

    With both boxes on coarse faces every coarse voxel of the tail is wholly in or out of the
    shell; a box through coarse voxels weighs each by its volume fraction, which puts the fine
    kernel's steep edge into a voxel's mean: in tests/dose/test_far_field.py it biased a uniform
    source's shell dose at the coarse voxels' centres by about 2 %, where aligned boxes are exact."""
    r = (int(factor) - 1) // 2
    k = (half - r) // factor if not up else -(-(half - r) // factor)
    return int(k * factor + r)


def coarse_size(voxel_mm: float, far_half_mm: float) -> int:
    """Width (odd, coarse voxels) of a coarse kernel that reaches ``far_half_mm``."""
    c = coarse_factor(voxel_mm) * float(voxel_mm)
    return 2 * int(math.ceil(far_half_mm / c - 0.5)) + 1
