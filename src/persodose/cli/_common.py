"""What every command shares: checked options and errors that name their input.

Options are checked by Click callbacks, so a bad value is refused before any input is
read, in the same one-line form as Click's own usage errors (``Invalid value for
'--decays': ...``). Errors raised while an input is used are given the option and path
they are about by :func:`about`.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

import typer

#: Largest number of decays or photons one command accepts. 1e12 is about 60 days of the
#: CPU engine and keeps every per-batch count well inside int64 (Numba's integer type).
MAX_HISTORIES = 10**12

#: Largest seed: numpy's SeedSequence takes any non-negative integer; the engine stores it
#: as uint64.
MAX_SEED = 2**63 - 1


def count(minimum: int = 1, maximum: int = MAX_HISTORIES):
    """Callback for an integer option that must lie in ``[minimum, maximum]``."""

    def check(value):
        if value is None:
            return value
        if not (minimum <= value <= maximum):
            raise typer.BadParameter(f"must be a whole number from {minimum} to {maximum:.3g}, got {value}")
        return value

    return check


def positive(maximum: float = math.inf, allow_zero: bool = False):
    """Callback for a float option that must be finite and positive (at most ``maximum``)."""

    def check(value):
        if value is None:
            return value
        low_ok = value >= 0 if allow_zero else value > 0
        if not (math.isfinite(value) and low_ok and value <= maximum):
            bound = "non-negative" if allow_zero else "positive"
            upper = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
            raise typer.BadParameter(f"must be a finite {bound} number{upper}, got {value}")
        return value

    return check


def fraction(value):
    """Callback for a float option that must lie in [0, 1)."""
    if value is None:
        return value
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise typer.BadParameter(f"must be a fraction from 0 to below 1, got {value}")
    return value


@contextlib.contextmanager
def about(option: str, path: str | os.PathLike | None) -> Iterator[None]:
    """Give every persodose error raised in the block the option and path it is about.

    A message that already names the path is left as it is.
    """
    from persodose.errors import PersodoseError

    try:
        yield
    except PersodoseError as exc:
        msg = str(exc)
        if path is None or str(path) in msg:
            raise
        new = type(exc)(f"{option} {path}: {msg}")
        raise new.with_traceback(exc.__traceback__) from None


def label_sidecars(labels: str | os.PathLike | None, names: str | os.PathLike | None) -> list:
    """The files a label option reads: the map, its names file or its FILE.json."""
    from pathlib import Path

    from persodose.segmentation import is_auto_spec

    if labels is None or is_auto_spec(str(labels)):
        return []
    side = Path(names) if names is not None else Path(str(labels) + ".json")
    return [Path(labels)] + ([side] if names is not None or side.exists() else [])


def read_labels(path, reference, names_path=None, option: str = "--labels"):
    """A label map (NIfTI/MHA/NRRD, DICOM SEG or RTSTRUCT) and its names, checked on ``reference``;
    or ``auto`` / ``auto:NAME``: the reference CT segmented by a registered segmenter.

    Names come from ``names_path`` or ``FILE.json`` beside an image file. The map may be on
    another grid than ``reference`` (it is resampled by nearest neighbour later), but every
    label in it must land on the reference grid.

    Returns:
        ``(labels, names)``; ``names`` is ``None`` when there is none.
    """
    import json
    from pathlib import Path

    import numpy as np

    from persodose.errors import InputError
    from persodose.grid import Kind
    from persodose.io.image import is_image_file, read_image
    from persodose.segmentation import is_auto_spec, resolve_labels

    if is_auto_spec(str(path)):  # automatic segmentation of the CT (--labels auto, auto:NAME)
        with about(option, path):
            return resolve_labels(str(path), reference)
    with about(option, path):
        if is_image_file(path):
            lab = read_image(path, kind=Kind.LABELS)
            names = None
            if names_path is None and Path(str(path) + ".json").exists():
                names_path = Path(str(path) + ".json")
            if names_path is not None:
                try:
                    raw = json.loads(Path(names_path).read_text())
                    names = {int(k): str(v) for k, v in raw.items()}
                except (OSError, ValueError, AttributeError, TypeError) as exc:
                    raise InputError(f"cannot read label names {names_path}: {exc}") from None
        else:
            lab, names = _read_dicom_labels(Path(path), reference)
        present = set(np.unique(lab.array).astype(int).tolist()) - {0}
        if not present:
            raise InputError("holds no label (every voxel is 0)")
        on_ref = lab if lab.same_geometry(reference) else lab.resample_to(reference)
        lost = sorted(present - set(np.unique(on_ref.array).astype(int).tolist()))
        if lost:
            where = "none of its labels lies" if len(lost) == len(present) else f"label(s) {lost[:10]} lie"
            raise InputError(f"{where} inside the image it labels (labels grid {lab.shape} at "
                             f"{lab.spacing_zyx_mm} mm; image grid {reference.shape} at {reference.spacing_zyx_mm} mm)")
    return lab, names


def _read_dicom_labels(path, reference):
    import pydicom

    from persodose.errors import InputError

    try:
        modality = pydicom.dcmread(str(path), stop_before_pixels=True, force=True).get("Modality", "")
    except Exception as exc:  # pydicom raises many types for junk
        raise InputError(f"cannot read labels {path}: {' '.join(str(exc).split())}") from None
    if modality == "SEG":
        from persodose.io.seg import read_seg

        return read_seg(path, reference=reference)
    if modality == "RTSTRUCT":
        from persodose.io.rtstruct import rtstruct_to_labels

        return rtstruct_to_labels(path, reference)
    raise InputError(f"{path} is neither a label image, a DICOM SEG nor an RTSTRUCT")


def require_volume(ct_grid, minimum: int = 3) -> None:
    """Refuse a CT of fewer than ``minimum`` slices: a 3-D dose needs a volume."""
    from persodose.errors import InputError

    if ct_grid.shape[0] < minimum:
        raise InputError(f"holds {ct_grid.shape[0]} slice(s); a dose calculation needs a volume of at least "
                         f"{minimum} slices (give the folder of the whole series)")


def read_method_options(path, items, decays: int | None = None) -> dict:
    """Method settings from a JSON file (``{method: {setting: value}}``), then ``--method-option``
    items (``METHOD.SETTING=VALUE``) over it, then ``--decays`` as ``mc.decays``."""
    import json
    from pathlib import Path

    from persodose.dose.registry import parse_method_options
    from persodose.errors import InputError

    options: dict = {}
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--method-options {path}: cannot read it: {exc}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise InputError(f"--method-options {path} must hold {{method: {{setting: value}}}}")
        options = {str(k).lower(): dict(v) for k, v in raw.items()}
    for method, values in parse_method_options(items or []).items():
        options.setdefault(method, {}).update(values)
    if decays is not None:
        given = options.get("mc", {}).get("decays")
        if given is not None and str(given) != str(decays):
            raise InputError(f"--decays {decays} and mc.decays={given} disagree: give one of them")
        options.setdefault("mc", {})["decays"] = decays
    return options


# ----------------------------------------------------------------------------- Monte Carlo options
def target_uncertainty_option(value):
    """Callback of ``--target-uncertainty``: ``2%``, ``2 %`` or ``0.02``, refused in one line otherwise."""
    if value is None:
        return value
    from persodose.errors import InputError
    from persodose.mc.tally import parse_relative_uncertainty

    try:
        parse_relative_uncertainty(value, "")
    except InputError as exc:
        raise typer.BadParameter(str(exc).strip()) from None
    return value


def photon_estimator_option(value):
    """Callback of ``--photon-estimator``: analog or tle."""
    from persodose.mc.tables import PHOTON_ESTIMATORS

    if value is not None and value not in PHOTON_ESTIMATORS:
        raise typer.BadParameter(f"must be {' or '.join(PHOTON_ESTIMATORS)}, got {value!r}")
    return value


def target_uncertainty_opt(limit: str):
    """``--target-uncertainty`` of a Monte Carlo command; ``limit`` names what becomes the limit."""
    return typer.Option(None, "--target-uncertainty", callback=target_uncertainty_option,
                        help=f"Stop the Monte Carlo at this relative uncertainty (2%, 2 % or 0.02): the median "
                             f"voxel uncertainty above --target-above of the maximum dose, or with --target-region "
                             f"that label's mean-dose uncertainty; {limit} become the limit.")


def target_above_opt(default: float | None = None):
    """``--target-above``: the voxels of the target (dose at least this fraction of the maximum)."""
    return typer.Option(default, "--target-above", callback=fraction,
                        help="The target's voxels: dose at least this fraction of the maximum (default 0.1).")


def target_region_opt():
    """``--target-region``: the target is this label's mean-dose uncertainty."""
    return typer.Option(None, "--target-region", help="The target is this label's mean-dose uncertainty "
                                                      "(a --labels name).")
