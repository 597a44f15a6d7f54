"""Local energy deposition (LED).

Every decay deposits its emitted energy in the voxel where it occurs:

    D(v) = A~(v) * E * 1.602176634e-13 J/MeV / (rho(v) * V_voxel)

with ``A~`` the time-integrated activity (Bq s), ``E`` the energy per decay (MeV), ``rho`` in
kg/m3-consistent units (g/cm3 * mL * 1e-3 -> kg). This is the MIRD schema (W. E. Bolch et al.,
MIRD Pamphlet No. 21, J. Nucl. Med. 50 (2009) 477-484) with an absorbed fraction of 1 in the
source voxel and 0 elsewhere.

Which energy is deposited (:class:`LEDSettings` ``energy``):

* ``"all"`` (default): electrons (beta-, beta+ kinetic, delayed beta, internal-conversion and
  Auger), alphas with their recoils, and photons (gamma, X, annihilation) -- all emitted energy.
  This is the variant the SINFONIA work plan calls LED; it overestimates the dose where
  photons carry a large share (it ignores the photons that escape).
* ``"electron"``: only the non-penetrating radiation (electrons, alphas and recoils), the
  classical "non-penetrating" approximation (absorbed fraction 1 for electrons, 0 for
  photons); it underestimates by the locally absorbed photon dose.

For Lu-177 (ICRP Publication 107) photons carry 19 % of the emitted energy
(0.035 of 0.183 MeV per decay), so the two variants bracket the dose.

Energies per decay come from ICRP Publication 107 (:mod:`persodose.physics.radionuclides`).
Voxels whose density is below the air threshold (default 0.1 g/cm3) get no dose, with an
:class:`ActivityInAirWarning` when they hold activity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persodose.dose.kernels import MEV_TO_J
from persodose.dose.registry import (DEFAULT_AIR_THRESHOLD_G_CM3, air_mask, check_air_threshold, check_density,
                                     check_tia, resolve_settings,
                                     dose_grid, register_method)
from persodose.errors import InputError
from persodose.grid import Grid
from persodose.physics.radionuclides import get_nuclide

__all__ = ["led_dose", "energy_per_decay_mev", "LEDSettings"]

LED_ENERGIES = ("all", "electron")


@dataclass(frozen=True)
class LEDSettings:
    """Settings of local energy deposition.

    Attributes:
        energy: ``"all"`` (electrons, alphas and photons deposited locally) or ``"electron"``
            (only the non-penetrating electron and alpha energy).
        air_threshold_g_cm3: voxels below this density get no dose, g/cm3.
    """

    energy: str = "all"
    air_threshold_g_cm3: float = DEFAULT_AIR_THRESHOLD_G_CM3

    def __post_init__(self) -> None:
        if self.energy not in LED_ENERGIES:
            raise InputError(f"led.energy must be 'all' or 'electron', got {self.energy!r}")
        check_air_threshold(self.air_threshold_g_cm3, "led")


def energy_per_decay_mev(nuclide: str, which: str = "all") -> float:
    """Energy emitted per decay that LED deposits, MeV (ICRP Publication 107).

    Args:
        nuclide: radionuclide name (any spelling :func:`get_nuclide` accepts).
        which: ``"all"`` (electrons + alphas + photons) or ``"electron"`` (electrons + alphas).
    """
    n = get_nuclide(nuclide)
    e = n.electron_energy_per_decay_mev() + n.alpha_energy_per_decay_mev()
    if which == "all":
        e += n.photon_energy_per_decay_mev()
    elif which != "electron":
        LEDSettings(energy=which)  # raises the InputError
    return float(e)


# accuracy: with energy "all" LED keeps photon energy that escapes a small source; for Lu-177
# (photons 19 % of the energy, ICRP 107) that is +24 % over a 24 mm cube (tests/dose/test_contract.py).
@register_method("led", settings=LEDSettings, needs=("density",), accuracy=0.30,
                 summary="local energy deposition: every decay's energy stays in its voxel")
def led_dose(tia: Grid, *, nuclide: str, density: Grid | None, kernels=None, settings=None) -> Grid:
    """Absorbed dose by local energy deposition.

    Args:
        tia: time-integrated activity, :attr:`Kind.TIA`, Bq s per voxel, shape (nz, ny, nx).
        nuclide: radionuclide name.
        density: mass density on the TIA's geometry, g/cm3 (required).
        kernels: ignored.
        settings: :class:`LEDSettings` or a mapping of its fields.

    Returns:
        Dose grid, :attr:`Kind.DOSE`, Gy, float32, same geometry.

    Raises:
        InputError: bad TIA or density, unknown nuclide.

    Warns:
        ActivityInAirWarning: activity in voxels below the air threshold.
    """
    s = resolve_settings(settings, LEDSettings, "led")
    a = check_tia(tia)
    rho = check_density(density, tia, "led")
    e_j = energy_per_decay_mev(nuclide, s.energy) * MEV_TO_J
    air = air_mask(rho, a, s.air_threshold_g_cm3, "led")
    mass_kg = rho.astype(np.float64) * (tia.voxel_volume_ml * 1e-3)
    with np.errstate(divide="ignore", invalid="ignore"):
        dose = np.where(air | (mass_kg <= 0), 0.0, a.astype(np.float64) * e_j / mass_kg)
    return dose_grid(tia, dose)
