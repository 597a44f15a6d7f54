"""Atomic outputs and provenance.

Every command writes into a temporary sibling of its output and moves it into place only
when everything succeeded, so a failure leaves nothing half-written. Inputs are never
opened for writing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from persodose.errors import InputError


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` when the block succeeds.

    On an exception the temporary directory is removed and ``out`` is left untouched.
    """
    out = Path(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"output {out} exists")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (same suffix) that is moved onto ``out`` on success."""
    out = Path(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(out.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=suffix, dir=parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)


def jsonable(obj: Any) -> Any:
    """Plain JSON-ready data from dataclasses, paths, numpy arrays and scalars, enums."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "value") and hasattr(obj, "name"):  # Enum
        return obj.value
    return obj


def versions() -> dict[str, str]:
    """Versions of Python and the key dependencies that are importable."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in (
        "persodose", "numpy", "scipy", "pydicom", "SimpleITK", "highdicom", "nibabel",
        "icrp107-database", "typer", "rich", "matplotlib", "torch", "monai", "numba",
        "xraylib", "spekpy", "scikit-image", "pymedphys", "dask",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_provenance(path: str | os.PathLike, command: str, settings: Any = None,
                     inputs: dict[str, Any] | None = None, **extra: Any) -> None:
    """Write a provenance JSON: command, settings, inputs, versions, time, host."""
    doc = {
        "command": command,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "versions": versions(),
        "settings": jsonable(settings) if settings is not None else None,
        "inputs": jsonable(inputs or {}),
    }
    doc.update({k: jsonable(v) for k, v in extra.items()})
    Path(path).write_text(json.dumps(doc, indent=2, sort_keys=False))


_jsonable = jsonable  # former private name
