"""Read an ``persodose internal`` or ``persodose ct`` result folder into an :class:`~persodose.record.store.Exam`.

The folder holds ``organs.json`` (schema ``persodose.organ-doses``: rows with ``name``,
``mass_weighted_mean_Gy`` or ``mean_Gy``, ``uncertainty_percent``, ``mass_g``) and
``provenance.json`` (``command`` ``internal`` or ``ct``, ``inputs``, ``created_utc``). The
patient and exam identifiers are the DICOM PatientID, StudyInstanceUID, SeriesInstanceUID and
StudyDate of the first DICOM input named in the provenance; options given by the caller win,
and without either the result is refused (a record without a patient is of no use).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Mapping

from persodose.errors import InputError
from persodose.record.store import Exam

__all__ = ["read_result", "dicom_identifiers"]


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} not found: RESULT_DIR must be an output folder of 'persodose internal' or "
                         "'persodose ct'") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None


def _candidate_files(inputs) -> list[Path]:
    values = inputs.values() if isinstance(inputs, Mapping) else (inputs or [])
    out = []
    for v in values:
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            if not isinstance(item, str):
                continue
            p = Path(item)
            if p.is_file():
                out.append(p)
            elif p.is_dir():
                out.extend(sorted(f for f in p.iterdir() if f.is_file())[:3])
    return out


def dicom_identifiers(inputs) -> dict:
    """PatientID, StudyInstanceUID, SeriesInstanceUID, StudyDate, PatientSex, PatientBirthDate of
    the first DICOM file among the provenance inputs (``{}`` when none is DICOM)."""
    try:
        import pydicom
    except ImportError:
        return {}
    for f in _candidate_files(inputs):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # not DICOM: try the next input
            continue
        if "PatientID" not in ds:
            continue
        return {k: str(ds.get(k, "") or "") for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                                       "StudyDate", "PatientSex", "PatientBirthDate")}
    return {}


def _organs(doc: dict, path: Path) -> dict:
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{path}: no organ rows")
    organs = {}
    for r in rows:
        dose = next((r[k] for k in ("mass_weighted_mean_Gy", "mass_weighted_mean_gy", "mean_Gy", "mean_gy")
                     if r.get(k) is not None), None)
        if dose is None or not math.isfinite(float(dose)):
            continue
        unc = r.get("uncertainty_percent")
        sd = None if unc is None else abs(float(dose)) * float(unc) / 100.0
        organs[str(r["name"])] = (float(dose), sd, r.get("mass_g"))
    if not organs:
        raise InputError(f"{path}: no organ row holds a dose")
    return organs


def _iso_date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def read_result(result_dir, patient_id: str | None = None, study_uid: str | None = None,
                exam_date: str | None = None) -> tuple[Exam, dict]:
    """The exam of a result folder and the DICOM patient fields (``{"sex", "birth_date"}``).

    Raises:
        InputError: not a result folder, an unknown command, no patient identifier.
    """
    d = Path(result_dir)
    if not d.is_dir():
        raise InputError(f"RESULT_DIR {d} is not a folder")
    organs_path, prov_path = d / "organs.json", d / "provenance.json"
    organs_doc, prov = _load(organs_path), _load(prov_path)
    kind = prov.get("command")
    if kind not in ("internal", "ct"):
        raise InputError(f"{prov_path}: command {kind!r} is not 'internal' or 'ct'")
    inputs = prov.get("inputs") or {}
    if kind == "internal" and isinstance(inputs, dict) and "emission" in inputs:  # the exam is the emission series
        inputs = {"emission": inputs["emission"], **inputs}
    ids = dicom_identifiers(inputs)
    pid = patient_id or ids.get("PatientID")
    if not pid:
        raise InputError(f"{d}: no DICOM PatientID among its inputs; give --patient")
    digest = hashlib.sha256(organs_path.read_bytes() + b"\0" + prov_path.read_bytes()).hexdigest()
    date = exam_date or _iso_date(ids.get("StudyDate", "")) or str(prov.get("created_utc", ""))[:10]
    if not date:
        raise InputError(f"{d}: no exam date (DICOM StudyDate or provenance created_utc); give --date")
    exam = Exam(patient_id=pid, kind=kind, study_uid=study_uid or ids.get("StudyInstanceUID", ""),
                series_uid=ids.get("SeriesInstanceUID", ""), exam_date=date, content_hash=digest,
                source=str(d.resolve()), organs=_organs(organs_doc, organs_path))
    sex = (ids.get("PatientSex") or "")[:1].upper() or None
    return exam, {"sex": sex if sex in ("M", "F") else None,
                  "birth_date": _iso_date(ids.get("PatientBirthDate", "")) or None}
