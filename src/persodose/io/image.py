"""NIfTI, MetaImage and NRRD in and out, with the kind and unit kept.

Files are read and written through SimpleITK, which keeps the full geometry (spacing,
origin, direction) for all three formats. NIfTI stores positions in RAS; SimpleITK converts
to and from the LPS convention that :class:`~persodose.grid.Grid` uses.

These formats carry no reliable physical unit, so persodose writes its own tag
(``persodose_kind`` / ``persodose_unit`` metadata in MHA/NRRD, and the NIfTI ``descrip``
field) and reads it back when present. For any other file the user states the kind and unit.
A tag whose unit persodose does not know (or that is not a unit of the tagged kind) is
refused, naming the file and the unit; only ``scalar`` grids carry a free-text unit.

Geometry is checked before use: a NIfTI affine with NaN or infinite entries, a zero voxel
size (collapsed axis) or sheared axes, and a MetaImage header with a non-finite, zero or
negative spacing or a non-finite origin or direction are refused, naming the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from persodose.errors import GeometryError, InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.outputs import atomic_file

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")

#: Unit spellings accepted from users, mapped to (kind, factor to the internal unit).
UNIT_ALIASES: dict[str, tuple[Kind, float]] = {
    "hu": (Kind.CT, 1.0),
    "g/cm3": (Kind.DENSITY, 1.0), "g/cc": (Kind.DENSITY, 1.0), "g/ml": (Kind.DENSITY, 1.0),
    "kg/m3": (Kind.DENSITY, 1e-3),
    "bq/ml": (Kind.ACTIVITY_CONCENTRATION, 1.0), "kbq/ml": (Kind.ACTIVITY_CONCENTRATION, 1e3),
    "mbq/ml": (Kind.ACTIVITY_CONCENTRATION, 1e6), "bq/cc": (Kind.ACTIVITY_CONCENTRATION, 1.0),
    "bq": (Kind.ACTIVITY, 1.0), "kbq": (Kind.ACTIVITY, 1e3), "mbq": (Kind.ACTIVITY, 1e6),
    "bq s": (Kind.TIA, 1.0), "bq*s": (Kind.TIA, 1.0), "bqs": (Kind.TIA, 1.0),
    "mbq s": (Kind.TIA, 1e6), "mbq*s": (Kind.TIA, 1e6), "mbq h": (Kind.TIA, 3.6e9),
    "mbq*h": (Kind.TIA, 3.6e9),
    "counts": (Kind.COUNTS, 1.0),
    "gy": (Kind.DOSE, 1.0), "mgy": (Kind.DOSE, 1e-3), "cgy": (Kind.DOSE, 1e-2),
    "gy/s": (Kind.DOSE_RATE, 1.0), "mgy/s": (Kind.DOSE_RATE, 1e-3), "gy/h": (Kind.DOSE_RATE, 1 / 3600),
    "mgy/h": (Kind.DOSE_RATE, 1e-3 / 3600),
    "labels": (Kind.LABELS, 1.0), "label": (Kind.LABELS, 1.0),
    "material": (Kind.MATERIAL, 1.0),
}


#: Kinds whose values cannot be negative: activity, its concentration, its time integral,
#: counts. :func:`read_image` refuses negative values in them.
_EMISSION_KINDS = (Kind.ACTIVITY_CONCENTRATION, Kind.ACTIVITY, Kind.TIA, Kind.COUNTS)

#: Negative values down to this fraction of the image maximum are float rounding (e.g. of
#: a rescale or a resampling) and are set to 0; anything more negative is refused.
NEGATIVE_ROUNDING_FRACTION = 1e-6


def require_non_negative_emission(values: np.ndarray, where: str, unit: str, *,
                                  error: type[InputError] = InputError,
                                  hint: str = "") -> np.ndarray:
    """Refuse an emission image (activity, activity concentration, counts) with negative
    values; return it with float-rounding negatives set to 0.

    Args:
        values: the image values.
        where: the file (and series) they come from, for the message.
        unit: their unit, for the message.
        error: the exception class to raise (a subclass of :class:`InputError`).
        hint: what to check, appended to the message.

    Returns:
        ``values`` unchanged when nothing is negative; else a copy in which the values in
        ``[-1e-6 * max, 0)`` (:data:`NEGATIVE_ROUNDING_FRACTION`) are 0.

    Raises:
        InputError: (or ``error``) a value below ``-1e-6`` times the maximum (or any negative value when
            the maximum is not positive); the message gives the minimum and the maximum.
    """
    arr = np.asarray(values)
    if arr.size == 0:
        return values
    vmin = float(np.nanmin(arr))
    if not vmin < 0.0:
        return values
    vmax = float(np.nanmax(arr))
    if vmax > 0.0 and vmin >= -NEGATIVE_ROUNDING_FRACTION * vmax:
        return np.where(arr < 0, arr.dtype.type(0), arr)
    n = int(np.count_nonzero(arr < 0))
    what = "counts" if unit == "counts" else "activity"
    raise error(f"{where} holds negative {what}: minimum {vmin:.6g} {unit} (maximum "
                f"{vmax:.6g} {unit}, {n} voxel(s) below 0); {what} cannot be negative"
                + (f" ({hint})" if hint else ""))



def parse_unit(unit: str) -> tuple[Kind, float]:
    """Map a user's unit string to a kind and the factor to persodose's internal unit.

    Raises:
        UnitsError: for a unit persodose does not know.
    """
    key = " ".join(unit.strip().lower().replace("·", " ").split())
    if key not in UNIT_ALIASES:
        raise UnitsError(
            f"unknown unit {unit!r}; known units: {', '.join(sorted(UNIT_ALIASES))}"
        )
    return UNIT_ALIASES[key]


def is_image_file(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def write_image(grid: Grid, path: str | os.PathLike) -> Path:
    """Write ``grid`` to NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd) or NRRD, atomically."""
    import SimpleITK as sitk

    path = Path(path)
    if not str(path).lower().endswith(WRITE_SUFFIXES):
        # .mhd/.nhdr keep their data in a second file whose name is written in the header,
        # which cannot be moved into place atomically: write the single-file variants.
        raise InputError(f"cannot write {path}: use one of {', '.join(WRITE_SUFFIXES)}")
    arr = grid.array
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    tag = f"persodose kind={grid.kind.value} unit={grid.unit}"
    with atomic_file(path) as tmp:
        if str(path).lower().endswith((".nii", ".nii.gz")):
            # nibabel keeps the header's descrip field (SimpleITK's writer drops it).
            import nibabel as nib

            nii = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), grid.affine_ras)
            nii.header["descrip"] = tag[:79].encode()
            nii.header.set_xyzt_units("mm", "sec")
            nii.set_qform(grid.affine_ras, code=1)
            nii.set_sform(grid.affine_ras, code=1)
            nib.save(nii, str(tmp))
        else:
            img = grid.with_array(arr).to_sitk()
            img.SetMetaData("persodose_kind", grid.kind.value)
            img.SetMetaData("persodose_unit", grid.unit or "")
            sitk.WriteImage(img, str(tmp), True)
    return path


def _tag_from_metadata(img) -> tuple[Kind | None, str | None]:
    """The persodose tag of an MHA/NRRD image read by SimpleITK, if any."""
    keys = set(img.GetMetaDataKeys())
    if "persodose_kind" in keys:
        try:
            return Kind(img.GetMetaData("persodose_kind")), img.GetMetaData("persodose_unit")
        except ValueError:
            return None, None
    return None, None


#: Largest deviation of the NIfTI axis cosines from perpendicular (the off-diagonal of
#: D^T D) taken as float32 rounding; about 0.06 degrees.
_AXES_ATOL = 1e-3


def _nifti_affine_source(nii) -> str:
    """Which header fields nibabel took the affine from, for messages."""
    header = nii.header
    try:
        if int(header["sform_code"]) > 0:
            return "sform"
        if int(header["qform_code"]) > 0:
            return "qform"
    except (KeyError, TypeError, ValueError):
        pass
    return "pixdim"


def _raw_pixdim(path: Path, header_class) -> np.ndarray | None:
    """pixdim[1:4] as stored in the file, before nibabel's fixes; ``None`` if unreadable."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            header = header_class.from_fileobj(fh, check=False)
        return np.asarray(header["pixdim"][1:4], dtype=float)
    except Exception:  # noqa: BLE001 - the image itself was read; keep nibabel's view
        return None


