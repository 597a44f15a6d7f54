"""``persodose record add`` and ``persodose record report``: a patient's cumulative dose record.

* ``record add RESULT_DIR [--db URL]``: store the organ doses of a ``persodose internal`` or
  ``persodose ct`` output folder under its patient and exam (DICOM PatientID, StudyInstanceUID,
  SeriesInstanceUID, StudyDate of its inputs; ``--patient``/``--study``/``--date`` override).
  The same result added twice is stored once.
* ``record report --patient ID --out DIR [--db URL] [--lar-table CSV]``: cumulative organ doses
  (internal + CT, uncertainties in quadrature), effective dose and risk over time, as
  ``report.html`` + ``record.png`` + ``report.json``.

``--db`` is a SQLAlchemy URL or a SQLite file; default ``$PERSODOSE_RECORD``, else
``./persodose-record.sqlite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

record_app = typer.Typer(help="A patient's cumulative dose record (internal + CT), with effective dose and risk.",
                         no_args_is_help=True)

_DB = typer.Option(None, "--db", help="SQLAlchemy URL or SQLite file (default $PERSODOSE_RECORD, else "
                                      "./persodose-record.sqlite).")


def register(app: typer.Typer) -> None:
    app.add_typer(record_app, name="record")


def _sex(value):
    if value is None:
        return value
    v = str(value).strip().upper()
    if v not in ("M", "F"):
        raise typer.BadParameter(f"must be M or F, got {value!r}")
    return v


def _date(value):
    import datetime as dt

    if value is None:
        return value
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise typer.BadParameter(f"must be a date YYYY-MM-DD, got {value!r}") from None


@record_app.command("add")
def add(result_dir: Path = typer.Argument(..., help="Output folder of 'persodose internal' or 'persodose ct'."),
        db: Optional[str] = _DB,
        patient: Optional[str] = typer.Option(None, "--patient", help="Patient ID (default: DICOM PatientID)."),
        study: Optional[str] = typer.Option(None, "--study", help="Study UID (default: DICOM StudyInstanceUID)."),
        date: Optional[str] = typer.Option(None, "--date", callback=_date, help="Exam date YYYY-MM-DD "
                                           "(default: DICOM StudyDate, else the result's creation date)."),
        sex: Optional[str] = typer.Option(None, "--sex", callback=_sex, help="M or F (default: DICOM PatientSex)."),
        birth_date: Optional[str] = typer.Option(None, "--birth-date", callback=_date,
                                                 help="YYYY-MM-DD (default: DICOM PatientBirthDate).")) -> None:
    """Store a result's organ doses in the record (once, however often it is added)."""
    from persodose.record.result import read_result
    from persodose.record.store import add_exam, open_record

    exam, fields = read_result(result_dir, patient_id=patient, study_uid=study, exam_date=date)
    engine, md = open_record(db)
    added = add_exam(engine, md, exam, sex=sex or fields["sex"], birth_date=birth_date or fields["birth_date"])
    state = "added" if added else "already in the record, not added again"
    typer.echo(f"{exam.kind} exam of {exam.exam_date} for patient {exam.patient_id} ({len(exam.organs)} organs): "
               f"{state}")


@record_app.command("report")
def report(patient: str = typer.Option(..., "--patient", help="Patient ID."),
           out: Path = typer.Option(..., "--out", help="Output folder (report.html, record.png, report.json)."),
           db: Optional[str] = _DB,
           lar_table: Optional[Path] = typer.Option(None, "--lar-table", help="BEIR VII Tables 12D-1/12D-2 as "
                                                    "CSV (docs/risk.md); without it no LAR."),
           population: str = typer.Option("whole", "--population", help="ICRP 103 coefficients: whole or adult.")
           ) -> None:
    """Write the patient's cumulative organ doses, effective dose and risk over time."""
    from persodose.errors import InputError
    from persodose.outputs import check_output_paths
    from persodose.record.report import build_report, write_report
    from persodose.record.store import load_exams, load_patient, open_record, record_url
    from persodose.risk.lar import read_lar_table

    url = record_url(db)
    db_file = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
    if population not in ("whole", "adult"):
        raise InputError(f"--population must be whole or adult, got {population!r}")
    engine, md = open_record(db, create=False)
    pat = load_patient(engine, md, patient)
    exams = load_exams(engine, md, patient)
    # The stored result folders are inputs too: the report never replaces one of them.
    check_output_paths({"--db": db_file, "--lar-table": lar_table, "stored result": [e.source for e in exams]},
                       output_dirs={"--out": out})
    table = read_lar_table(lar_table) if lar_table is not None else None
    doc = build_report(pat, exams, table, population)
    page = write_report(doc, out)
    typer.echo(f"{len(exams)} exams; cumulative effective dose {doc['cumulative_effective_dose_msv']:.3g} mSv: {page}")
    typer.echo(doc["statement"])
