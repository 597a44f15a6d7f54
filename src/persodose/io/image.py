"""NIfTI, MetaImage and NRRD in and out, with the kind and unit kept.

Files are read and written through SimpleITK, which keeps the full geometry (spacing,
origin, direction) for all three formats. NIfTI stores positions in RAS; SimpleITK converts
to and from the LPS convention that :class:`~persodose.grid.Grid` uses.

These formats carry no reliable physical unit, so persodose writes its own tag
(``persodose_kind`` / ``persodose_unit`` metadata in MHA/NRRD, and the NIfTI ``descrip``
field) and reads it back when present. For any other file the user states the kind and unit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from persodose.errors import InputError, UnitsError
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


def _read_nifti(path: Path) -> tuple[Grid, Kind | None, str | None]:
    """Read a NIfTI file with nibabel into a SCALAR grid (LPS), plus the persodose tag if any."""
    import nibabel as nib

    try:
        nii = nib.load(str(path))
        data = np.asanyarray(nii.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"cannot read image {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path} is {data.ndim}-D; expected a 3-D image")
    aff = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(nii.affine, dtype=float)[:3, :]  # RAS -> LPS
    m = aff[:, :3]
    spacing_xyz = np.linalg.norm(m, axis=0)
    direction = m / spacing_xyz[None, :]
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
        UnitsError: the unit is unknown or nobody said what the file holds.
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
        base = Grid.from_sitk(img)
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
        # converted to persodose's internal unit, like a unit the user states
        if tag_unit and tag_unit != tag_kind.default_unit:
            try:
                unit_kind, unit_factor = parse_unit(tag_unit)
            except UnitsError:
                unit_kind, unit_factor = None, 1.0
            if unit_kind is tag_kind:
                factor = unit_factor
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
    return grid
