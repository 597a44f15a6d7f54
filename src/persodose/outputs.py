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
from typing import Any, Iterator, Mapping

from persodose.errors import InputError

#: Name of the marker file that every :func:`atomic_dir` output carries. An existing
#: directory is replaced only when it is empty or carries it (or a ``provenance.json`` /
#: ``manifest.json`` of an output written before the marker existed): a folder that
#: persodose did not write, such as a patient's images, is never replaced.
OUTPUT_MARKER = ".persodose"
_LEGACY_MARKERS = ("provenance.json", "manifest.json")


def is_persodose_output(path: str | os.PathLike) -> bool:
    """Whether the existing directory ``path`` is empty or was written by persodose."""
    p = Path(path)
    try:
        entries = {e.name for e in os.scandir(p)}
    except OSError:
        return False
    return not entries or OUTPUT_MARKER in entries or any(m in entries for m in _LEGACY_MARKERS)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = True, marker: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` when the block succeeds.

    On an exception the temporary directory is removed and ``out`` is left untouched. An
    existing ``out`` is replaced only if persodose wrote it (:func:`is_persodose_output`).
    ``marker=False`` leaves out the :data:`OUTPUT_MARKER` file (DICOM series folders, which
    other programs read file by file); such a folder is then never replaced.
    """
    out = Path(out)
    parent = out.resolve().parent
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    if out.is_dir() and overwrite and not is_persodose_output(out):
        raise InputError(f"output {out} is a folder that persodose did not write; "
                         "it is not replaced: choose a new folder")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        if marker:
            (tmp / OUTPUT_MARKER).write_text("written by persodose; this folder is replaced by the next run "
                                             "that writes here\n")
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


# ------------------------------------------------------------------ checks before any work
def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def _flatten(paths: Mapping[str, Any]) -> list[tuple[str, Path]]:
    out = []
    for option, value in paths.items():
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        out.extend((option, Path(v)) for v in items if v is not None)
    return out


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _relation(out: Path, other: Path) -> str | None:
    """How ``out`` (resolved) stands to ``other`` (resolved): 'is', 'contains', 'inside' or None."""
    if _same(out, other):
        return "is"
    if out in other.parents:
        return "contains"
    if other in out.parents:
        return "sits inside"
    return None


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable(option: str, path: Path, is_dir: bool) -> None:
    shown = f"{option} {path}" if option else str(path)
    if path.exists():
        if is_dir and not path.is_dir():
            raise InputError(f"{shown} exists and is not a folder")
        if not is_dir and path.is_dir():
            raise InputError(f"{shown} is a folder; give a file name")
        if is_dir and not is_persodose_output(path):
            raise InputError(f"{shown} is a folder that persodose did not write; it would be replaced: "
                             "choose a new or empty folder")
    resolved = _resolved(path)
    place = _first_existing(resolved.parent)
    if not place.is_dir():
        raise InputError(f"{shown} cannot be written: {place} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".persodose-probe-", dir=place)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{shown} cannot be written: {place} is not writable "
                         f"({exc.strerror or exc})") from None


def check_output_paths(inputs: Mapping[str, Any], output_dirs: Mapping[str, Any] | None = None,
                       output_files: Mapping[str, Any] | None = None) -> None:
    """Refuse outputs that would touch an input or each other, or cannot be written.

    Called before any work starts, so that nothing runs for an hour to fail at the end
    and no input is ever replaced. Every message names the option and the path.

    Args:
        inputs: option name (as shown to the user, e.g. ``"--ct"``) to a path, a list of
            paths, or ``None``. Include side files that are read (``FILE.json`` tables).
        output_dirs: option name to an output folder (replaced as a whole on success).
        output_files: option name to an output file (side files included).

    Raises:
        InputError: an output that is, contains or sits inside an input; two outputs that
            are the same path or nested; an existing folder persodose did not write; an
            output under a file or in a place that is not writable.
    """
    ins = [(o, p, _resolved(p)) for o, p in _flatten(inputs)]
    outs = ([(o, p, _resolved(p), True) for o, p in _flatten(output_dirs or {})]
            + [(o, p, _resolved(p), False) for o, p in _flatten(output_files or {})])
    for option, path, res, _ in outs:
        for in_option, in_path, in_res in ins:
            rel = _relation(res, in_res)
            if rel is not None:
                raise InputError(f"{option} {path} {rel} the input {in_option} {in_path}; "
                                 "outputs never replace or sit in inputs: choose another path")
    for i, (option, path, res, _) in enumerate(outs):
        for other_option, other_path, other_res, _ in outs[i + 1:]:
            rel = _relation(res, other_res)
            if rel is not None:
                raise InputError(f"{option} {path} and {other_option} {other_path} are the same or nested "
                                 "paths; give each output its own path")
    for option, path, _, is_dir in outs:
        _check_writable(option, path, is_dir)


def jsonable(obj: Any) -> Any:
    """Plain JSON-ready data from dataclasses, paths, numpy arrays and scalars, enums.

    NaN and infinities become ``None`` (JSON ``null``): JSON has no NaN, and a reader that
    meets one fails. Objects with a ``to_dict()`` are written through it.
    """
    import math

    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, type):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "value") and hasattr(obj, "name"):  # Enum
        return obj.value
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)  # anything else (a device, a callable) is recorded by its text


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
    Path(path).write_text(json.dumps(doc, indent=2, sort_keys=False, allow_nan=False))


_jsonable = jsonable  # former private name
