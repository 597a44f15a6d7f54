"""Registry of segmenters, :func:`segment` and :func:`resolve_labels`.

A segmenter is a function ``segmenter(ct: Grid, settings) -> (labels: Grid, names: dict)``
taking a CT grid (:attr:`Kind.CT`, HU) and its settings dataclass, and returning a label map
(:attr:`Kind.LABELS`, integers, 0 = unlabelled) on the CT's geometry together with
``{label value: organ name}``. It registers itself by name with :func:`register_segmenter`,
declaring its settings type, the organs it can deliver and the modules it needs (with the
persodose extra that installs them). Those modules are not imported at registration: a
segmenter built on a network imports torch/MONAI inside its function, so that listing or
choosing segmenters costs nothing.

Organ names follow the labels persodose already uses (:data:`persodose.phantoms.LABELS`:
``body``, ``lung_left``, ``lung_right``, ...) so that
:func:`persodose.risk.effective_dose.tissue_for_label` maps them onto ICRP 103 tissues.

The built-in back-ends are the modules of :data:`BUILTIN_BACKENDS`, imported when the registry
is first used (a module that does not exist is skipped): ``"threshold"``
(:mod:`persodose.segmentation.threshold`), ``"totalsegmentator"``
(:mod:`persodose.segmentation.totalsegmentator`, an extra) and ``"builtin"`` (the trained
U-Net, :mod:`persodose.segmentation.builtin`). Plug-ins register more the same way
(:mod:`persodose.plugins`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from persodose.registry import Registry
from persodose.errors import InputError, OptionalDependencyError, require_finite
from persodose.grid import Grid, Kind
from persodose.segmentation._settings import NoSettings, SegmenterSettings, resolve_settings

__all__ = ["BUILTIN_BACKENDS", "DEFAULT_BACKEND", "AUTO_PREFIX", "SegmenterInfo", "Segmentation", "register_segmenter",
           "get_segmenter", "available_segmenters", "segment", "resolve_labels", "is_auto_spec"]

#: Back-end of :func:`segment` and of ``--labels auto``.
DEFAULT_BACKEND = "threshold"
#: ``--labels`` value that asks for an automatic segmentation (``auto`` or ``auto:NAME``).
AUTO_PREFIX = "auto"

Segmenter = Callable[[Grid, Any], "tuple[Grid, dict[int, str]]"]


@dataclass(frozen=True)
class SegmenterInfo:
    """A registered segmenter: its function, settings and what it needs.

    Attributes:
        name: registry name (lower case), as in ``--labels auto:NAME``.
        function: ``function(ct, settings) -> (labels, names)``.
        settings_type: the segmenter's settings dataclass (a :class:`SegmenterSettings`).
        organs: the organ names it can deliver.
        requires: importable modules it needs beyond persodose's own dependencies
            (e.g. ``("torch", "monai")``); checked without importing them.
        extra: the persodose extra that installs ``requires`` (e.g. ``"dl"``).
        summary: one line for listings.
    """

    name: str
    function: Segmenter
    settings_type: type = NoSettings
    organs: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    extra: str | None = None
    summary: str = ""

    def missing_requirements(self) -> list[str]:
        """The modules of :attr:`requires` that are not installed (found without importing)."""
        return [m for m in self.requires if importlib.util.find_spec(m.split(".")[0]) is None]

    @property
    def installed(self) -> bool:
        """Whether everything it needs is installed."""
        return not self.missing_requirements()

    def make_settings(self, settings: Any = None) -> Any:
        """Settings from ``None`` (defaults), an instance or a mapping of field names to values."""
        return resolve_settings(settings, self.settings_type, self.name)


@dataclass(frozen=True)
class Segmentation:
    """What :func:`segment` returns.

    Attributes:
        labels: label map, :attr:`Kind.LABELS`, on the CT's geometry (0 = unlabelled).
        names: ``{label value: organ name}`` of the labels delivered.
        backend: the segmenter used.
        settings: its settings, as written to the provenance JSON.
    """

    labels: Grid
    names: dict[int, str]
    backend: str
    settings: dict[str, Any] = field(default_factory=dict)

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each delivered organ, mL."""
        counts = np.bincount(np.asarray(self.labels.array, dtype=np.int64).ravel(),
                             minlength=max(self.names, default=0) + 1)
        return {name: float(counts[v]) * self.labels.voxel_volume_ml for v, name in self.names.items()}

    def provenance(self) -> dict[str, Any]:
        """Back-end, settings and label names, for the provenance JSON."""
        return {"segmenter": self.backend, "settings": dict(self.settings),
                "labels": {str(k): v for k, v in sorted(self.names.items())}}


