"""DICOM RT Structure Set: rasterise ROI contours into a label map.

Contours of an RT Structure Set (DICOM PS3.3 A.19, modules C.8.8.5 Structure Set and
C.8.8.6 ROI Contour) are lists of LPS points (mm). Only ``CLOSED_PLANAR`` contours enclose
a region; they are rasterised onto a reference grid:

* each point is mapped to the reference's continuous voxel indices
  (:meth:`persodose.grid.Grid.physical_to_index`);
* the contour is assigned to the slice nearest its mean index z;
* a voxel belongs to the contour when its centre lies inside the polygon (matplotlib's
  ``Path.contains_points``);
* the contours of one ROI on one slice are combined with exclusive-or, the even-odd rule,
  so an inner contour cuts a hole (PS3.3 C.8.8.6.3 leaves the inner/outer convention to the
  producer; even-odd is what most treatment planning systems write and read);
* ROIs are numbered 1..n; where ROIs overlap, the later ROI wins and a warning is issued.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from persodose.errors import DicomError, GeometryError, InputError
from persodose.grid import Grid, Kind

#: RT Structure Set Storage SOP class UID (DICOM PS3.4 annex B.5).
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

#: A contour whose points spread over more than this many slices (index units) is not
#: parallel to the reference's slices; it is still drawn on its mean slice, with a warning.
_PLANARITY_TOL_SLICES = 0.5


def _read_rtstruct(path: str | os.PathLike):
    from persodose.io.rtdose import _dcmread

    p = Path(path)
    ds = _dcmread(p, "RT Structure Set")
    if ds.get("Modality") != "RTSTRUCT" and ds.get("SOPClassUID") != RT_STRUCTURE_SET_STORAGE:
        raise DicomError(f"{p} is not an RT Structure Set (Modality {ds.get('Modality')!r})")
    if "StructureSetROISequence" not in ds:
        raise DicomError(f"RT Structure Set {p} has no StructureSetROISequence")
    return ds


def list_rois(rtstruct_path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(ROINumber, ROIName)`` of every ROI, in the file's order."""
    ds = _read_rtstruct(rtstruct_path)
    return [(int(r.ROINumber), str(r.get("ROIName", ""))) for r in ds.StructureSetROISequence]


def _select_rois(rois: list[tuple[int, str]], roi_names: list[str] | None,
                 path: Path) -> list[tuple[int, str]]:
    if roi_names is None:
        return rois
    chosen = []
    for want in roi_names:
        exact = [r for r in rois if r[1] == want]
        if not exact:
            exact = [r for r in rois if r[1].strip().lower() == str(want).strip().lower()]
        if not exact:
            raise InputError(f"ROI {want!r} is not in RT Structure Set {path} "
                             f"(has: {', '.join(r[1] for r in rois)})")
        if len(exact) > 1:
            raise InputError(f"ROI name {want!r} is ambiguous in RT Structure Set {path}")
        if exact[0] in chosen:
            raise InputError(f"ROI {want!r} requested twice for {path}")
        chosen.append(exact[0])
    return chosen


