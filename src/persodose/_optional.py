"""Optional imports that fail at use with a message saying what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from persodose.errors import OptionalDependencyError


def optional_import(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`OptionalDependencyError` naming the extra.

    Args:
        module: dotted module name, e.g. ``"torch"``.
        extra: the persodose extra that installs it, e.g. ``"dl"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OptionalDependencyError(
            f"this feature needs '{module}': pip install 'persodose[{extra}]'"
        ) from exc