#: Modules of the built-in back-ends, imported (and so registered) when the registry is first
#: used; a module that does not exist (yet) is skipped. ``builtin`` is the trained U-Net.
BUILTIN_BACKENDS: tuple[str, ...] = ("persodose.segmentation.threshold",
                                     "persodose.segmentation.totalsegmentator",
                                     "persodose.segmentation.builtin")


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _SegmenterRegistry(Registry):
    """A :class:`~persodose.registry.Registry` whose built-in modules are looked for at first use."""

    def load(self) -> None:
        if not self._loaded:
            self.builtins = tuple(m for m in BUILTIN_BACKENDS if _module_exists(m))
        super().load()


#: The segmenters: the built-ins are registered by importing their modules at first use.
SEGMENTERS: Registry[SegmenterInfo] = _SegmenterRegistry("segmenter", identity=lambda info: info.function)


def register_segmenter(name: str, function: Segmenter | None = None, *, settings: type = NoSettings,
                       organs: Iterable[str] = (), requires: Iterable[str] = (), extra: str | None = None,
                       summary: str = "") -> Any:
    """Register a segmenter under ``name``; usable directly or as a decorator.

    ``register_segmenter("mine", fn, settings=MySettings, organs=("liver",))`` or
    ``@register_segmenter("mine", settings=MySettings, organs=("liver",))`` above ``fn``.
    This is the only extension point for segmenters: :func:`segment`, ``--labels auto:NAME``
    and the contract tests find them here. Re-registering the same function (a module
    reload) is allowed; another function under a taken name raises ``ValueError`` (a
    programming error, not a user's).

    Args:
        name: registry name (case-insensitive).
        function: the segmenter (omit to use as a decorator).
        settings: its settings dataclass, deriving from :class:`SegmenterSettings`.
        organs: organ names it can deliver.
        requires: modules it imports when run (checked at :func:`segment`).
        extra: the persodose extra installing them.
        summary: one line for listings (default: the first line of the docstring).
    """
    key = str(name).strip().lower()
    if not key or ":" in key:
        raise ValueError(f"a segmenter needs a name without ':', got {name!r}")
    if not (isinstance(settings, type) and dataclasses.is_dataclass(settings)
            and issubclass(settings, SegmenterSettings)):
        raise ValueError("settings must be a SegmenterSettings dataclass type")
    organ_names = tuple(str(o) for o in organs)
    if not organ_names:
        raise ValueError(f"segmenter {key!r} must declare the organs it delivers")

    def deco(fn: Segmenter) -> Segmenter:
        doc = (fn.__doc__ or "").strip().splitlines()
        SEGMENTERS.add(key, SegmenterInfo(key, fn, settings, organ_names, tuple(requires), extra,
                                          summary or (doc[0] if doc else "")))
        return fn

    return deco if function is None else deco(function)


def available_segmenters() -> list[str]:
    """Names of the registered segmenters, sorted (installed or not; see :class:`SegmenterInfo`)."""
    return SEGMENTERS.names()


def get_segmenter(name: str) -> SegmenterInfo:
    """The :class:`SegmenterInfo` registered as ``name`` (case-insensitive).

    Raises:
        InputError: no such segmenter; the message lists the known ones.
    """
    return SEGMENTERS.get(name)


def _check_ct(ct: Grid) -> None:
    if not isinstance(ct, Grid):
        raise InputError(f"segmentation needs a CT Grid, got {type(ct).__name__}")
    if ct.kind is not Kind.CT:
        raise InputError(f"segmentation needs a CT grid in HU, got a {ct.kind.value} grid")
    if (ct.unit or "HU").strip().upper() != "HU":
        raise InputError(f"segmentation needs CT numbers in HU, got unit {ct.unit!r}")
    require_finite(ct.array, "CT")


def _check_output(info: SegmenterInfo, ct: Grid, out: Any) -> tuple[Grid, dict[int, str]]:
    """The segmenter's result, checked: a label grid on the CT geometry and its names.

    A segmenter that breaks this contract is a bug in its code, not the user's mistake, so
    the errors are ``TypeError``/``ValueError`` (kept with their traceback by the CLI).
    """
    try:
        labels, names = out
    except (TypeError, ValueError):
        raise TypeError(f"segmenter {info.name!r} must return (labels, names)") from None
    if not isinstance(labels, Grid) or labels.kind is not Kind.LABELS:
        raise TypeError(f"segmenter {info.name!r} must return a Kind.LABELS grid")
    if not labels.same_geometry(ct):
        raise ValueError(f"segmenter {info.name!r} returned labels off the CT's geometry")
    names = {int(k): str(v) for k, v in dict(names).items()}
    if 0 in names:
        raise ValueError(f"segmenter {info.name!r}: label 0 means unlabelled and takes no name")
    return labels, names