#: MetaImage header fields (ITK MetaIO) that hold the geometry.
_META_SPACING_KEYS = ("elementspacing", "elementsize")
_META_GEOMETRY_KEYS = ("offset", "origin", "position", "transformmatrix", "rotation", "orientation")


def _check_metaimage_header(path: Path) -> None:
    """Refuse a MetaImage (.mha/.mhd) whose header holds a non-finite, zero or negative
    spacing or a non-finite origin or direction (SimpleITK reads a negative spacing as
    positive and a NaN origin as 0 without a word)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep:
            continue
        if key == "elementdatafile":
            break
        if key not in _META_SPACING_KEYS and key not in _META_GEOMETRY_KEYS:
            continue
        try:
            numbers = [float(v) for v in value.split()]
        except ValueError:
            raise GeometryError(f"{path}: header field {line!r} is not a list of numbers") from None
        if not all(np.isfinite(numbers)):
            raise GeometryError(f"{path}: header field {line} holds NaN or infinite values")
        if key in _META_SPACING_KEYS and not all(v > 0 for v in numbers):
            raise GeometryError(f"{path}: header field {line} is not a positive voxel size")


def _read_nifti(path: Path) -> tuple[Grid, Kind | None, str | None]:
    """Read a NIfTI file with nibabel into a SCALAR grid (LPS), plus the persodose tag if any."""
    import nibabel as nib
    from nibabel.imageglobals import logger as nib_logger

    level = nib_logger.level
    try:
        # nibabel logs its header fixes to stderr ("setting 0 dims to 1"); the header is
        # checked below instead, and refused by name when it is broken
        nib_logger.setLevel(logging.CRITICAL)
        try:
            nii = nib.load(str(path))
        finally:
            nib_logger.setLevel(level)
        data = np.asanyarray(nii.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"cannot read image {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path} is {data.ndim}-D; expected a 3-D image")
    affine = np.asarray(nii.affine, dtype=float)
    source = _nifti_affine_source(nii)
    if source != "sform":
        # the qform (and the fallback affine) scale by pixdim, which nibabel silently
        # turns from 0 (or NaN) into 1 mm on loading: look at the values in the file
        pixdim = _raw_pixdim(path, type(nii.header))
        if pixdim is not None and not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
            raise GeometryError(f"{path}: its voxel size (pixdim) is "
                                f"{', '.join(f'{v:g}' for v in pixdim)} mm; it must be positive")
    if not np.all(np.isfinite(affine[:3, :])):
        raise GeometryError(f"{path}: its affine ({source}) holds NaN or infinite values, so its "
                            "voxel size and position are unknown")
    aff = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :]  # RAS -> LPS
    m = aff[:, :3]
    spacing_xyz = np.linalg.norm(m, axis=0)
    if not np.all(spacing_xyz > 1e-9):
        raise GeometryError(f"{path}: its affine ({source}) gives a voxel size of "
                            f"{', '.join(f'{v:g}' for v in spacing_xyz)} mm (x, y, z); a voxel "
                            "size must be positive")
    direction = m / spacing_xyz[None, :]
    gram = direction.T @ direction
    if not np.allclose(gram, np.eye(3), atol=_AXES_ATOL):
        worst = float(np.degrees(np.arcsin(min(1.0, np.max(np.abs(gram - np.eye(3)))))))
        raise GeometryError(f"{path}: the axes of its affine ({source}) are not perpendicular "
                            f"(sheared by up to {worst:.3g} deg); resample it to an orthogonal "
                            "grid before use")
    # Orthonormalise (nibabel affines carry float32 rounding).
    u, _, vt = np.linalg.svd(direction)
    direction = u @ vt
    grid = Grid(np.ascontiguousarray(data.transpose(2, 1, 0)), tuple(spacing_xyz[::-1]), tuple(aff[:, 3]),
                direction, Kind.SCALAR)
    descrip = nii.header["descrip"].tobytes().split(b"\0", 1)[0].decode("ascii", "replace")
    kind = unit = None
    if descrip.startswith("persodose kind="):
        parts = dict(p.split("=", 1) for p in descrip.split()[1:3] if "=" in p)
        try:
            kind = Kind(parts.get("kind", ""))
            unit = descrip.split("unit=", 1)[1] if "unit=" in descrip else None
        except ValueError:
            kind = None
    return grid, kind, unit


def read_image(path: str | os.PathLike, kind: Kind | str | None = None,
               unit: str | None = None) -> Grid:
    """Read a NIfTI/MHA/NRRD image into a :class:`Grid`.

    The kind and unit come from ``unit`` when given (converted to the internal unit, e.g.
    MBq/mL to Bq/mL), else from the persodose tag written by :func:`write_image`, else from
    ``kind`` with its default unit. With none of these the user must say what the file holds.

    Raises:
        InputError: the file is missing or unreadable, or its values are not finite.
        GeometryError: NaN/infinite or zero voxel size, non-finite origin, sheared NIfTI
            axes, negative MetaImage spacing.
        UnitsError: the unit is unknown (also a persodose tag with an unknown unit, or one
            that is not a unit of the tagged kind) or nobody said what the file holds.

    Activity, activity concentration, TIA and counts images with negative values are
    refused (values above ``-1e-6`` times the maximum are float rounding and become 0;
    :func:`require_non_negative_emission`).
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"file does not exist: {path}")
    if not path.is_file() or not is_image_file(path):
        raise InputError(f"not an image file (.nii, .nii.gz, .mha, .mhd, .nrrd): {path}")
    if str(path).lower().endswith((".nii", ".nii.gz")):
        # nibabel: SimpleITK's NIfTI reader turns NaN into 0, which would hide bad input.
        base, tag_kind, tag_unit = _read_nifti(path)
    else:
        if str(path).lower().endswith((".mha", ".mhd")):
            _check_metaimage_header(path)
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1][:200]}") from None
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{path} has {img.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
        if img.GetDimension() == 4 and img.GetSize()[3] == 1:
            img = img[:, :, :, 0]
        if img.GetDimension() != 3:
            raise InputError(f"{path} is {img.GetDimension()}-D; expected a 3-D image")
        tag_kind, tag_unit = _tag_from_metadata(img)
        try:
            base = Grid.from_sitk(img)
        except GeometryError as exc:
            raise GeometryError(f"{path}: {exc}") from None
    factor = 1.0
    if unit is not None:
        unit_kind, factor = parse_unit(unit)
        if kind is not None and Kind(kind) is not unit_kind and Kind(kind) is not Kind.SCALAR:
            raise UnitsError(f"unit {unit!r} is not a unit of {Kind(kind).value} ({path})")
        final_kind = unit_kind
    elif tag_kind is not None:
        if kind is not None and Kind(kind) is not tag_kind:
            raise UnitsError(f"{path} holds {tag_kind.value} ({tag_unit}), not {Kind(kind).value}")
        final_kind = tag_kind
        # a tagged file in another unit of its kind (e.g. a dose map written in mGy) is
        # converted to persodose's internal unit, like a unit the user states; a unit that
        # is unknown, or not one of the kind, is refused (scalar grids: free text, kept)
        if tag_unit and tag_unit != tag_kind.default_unit and tag_kind is not Kind.SCALAR:
            try:
                unit_kind, factor = parse_unit(tag_unit)
            except UnitsError:
                known = sorted(k for k, (kk, _) in UNIT_ALIASES.items() if kk is tag_kind)
                raise UnitsError(f"{path} is tagged kind={tag_kind.value} unit={tag_unit!r}, a "
                                 "unit persodose does not know; units of "
                                 f"{tag_kind.value}: {', '.join(known) or tag_kind.default_unit}") from None
            if unit_kind is not tag_kind:
                raise UnitsError(f"{path} is tagged kind={tag_kind.value} with unit={tag_unit!r}, "
                                 f"which is a unit of {unit_kind.value}, not of {tag_kind.value}")
    elif kind is not None:
        final_kind = Kind(kind)
    else:
        raise UnitsError(f"say what {path} holds: give its unit (e.g. --units Bq/mL)")
    grid = base.with_array(base.array, kind=final_kind)
    arr = grid.array
    if final_kind in (Kind.LABELS, Kind.MATERIAL):
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.allclose(arr, np.round(arr)):
                raise InputError(f"{path}: a label map must hold whole numbers")
            arr = np.round(arr).astype(np.uint16)
        if arr.min() < 0:
            raise InputError(f"{path}: a label map cannot hold negative labels")
    else:
        arr = arr.astype(np.float32, copy=False)
        if factor != 1.0:
            arr = arr * np.float32(factor)
    grid = grid.with_array(arr)
    grid.check_finite(str(path))
    if final_kind in _EMISSION_KINDS:
        arr = require_non_negative_emission(grid.array, str(path), grid.unit or "")
        if arr is not grid.array:
            grid = grid.with_array(arr)
    return grid
