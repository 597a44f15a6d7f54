"""Registry of dose methods: the one extension point for internal-dose methods.

A dose method registers itself with :func:`register_method`, giving its name, its own
settings dataclass (defaults, units, documentation and validation in one place), what it
needs (density, materials, kernels, the emission images per time point, a device) and what
it claims (linear in activity, stochastic, accuracy in a homogeneous phantom). The internal
workflow, the command line and the contract tests that run over every registered method find
it through :func:`get_spec`; nothing else changes when a method is added. Classical methods
are pure functions::

    method(tia: Grid, *, nuclide: str, density: Grid | None, kernels: KernelSet | None,
           settings) -> Grid

taking a time-integrated activity grid (:attr:`Kind.TIA`, Bq s per voxel) and returning the
absorbed dose (:attr:`Kind.DOSE`, Gy) on the same geometry; methods that need more (the Monte
Carlo engine, networks working on the images) take a :class:`DoseInputs`. The built-in
methods are ``led``, ``ssv``, ``dsv``, ``msv`` and ``mc``; plug-ins register more
(:mod:`persodose.plugins`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from persodose.errors import InputError, UnitsError, require_finite
from persodose.grid import Grid, Kind
from persodose.registry import Registry
from persodose.settings import resolve_settings as _resolve


def resolve_settings(settings: Any, settings_type: type, method: str = "") -> Any:
    """A dose method's settings (:func:`persodose.settings.resolve_settings` for a dose method)."""
    return _resolve(settings, settings_type, method, what="dose method")

__all__ = [
    "DoseMethod",
    "DoseInputs",
    "MethodOutput",
    "MethodSpec",
    "NoSettings",
    "ActivityInAirWarning",
    "register_method",
    "get_method",
    "get_spec",
    "available_methods",
    "resolve_settings",
    "parse_method_options",
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
class NoSettings:
    """Settings of a method that has none."""


#: What a dose method may need besides the time-integrated activity and the nuclide.
NEEDS = ("density", "materials", "kernels", "time_points", "device")


@dataclass
class DoseInputs:
    """Everything a dose method may use, on one dose grid (the TIA's geometry).

    Attributes:
        tia: time-integrated activity, :attr:`Kind.TIA`, Bq s per voxel.
        nuclide: radionuclide name (ICRP-107).
        density: mass density, g/cm3 (methods that need ``"density"``).
        materials: material-index map and ``material_list`` its materials (``"materials"``).
        kernels: voxel S-value kernels for the grid's voxel size (``"kernels"``).
        activities: activity (Bq per voxel) at each time point, and ``times_s`` their times
            after injection, s (``"time_points"``: methods working on the images themselves).
        seed: random seed of a stochastic method.
        backend: ``"cpu"`` or ``"cuda"`` for methods that need a ``"device"``.
        progress: ``update(done, total)`` for long methods (:mod:`persodose.progress`).
    """

    tia: Grid
    nuclide: str
    density: Grid | None = None
    materials: Grid | None = None
    material_list: tuple = ()
    kernels: Any = None
    activities: tuple = ()
    times_s: tuple = ()
    seed: int = 12345
    backend: str = "cpu"
    progress: Callable[[int, int], Any] | None = None


@dataclass
class MethodOutput:
    """What a dose method returns: the dose and, where it has them, its uncertainty and notes.

    Attributes:
        dose: absorbed dose, :attr:`Kind.DOSE`, Gy, on the TIA's geometry.
        uncertainty: relative standard uncertainty per voxel (fraction), or ``None``.
        info: method-specific figures for the provenance (decays, time, ...).
    """

    dose: Grid
    uncertainty: Grid | None = None
    info: dict = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A registered dose method: its function, settings and what it needs.

    Attributes:
        name: registry name (lower case), as given to ``--method``.
        function: the method. Classical methods are called
            ``function(tia, nuclide=, density=, kernels=, settings=)``; methods registered with
            ``takes_inputs=True`` are called ``function(inputs: DoseInputs, settings)``. Either
            returns a dose :class:`Grid` or a :class:`MethodOutput`.
        settings_type: the method's own settings dataclass (defaults, units and validation
            in one place); :class:`NoSettings` when it has none.
        needs: subset of :data:`NEEDS`.
        media: kernel media the method needs for given settings (empty: no kernels).
        linear: the dose is linear in the activity (so dose rates come from activities).
        stochastic: the result carries statistical noise (Monte Carlo).
        images: what the method expects of its ``activities``: ``"activity"`` (the activity
            itself, the default) or ``"spect"`` (a SPECT reconstruction, whose resolution loss
            the method compensates; the contract tests then give it the SPECT model's image of
            the source, :mod:`persodose.phantoms.spect_camera`).
        accuracy: relative accuracy the method claims for the mean dose inside a uniform
            source region in a homogeneous water-like phantom (checked by the contract tests).
        summary: one line for listings.
    """

    name: str
    function: Callable[..., Any]
    settings_type: type = NoSettings
    needs: frozenset = frozenset({"density"})
    media: Callable[[Any], tuple] = lambda settings: ()
    linear: bool = True
    stochastic: bool = False
    accuracy: float = 0.05
    takes_inputs: bool = False
    summary: str = ""
    images: str = "activity"

    def make_settings(self, options: Any = None) -> Any:
        """This method's settings from ``None``, an instance, or a mapping of field names to
        values (strings are parsed by the field's type)."""
        return resolve_settings(options, self.settings_type, self.name)

    def run(self, inputs: DoseInputs, settings: Any = None) -> MethodOutput:
        """Run the method on ``inputs``; always returns a :class:`MethodOutput`."""
        s = self.make_settings(settings)
        if self.takes_inputs:
            out = self.function(inputs, s)
        else:
            out = self.function(inputs.tia, nuclide=inputs.nuclide, density=inputs.density,
                                kernels=inputs.kernels, settings=s)
        return out if isinstance(out, MethodOutput) else MethodOutput(out)


# --------------------------------------------------------------------------- settings
def settings_doc(settings_type: type) -> list[tuple[str, str, str]]:
    """``(field, type, default)`` of a settings dataclass, for listings and the README."""
    import typing

    hints = typing.get_type_hints(settings_type)
    out = []
    for f in dataclasses.fields(settings_type):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        out.append((f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), repr(default)))
    return out


