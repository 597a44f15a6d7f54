"""Done-when of issue 17: one virtual patient with both exams, SPECT/CT therapy (177Lu-DOTATATE, four
time points) and PET/CT (18F-FDG dynamic PET with its CT), through the command line as a user runs
it: ``internal`` on each emission study, ``ct`` on the PET/CT's CT, ``record add`` of the three
results and ``record report``, which must show internal and CT organ doses, their sum with
uncertainties, and risk (ICRP 103 detriment; LAR needs the BEIR VII table, which is not shipped).

Coarse (10 mm, LED, few CT photons) so that it runs in tier 1; the figures are not the point,
the chain is.
"""

import json

import pytest

pytest.importorskip("sqlalchemy")


@pytest.fixture(scope="module")
def patient_dirs(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("vp2")
    for tracer in ("lu177-dotatate", "fdg"):
        write_virtual_patient(make_virtual_patient(tracer, voxel_mm=10.0, seed=3), root / tracer)
    return root


@pytest.mark.slow
def test_record_report_sums_internal_and_ct_with_uncertainties_and_risk(cli, patient_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSODOSE_CACHE", str(tmp_path / "cache"))
    lu, fdg = patient_dirs / "lu177-dotatate", patient_dirs / "fdg"
    labels = ["--labels", lu / "nifti" / "labels.nii.gz"]
    args = ["internal", "--ct", lu / "ct", "--nuclide", "Lu-177", *labels, "--calibration-cps-per-mbq", "10",
            "--method", "led", "--uncertainty", "calibration=5,activity=8,recovery=3", "--out", tmp_path / "lu"]
    for e in sorted((lu / "spect").iterdir()):
        args += ["--emission", e]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    args = ["internal", "--ct", fdg / "ct", "--nuclide", "F-18", "--labels", fdg / "nifti" / "labels.nii.gz",
            "--method", "led", "--tia-method", "dynamic", "--uncertainty", "calibration=5", "--out", tmp_path / "pet"]
    for e in sorted((fdg / "pet").iterdir()):
        args += ["--emission", e]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    r = cli("ct", "--ct", fdg / "ct", "--labels", fdg / "nifti" / "labels.nii.gz", "--photons", "20000",
            "--ctdi-photons", "6000", "--batches", "4", "--dose-voxel-mm", "20", "--out", tmp_path / "ctdose")
    assert r.returncode == 0, r.stderr
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
