"""Settings declared once as dataclasses, read from Python values or from text.

Every component (a dose method, a segmenter, a network) declares its settings as a frozen
dataclass: default, unit (in the field name or its metadata), documentation and validation
in one place. :func:`resolve_settings` makes one from defaults, an instance, or a mapping
whose string values (a command line, a settings file) are parsed by the fields' annotated
types; every problem is a one-line :class:`~persodose.errors.InputError` naming
``owner.field``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from persodose.errors import InputError

__all__ = ["parse_value", "resolve_settings"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(text: str, hint: Any, where: str) -> Any:
    """``text`` as a value of the type ``hint`` (bool, int, float, str, tuples, optionals)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.strip().lower() in ("none", "null", ""):
            return None
        return parse_value(text, args[0], where)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else str
        return tuple(parse_value(x.strip(), item, where) for x in text.split(",") if x.strip())
    t = text.strip()
    try:
        if hint is bool:
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError("not true or false")
        if hint is int:
            return int(t)
        if hint is float:
            return float(t)
    except ValueError as exc:
        raise InputError(f"{where}: cannot read {text!r} as {getattr(hint, '__name__', hint)} ({exc})") from None
    return t


def resolve_settings(settings: Any, settings_type: type, owner: str = "", what: str = "component") -> Any:
    """A ``settings_type`` instance from ``None`` (defaults), an instance, or a mapping.

    Mapping values that are strings (from the command line or a settings file) are parsed by
    the field's annotated type; other values are used as they are. The dataclass's own
    validation runs; every problem is an :class:`InputError` naming ``owner.field``.
    """
    import typing

    if settings is None:
        return settings_type()
    if isinstance(settings, settings_type):
        return settings
    if not isinstance(settings, Mapping):
        raise InputError(f"settings of {what} {owner!r} must be {settings_type.__name__} or a mapping, "
                         f"got {type(settings).__name__}")
    fields = {f.name for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise InputError(f"unknown setting(s) {', '.join(f'{owner}.{u}' for u in unknown)}; "
                         f"{owner} has: {known}")
    hints = typing.get_type_hints(settings_type)
    values = {k: (parse_value(v, hints[k], f"{owner}.{k}") if isinstance(v, str) and hints[k] is not str else v)
              for k, v in settings.items()}
    try:
        return settings_type(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"settings of {what} {owner!r}: {exc}") from None