def _fill_polygon(yx: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the voxel centres inside a closed polygon given in (y, x) indices."""
    from matplotlib.path import Path as MplPath

    ny, nx = shape_yx
    mask = np.zeros((ny, nx), dtype=bool)
    y0 = max(int(np.floor(yx[:, 0].min())), 0)
    y1 = min(int(np.ceil(yx[:, 0].max())), ny - 1)
    x0 = max(int(np.floor(yx[:, 1].min())), 0)
    x1 = min(int(np.ceil(yx[:, 1].max())), nx - 1)
    if y1 < y0 or x1 < x0:
        return mask
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    poly = MplPath(np.vstack([yx[:, ::-1], yx[:1, ::-1]]))  # (x, y) vertices, closed
    inside = poly.contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    mask[y0:y1 + 1, x0:x1 + 1] = inside.reshape(yy.shape)
    return mask


def _roi_mask(contours, reference: Grid, name: str, path: Path) -> tuple[np.ndarray, int]:
    """Even-odd union of the CLOSED_PLANAR contours of one ROI on the reference grid.

    Returns:
        ``(mask, n_closed)``: boolean ``(nz, ny, nx)`` mask and number of closed contours read.
    """
    nz, ny, nx = reference.shape
    mask = np.zeros((nz, ny, nx), dtype=bool)
    n_outside = n_tilted = n_other = n_closed = 0
    for item in contours:
        gtype = str(item.get("ContourGeometricType", "")).upper()
        if gtype != "CLOSED_PLANAR":
            n_other += 1
            continue
        data = item.get("ContourData")
        if data is None:
            continue
        pts = np.asarray(data, dtype=float)
        if pts.size % 3:
            raise DicomError(f"RT Structure Set {path} ROI {name!r} has ContourData whose length "
                             f"{pts.size} is not a multiple of 3")
        pts = pts.reshape(-1, 3)
        if len(pts) < 3:
            n_other += 1
            continue
        n_closed += 1
        idx = reference.physical_to_index(pts)  # (z, y, x) continuous
        if np.ptp(idx[:, 0]) > _PLANARITY_TOL_SLICES:
            n_tilted += 1
        k = int(np.rint(np.mean(idx[:, 0])))
        if k < 0 or k >= nz:
            n_outside += 1
            continue
        mask[k] ^= _fill_polygon(idx[:, 1:], (ny, nx))
    if n_outside:
        warnings.warn(f"RT Structure Set {path} ROI {name!r}: {n_outside} contour(s) outside the "
                      f"reference grid's slices were skipped", stacklevel=3)
    if n_tilted:
        warnings.warn(f"RT Structure Set {path} ROI {name!r}: {n_tilted} contour(s) not parallel "
                      f"to the reference slices; each drawn on its mean slice", stacklevel=3)
    if n_other:
        warnings.warn(f"RT Structure Set {path} ROI {name!r}: {n_other} contour(s) that are not "
                      f"closed planar polygons were ignored", stacklevel=3)
    return mask, n_closed


def rtstruct_to_labels(rtstruct_path: str | os.PathLike, reference: Grid, *,
                       roi_names: list[str] | None = None,
                       reference_frame_of_reference_uid: str | None = None
                       ) -> tuple[Grid, dict[int, str]]:
    """Rasterise the closed planar contours of an RT Structure Set into a label map.

    Args:
        rtstruct_path: RT Structure Set file.
        reference: grid whose geometry the labels are drawn on (usually the planning CT).
        roi_names: ROIs to rasterise, in label order (exact name, else case-insensitive);
            default all ROIs in the file's StructureSetROISequence order.
        reference_frame_of_reference_uid: the reference image's FrameOfReferenceUID; when
            given, every selected ROI must be defined in that frame of reference.

    Returns:
        ``(labels, names)``: uint16 LABELS grid on the reference geometry (0 = background,
        ROI ``i`` of the selection = label ``i``, later ROIs overwrite earlier ones where
        they overlap) and label -> ROI name.

    Raises:
        InputError: missing file or unknown ROI name. DicomError: not an RT Structure Set or
        malformed contours. GeometryError: frame-of-reference mismatch.
    """
    p = Path(rtstruct_path)
    if not isinstance(reference, Grid):
        raise InputError(f"rtstruct_to_labels needs a reference Grid, got {type(reference).__name__}")
    ds = _read_rtstruct(p)
    rois = [(int(r.ROINumber), str(r.get("ROIName", ""))) for r in ds.StructureSetROISequence]
    roi_for = {int(r.ROINumber): r.get("ReferencedFrameOfReferenceUID")
               for r in ds.StructureSetROISequence}
    chosen = _select_rois(rois, roi_names, p)

    if reference_frame_of_reference_uid:
        set_frames = {str(f.FrameOfReferenceUID)
                      for f in ds.get("ReferencedFrameOfReferenceSequence", [])
                      if "FrameOfReferenceUID" in f}
        for number, name in chosen:
            frame = roi_for.get(number)
            frames = {str(frame)} if frame else set_frames
            if frames and reference_frame_of_reference_uid not in frames:
                raise GeometryError(
                    f"RT Structure Set {p} ROI {name!r} is in frame of reference "
                    f"{sorted(frames)[0]}, not the reference's {reference_frame_of_reference_uid}")

    contours_of: dict[int, list] = {}
    for rc in ds.get("ROIContourSequence", []):
        if "ReferencedROINumber" in rc:
            contours_of.setdefault(int(rc.ReferencedROINumber), []).extend(
                rc.get("ContourSequence", []))

    labels = np.zeros(reference.shape, dtype=np.uint16)
    names: dict[int, str] = {}
    for label, (number, name) in enumerate(chosen, start=1):
        names[label] = name
        mask, n_closed = _roi_mask(contours_of.get(number, []), reference, name, p)
        if not mask.any():
            if n_closed:
                warnings.warn(f"RT Structure Set {p} ROI {name!r} covers no voxel of the reference "
                              f"grid", stacklevel=2)
            else:
                warnings.warn(f"RT Structure Set {p} ROI {name!r} has no closed planar contour; "
                              f"its label is empty", stacklevel=2)
            continue
        overlap = labels[mask]
        taken = overlap[overlap != 0]
        if taken.size:
            others = ", ".join(repr(names[int(v)]) for v in np.unique(taken))
            warnings.warn(f"RT Structure Set {p}: ROI {name!r} overlaps {others} in {taken.size} "
                          f"voxel(s); the later ROI {name!r} wins there", stacklevel=2)
        labels[mask] = label
    return reference.with_array(labels, Kind.LABELS, unit=""), names


#: Study Component Management SOP class, the class DICOM PS3.3 C.8.8.5 uses to reference a
#: study in RT Referenced Study Sequence (retired, still what every producer writes).
_STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.2"


def _slice_contours(mask_yx: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (``(n, 2)`` in (y, x) voxel indices) of a 2-D boolean mask.

    The outlines are the 0.5 iso-lines of the mask (contourpy, matplotlib's contouring
    library), so they pass half-way between inside and outside voxel centres and redrawing
    them with the centre-inside rule and the even-odd rule gives the mask back. Holes come
    out as separate inner outlines.
    """
    import contourpy

    padded = np.pad(mask_yx.astype(np.float64), 1)
    gen = contourpy.contour_generator(z=padded, name="serial", corner_mask=False)
    out = []
    for line in gen.lines(0.5):
        line = np.asarray(line, dtype=float)
        if len(line) > 1 and np.allclose(line[0], line[-1]):
            line = line[:-1]
        if len(line) >= 3:
            out.append(line[:, ::-1] - 1.0)  # (x, y) -> (y, x), undo the padding
    return out


def write_rtstruct(labels: Grid, names: dict[int, str], out_path: str | os.PathLike,
                   reference_ct_files: list[str], *, label: str = "persodose") -> Path:
    """Write a label map as an RT Structure Set of CLOSED_PLANAR contours on a CT series.

    Each named label becomes one ROI (ROI number = label value), outlined on every CT slice
    where it has voxels. Outlines run half-way between voxel centres (see
    :func:`_slice_contours`), so :func:`rtstruct_to_labels` on the same CT gives the label
    map back (holes included, by the even-odd rule).

    Args:
        labels: integer label map on the CT lattice (same rules as ``write_seg``).
        names: label value -> ROI name; every non-zero value must be named.
        out_path: file to write (atomically).
        reference_ct_files: the CT slices; patient, study and frame of reference are copied
            from them and every contour references its CT slice.
        label: Structure Set Label.

    Returns:
        ``Path`` of the written file.

    Notes:
        Modules of the RT Structure Set IOD, DICOM PS3.3 A.19: Patient, General Study,
        RT Series, Frame of Reference (the CT's, C.7.4.1), General Equipment, Structure Set
        (C.8.8.5), ROI Contour (C.8.8.6), RT ROI Observations (C.8.8.8), SOP Common. UIDs are
        made under the project's root (:func:`persodose.io.dicom_write.new_uid`).
    """
    import datetime as _dt

    from pydicom.dataset import Dataset

    from persodose.io.dicom_write import new_uid
    from persodose.io.rtdose import _sop_common_module, write_dataset
    from persodose.io.seg import labels_for_export

    values, files, datasets, sorted_ds, ct_grid, on_ct = labels_for_export(
        labels, names, reference_ct_files, out_path, "write_rtstruct", "RT Structure Set")

    first = sorted_ds[0]
    frame_uid = str(first.FrameOfReferenceUID)
    now = _dt.datetime.now()
    sop_uid = new_uid()
    ds = Dataset()
    _sop_common_module(ds, RT_STRUCTURE_SET_STORAGE, sop_uid, now)
    _patient_and_study_modules(ds, first, files)
    _rt_series_and_equipment_modules(ds)
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    _structure_set_module(ds, label, now, frame_uid, files, datasets, sorted_ds)
    _roi_modules(ds, values, names, frame_uid, on_ct, ct_grid, sorted_ds)
    return write_dataset(ds, RT_STRUCTURE_SET_STORAGE, sop_uid, out_path)


#: ROI Display Color (3006,002A) of the ROIs, in turn (RGB).
_ROI_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                         [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]])


