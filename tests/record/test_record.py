"""The dose record: identifiers from DICOM, no double counting, one transaction, schema versions, report."""

import json
import math

import pytest

pytest.importorskip("sqlalchemy")

from persodose.errors import InputError  # noqa: E402
from persodose.record import store  # noqa: E402
from persodose.record.report import build_report, cumulative, write_report  # noqa: E402
from persodose.record.result import read_result  # noqa: E402
from tests.record.fixtures import write_dicom, write_result  # noqa: E402


@pytest.fixture
def two_results(tmp_path):
    spect = write_dicom(tmp_path / "spect" / "1.dcm", series="1.2.3.4.6", date="20260301")
    ct = write_dicom(tmp_path / "ct" / "1.dcm", study="1.2.3.9", series="1.2.3.9.1", date="20260401")
    a = write_result(tmp_path / "internal", "internal", {"kidney_left": (2.0, 3.0), "liver": (0.5, 4.0)}, spect)
    b = write_result(tmp_path / "ctres", "ct", {"kidney_left": (0.01, 4.0), "lung_left": (0.012, 5.0)}, ct)
    return a, b


def test_identifiers_from_dicom(two_results):
    exam, fields = read_result(two_results[0])
    assert (exam.patient_id, exam.study_uid, exam.series_uid, exam.exam_date) == ("P17", "1.2.3.4", "1.2.3.4.6",
                                                                                  "2026-03-01")
    assert exam.kind == "internal" and fields == {"sex": "F", "birth_date": "1970-01-01"}
    assert exam.organs["kidney_left"] == pytest.approx((2.0, 0.06, 100.0))


def test_no_patient_is_refused(tmp_path):
    r = write_result(tmp_path / "r", "ct", {"liver": (0.01, 1.0)})
    with pytest.raises(InputError, match="PatientID"):
        read_result(r)
    assert read_result(r, patient_id="X")[0].exam_date == "2026-03-15"
    with pytest.raises(InputError):
        read_result(tmp_path / "missing")


def test_add_twice_stores_once_and_sums(tmp_path, two_results):
    db = str(tmp_path / "rec.sqlite")
    engine, md = store.open_record(db)
    for r in (*two_results, two_results[0]):
        exam, f = read_result(r)
        store.add_exam(engine, md, exam, **f)
    exams = store.load_exams(engine, md, "P17")
    assert [e.kind for e in exams] == ["internal", "ct"]
    cum = cumulative(exams)
    assert cum["kidney_left"]["total_gy"] == pytest.approx(2.01)
    assert cum["kidney_left"]["internal_gy"] == pytest.approx(2.0) and cum["kidney_left"]["ct_gy"] == pytest.approx(0.01)
    assert cum["kidney_left"]["sd_gy"] == pytest.approx(math.hypot(0.06, 0.0004))
    assert cum["kidney_left"]["sd_missing_exams"] == 0
    assert store.load_patient(engine, md, "P17") == {"patient_id": "P17", "sex": "F", "birth_date": "1970-01-01"}


def test_failed_write_leaves_record_as_it_was(tmp_path, two_results, monkeypatch):
    db = str(tmp_path / "rec.sqlite")
    engine, md = store.open_record(db)
    exam, f = read_result(two_results[0])
    store.add_exam(engine, md, exam, **f)

    def boom(conn, table, exam_id, organs):
        conn.execute(table.insert().values(exam_id=exam_id, organ="x", dose_gy=1.0))
        raise RuntimeError("killed in the middle")

    monkeypatch.setattr(store, "_insert_organs", boom)
    exam2, f2 = read_result(two_results[1])
    with pytest.raises(RuntimeError):
        store.add_exam(engine, md, exam2, **f2)
    monkeypatch.undo()
    exams = store.load_exams(*store.open_record(db), "P17")
    assert len(exams) == 1 and set(exams[0].organs) == {"kidney_left", "liver"}


def test_schema_versions(tmp_path, monkeypatch):
    import sqlalchemy as sa

    db = tmp_path / "rec.sqlite"
    engine, md = store.open_record(str(db))
    with engine.begin() as conn:
        conn.execute(md.tables["schema_version"].update().values(version=99))
    with pytest.raises(InputError, match="newer"):
        store.open_record(str(db))
    with engine.begin() as conn:
        conn.execute(md.tables["schema_version"].update().values(version=0))
    with pytest.raises(InputError, match="no migration"):
        store.open_record(str(db))
    # A v1 record is upgraded by the registered migration, in one step per version.
    with engine.begin() as conn:
        conn.execute(md.tables["schema_version"].update().values(version=1))
    calls = []
    monkeypatch.setattr(store, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(store.MIGRATIONS, 1, lambda conn: calls.append(conn.execute(sa.text(
        "ALTER TABLE exams ADD COLUMN note TEXT"))))
    engine2, md2 = store.open_record(str(db))
    with engine2.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM schema_version")).scalar() == 2
        assert "note" in {c["name"] for c in sa.inspect(conn).get_columns("exams")}
    assert len(calls) == 1
    other = tmp_path / "other.sqlite"
    e3 = sa.create_engine(f"sqlite:///{other}")
    with e3.begin() as conn:
        conn.execute(sa.text("CREATE TABLE foo (x INTEGER)"))
    with pytest.raises(InputError, match="not a dose record"):
        store.open_record(str(other))


def test_report_files(tmp_path, two_results):
    from persodose.risk.lar import BEIR_AGES, read_lar_table

    db = str(tmp_path / "rec.sqlite")
    engine, md = store.open_record(db)
    for r in two_results:
        exam, f = read_result(r)
        store.add_exam(engine, md, exam, **f)
    csv = tmp_path / "lar.csv"
    csv.write_text("measure,sex,site," + ",".join(map(str, BEIR_AGES)) + "\n"
                   "incidence,F,lung," + ",".join("200" for _ in BEIR_AGES) + "\n")
    doc = build_report(store.load_patient(engine, md, "P17"), store.load_exams(engine, md, "P17"),
                       read_lar_table(csv))
    assert doc["cumulative_lar_incidence"] == pytest.approx(200 / 1e5 * 0.012 / 0.1)
    assert doc["timeline"][1]["age_at_exposure_y"] == pytest.approx(56.25, abs=0.01)
    e = doc["cumulative_effective_dose_msv"]
    assert e > 0 and doc["detriment_icrp103"]["total"] == pytest.approx(5.7e-2 * e * 1e-3)
    page = write_report(doc, tmp_path / "out")
    assert "not a prediction" in page.read_text() and (tmp_path / "out" / "record.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["n_exams"] == 2
