"""Monte Carlo as a dose method (``mc``): every emission transported in the patient.

The reference method: ICRP-107 decays sampled from the time-integrated activity and
transported through the patient's density and materials by :mod:`persodose.mc` (coupled
photon-electron-positron transport, validated in ``docs/validation*.md``). Its statistical
uncertainty comes from the spread of independent batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from persodose.dose.registry import DoseInputs, MethodOutput, register_method
from persodose.errors import InputError
from persodose.grid import Kind

__all__ = ["MCMethodSettings", "mc_dose"]


@dataclass(frozen=True)
class MCMethodSettings:
    """Settings of the Monte Carlo dose method.

    Attributes:
        decays: decays simulated in all batches together.
        batches: independent batches; the voxel uncertainty is the spread of their means.
    """

    decays: int = 2_000_000
    batches: int = 8

    def __post_init__(self) -> None:
        if not (1 <= int(self.decays) <= 10**12):
            raise InputError(f"mc.decays must be from 1 to 1e12, got {self.decays}")
        if not (1 <= int(self.batches) <= 10_000):
            raise InputError(f"mc.batches must be from 1 to 10000, got {self.batches}")
        if int(self.decays) < int(self.batches):
            raise InputError(f"mc.decays {self.decays} cannot fill mc.batches {self.batches}")


@register_method("mc", settings=MCMethodSettings, needs=("density", "materials", "device"), stochastic=True,
                 accuracy=0.03, takes_inputs=True,
                 summary="Monte Carlo transport of every emission in the patient (the reference)")
def mc_dose(inputs: DoseInputs, settings: MCMethodSettings) -> MethodOutput:
    """Absorbed dose (Gy) and its relative uncertainty by Monte Carlo.

    Args:
        inputs: TIA (Bq s per voxel), nuclide, density (g/cm3), material-index map with its
            material list, seed and backend (``cpu`` or ``cuda``).
        settings: decays and batches.

    Returns:
        Dose (Gy), relative uncertainty per voxel, and the run's figures in ``info``.
    """
    import numpy as np

    from persodose.dose.registry import check_tia, dose_grid
    from persodose.mc import MCSettings, VoxelPhantom, simulate_decays

    if inputs.density is None or inputs.materials is None or not inputs.material_list:
        raise InputError("dose method 'mc' needs the density, the material map and its materials")
    a = check_tia(inputs.tia)
    if not np.any(a):  # no decay to simulate: no dose, and no uncertainty about it
        zero = dose_grid(inputs.tia, np.zeros(a.shape, np.float32))
        return MethodOutput(zero, zero.with_array(zero.array, Kind.SCALAR, "relative standard uncertainty"),
                            {"decays": 0, "seed": inputs.seed})
    phantom = VoxelPhantom(inputs.density, inputs.materials, tuple(inputs.material_list))
    res = simulate_decays(phantom, inputs.tia, inputs.nuclide, int(settings.decays),
                          MCSettings(n_batches=int(settings.batches), seed=inputs.seed, backend=inputs.backend),
                          progress=inputs.progress)
    info = {"decays": res.tally.n_primaries, "decays_per_second": res.primaries_per_second,
            "energy_balance_mev_per_decay": res.energy_balance, "seed": inputs.seed, "backend": res.info["backend"]}
    return MethodOutput(res.dose_gy, res.relative_uncertainty, info)
