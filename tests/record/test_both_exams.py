"""Done-when of issue 17: one virtual patient with both exams, SPECT/CT therapy (177Lu-DOTATATE, four
time points) and PET/CT (18F-FDG dynamic PET with its CT), through the command line as a user runs
it: ``internal`` on each emission study, ``ct`` on the PET/CT's CT, ``record add`` of the three
results and ``record report``, which must show internal and CT organ doses, their sum with
uncertainties, and risk (ICRP 103 detriment; LAR needs the BEIR VII table, which is not shipped).

Coarse (10 mm, LED, few CT photons); the figures are not the point, the chain is. The whole
chain (two internal runs and a CT run, about 50 s, most of it the photon tables of the CT run's
materials) is in tier 2 (``validate``); tier 1 keeps the same checks of the record on one real
internal run (the SPECT/CT therapy) with the PET/CT's internal and CT results written in code
(tests/record/fixtures.py).
"""

import json

import pytest

pytest.importorskip("sqlalchemy")


@pytest.fixture(scope="module")
def patient_dirs(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("vp2")
    write_virtual_patient(make_virtual_patient("lu177-dotatate", voxel_mm=10.0, seed=3), root / "lu177-dotatate")
    return root


def _fdg_dir(patient_dirs):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    fdg = patient_dirs / "fdg"
    if not fdg.exists():
        write_virtual_patient(make_virtual_patient("fdg", voxel_mm=10.0, seed=3), fdg)
    return fdg


def _lu_internal(cli, patient_dirs, tmp_path):
    lu = patient_dirs / "lu177-dotatate"
    args = ["internal", "--ct", lu / "ct", "--nuclide", "Lu-177", "--labels", lu / "nifti" / "labels.nii.gz",
            "--calibration-cps-per-mbq", "10", "--method", "led",
            "--uncertainty", "calibration=5,activity=8,recovery=3", "--out", tmp_path / "lu"]
    for e in sorted((lu / "spect").iterdir()):
        args += ["--emission", e]
    r = cli(*args)
    assert r.returncode == 0, r.stderr


def _record_and_check(cli, tmp_path):
    """``record add`` of lu, pet and ctdose under tmp_path, ``record report``, and the done-when checks."""
    db = tmp_path / "record.sqlite"
    for res in ("lu", "pet", "ctdose"):
        r = cli("record", "add", tmp_path / res, "--db", db, "--patient", "VP1", "--sex", "F",
                "--birth-date", "1970-01-01")
        assert r.returncode == 0, r.stderr
    from persodose.risk.lar import BEIR_AGES

    lar = tmp_path / "lar.csv"  # a made-up table (BEIR VII's values are not shipped): it checks the chain only
    lar.write_text("measure,sex,site," + ",".join(map(str, BEIR_AGES)) + "\n"
                   "incidence,F,liver," + ",".join("100" for _ in BEIR_AGES) + "\n")
    r = cli("record", "report", "--patient", "VP1", "--db", db, "--out", tmp_path / "rep", "--lar-table", lar)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    kinds = sorted(e["kind"] for e in doc["timeline"])
    assert kinds == ["ct", "internal", "internal"]
    liver = doc["cumulative_organ_doses"]["liver"]
    assert liver["internal_gy"] > 0 and liver["ct_gy"] > 0
    assert liver["total_gy"] == pytest.approx(liver["internal_gy"] + liver["ct_gy"])
    assert liver["n_exams"] == 3 and liver["sd_missing_exams"] == 0 and liver["sd_gy"] > 0
    # the internal exams' uncertainties are the EANM budgets (at least the stated 5 % calibration)
    lu_rows = json.loads((tmp_path / "lu" / "organs.json").read_text())["rows"]
    assert min(r_["uncertainty_percent"] for r_ in lu_rows if r_["name"] == "liver") >= 5.0
    assert doc["cumulative_effective_dose_msv"] > 0 and doc["cumulative_effective_dose_sd_msv"] > 0
    assert doc["detriment_icrp103"] and doc["cumulative_lar_incidence"] == pytest.approx(
        100 / 1e5 * liver["total_gy"] / 0.1, rel=1e-6)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "liver" in html and "population" in html.lower()
    return liver


def test_record_report_of_a_real_internal_run_and_written_pet_ct_results(cli, patient_dirs, tmp_path, monkeypatch):
    """Tier 1: the SPECT/CT therapy through ``persodose internal``; the PET/CT's internal and CT results written
    in code, so that the record's sums, uncertainties and risk are checked in seconds."""
    from tests.record.fixtures import write_result

    monkeypatch.setenv("PERSODOSE_CACHE", str(tmp_path / "cache"))
    _lu_internal(cli, patient_dirs, tmp_path)
    write_result(tmp_path / "pet", "internal", {"liver": (0.01, 10.0), "lungs": (0.005, 10.0)}, created="2026-04-01")
    write_result(tmp_path / "ctdose", "ct", {"liver": (0.005, 5.0), "lungs": (0.006, 5.0)}, created="2026-04-01")
    liver = _record_and_check(cli, tmp_path)
    lu_liver = [r_ for r_ in json.loads((tmp_path / "lu" / "organs.json").read_text())["rows"]
                if r_["name"] == "liver"][0]["mass_weighted_mean_Gy"]
    assert liver["internal_gy"] == pytest.approx(lu_liver + 0.01) and liver["ct_gy"] == pytest.approx(0.005)


@pytest.mark.validate
def test_record_report_sums_internal_and_ct_with_uncertainties_and_risk(cli, patient_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSODOSE_CACHE", str(tmp_path / "cache"))
    fdg = _fdg_dir(patient_dirs)
    _lu_internal(cli, patient_dirs, tmp_path)
    args = ["internal", "--ct", fdg / "ct", "--nuclide", "F-18", "--labels", fdg / "nifti" / "labels.nii.gz",
            "--method", "led", "--tia-method", "dynamic", "--uncertainty", "calibration=5", "--out", tmp_path / "pet"]
    for e in sorted((fdg / "pet").iterdir()):
        args += ["--emission", e]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    r = cli("ct", "--ct", fdg / "ct", "--labels", fdg / "nifti" / "labels.nii.gz", "--photons", "20000",
            "--ctdi-photons", "6000", "--batches", "4", "--dose-voxel-mm", "20", "--out", tmp_path / "ctdose")
    assert r.returncode == 0, r.stderr
    _record_and_check(cli, tmp_path)


def test_demo_record_step_puts_both_exams_in_one_record(tmp_path):
    from types import SimpleNamespace

    from persodose.demo import _record_step
    from tests.record.fixtures import write_result

    write_result(tmp_path / "lu177-dotatate" / "internal_from_images", "internal", {"liver": (2.0, 20.0)})
    write_result(tmp_path / "fdg" / "internal_from_images", "internal", {"liver": (0.01, 10.0)}, created="2026-04-01")
    write_result(tmp_path / "fdg" / "ct_dose", "ct", {"liver": (0.005, 5.0)}, created="2026-04-01")
    results = [SimpleNamespace(tracer="lu177-dotatate", internal_images=object(), ct_dose=None),
               SimpleNamespace(tracer="fdg", internal_images=object(), ct_dose=object())]
    summary = _record_step(results, tmp_path, log=lambda m: None)
    assert summary["exams"] == 3
    doc = json.loads((tmp_path / "record" / "report.json").read_text())
    liver = doc["cumulative_organ_doses"]["liver"]
    assert liver["total_gy"] == pytest.approx(2.015) and liver["ct_gy"] == pytest.approx(0.005)
    assert liver["sd_gy"] == pytest.approx((0.4 ** 2 + 0.001 ** 2 + 0.00025 ** 2) ** 0.5)
