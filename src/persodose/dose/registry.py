"""Registry of dose methods, their common settings and input checks.

Every dose method is a pure function with the signature::

    method(tia: Grid, *, nuclide: str, density: Grid | None, kernels: KernelSet | None,
           settings: DoseSettings | Mapping | None) -> Grid

taking a time-integrated activity grid (:attr:`Kind.TIA`, Bq s per voxel) and returning the
absorbed dose (:attr:`Kind.DOSE`, Gy) on the same geometry. Methods register themselves by
name with :func:`register_method`; :func:`get_method` finds them. The built-in methods are
``"led"``, ``"ssv"``, ``"dsv"`` and ``"msv"``; a Monte Carlo engine registers ``"mc"`` the same
way.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from persodose.errors import InputError, UnitsError, require_finite
from persodose.grid import Grid, Kind

__all__ = [
    "DoseMethod",
    "DoseSettings",
    "ActivityInAirWarning",
    "register_method",
    "get_method",
    "available_methods",
    "as_settings",
    "check_tia",
    "check_density",
    "air_mask",
    "DEFAULT_AIR_THRESHOLD_G_CM3",
]

#: Densities below this are treated as air (no dose), g/cm3. Lung tissue is >= about 0.2 g/cm3
#: (ICRU Report 44 inflated lung 0.26 g/cm3) and air 0.0012 g/cm3, so 0.1 separates them.
DEFAULT_AIR_THRESHOLD_G_CM3 = 0.1


class ActivityInAirWarning(UserWarning):
    """Time-integrated activity found in voxels whose density is below the air threshold."""


class DoseMethod(Protocol):
    def __call__(self, tia: Grid, *, nuclide: str, density: Grid | None, kernels: Any,
                 settings: Any = None) -> Grid: ...


@dataclass(frozen=True)
class DoseSettings:
    """Settings shared by the dose methods (each method reads the ones it needs).

    Attributes:
        led_energy: ``"all"`` (electrons, alphas and photons deposited locally) or
            ``"electron"`` (only the non-penetrating electron and alpha energy).
        air_threshold_g_cm3: voxels below this density get no dose (LED, DSV, MSV), g/cm3.
        ssv_medium: kernel of the :class:`KernelSet` used by SSV and DSV.
        dsv_reference_density_g_cm3: density the SSV kernel is scaled from in DSV; ``None``
            takes the kernel's ``density_g_cm3`` (1.04 g/cm3 for ICRU soft tissue).
        msv_media: MSV media, in order of increasing density; ``None``: the kernels of the
            set sorted by their density.
        msv_bin_edges_g_cm3: the ``len(media) - 1`` density edges between consecutive media;
            ``None``: midpoints between the kernels' reference densities.
        msv_density_scaling: multiply the MSV dose by ``rho_ref(medium) / rho(voxel)``
            within each density bin (off by default: Lee et al. 2018 only mask).
        workers: threads for the FFT (``-1``: all cores).
        block_z: overlap-add slab height for the FFT convolution (``None``: whole volume).
        backend: ``"scipy"`` or ``"torch"`` convolution.
    """

    led_energy: str = "all"
    air_threshold_g_cm3: float = DEFAULT_AIR_THRESHOLD_G_CM3
    ssv_medium: str = "soft_tissue"
    dsv_reference_density_g_cm3: float | None = None
    msv_media: tuple[str, ...] | None = None
    msv_bin_edges_g_cm3: tuple[float, ...] | None = None
    msv_density_scaling: bool = False
    workers: int = -1
    block_z: int | None = None
    backend: str = "scipy"

    def __post_init__(self) -> None:
        if self.led_energy not in ("all", "electron"):
            raise InputError(f"led_energy must be 'all' or 'electron', got {self.led_energy!r}")
        t = float(self.air_threshold_g_cm3)
        if not math.isfinite(t) or t < 0:
            raise InputError(f"air threshold must be a density >= 0 g/cm3, got {self.air_threshold_g_cm3!r}")
        if self.dsv_reference_density_g_cm3 is not None and not float(self.dsv_reference_density_g_cm3) > 0:
            raise InputError("dsv_reference_density_g_cm3 must be positive")
        if self.msv_media is not None:
            object.__setattr__(self, "msv_media", tuple(self.msv_media))
        if self.msv_bin_edges_g_cm3 is not None:
            edges = tuple(float(e) for e in self.msv_bin_edges_g_cm3)
            if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
                raise InputError(f"MSV density edges must be finite and increasing, got {edges}")
            object.__setattr__(self, "msv_bin_edges_g_cm3", edges)
        if self.backend not in ("scipy", "torch"):
            raise InputError(f"unknown convolution backend {self.backend!r}; use 'scipy' or 'torch'")


def as_settings(settings: DoseSettings | Mapping[str, Any] | None) -> DoseSettings:
    """:class:`DoseSettings` from settings, a mapping of its fields, or ``None`` (defaults).

    Raises:
        InputError: unknown setting names or invalid values.
    """
    if settings is None:
        return DoseSettings()
    if isinstance(settings, DoseSettings):
        return settings
    if isinstance(settings, Mapping):
        names = {f.name for f in dataclasses.fields(DoseSettings)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise InputError(f"unknown dose setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return DoseSettings(**dict(settings))
    raise InputError(f"dose settings must be DoseSettings or a mapping, got {type(settings).__name__}")


# --------------------------------------------------------------------------- registry
_METHODS: dict[str, Callable[..., Grid]] = {}


def register_method(name: str) -> Callable[[Callable[..., Grid]], Callable[..., Grid]]:
    """Decorator registering a dose method under ``name`` (lower case).

    Re-registering the same function (a module reload) is allowed; another function under
    a taken name raises ``ValueError`` (a programming error, not user input).
    """
    key = str(name).strip().lower()
    if not key:
        raise ValueError("a dose method needs a name")

    def deco(fn: Callable[..., Grid]) -> Callable[..., Grid]:
        old = _METHODS.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"dose method {key!r} is already registered by {old.__module__}.{old.__qualname__}")
        _METHODS[key] = fn
        fn.method_name = key  # type: ignore[attr-defined]
        return fn

    return deco


def get_method(name: str) -> Callable[..., Grid]:
    """The dose method registered as ``name`` (case-insensitive).

    Raises:
        InputError: no such method; the message lists the available ones.
    """
    key = str(name).strip().lower()
    try:
        return _METHODS[key]
    except KeyError:
        raise InputError(f"unknown dose method {name!r}; available: {', '.join(available_methods())}") from None


def available_methods() -> list[str]:
    """Names of the registered dose methods, sorted."""
    return sorted(_METHODS)


# --------------------------------------------------------------------------- input checks
def check_tia(tia: Grid) -> np.ndarray:
    """Validate a time-integrated activity grid; return its values as float32.

    Raises:
        UnitsError: not a :attr:`Kind.TIA` grid or not in Bq s.
        InputError: NaN or infinite values.
    """
    if not isinstance(tia, Grid):
        raise InputError(f"the time-integrated activity must be a Grid, got {type(tia).__name__}")
    if tia.kind is not Kind.TIA:
        raise UnitsError(f"dose methods need a time-integrated activity grid (Bq s), got a {tia.kind.value} grid")
    if (tia.unit or "").replace("·", " ").strip() not in ("Bq s", "Bq*s", "Bq.s"):
        raise UnitsError(f"time-integrated activity must be in Bq s, got {tia.unit!r}")
    require_finite(tia.array, "time-integrated activity")
    return np.asarray(tia.array, dtype=np.float32)


def check_density(density: Grid | None, tia: Grid, method: str) -> np.ndarray:
    """Validate a density grid on the TIA's geometry; return its values as float32.

    Raises:
        InputError: missing, wrong kind, NaN, negative. GeometryError: another geometry.
    """
    if density is None:
        raise InputError(f"dose method {method!r} needs a density grid (g/cm3)")
    if not isinstance(density, Grid):
        raise InputError(f"the density must be a Grid, got {type(density).__name__}")
    if density.kind is not Kind.DENSITY:
        raise UnitsError(f"dose method {method!r} needs a density grid (g/cm3), got a {density.kind.value} grid")
    tia.require_same_geometry(density, "time-integrated activity and density")
    require_finite(density.array, "density")
    rho = np.asarray(density.array, dtype=np.float32)
    if np.any(rho < 0):
        raise InputError(f"density holds {int(np.count_nonzero(rho < 0))} negative value(s)")
    return rho


def air_mask(rho: np.ndarray, tia: np.ndarray, threshold_g_cm3: float, method: str) -> np.ndarray:
    """Boolean mask of air voxels (density below the threshold); warns when they hold activity.

    Warns:
        ActivityInAirWarning: with the number of such voxels and their share of the total TIA.
    """
    air = rho < threshold_g_cm3
    if np.any(air):
        hot = air & (tia > 0)
        n = int(np.count_nonzero(hot))
        if n:
            total = float(np.sum(tia[tia > 0], dtype=np.float64))
            share = float(np.sum(tia[hot], dtype=np.float64)) / total if total > 0 else 0.0
            warnings.warn(
                f"{method}: activity in air: {n} voxel(s) below {threshold_g_cm3:g} g/cm3 hold "
                f"{100 * share:.3g} % of the time-integrated activity; their dose is set to 0",
                ActivityInAirWarning, stacklevel=3)
    return air


def dose_grid(tia: Grid, dose_gy: np.ndarray) -> Grid:
    """A :attr:`Kind.DOSE` grid (Gy, float32) on the TIA's geometry."""
    return tia.with_array(np.asarray(dose_gy, dtype=np.float32), Kind.DOSE, "Gy")