def _patient_and_study_modules(ds, first, files: list[str]) -> None:
    """Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1) modules, copied from the CT."""
    from persodose.io.rtdose import _IDENTITY_KEYWORDS

    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "", "", "", ""
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.StudyID = "", "", "", ""
    ds.AccessionNumber = ""
    for kw in _IDENTITY_KEYWORDS:
        if kw in first and first[kw].value not in (None, ""):
            setattr(ds, kw, first[kw].value)
    if "StudyInstanceUID" not in first:
        raise DicomError(f"reference CT file {files[0]} has no StudyInstanceUID")


def _rt_series_and_equipment_modules(ds) -> None:
    """RT Series (PS3.3 C.8.8.1; Operators' Name Type 2, empty) and General Equipment
    (C.7.5.1) modules."""
    from persodose.io.dicom_write import new_uid

    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = new_uid()
    ds.OperatorsName = ""
    ds.SeriesNumber = 902
    ds.SeriesDescription = "persodose structures"
    ds.Manufacturer = "persodose"


def _image_ref(slice_ds):
    """Contour Image Sequence item referencing one CT slice."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = slice_ds.SOPClassUID
    item.ReferencedSOPInstanceUID = slice_ds.SOPInstanceUID
    return item


def _structure_set_module(ds, label: str, now, frame_uid: str, files: list[str], datasets: list,
                          sorted_ds: list) -> None:
    """Structure Set module (PS3.3 C.8.8.5) up to the ROIs: label, date and the Referenced
    Frame of Reference Sequence (frame -> study -> series -> every CT slice)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    first = sorted_ds[0]
    ds.InstanceNumber = 1
    ds.StructureSetLabel = str(label)[:16]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for kw in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"):
        for f, sds in zip(files, datasets, strict=True):
            if kw not in sds:
                raise DicomError(f"reference CT file {f} has no {kw}")
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence([_image_ref(s) for s in sorted_ds])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = _STUDY_COMPONENT_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])


