"""Monte Carlo as a dose method (``mc``): every emission transported in the patient.

The reference method: ICRP-107 decays sampled from the time-integrated activity and
transported through the patient's density and materials by :mod:`persodose.mc` (coupled
photon-electron-positron transport, validated in ``docs/validation*.md``). Its statistical
uncertainty comes from the spread of independent batches.

With ``target_uncertainty`` the run stops once that uncertainty is reached (``decays`` and
``batches`` are then the limit): the median voxel uncertainty above ``target_above`` of the
maximum dose, or, with ``target_region``, the uncertainty of that region's mean dose (the
internal workflow passes the region's mask from the label map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from persodose.dose.registry import DoseInputs, MethodOutput, register_method
from persodose.errors import InputError
from persodose.grid import Kind

#: Batches of the method without and with a target uncertainty (when ``batches`` is not given).
DEFAULT_BATCHES = 8
DEFAULT_TARGET_BATCHES = 50
#: Batches in before the target criterion is trusted.
MIN_TARGET_BATCHES = 5

__all__ = ["MCMethodSettings", "mc_dose"]


@dataclass(frozen=True)
class MCMethodSettings:
    """Settings of the Monte Carlo dose method.

    Attributes:
        decays: decays simulated in all batches together (the most, with a target).
        batches: independent batches; the voxel uncertainty is the spread of their means
            (default 8; 50, the most, with a target: more, smaller batches stop nearer it).
        target_uncertainty: stop once this relative uncertainty is reached (``"2%"``,
            ``"2 %"`` or ``0.02``); default: run all ``decays``.
        target_above: the voxel criterion's dose threshold, fraction of the maximum dose.
        target_region: the criterion is the uncertainty of this labelled region's mean dose.
        photon_estimator: ``"analog"`` or ``"tle"`` (track-length estimator of photon energy
            deposition; :class:`persodose.mc.tables.TransportSettings`).
        control_variate: the decays' control variate (on by default; ``False`` tallies every
            deposit as sampled; :class:`persodose.mc.tables.TransportSettings`).
    """

    decays: int = 2_000_000
    batches: int | None = None
    target_uncertainty: str | float | None = None
    target_above: float = 0.1
    target_region: str | None = None
    photon_estimator: str = "analog"
    control_variate: bool = True

    def __post_init__(self) -> None:
        from persodose.mc.tables import PHOTON_ESTIMATORS
        from persodose.mc.tally import parse_relative_uncertainty

        if self.target_uncertainty is not None:
            object.__setattr__(self, "target_uncertainty",
                               parse_relative_uncertainty(self.target_uncertainty, "mc.target_uncertainty"))
        if self.batches is None:
            object.__setattr__(self, "batches", DEFAULT_TARGET_BATCHES if self.target_uncertainty else DEFAULT_BATCHES)
        if not (1 <= int(self.decays) <= 10**12):
            raise InputError(f"mc.decays must be from 1 to 1e12, got {self.decays}")
        if not (1 <= int(self.batches) <= 10_000):
            raise InputError(f"mc.batches must be from 1 to 10000, got {self.batches}")
        if int(self.decays) < int(self.batches):
            raise InputError(f"mc.decays {self.decays} cannot fill mc.batches {self.batches}")
        a = self.target_above
        if not (isinstance(a, (int, float)) and math.isfinite(a) and 0.0 <= a < 1.0):
            raise InputError(f"mc.target_above must be a fraction from 0 to below 1, got {a!r}")
        if self.target_uncertainty is None and self.target_region is not None:
            raise InputError("mc.target_region needs mc.target_uncertainty (the uncertainty to reach in it)")
        if self.target_uncertainty is not None and int(self.batches) < MIN_TARGET_BATCHES:
            raise InputError(f"mc.target_uncertainty needs at least {MIN_TARGET_BATCHES} batches, "
                             f"mc.batches is {self.batches}")
        if self.photon_estimator not in PHOTON_ESTIMATORS:
            raise InputError(f"mc.photon_estimator must be {' or '.join(PHOTON_ESTIMATORS)}, "
                             f"got {self.photon_estimator!r}")
        if not isinstance(self.control_variate, bool):
            raise InputError(f"mc.control_variate must be true or false, got {self.control_variate!r}")

    def target(self, region_mask=None):
        """The :class:`~persodose.mc.tally.UncertaintyTarget` of these settings (None without one).

        Raises:
            InputError: a target region without its mask.
        """
        from persodose.mc.tally import UncertaintyTarget

        if self.target_uncertainty is None:
            return None
        if self.target_region is not None and region_mask is None:
            raise InputError(f"mc.target_region {self.target_region!r} needs a label map that holds it")
        return UncertaintyTarget(float(self.target_uncertainty), float(self.target_above),
                                 self.target_region if region_mask is not None else None, region_mask,
                                 MIN_TARGET_BATCHES)


@register_method("mc", settings=MCMethodSettings, needs=("density", "materials", "device"), stochastic=True,
                 accuracy=0.03, takes_inputs=True,
                 summary="Monte Carlo transport of every emission in the patient (the reference)")
def mc_dose(inputs: DoseInputs, settings: MCMethodSettings, *, region_mask=None) -> MethodOutput:
    """Absorbed dose (Gy) and its relative uncertainty by Monte Carlo.

    Args:
        inputs: TIA (Bq s per voxel), nuclide, density (g/cm3), material-index map with its
            material list, seed and backend (``cpu`` or ``cuda``).
        settings: decays and batches, target uncertainty, photon estimator.
        region_mask: (z, y, x) boolean mask of ``settings.target_region`` on the TIA's grid
            (the dose inputs carry no labels; the internal workflow gives it).

    Returns:
        Dose (Gy), relative uncertainty per voxel, and the run's figures in ``info``
        (``info["target"]``: how a run with a target ended).

    Warns:
        persodose.mc.run.TargetNotMetWarning: the decays ran out before the target.
    """
    import numpy as np

    from persodose.dose.registry import check_tia, dose_grid
    from persodose.mc import MCSettings, TransportSettings, VoxelPhantom, simulate_decays

    if inputs.density is None or inputs.materials is None or not inputs.material_list:
        raise InputError("dose method 'mc' needs the density, the material map and its materials")
    target = settings.target(region_mask)
    a = check_tia(inputs.tia)
    if not np.any(a):  # no decay to simulate: no dose, and no uncertainty about it
        zero = dose_grid(inputs.tia, np.zeros(a.shape, np.float32))
        return MethodOutput(zero, zero.with_array(zero.array, Kind.SCALAR, "relative standard uncertainty"),
                            {"decays": 0, "seed": inputs.seed})
    phantom = VoxelPhantom(inputs.density, inputs.materials, tuple(inputs.material_list))
    mc_settings = MCSettings(n_batches=int(settings.batches), seed=inputs.seed, backend=inputs.backend,
                             transport=TransportSettings(photon_estimator=settings.photon_estimator,
                                                         control_variate=settings.control_variate))
    res = simulate_decays(phantom, inputs.tia, inputs.nuclide, int(settings.decays), mc_settings,
                          progress=inputs.progress, target=target)
    info = {"decays": res.tally.n_primaries, "decays_per_second": res.primaries_per_second,
            "energy_balance_mev_per_decay": res.energy_balance, "seed": inputs.seed, "backend": res.info["backend"],
            "batches": res.tally.n_batches, "photon_estimator": mc_settings.transport.photon_estimator,
            "control_variate": mc_settings.transport.control_variate,
            "negative_voxels_set_to_zero": int(res.info.get("negative_voxels_set_to_zero", 0))}
    if "target" in res.info:
        info["target"] = res.info["target"]
    if "control_variate" in res.info:  # where it applied: its density and activity-share thresholds
        info["control_variate_rule"] = res.info["control_variate"]
    return MethodOutput(res.dose_gy, res.relative_uncertainty, info)