def _select_organs(info: SegmenterInfo, labels: Grid, names: dict[int, str],
                   organs: Sequence[str] | None) -> tuple[Grid, dict[int, str]]:
    """Keep only ``organs`` (names); other labels become 0."""
    if organs is None:
        return labels, names
    wanted = [str(o).strip() for o in ([organs] if isinstance(organs, str) else organs)]
    unknown = [o for o in wanted if o not in info.organs]
    if unknown:
        raise InputError(f"segmenter {info.name!r} cannot deliver {', '.join(map(repr, unknown))}; "
                         f"it delivers: {', '.join(info.organs)}")
    keep = {v: n for v, n in names.items() if n in wanted}
    arr = np.asarray(labels.array)
    out = np.where(np.isin(arr, list(keep)), arr, 0).astype(arr.dtype)
    return labels.with_array(out), keep


def segment(ct_grid: Grid, backend: str = DEFAULT_BACKEND, organs: Sequence[str] | None = None,
            settings: Any = None) -> Segmentation:
    """Segment a CT with a registered back-end.

    Args:
        ct_grid: CT, :attr:`Kind.CT`, HU, any geometry (the CT is never modified).
        backend: registry name of the segmenter (:func:`available_segmenters`).
        organs: organ names to keep (a subset of the back-end's :attr:`SegmenterInfo.organs`);
            ``None`` keeps all. Labels not kept become 0.
        settings: the back-end's settings dataclass, a mapping of its field names to values
            (strings are parsed), or ``None`` for the defaults.

    Returns:
        :class:`Segmentation` with the label map on the CT's geometry and its names.

    Raises:
        InputError: not a CT grid in HU, non-finite values, unknown back-end, organ or
            setting, a CT the back-end cannot segment.
        OptionalDependencyError: the back-end needs a package that is not installed.
    """
    info = get_segmenter(backend)
    _check_ct(ct_grid)
    missing = info.missing_requirements()
    if missing:
        extra = f"pip install 'persodose[{info.extra}]'" if info.extra else f"pip install {' '.join(missing)}"
        raise OptionalDependencyError(f"segmenter {info.name!r} needs {', '.join(missing)}: {extra}")
    s = info.make_settings(settings)
    labels, names = _check_output(info, ct_grid, info.function(ct_grid, s))
    labels, names = _select_organs(info, labels, names, organs)
    return Segmentation(labels, names, info.name, s.to_dict())


def is_auto_spec(spec: str) -> bool:
    """Whether a ``--labels`` value asks for automatic segmentation (``auto``, ``auto:NAME``)."""
    text = str(spec).strip().lower()
    return text == AUTO_PREFIX or text.startswith(AUTO_PREFIX + ":")


def resolve_labels(spec: str, ct_grid: Grid, settings: Any = None) -> tuple[Grid, dict[int, str]]:
    """Labels for a ``--labels`` value of ``"auto"`` (default back-end) or ``"auto:NAME"``.

    Args:
        spec: ``"auto"`` or ``"auto:NAME"`` (case-insensitive).
        ct_grid: the CT to segment (HU).
        settings: settings of the back-end (see :func:`segment`).

    Returns:
        ``(labels, names)``: the label map on the CT's geometry and ``{value: organ name}``.

    Raises:
        InputError: ``spec`` is neither form, or the name is not a known segmenter (the
            message lists them), or :func:`segment` fails.
    """
    text = str(spec).strip()
    if not is_auto_spec(text):
        raise InputError(f"--labels {spec!r}: automatic segmentation reads 'auto' or 'auto:NAME' "
                         f"(NAME one of {', '.join(available_segmenters())})")
    _, _, name = text.partition(":")
    if ":" in text and not name.strip():
        raise InputError(f"--labels {spec!r}: give a segmenter after 'auto:' "
                         f"({', '.join(available_segmenters())})")
    result = segment(ct_grid, backend=name.strip() or DEFAULT_BACKEND, settings=settings)
    return result.labels, result.names
