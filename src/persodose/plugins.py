"""Plug-ins: user code that registers dose methods (and, later, other components).

A plug-in is an ordinary Python module whose import registers what it defines (for a dose
method: :func:`persodose.dose.registry.register_method`). It is found in three ways:

* installed packages that declare an entry point in the group :data:`ENTRY_POINT_GROUP`
  (``[project.entry-points."persodose.plugins"] mine = "my_package.my_module"``), loaded
  when the registry is first asked for its methods;
* ``persodose --plugin MODULE_OR_FILE.py ...`` on the command line (repeatable), or the
  ``PERSODOSE_PLUGINS`` environment variable (paths or module names separated by
  ``os.pathsep``);
* :func:`load_plugin` from Python.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from persodose.errors import InputError

ENTRY_POINT_GROUP = "persodose.plugins"
ENV_VAR = "PERSODOSE_PLUGINS"

_loaded: dict[str, ModuleType] = {}
_entry_points_loaded = False


def load_plugin(spec: str | os.PathLike) -> ModuleType:
    """Import a plug-in given as a ``.py`` file or an importable module name (once).

    Raises:
        InputError: the file does not exist, or the module cannot be imported or fails on
            import (the message names the plug-in and the error).
    """
    key = str(spec)
    if key in _loaded:
        return _loaded[key]
    path = Path(key)
    try:
        if key.endswith(".py") or path.exists():
            if not path.is_file():
                raise InputError(f"plug-in {key}: file does not exist")
            name = f"persodose_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise InputError(f"plug-in {key}: not a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(key)
    except InputError:
        raise
    except Exception as exc:  # the plug-in's own code: report it in one line, whatever it raised
        raise InputError(f"plug-in {key} failed to load: {type(exc).__name__}: {exc}") from exc
    _loaded[key] = module
    return module


def load_from_environment() -> list[ModuleType]:
    """Load the plug-ins named in ``PERSODOSE_PLUGINS``."""
    items = [s for s in os.environ.get(ENV_VAR, "").split(os.pathsep) if s.strip()]
    return [load_plugin(s) for s in items]


def load_entry_points() -> None:
    """Load the plug-ins installed packages declare in :data:`ENTRY_POINT_GROUP` (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken installed plug-in must not hide the built-in methods
            import warnings

            warnings.warn(f"plug-in {ep.name} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                          stacklevel=2)