def _roi_modules(ds, values, names: dict[int, str], frame_uid: str, on_ct: np.ndarray, ct_grid: Grid,
                 sorted_ds: list) -> None:
    """Structure Set ROI Sequence (C.8.8.5), ROI Contour (C.8.8.6) and RT ROI Observations
    (C.8.8.8) modules: one ROI per label value, numbered by the value."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ss_rois, roi_contours, observations = [], [], []
    for n, value in enumerate(values):
        roi = Dataset()
        roi.ROINumber = value
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = str(names[value])[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        ss_rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = value
        rc.ROIDisplayColor = [int(v) for v in _ROI_COLOURS[n % len(_ROI_COLOURS)]]
        rc.ContourSequence = Sequence(_roi_contours(on_ct == value, ct_grid, sorted_ds))
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = value
        obs.ReferencedROINumber = value
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(ss_rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)


def _roi_contours(mask: np.ndarray, ct_grid: Grid, sorted_ds: list) -> list:
    """Contour Sequence items (CLOSED_PLANAR, LPS mm) of one ROI's mask on the CT slices."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from persodose.io.rtdose import _ds_str

    contours = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for yx in _slice_contours(mask[k]):
            idx = np.column_stack([np.full(len(yx), float(k)), yx])
            pts = ct_grid.index_to_physical(idx)
            c = Dataset()
            c.ContourImageSequence = Sequence([_image_ref(sorted_ds[int(k)])])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [_ds_str(v) for v in pts.ravel()]
            contours.append(c)
    return contours