def parse_method_options(items: Iterable[str], source: str = "--method-option") -> dict[str, dict[str, str]]:
    """``["msv.density_scaling=true", ...]`` as ``{"msv": {"density_scaling": "true"}}``.

    Raises:
        InputError: an item that is not ``METHOD.FIELD=VALUE``.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise InputError(f"{source} {item!r} must read METHOD.SETTING=VALUE, e.g. msv.density_scaling=true")
        out.setdefault(method.lower(), {})[name.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- registry
#: The dose methods: the built-ins are registered by importing their modules.
METHODS: Registry[MethodSpec] = Registry(
    "dose method", builtins=[f"persodose.dose.{m}" for m in ("led", "svalue", "density_scaling", "msv", "monte_carlo",
                                                                       "dblurdosenet", "dnn")],
    identity=lambda spec: spec.function)


def register_method(name: str, *, settings: type = NoSettings, needs: Iterable[str] = ("density",),
                    media: Callable[[Any], tuple] | None = None, linear: bool = True, stochastic: bool = False,
                    accuracy: float = 0.05, takes_inputs: bool = False, summary: str = "", images: str = "activity"
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a dose method under ``name`` (lower case); see :class:`MethodSpec`.

    This is the only extension point for dose methods: the internal workflow, the command
    line (``--method NAME``, ``--method-option NAME.FIELD=VALUE``) and the contract tests
    find a method here. Re-registering the same function (a module reload) is allowed;
    another function under a taken name raises ``ValueError`` (a programming error).
    """
    key = str(name).strip().lower()
    if not key:
        raise ValueError("a dose method needs a name")
    if images not in ("activity", "spect"):
        raise ValueError(f"images must be 'activity' or 'spect', got {images!r}")
    bad = sorted(set(needs) - set(NEEDS))
    if bad:
        raise ValueError(f"unknown needs {bad}; choose from {NEEDS}")
    if not (dataclasses.is_dataclass(settings) and isinstance(settings, type)):
        raise ValueError("settings must be a dataclass type")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().splitlines()
        METHODS.add(key, MethodSpec(key, fn, settings, frozenset(needs), media or (lambda s: ()), linear, stochastic,
                                    float(accuracy), takes_inputs, summary or (doc[0] if doc else ""), images))
        fn.method_name = key  # type: ignore[attr-defined]
        return fn

    return deco


def get_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name`` (case-insensitive).

    Raises:
        InputError: no such method; the message lists the available ones.
    """
    return METHODS.get(name)


def get_method(name: str) -> Callable[..., Any]:
    """The function of the dose method registered as ``name`` (see :func:`get_spec`)."""
    return get_spec(name).function


def available_methods() -> list[str]:
    """Names of the registered dose methods, sorted."""
    return METHODS.names()


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


def check_air_threshold(value: float, method: str) -> None:
    """Refuse an air threshold that is not a finite density >= 0 g/cm3."""
    t = float(value)
    if not math.isfinite(t) or t < 0:
        raise InputError(f"{method}.air_threshold_g_cm3 must be a density >= 0 g/cm3, got {value!r}")


def dose_grid(tia: Grid, dose_gy: np.ndarray) -> Grid:
    """A :attr:`Kind.DOSE` grid (Gy, float32) on the TIA's geometry."""
    return tia.with_array(np.asarray(dose_gy, dtype=np.float32), Kind.DOSE, "Gy")
