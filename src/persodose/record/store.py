"""A patient's cumulative dose record in a SQL database (SQLAlchemy Core; SQLite by default).

Tables (schema version :data:`SCHEMA_VERSION`):

* ``schema_version(version)``: one row; :func:`open_record` upgrades an older record through
  :data:`MIGRATIONS` (version ``v`` -> ``v + 1``, all in one transaction) and refuses a newer
  one or a database that holds tables but no version.
* ``patients(patient_id, sex, birth_date)``.
* ``exams(id, patient_id, kind, study_uid, series_uid, exam_date, content_hash UNIQUE,
  source, added_utc)``: ``kind`` is ``internal`` or ``ct``; ``content_hash`` is the SHA-256 of
  the result's ``organs.json`` and ``provenance.json``, so that adding one result twice stores
  it once.
* ``organ_doses(exam_id, organ, dose_gy, sd_gy, mass_g)``.

Every write is one transaction: an error (or a kill) in the middle leaves the record as it was.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from persodose.errors import InputError, OptionalDependencyError

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "DEFAULT_RECORD", "Exam", "record_url", "open_record", "add_exam",
           "load_exams", "load_patient"]

SCHEMA_VERSION = 1
#: ``{v: function(connection)}`` upgrading a record from version ``v`` to ``v + 1``.
MIGRATIONS: dict[int, Callable] = {}
#: Default record file when neither ``--db`` nor ``$PERSODOSE_RECORD`` is given.
DEFAULT_RECORD = "persodose-record.sqlite"


def _sa():
    try:
        import sqlalchemy
    except ImportError:
        raise OptionalDependencyError("the dose record needs SQLAlchemy: pip install 'persodose[record]'") from None
    return sqlalchemy


@dataclass
class Exam:
    """One stored result: organ -> (dose_gy, sd_gy or None, mass_g or None)."""

    patient_id: str
    kind: str
    study_uid: str
    series_uid: str
    exam_date: str
    content_hash: str
    source: str
    organs: Mapping[str, tuple] = field(default_factory=dict)
    id: int | None = None


def record_url(db: str | None = None) -> str:
    """SQLAlchemy URL of ``db`` (a URL, or a file path for SQLite), else ``$PERSODOSE_RECORD``, else
    ``./persodose-record.sqlite``."""
    db = db or os.environ.get("PERSODOSE_RECORD") or DEFAULT_RECORD
    return db if "://" in db else f"sqlite:///{Path(db).resolve()}"


def _tables(sa):
    md = sa.MetaData()
    sa.Table("schema_version", md, sa.Column("version", sa.Integer, nullable=False))
    sa.Table("patients", md, sa.Column("patient_id", sa.String(128), primary_key=True),
             sa.Column("sex", sa.String(1)), sa.Column("birth_date", sa.String(10)))
    sa.Table("exams", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("patient_id", sa.String(128), sa.ForeignKey("patients.patient_id"), nullable=False),
             sa.Column("kind", sa.String(16), nullable=False), sa.Column("study_uid", sa.String(128)),
             sa.Column("series_uid", sa.String(128)), sa.Column("exam_date", sa.String(32), nullable=False),
             sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
             sa.Column("source", sa.Text), sa.Column("added_utc", sa.String(32), nullable=False))
    sa.Table("organ_doses", md, sa.Column("exam_id", sa.Integer, sa.ForeignKey("exams.id"), nullable=False),
             sa.Column("organ", sa.String(128), nullable=False), sa.Column("dose_gy", sa.Float, nullable=False),
             sa.Column("sd_gy", sa.Float), sa.Column("mass_g", sa.Float))
    return md


def open_record(db: str | None = None, create: bool = True):
    """Engine and tables of a record, created (``create``) or upgraded to :data:`SCHEMA_VERSION`.

    Raises:
        InputError: a database from a newer persodose, one without a schema version, one without
            a migration path, or (``create=False``) no record there.
    """
    sa = _sa()
    url = record_url(db)
    if url.startswith("sqlite:///") and not create and not Path(url[len("sqlite:///"):]).exists():
        raise InputError(f"no dose record at {url[len('sqlite:///'):]}")
    try:
        engine = sa.create_engine(url)
        md = _tables(sa)
        with engine.begin() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if not names:
                md.create_all(conn)
                conn.execute(md.tables["schema_version"].insert().values(version=SCHEMA_VERSION))
            else:
                migrate(conn, md)
    except sa.exc.SQLAlchemyError as exc:
        raise InputError(f"dose record {url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None
    return engine, md


def migrate(conn, md) -> int:
    """Upgrade the record on ``conn`` to :data:`SCHEMA_VERSION` (in the caller's transaction); the version reached."""
    sa = _sa()
    names = set(sa.inspect(conn).get_table_names())
    if "schema_version" not in names:
        raise InputError("the database holds tables but no persodose schema_version: not a dose record")
    rows = conn.execute(sa.select(md.tables["schema_version"].c.version)).scalars().all()
    if len(rows) != 1:
        raise InputError(f"dose record schema_version holds {len(rows)} rows, expected 1")
    v = int(rows[0])
    if v > SCHEMA_VERSION:
        raise InputError(f"dose record has schema version {v}, newer than this persodose's {SCHEMA_VERSION}: "
                         "upgrade persodose")
    while v < SCHEMA_VERSION:
        if v not in MIGRATIONS:
            raise InputError(f"dose record has schema version {v} and there is no migration from it to "
                             f"{SCHEMA_VERSION}")
        MIGRATIONS[v](conn)
        v += 1
        conn.execute(md.tables["schema_version"].update().values(version=v))
    return v


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _insert_organs(conn, table, exam_id: int, organs: Mapping[str, tuple]) -> None:
    for organ, (dose, sd, mass) in organs.items():
        conn.execute(table.insert().values(exam_id=exam_id, organ=organ, dose_gy=float(dose),
                                           sd_gy=None if sd is None else float(sd),
                                           mass_g=None if mass is None else float(mass)))


def add_exam(engine, md, exam: Exam, sex: str | None = None, birth_date: str | None = None) -> bool:
    """Store ``exam`` (and its patient) in one transaction; ``False`` if its content hash is already stored."""
    sa = _sa()
    t = md.tables
    with engine.begin() as conn:
        if conn.execute(sa.select(t["exams"].c.id).where(t["exams"].c.content_hash == exam.content_hash)).first():
            return False
        pat = conn.execute(sa.select(t["patients"]).where(t["patients"].c.patient_id == exam.patient_id)).first()
        if pat is None:
            conn.execute(t["patients"].insert().values(patient_id=exam.patient_id, sex=sex, birth_date=birth_date))
        elif (sex and not pat.sex) or (birth_date and not pat.birth_date):
            conn.execute(t["patients"].update().where(t["patients"].c.patient_id == exam.patient_id)
                         .values(sex=pat.sex or sex, birth_date=pat.birth_date or birth_date))
        res = conn.execute(t["exams"].insert().values(
            patient_id=exam.patient_id, kind=exam.kind, study_uid=exam.study_uid, series_uid=exam.series_uid,
            exam_date=exam.exam_date, content_hash=exam.content_hash, source=exam.source, added_utc=_now()))
        _insert_organs(conn, t["organ_doses"], int(res.inserted_primary_key[0]), exam.organs)
    return True


def load_patient(engine, md, patient_id: str) -> dict:
    """``{"patient_id", "sex", "birth_date"}``; InputError if the patient is not in the record."""
    sa = _sa()
    t = md.tables["patients"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.patient_id == patient_id)).first()
    if row is None:
        raise InputError(f"patient {patient_id!r} is not in the dose record")
    return {"patient_id": row.patient_id, "sex": row.sex, "birth_date": row.birth_date}


def load_exams(engine, md, patient_id: str) -> list[Exam]:
    """The patient's exams with their organ doses, by exam date."""
    sa = _sa()
    t = md.tables
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t["exams"]).where(t["exams"].c.patient_id == patient_id)
                            .order_by(t["exams"].c.exam_date, t["exams"].c.id)).all()
        exams = []
        for r in rows:
            od = conn.execute(sa.select(t["organ_doses"]).where(t["organ_doses"].c.exam_id == r.id)).all()
            exams.append(Exam(patient_id=r.patient_id, kind=r.kind, study_uid=r.study_uid, series_uid=r.series_uid,
                              exam_date=r.exam_date, content_hash=r.content_hash, source=r.source, id=r.id,
                              organs={o.organ: (o.dose_gy, o.sd_gy, o.mass_g) for o in od}))
    return exams
