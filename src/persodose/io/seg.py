"""DICOM Segmentation (SEG) objects: write a label map, read one back.

The writer uses :class:`highdicom.seg.Segmentation` (DICOM PS3.3 A.51, Segmentation IOD)
with segmentation type BINARY and one segment per label. Segment numbers must run 1..n
(PS3.3 C.8.20.2, Segment Number (0062,0004)); persodose label values need not, so the
original label value is kept in each segment's free-text Segment Description (0062,0006) as
``"persodose label <value>"`` and restored by :func:`read_seg`. Segments of other producers
(no such description) keep their segment number as label value.

Each segment is described with the generic property category "Anatomical Structure"
(SNOMED CT 91723000) and type "Organ" (SNOMED CT 91772007), codes from DICOM PS3.16 CID 7150
and CID 7151 as shipped in ``pydicom.sr.codedict``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from persodose.errors import DicomError, GeometryError, InputError
from persodose.grid import Grid, Kind
from persodose.outputs import atomic_file

#: Segmentation Storage SOP class UID (DICOM PS3.4 annex B.5).
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

_LABEL_RE = re.compile(r"persodose label (\d+)")

#: Slice-spacing tolerance (relative) for a CT series to count as evenly spaced.
_SPACING_RTOL = 1e-3


def _read_dataset(path: str | os.PathLike, what: str, pixels: bool = False):
    from persodose.io.rtdose import _dcmread

    return _dcmread(path, what, pixels)


def _series_geometry(datasets: list, files: list[str]) -> tuple[list, Grid]:
    """Sort single-frame image datasets along their normal and return their grid geometry.

    Returns:
        ``(sorted_datasets, grid)`` with ``grid`` a zero uint8 grid on the series lattice:
        origin at the first sorted slice, z axis along the slice normal (increasing position).
    """
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
               "Columns", "FrameOfReferenceUID"):
        for f, ds in zip(files, datasets, strict=True):
            if kw not in ds:
                raise DicomError(f"reference image {f} has no {kw}")
    first = datasets[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    for f, ds in zip(files, datasets, strict=True):
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), iop, atol=1e-4):
            raise DicomError(f"reference image {f} has another orientation than {files[0]}")
        if ds.FrameOfReferenceUID != first.FrameOfReferenceUID:
            raise DicomError(f"reference image {f} has another FrameOfReferenceUID than {files[0]}")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise DicomError(f"reference image {f} has another matrix size than {files[0]}")
        if not np.allclose(np.asarray(ds.PixelSpacing, float),
                           np.asarray(first.PixelSpacing, float), atol=1e-4):
            raise DicomError(f"reference image {f} has another PixelSpacing than {files[0]}")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.array([float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal))
                    for ds in datasets])
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    sorted_ds = [datasets[i] for i in order]
    if len(pos) > 1:
        steps = np.diff(pos)
        if np.min(steps) < 1e-3:
            i = int(order[int(np.argmin(steps)) + 1])
            raise DicomError(f"reference image {files[i]} duplicates the position of another slice")
        dz = float(np.mean(steps))
        if np.max(np.abs(steps - dz)) > _SPACING_RTOL * dz + 1e-3:
            raise GeometryError(f"reference series starting {files[0]} is not evenly spaced "
                                f"(slice steps {np.unique(np.round(steps, 3)).tolist()} mm)")
    else:
        st = first.get("SliceThickness")
        dz = float(st) if st not in (None, "") and float(st) > 0 else 1.0
    sy, sx = (float(v) for v in first.PixelSpacing)
    origin = np.asarray(sorted_ds[0].ImagePositionPatient, dtype=float)
    grid = Grid(np.zeros((len(sorted_ds), int(first.Rows), int(first.Columns)), np.uint8),
                (dz, sy, sx), tuple(origin), np.column_stack([row_dir, col_dir, normal]),
                Kind.LABELS)
    return sorted_ds, grid


def lattices_coincide(a: Grid, b: Grid, tol_voxel: float = 1e-3) -> bool:
    """True when every voxel centre of ``a`` lies on a voxel centre of ``b``'s lattice.

    The index-to-index map ``b^-1 a`` must be a signed permutation with an integer shift
    (within ``tol_voxel``), so nearest-neighbour resampling between them is exact.
    """
    m = np.linalg.inv(b.affine_lps) @ a.affine_lps
    lin, shift = m[:3, :3], m[:3, 3]
    if not np.allclose(np.abs(lin), np.round(np.abs(lin)), atol=tol_voxel):
        return False
    if not np.allclose(np.abs(lin).sum(axis=0), 1.0, atol=tol_voxel):
        return False
    return bool(np.allclose(shift, np.round(shift), atol=tol_voxel))


def _labels_on(labels: Grid, target: Grid, what: str) -> np.ndarray:
    """Integer labels moved exactly onto ``target``'s lattice (no voxel may be lost)."""
    if labels.same_geometry(target):
        return np.asarray(labels.array)
    if not lattices_coincide(labels, target):
        raise GeometryError(f"{what}: label map voxels do not lie on the reference image grid "
                            f"(label spacing {labels.spacing_zyx_mm}, origin {labels.origin_xyz_mm}; "
                            f"reference spacing {target.spacing_zyx_mm}, origin {target.origin_xyz_mm})")
    moved = labels.resample_to(target, method="nearest").array
    before = np.bincount(np.asarray(labels.array).reshape(-1).astype(np.int64))
    after = np.bincount(np.asarray(moved).reshape(-1).astype(np.int64), minlength=before.size)
    if np.any(before[1:] != after[1:before.size]):
        raise GeometryError(f"{what}: part of the label map lies outside the reference image grid")
    return np.asarray(moved)


