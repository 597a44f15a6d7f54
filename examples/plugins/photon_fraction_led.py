"""An example dose method as a plug-in: local deposition with a chosen local photon share.

LED with ``energy="all"`` keeps every photon in its voxel and ``"electron"`` none; this
method keeps the electrons (and alphas) and a fraction ``photon_fraction`` of the photon
energy, a crude middle ground for small sources. It shows everything a method needs: a
settings dataclass (default, unit, validation in one place) and one registration. Load it
with ``persodose --plugin examples/plugins/photon_fraction_led.py internal --method pfled
--method-option pfled.photon_fraction=0.3 ...`` or ``persodose.plugins.load_plugin(path)``.
"""

from dataclasses import dataclass

import numpy as np

from persodose.dose.registry import check_density, check_tia, dose_grid, register_method, resolve_settings
from persodose.errors import InputError
from persodose.physics.radionuclides import get_nuclide

MEV_TO_J = 1.602176634e-13  # CODATA 2018 (exact)


@dataclass(frozen=True)
class PhotonFractionSettings:
    """Settings of ``pfled``.

    Attributes:
        photon_fraction: share of the photon energy deposited where the decay happens (0 to 1).
    """

    photon_fraction: float = 0.3

    def __post_init__(self):
        if not 0.0 <= self.photon_fraction <= 1.0:
            raise InputError(f"pfled.photon_fraction must lie in [0, 1], got {self.photon_fraction}")


@register_method("pfled", settings=PhotonFractionSettings, needs=("density",), accuracy=0.15,
                 summary="example plug-in: local electrons plus a share of the photon energy")
def photon_fraction_led(tia, *, nuclide, density, kernels=None, settings=None):
    """Dose (Gy) = TIA x (E_electron + f E_photon) / voxel mass."""
    s = resolve_settings(settings, PhotonFractionSettings, "pfled")
    a = check_tia(tia).astype(np.float64)
    rho = check_density(density, tia, "pfled").astype(np.float64)
    n = get_nuclide(nuclide)
    e_mev = (n.electron_energy_per_decay_mev() + n.alpha_energy_per_decay_mev()
             + s.photon_fraction * n.photon_energy_per_decay_mev())
    mass_kg = rho * tia.voxel_volume_ml * 1e-3
    with np.errstate(divide="ignore", invalid="ignore"):
        dose = np.where(mass_kg > 0, a * e_mev * MEV_TO_J / mass_kg, 0.0)
    return dose_grid(tia, dose)
