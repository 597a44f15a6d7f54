"""One registry per kind of component (dose methods, segmenters, networks, dataset kinds).

A :class:`Registry` maps case-insensitive names to the components of one kind. Built-in
components are registered by importing their modules on the first look-up, and installed
plug-ins through :func:`persodose.plugins.load_entry_points`; an unknown name is a one-line
:class:`~persodose.errors.InputError` listing the known names. Registering another function
under a taken name is a programming error (``ValueError``); re-registering the same one (a
module reload) is allowed.
"""

from __future__ import annotations

import importlib
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from persodose.errors import InputError

T = TypeVar("T")

__all__ = ["Registry", "qualified_name"]


def qualified_name(fn) -> tuple[str, str]:
    """``(module, qualname)`` of a function, to tell a reload from a clash."""
    return getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn))


class Registry(Generic[T]):
    """Named components of one kind.

    Args:
        kind: what the components are, for messages (``"dose method"``).
        builtins: modules to import before the first look-up (they register the built-ins).
        identity: the function behind a component, to compare re-registrations.
    """

    def __init__(self, kind: str, builtins: Iterable[str] = (), identity: Callable[[T], object] = lambda c: c):
        self.kind = kind
        self.builtins = tuple(builtins)
        self._identity = identity
        self._items: dict[str, T] = {}
        self._loaded = False
        self._lock = threading.RLock()

    @staticmethod
    def key(name: str) -> str:
        return str(name).strip().lower()

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; another function under a taken name raises ``ValueError``."""
        key = self.key(name)
        if not key:
            raise ValueError(f"a {self.kind} needs a name")
        old = self._items.get(key)
        if old is not None and qualified_name(self._identity(old)) != qualified_name(self._identity(item)):
            module, qual = qualified_name(self._identity(old))
            raise ValueError(f"{self.kind} {key!r} is already registered by {module}.{qual}")
        self._items[key] = item
        return item

    def load(self) -> None:
        """Import the built-in modules and the installed plug-ins (once)."""
        if self._loaded:
            return
        with self._lock:  # threads of one Dask worker may look up a fresh registry at once
            if self._loaded:
                return
            for module in self.builtins:
                importlib.import_module(module)
            from persodose.plugins import load_entry_points

            load_entry_points()
            self._loaded = True

    def get(self, name: str) -> T:
        """The component registered as ``name``; an unknown name lists the known ones."""
        key = self.key(name)
        if key not in self._items:
            self.load()
        try:
            return self._items[key]
        except KeyError:
            raise InputError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self.load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return self.key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def snapshot(self) -> dict[str, T]:
        """A copy of the entries (tests restore it with :meth:`restore`)."""
        return dict(self._items)

    def restore(self, items: dict[str, T]) -> None:
        self._items = dict(items)
