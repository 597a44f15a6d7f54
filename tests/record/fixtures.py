"""Result folders like those of 'persodose internal' / 'persodose ct', built in code, with a tiny DICOM input."""

from __future__ import annotations

import json
from pathlib import Path


def write_dicom(path: Path, patient_id="P17", study="1.2.3.4", series="1.2.3.4.5", date="20260315",
                sex="F", birth="19700101") -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient_id, study, series
    ds.StudyDate, ds.PatientSex, ds.PatientBirthDate, ds.Modality = date, sex, birth, "CT"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_result(folder: Path, kind: str, organs: dict, dicom: Path | None = None, created="2026-03-15") -> Path:
    """``organs``: name -> (dose_gy, uncertainty_percent)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"name": n, "label": i + 1, "method": "mc" if kind == "internal" else "ct", "mass_g": 100.0,
             "mean_Gy": d, "mass_weighted_mean_Gy": d, "uncertainty_percent": u}
            for i, (n, (d, u)) in enumerate(organs.items())]
    (folder / "organs.json").write_text(json.dumps({"schema": "persodose.organ-doses", "schema_version": 2,
                                                    "unit": "Gy", "rows": rows}))
    inputs = {"--ct": str(dicom.parent)} if dicom is not None else {}
    (folder / "provenance.json").write_text(json.dumps({"command": kind, "created_utc": created + "T10:00:00+00:00",
                                                        "inputs": inputs}))
    return folder
