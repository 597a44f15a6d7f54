"""Gamma-index comparison of two dose grids with ``pymedphys.gamma``.

The gamma index (Low DA, Harms WB, Mutic S, Purdy JA, "A technique for the quantitative
evaluation of dose distributions", Med Phys 25:656-661, 1998) of a reference point ``r`` is

    gamma(r) = min over evaluated points e of sqrt(|e - r|^2 / DTA^2 + (D_t(e) - D_r(r))^2 / dD^2)

with ``DTA`` = ``distance_mm`` and ``dD`` = ``dose_percent`` % of the reference maximum (global)
or of ``D_r(r)`` (local). A point passes when ``gamma <= 1``. ``pymedphys.gamma`` searches the
test grid, interpolated on the fly at steps of ``DTA / interp_fraction`` (the approach of
Wendling M et al., "A fast algorithm for gamma evaluation in 3D", Med Phys 34:1647-1654, 2007),
up to the distance ``max_gamma * DTA``; gamma values above ``max_gamma`` are reported as
``max_gamma``. SINFONIA D2.2 ("Evaluation metrics") reports the gamma pass rate of whole-body
CT dose maps at 1 %/1 mm following Low et al.

Only reference points whose dose is at least ``lower_percent_dose_cutoff`` % of the reference
maximum are evaluated; the pass rate is the percentage of evaluated points with
``gamma <= 1``. The test grid should cover the reference region above the cutoff: reference
points where pymedphys gets no test value come back as NaN and are left out of the pass rate,
and points near the edge of a smaller test grid may fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid


@dataclass(frozen=True)
class GammaResult:
    """Outcome of a gamma comparison.

    Attributes:
        pass_rate_percent: percentage of evaluated reference points with gamma <= 1.
        n_evaluated: number of evaluated reference points.
        mean_gamma: mean gamma over the evaluated points (capped values included).
        gamma: gamma map on the reference grid, NaN where not evaluated (below the cutoff,
            outside the random subset, or where the test grid gives no value).
        dose_percent, distance_mm, local, lower_percent_dose_cutoff, max_gamma: the criteria.
    """

    pass_rate_percent: float
    n_evaluated: int
    mean_gamma: float
    gamma: np.ndarray
    dose_percent: float
    distance_mm: float
    local: bool
    lower_percent_dose_cutoff: float
    max_gamma: float

    def summary(self) -> dict:
        """The scalars, for reports (no map)."""
        return {"gamma_pass_rate_percent": self.pass_rate_percent, "gamma_n_evaluated": self.n_evaluated,
                "gamma_mean": self.mean_gamma, "gamma_dose_percent": self.dose_percent,
                "gamma_distance_mm": self.distance_mm, "gamma_local": self.local,
                "gamma_lower_percent_dose_cutoff": self.lower_percent_dose_cutoff,
                "gamma_max": self.max_gamma}


def _axes_mm(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (mm) of the voxel centres along z, y, x in the grid's own rotated frame.

    For two grids with the same direction cosines these coordinates share one frame
    (origin projected on the index axes), so different spacings and origins are allowed.
    """
    o = grid.direction_xyz.T @ np.asarray(grid.origin_xyz_mm)  # (x, y, z) along index axes
    oz, oy, ox = o[2], o[1], o[0]
    sz, sy, sx = grid.spacing_zyx_mm
    nz, ny, nx = grid.shape
    return (oz + sz * np.arange(nz), oy + sy * np.arange(ny), ox + sx * np.arange(nx))


def gamma_index(reference: Grid, test: Grid, dose_percent: float = 3.0, distance_mm: float = 3.0,
                lower_percent_dose_cutoff: float = 10.0, local: bool = False, max_gamma: float = 2.0,
                random_subset: int | None = None, seed: int = 0, interp_fraction: int = 10,
                ) -> GammaResult:
    """Gamma map and pass rate of ``test`` against ``reference``.

    Args:
        reference: reference dose grid (each of its points is a gamma centre).
        test: evaluated dose grid, same unit; may have another spacing or origin but must
            have the same direction cosines.
        dose_percent: dose-difference criterion, % of the reference maximum (global) or of
            the local reference dose (``local=True``).
        distance_mm: distance-to-agreement criterion, mm.
        lower_percent_dose_cutoff: reference points below this % of the reference maximum
            are not evaluated.
        local: local instead of global dose normalisation.
        max_gamma: search stops at ``max_gamma * distance_mm``; larger gammas are capped.
        random_subset: evaluate only this many randomly chosen reference points (faster).
        seed: seed of that random choice (numpy's global generator is restored afterwards).
        interp_fraction: search step = ``distance_mm / interp_fraction``.

    Raises:
        GeometryError: different direction cosines.
        InputError: NaN values, non-positive criteria, a reference without positive dose.
    """
    import pymedphys

    for g, what in ((reference, "reference dose"), (test, "test dose")):
        if not isinstance(g, Grid):
            raise InputError(f"{what} must be a persodose Grid for the gamma index")
        g.check_finite(what)
    if not np.allclose(reference.direction_xyz, test.direction_xyz, atol=1e-4):
        raise GeometryError("gamma index: reference and test grids have different orientations")
    if dose_percent <= 0 or distance_mm <= 0 or max_gamma <= 0:
        raise InputError("gamma criteria (dose %, distance mm, max gamma) must be positive")
    ref = np.asarray(reference.array, dtype=np.float64)
    tst = np.asarray(test.array, dtype=np.float64)
    if not np.max(ref) > 0:
        raise InputError("gamma index: the reference dose has no positive value")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        g = pymedphys.gamma(_axes_mm(reference), ref, _axes_mm(test), tst,
                            dose_percent_threshold=float(dose_percent),
                            distance_mm_threshold=float(distance_mm),
                            lower_percent_dose_cutoff=float(lower_percent_dose_cutoff),
                            interp_fraction=int(interp_fraction), max_gamma=float(max_gamma),
                            local_gamma=bool(local), random_subset=random_subset)
    finally:
        np.random.set_state(state)
    g = np.asarray(g, dtype=np.float64)
    valid = np.isfinite(g)
    n = int(valid.sum())
    if n == 0:
        raise InputError("gamma index: no reference point above the dose cutoff")
    vals = g[valid]
    return GammaResult(pass_rate_percent=100.0 * float(np.mean(vals <= 1.0)), n_evaluated=n,
                       mean_gamma=float(np.mean(vals)), gamma=g, dose_percent=float(dose_percent),
                       distance_mm=float(distance_mm), local=bool(local),
                       lower_percent_dose_cutoff=float(lower_percent_dose_cutoff),
                       max_gamma=float(max_gamma))


def gamma_pass_rate(reference: Grid, test: Grid, dose_percent: float = 3.0, distance_mm: float = 3.0,
                    lower_percent_dose_cutoff: float = 10.0, local: bool = False, max_gamma: float = 2.0,
                    random_subset: int | None = None, seed: int = 0) -> float:
    """Gamma pass rate (%) of ``test`` against ``reference``; see :func:`gamma_index`."""
    return gamma_index(reference, test, dose_percent, distance_mm, lower_percent_dose_cutoff, local,
                       max_gamma, random_subset, seed).pass_rate_percent
