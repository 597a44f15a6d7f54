"""Multiple voxel S-value convolution (MSV).

After M. S. Lee, J. H. Kim, J. C. Paeng, K. W. Kang, J. M. Jeong, D. S. Lee, J. S. Lee,
"Whole-body voxel-based personalized dosimetry: the multiple voxel S-value approach for
heterogeneous media with nonuniform activity distributions", J. Nucl. Med. 59 (2018)
1133-1139: the time-integrated activity is convolved with N kernels computed (by Monte Carlo)
in media of different densities; the CT density is segmented into N density ranges and each
voxel takes the dose map of its range (sum of the N masked maps). The SINFONIA work plan uses
N = 4 media: lung, soft tissue and two bone densities.

What is implemented, exactly:

1. Media ``m_1 .. m_N`` sorted by reference density (:class:`MSVSettings` ``media`` or all kernels
   of the :class:`KernelSet`), with edges ``e_1 < ... < e_{N-1}``
   (``bin_edges_g_cm3``, default: midpoints between consecutive reference
   densities, e.g. 0.65, 1.22, 1.66 g/cm3 for 0.26 / 1.04 / 1.4 / 1.92).
2. Bin of voxel v: ``m_1`` if ``air_threshold <= rho < e_1``, ``m_i`` if ``e_{i-1} <= rho < e_i``,
   ``m_N`` if ``rho >= e_{N-1}``; below the air threshold (0.1 g/cm3) the dose is 0 (with an
   :class:`ActivityInAirWarning` when the voxel holds activity).
3. ``D(v) = [A~ (*) S_m](v)`` for ``m`` the bin of v; the TIA is transformed once and reused for
   all N kernels.
4. Only if ``density_scaling`` is set (off by default):
   ``D(v) *= rho_ref(m) / rho(v)`` within the bin (the DSV correction applied per medium).
   The published abstract of Lee et al. describes only step 3 (masking and summation); the
   option is offered for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persodose.dose.convolution import fft_convolve_many
from persodose.dose.kernels import KernelSet
from persodose.dose.registry import (DEFAULT_AIR_THRESHOLD_G_CM3, air_mask, check_air_threshold, check_density,
                                     check_tia, resolve_settings,
                                     dose_grid, register_method)
from persodose.dose.svalue import ConvolutionSettings, as_kernel_set, clip_roundoff
from persodose.errors import InputError
from persodose.grid import Grid

__all__ = ["msv_dose", "msv_bins", "MSVSettings", "DEFAULT_MSV_MEDIA"]

#: Kernel media MSV uses when none are chosen: lung, soft tissue and two bone densities.
DEFAULT_MSV_MEDIA = ("lung", "soft_tissue", "bone_low", "bone")


@dataclass(frozen=True)
class MSVSettings(ConvolutionSettings):
    """Settings of multiple voxel S-value convolution.

    Attributes:
        media: media in order of increasing density; ``None``: the kernels of the set sorted by
            their density (the workflow computes :data:`DEFAULT_MSV_MEDIA`).
        bin_edges_g_cm3: the ``len(media) - 1`` density edges between consecutive media, g/cm3;
            ``None``: midpoints between the kernels' reference densities.
        density_scaling: multiply the dose by ``rho_ref(medium) / rho(voxel)`` within each
            density bin (off by default: Lee et al. 2018 only mask).
        air_threshold_g_cm3: voxels below this density get no dose, g/cm3.
    """

    media: tuple[str, ...] | None = None
    bin_edges_g_cm3: tuple[float, ...] | None = None
    density_scaling: bool = False
    air_threshold_g_cm3: float = DEFAULT_AIR_THRESHOLD_G_CM3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.media is not None:
            object.__setattr__(self, "media", tuple(self.media))
        if self.bin_edges_g_cm3 is not None:
            edges = tuple(float(e) for e in self.bin_edges_g_cm3)
            if any(not np.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
                raise InputError(f"MSV density edges must be finite and increasing, got {edges}")
            object.__setattr__(self, "bin_edges_g_cm3", edges)
        check_air_threshold(self.air_threshold_g_cm3, "msv")


def msv_bins(kernels: KernelSet, settings: MSVSettings | None = None) -> tuple[list[str], list[float]]:
    """MSV media (increasing reference density) and the density edges between them.

    Returns:
        ``(media, edges_g_cm3)`` with ``len(edges) == len(media) - 1``.

    Raises:
        InputError: unknown medium, wrong number of edges, media not in increasing density.
    """
    s = resolve_settings(settings, MSVSettings, "msv")
    if s.media is not None:
        media = list(s.media)
        for m in media:
            kernels[m]  # raises for a missing kernel
    else:
        media = sorted(kernels.media(), key=lambda m: kernels[m].density_g_cm3)
    rhos = [kernels[m].density_g_cm3 for m in media]
    if any(b <= a for a, b in zip(rhos, rhos[1:])):
        raise InputError("MSV media must have increasing reference densities, got "
                         + ", ".join(f"{m} {r:g}" for m, r in zip(media, rhos)))
    if s.bin_edges_g_cm3 is not None:
        edges = list(s.bin_edges_g_cm3)
        if len(edges) != len(media) - 1:
            raise InputError(f"MSV needs {len(media) - 1} density edge(s) for media {', '.join(media)}, "
                             f"got {len(edges)}")
    else:
        edges = [0.5 * (a + b) for a, b in zip(rhos, rhos[1:])]
    return media, edges


@register_method("msv", settings=MSVSettings, needs=("density", "kernels"),
                 media=lambda s: s.media or DEFAULT_MSV_MEDIA, accuracy=0.05,
                 summary="multiple voxel S values: the kernel of each voxel's density class")
def msv_dose(tia: Grid, *, nuclide: str, density: Grid | None, kernels=None, settings=None) -> Grid:
    """Absorbed dose by multiple voxel S-value convolution (Lee et al. 2018).

    Args:
        tia: time-integrated activity, :attr:`Kind.TIA`, Bq s per voxel.
        nuclide: radionuclide name.
        density: mass density on the TIA's geometry, g/cm3 (required).
        kernels: :class:`KernelSet`, e.g. ``lung``, ``soft_tissue``, ``bone_1``, ``bone_2``, each
            with its reference ``density_g_cm3``; all for the grid's voxel size.
        settings: :class:`MSVSettings` or a mapping of its fields.

    Returns:
        Dose grid, :attr:`Kind.DOSE`, Gy, float32, same geometry.

    Warns:
        ActivityInAirWarning: activity in voxels below the air threshold.
    """
    s = resolve_settings(settings, MSVSettings, "msv")
    a = check_tia(tia)
    rho = check_density(density, tia, "msv")
    ks = as_kernel_set(kernels, "msv")
    media, edges = msv_bins(ks, s)
    for m in media:
        ks[m].check_voxel_size(tia.spacing_zyx_mm, "the time-integrated activity grid")
        ks[m].check_nuclide(nuclide)
    air = air_mask(rho, a, s.air_threshold_g_cm3, "msv") | (rho <= 0)
    bin_index = np.digitize(rho, np.asarray(edges, dtype=np.float32), right=False)  # 0..N-1
    out = np.zeros(a.shape, dtype=np.float32)
    present = [i for i in range(len(media)) if np.any((bin_index == i) & ~air)]
    if not present or not np.any(a):
        return dose_grid(tia, out)
    # One transform of the TIA for all kernels of one shape.
    nonneg = float(np.min(a)) >= 0
    by_shape: dict[tuple, list[int]] = {}
    for i in present:
        by_shape.setdefault(ks[media[i]].shape, []).append(i)
    for idx in by_shape.values():
        doses = fft_convolve_many(a, [ks[media[i]].gy_per_bq_s for i in idx], workers=s.workers,
                                  block_z=s.block_z, backend=s.backend)
        for i, d in zip(idx, doses):
            if ks[media[i]].far_field is not None:  # the medium kernel's dose beyond its box
                d += ks[media[i]].far_field.dose(a, workers=s.workers)
            if nonneg:
                clip_roundoff(d)
            sel = (bin_index == i) & ~air
            if s.density_scaling:
                out[sel] = d[sel] * (np.float32(ks[media[i]].density_g_cm3) / rho[sel])
            else:
                out[sel] = d[sel]
            del d
    return dose_grid(tia, out)
