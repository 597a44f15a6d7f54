"""Density-scaled single voxel S-value convolution (DSV).

    D(v) = [A~ (*) S_st](v) * rho_ref / rho(v)       for rho(v) >= threshold
    D(v) = 0                                          for rho(v) <  threshold (air)

The soft-tissue SSV dose is corrected for the local density by the ratio of the kernel
medium's density ``rho_ref`` (1.04 g/cm3, ICRU soft tissue, by default the kernel's
``density_g_cm3``) to the voxel's density: energy deposited per unit volume is kept and divided
by the local mass. This is the "density-scaled" voxel S-value dose that DblurDoseNet uses as
its input estimate (Z. Li, J. A. Fessler, J. K. Mikell, S. J. Wilderman, Y. K. Dewaraja,
"DblurDoseNet: A deep residual learning network for voxel radionuclide dosimetry compensating
for single-photon emission computerized tomography imaging resolution", Med. Phys. 49 (2022)
1216-1230). The threshold (default 0.1 g/cm3) is ``DoseSettings.air_threshold_g_cm3``.
"""

from __future__ import annotations

import numpy as np

from persodose.dose.registry import (air_mask, as_settings, check_density, check_tia, dose_grid,
                                     register_method)
from persodose.dose.svalue import convolve_kernel, select_kernel
from persodose.grid import Grid

__all__ = ["dsv_dose", "density_scale"]


def density_scale(dose_gy: np.ndarray, rho_g_cm3: np.ndarray, reference_density_g_cm3: float,
                  air: np.ndarray) -> np.ndarray:
    """``dose * rho_ref / rho`` outside ``air``, 0 inside it (float32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = dose_gy * (np.float32(reference_density_g_cm3) / rho_g_cm3)
    return np.where(air, np.float32(0.0), scaled).astype(np.float32)


@register_method("dsv")
def dsv_dose(tia: Grid, *, nuclide: str, density: Grid | None, kernels=None, settings=None) -> Grid:
    """Absorbed dose by density-scaled soft-tissue voxel S-value convolution.

    Args:
        tia: time-integrated activity, :attr:`Kind.TIA`, Bq s per voxel.
        nuclide: radionuclide name.
        density: mass density on the TIA's geometry, g/cm3 (required).
        kernels: :class:`KernelSet` with ``settings.ssv_medium`` or one :class:`VoxelKernel`.
        settings: :class:`DoseSettings` (``dsv_reference_density_g_cm3``,
            ``air_threshold_g_cm3``, convolution options) or a mapping.

    Returns:
        Dose grid, :attr:`Kind.DOSE`, Gy, float32, same geometry.

    Warns:
        ActivityInAirWarning: activity in voxels below the air threshold.
    """
    s = as_settings(settings)
    a = check_tia(tia)
    rho = check_density(density, tia, "dsv")
    k = select_kernel(kernels, s.ssv_medium, tia, nuclide, "dsv")
    air = air_mask(rho, a, s.air_threshold_g_cm3, "dsv") | (rho <= 0)
    ref = s.dsv_reference_density_g_cm3 if s.dsv_reference_density_g_cm3 is not None else k.density_g_cm3
    return dose_grid(tia, density_scale(convolve_kernel(a, k, s), rho, ref, air))