class ExportLabels(NamedTuple):
    """A label map checked for export and put on its reference CT (:func:`labels_for_export`)."""

    values: list[int]  #: the named label values, sorted
    files: list[str]  #: the reference CT files, as given
    datasets: list  #: their datasets, in the same order
    sorted_ds: list  #: the datasets sorted along the slice normal
    ct_grid: Grid  #: the CT lattice (z along the normal)
    on_ct: np.ndarray  #: int64 labels on ct_grid


def labels_for_export(labels: Grid, names: dict[int, str], reference_ct_files, out_path, writer: str, what: str,
                      max_value: int | None = None) -> "ExportLabels":
    """Check a label map and its names for a DICOM export, and put it on the reference CT.

    Shared by the SEG and RTSTRUCT writers.

    Args:
        labels: integer label map (0 = background).
        names: label value -> name; every non-zero value in the map needs one.
        reference_ct_files: the CT slices the labels were drawn on.
        out_path: the file to be written (for messages).
        writer: the writing function's name, what: the object written (for messages).
        max_value: largest label value the format can store (None: no limit).

    Returns:
        :class:`ExportLabels`.

    Raises:
        InputError: bad labels or names. DicomError: unreadable or inconsistent CT files.
        GeometryError: labels not on the CT lattice.
    """
    if not isinstance(labels, Grid):
        raise InputError(f"{writer} needs a Grid, got {type(labels).__name__}")
    arr = np.asarray(labels.array)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"label map for {out_path} has non-integer values")
    elif arr.dtype.kind not in "iub":
        raise InputError(f"label map for {out_path} has dtype {arr.dtype}, not integer")
    if arr.size and float(arr.min()) < 0:
        raise InputError(f"label map for {out_path} has negative labels")
    if not names:
        raise InputError(f"no label names given for {out_path}")
    try:
        values = sorted(int(k) for k in names)
    except (TypeError, ValueError) as exc:
        raise InputError(f"label names for {out_path} must be keyed by integers") from exc
    if values[0] < 1 or (max_value is not None and values[-1] > max_value):
        bound = f"1..{max_value}" if max_value is not None else "positive"
        raise InputError(f"label values for {out_path} must be {bound}, got {values}")
    unnamed = sorted({int(v) for v in np.unique(arr) if v != 0} - set(values))
    if unnamed:
        raise InputError(f"label map for {out_path} has values without a name: {unnamed[:10]}")
    if not reference_ct_files:
        raise InputError(f"{writer} for {out_path} needs reference_ct_files")
    files = [str(f) for f in reference_ct_files]
    datasets = [_read_dataset(f, "reference CT file") for f in files]
    sorted_ds, ct_grid = _series_geometry(datasets, files)
    on_ct = _labels_on(labels.with_array(arr.astype(np.int64)), ct_grid, f"{what} {out_path}")
    return ExportLabels(values, files, datasets, sorted_ds, ct_grid, on_ct)


