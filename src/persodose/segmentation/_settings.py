"""Settings of segmenters declared once: default, unit, doc and range in one field.

A segmenter's settings are a frozen dataclass deriving from :class:`SegmenterSettings` whose
fields are made with :func:`setting`. The range given there is checked when the object is
made, every problem is a one-line :class:`~persodose.errors.InputError` naming the field, and
:meth:`SegmenterSettings.to_dict` is what goes into the provenance JSON.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any

from persodose.errors import InputError

__all__ = ["setting", "SegmenterSettings", "SettingDoc", "NoSettings", "resolve_settings"]


def setting(default: Any, *, unit: str = "", doc: str = "", min: float | None = None,
            max: float | None = None) -> Any:
    """A dataclass field carrying its unit, its documentation and its allowed range.

    Args:
        default: default value.
        unit: unit of the value (``"HU"``, ``"mm"``, ``"mL"``; empty when it has none).
        doc: one sentence saying what the setting does.
        min, max: inclusive bounds for numbers (``None``: unbounded).
    """
    return dataclasses.field(default=default, metadata={"unit": unit, "doc": doc, "min": min, "max": max})


@dataclass(frozen=True)
class SettingDoc:
    """One row of a settings listing."""

    name: str
    type: str
    default: Any
    unit: str
    doc: str


@dataclass(frozen=True)
class SegmenterSettings:
    """Base class of segmenter settings: checks every field's range on creation."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            hint = hints.get(f.name)
            if hint in (int, float) and not isinstance(value, bool) and isinstance(value, numbers.Real):
                if not math.isfinite(float(value)):
                    raise InputError(f"{self._owner()}.{f.name} must be a finite number, got {value!r}")
                lo, hi, unit = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("unit", "")
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    rng = f"{'-inf' if lo is None else f'{lo:g}'}..{'inf' if hi is None else f'{hi:g}'}"
                    raise InputError(f"{self._owner()}.{f.name} must be within {rng} {unit}".rstrip()
                                     + f", got {value!r}")
            elif hint in (int, float) and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise InputError(f"{self._owner()}.{f.name} must be a number, got {value!r}")
            if hint is int and not isinstance(value, numbers.Integral):
                raise InputError(f"{self._owner()}.{f.name} must be an integer, got {value!r}")
            elif hint is bool and not isinstance(value, bool):
                raise InputError(f"{self._owner()}.{f.name} must be true or false, got {value!r}")
        self.check()

    def check(self) -> None:
        """Checks between fields (override); raise :class:`InputError` in one line."""

    @classmethod
    def _owner(cls) -> str:
        return getattr(cls, "segmenter_name", cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        """The values, for the provenance JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> list[SettingDoc]:
        """Name, type, default, unit and doc of every field, for listings and ``--help``."""
        hints = typing.get_type_hints(cls)
        return [SettingDoc(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), f.default,
                           f.metadata.get("unit", ""), f.metadata.get("doc", ""))
                for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class NoSettings(SegmenterSettings):
    """Settings of a segmenter that has none."""


def resolve_settings(settings: Any, settings_type: type, owner: str) -> Any:
    """A segmenter's settings (:func:`persodose.settings.resolve_settings` for a segmenter)."""
    from persodose.settings import resolve_settings as _resolve

    return _resolve(settings, settings_type, owner, what="segmenter")