def write_seg(labels: Grid, names: dict[int, str], out_path: str | os.PathLike,
              reference_ct_files: list[str], *, algorithm_name: str = "persodose",
              manufacturer: str = "persodose") -> Path:
    """Write an integer label map as a DICOM SEG (BINARY) referencing a CT series.

    Args:
        labels: integer label map ``(nz, ny, nx)`` (0 = background) on the CT lattice (same
            geometry, or a grid whose voxel centres are CT voxel centres, e.g. a crop).
        names: label value -> segment label (name) for every label to store; each non-zero
            value in the map must have a name. Named labels absent from the map are stored as
            empty segments.
        out_path: file to write (atomically).
        reference_ct_files: the CT slices (single-frame images of one series) the labels were
            drawn on; they become the SEG's source images.
        algorithm_name: Segment Algorithm Name.
        manufacturer: Manufacturer of the SEG.

    Returns:
        ``Path`` of the written file.

    Raises:
        InputError: bad labels/names. DicomError: unreadable or inconsistent CT files.
        GeometryError: labels not on the CT lattice.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from persodose.io.dicom_write import new_uid

    label_values, _, _, sorted_ds, _, on_ct = labels_for_export(labels, names, reference_ct_files, out_path,
                                                                "write_seg", "SEG", max_value=65535)

    # Label value -> segment number 1..n (PS3.3 C.8.20.2).
    lut = np.zeros(max(label_values[-1], int(on_ct.max(initial=0))) + 1, dtype=np.uint16)
    for seg_no, value in enumerate(label_values, start=1):
        lut[value] = seg_no
    seg_map = lut[on_ct.astype(np.int64)]
    n_seg = len(label_values)
    # One binary mask per segment, stacked on the last axis (frames, rows, columns, segments).
    masks = np.stack([seg_map == k for k in range(1, n_seg + 1)], axis=-1).astype(np.uint8)

    algo = hd.AlgorithmIdentificationSequence(name=str(algorithm_name)[:64],
                                             family=codes.DCM.ImageProcessing,
                                             version=_version())
    descriptions = []
    for seg_no, value in enumerate(label_values, start=1):
        name = str(names[value]).strip() or f"label {value}"
        desc = hd.seg.SegmentDescription(
            segment_number=seg_no,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        desc.SegmentDescription = f"persodose label {value}"
        descriptions.append(desc)

    try:
        seg = hd.seg.Segmentation(
            source_images=sorted_ds,
            pixel_array=masks,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=new_uid(),
            series_number=901,
            sop_instance_uid=new_uid(),
            instance_number=1,
            manufacturer=str(manufacturer)[:64],
            manufacturer_model_name="persodose",
            software_versions=_version(),
            device_serial_number="0",
            omit_empty_frames=False,
            series_description="persodose segmentation",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise DicomError(f"cannot build a SEG from reference CT {reference_ct_files[0]}: {exc}") from exc
    _own_dimension_organization_uid(seg, new_uid())
    out_path = Path(out_path)
    with atomic_file(out_path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out_path


def _own_dimension_organization_uid(seg, uid: str) -> None:
    """Give the SEG's dimension organisation (made by highdicom under its root) ``uid``, a
    UID under persodose's root, in the Dimension Organization and Dimension Index Sequences
    alike (PS3.3 C.7.6.17)."""
    for item in list(seg.get("DimensionOrganizationSequence", [])) + list(seg.get("DimensionIndexSequence", [])):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = uid


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("persodose")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0"


def read_seg(path: str | os.PathLike, reference: Grid | None = None) -> tuple[Grid, dict[int, str]]:
    """Read a DICOM SEG into an integer label map.

    Args:
        path: SEG file; BINARY and LABELMAP segmentations are read (FRACTIONAL is refused).
        reference: optional grid to put the labels on (nearest neighbour; exact when the
            SEG's voxel centres lie on the reference lattice, otherwise a warning is issued).

    Returns:
        ``(labels, names)``: uint16 LABELS grid (on the SEG's own geometry, or the
        reference's) and label value -> segment label. Label values are those written by
        :func:`write_seg` (from the Segment Description), else the segment numbers.

    Raises:
        InputError: missing file. DicomError: not DICOM, not SEG, undecodable.
    """
    import highdicom as hd

    p = Path(path)
    ds = _read_dataset(p, "SEG", pixels=True)
    if ds.get("Modality") != "SEG" or ds.get("SOPClassUID") != SEGMENTATION_STORAGE:
        raise DicomError(f"{p} is not a DICOM Segmentation (Modality {ds.get('Modality')!r})")
    seg_type = str(ds.get("SegmentationType", ""))
    if seg_type not in ("BINARY", "LABELMAP"):
        raise DicomError(f"SEG {p} has SegmentationType {seg_type!r}; only BINARY and LABELMAP "
                         f"are read")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:
        raise DicomError(f"SEG {p} cannot be parsed: {exc}") from exc

    value_of: dict[int, int] = {}
    names: dict[int, str] = {}
    for item in ds.get("SegmentSequence", []):
        seg_no = int(item.SegmentNumber)
        m = _LABEL_RE.fullmatch(str(item.get("SegmentDescription", "")).strip())
        value = int(m.group(1)) if m else seg_no
        if value in names:
            raise DicomError(f"SEG {p} maps two segments to label {value}")
        value_of[seg_no] = value
        names[value] = str(item.get("SegmentLabel", f"segment {seg_no}"))
    if not value_of:
        raise DicomError(f"SEG {p} has no segments")

    try:
        try:
            vol = seg.get_volume(combine_segments=True, relabel=False)
        except ValueError as exc:
            if "overlap" not in str(exc).lower():
                raise
            warnings.warn(f"SEG {p} has overlapping segments; the higher segment number wins",
                          stacklevel=2)
            vol = seg.get_volume(combine_segments=True, relabel=False, skip_overlap_checks=True)
    except Exception as exc:
        raise DicomError(f"SEG {p} cannot be turned into a regular 3-D volume: {exc}") from exc
    if vol.array.ndim != 3:
        raise DicomError(f"SEG {p} did not give a 3-D label volume (shape {vol.array.shape})")

    aff = np.asarray(vol.affine, dtype=float)  # maps (slice, row, column) indices to LPS
    cols = aff[:3, :3]
    sp = np.linalg.norm(cols, axis=0)  # spacing along slice, row, column
    direction = np.column_stack([cols[:, 2] / sp[2], cols[:, 1] / sp[1], cols[:, 0] / sp[0]])
    lut = np.zeros(max(value_of) + 1, dtype=np.uint16)
    for seg_no, value in value_of.items():
        lut[seg_no] = value
    seg_arr = np.asarray(vol.array).astype(np.int64)
    origin = aff[:3, 3].copy()
    if np.dot(direction[:, 2], np.cross(direction[:, 0], direction[:, 1])) < 0:
        # Put the slices in increasing position along the image normal (as CT readers do).
        origin = origin + cols[:, 0] * (seg_arr.shape[0] - 1)
        direction[:, 2] = -direction[:, 2]
        seg_arr = seg_arr[::-1]
    if seg_arr.size and seg_arr.max() >= lut.size:
        raise DicomError(f"SEG {p} has pixels of an undeclared segment {int(seg_arr.max())}")
    try:
        grid = Grid(lut[seg_arr], (sp[0], sp[1], sp[2]), tuple(origin), direction, Kind.LABELS)
    except GeometryError as exc:
        raise DicomError(f"SEG {p} has an unusable geometry: {exc}") from exc
    if reference is not None:
        if not lattices_coincide(grid, reference):
            warnings.warn(f"SEG {p} voxels do not lie on the reference grid; labels resampled "
                          f"with nearest neighbour", stacklevel=2)
        grid = grid.resample_to(reference, method="nearest")
        grid = grid.with_array(np.asarray(grid.array, dtype=np.uint16))
    return grid, names
