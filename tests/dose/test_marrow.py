"""Red-marrow dosimetry: EANM blood-based and image-based (L2-L4) methods, their budgets, and the CLI.

Published worked example used: Sgouros, "Bone marrow dosimetry for radioimmunotherapy: theoretical
considerations", J Nucl Med 34 (1993) 689-694, abstract: haematocrit 0.47 and a red-marrow
extracellular fluid fraction of 0.19 give a red-marrow-to-blood concentration ratio of 0.36.
No published worked example of the whole blood-based dose (samples to Gy) with all of its inputs
could be found in the sources available to this project; the rest of the chain is checked against
an independent hand calculation of the MIRD formula (Hindorf et al., EJNMMI 37 (2010) 1238) on a
curve whose integral is known exactly.
"""

import json
import math

import numpy as np
import pytest

from persodose.dose import marrow as m
from persodose.errors import InputError
from persodose.kinetics.fit import fit_tac
from persodose.physics.radionuclides import get_nuclide
from tests.cli.test_cli import assert_clean_error

MEV_G_TO_GY = 1.602176634e-13 / 1e-3  # J/MeV (SI exact) per kg


def _blood(half_life_h=10.0, c0=5e4, hct=None, sd=0.03):
    t = np.array([0.5, 2.0, 6.0, 24.0, 48.0, 96.0]) * 3600.0
    c = c0 * np.exp(-math.log(2.0) / (half_life_h * 3600.0) * t)
    return m.Samples(t, c, None if sd is None else c * sd, hct), c0 / (math.log(2.0) / (half_life_h * 3600.0))


def test_sgouros_1993_worked_example_rmblr():
    assert round(m.rmblr_from_haematocrit(0.47, m.RMECFF_SGOUROS), 2) == 0.36


def test_blood_based_self_dose_is_the_mird_formula():
    blood, tiac_exact = _blood(hct=0.47)
    r = m.blood_based_marrow_dose(blood, "Lu-177")
    n = get_nuclide("Lu-177")
    e_np = n.electron_energy_per_decay_mev() + n.alpha_energy_per_decay_mev()
    hand = tiac_exact * (0.19 / (1 - 0.47)) * e_np * MEV_G_TO_GY  # Bq s/g x MeV x Gy/(MeV/g)
    assert r.self_gy == pytest.approx(hand, rel=2e-3)
    assert r.total_gy == r.self_gy and any("lower bound" in x for x in r.notes)  # no whole body: said
    # the EANM form with a stated S(RM<-RM) and the marrow mass
    s = 2.0e-14  # Gy/(Bq s), an arbitrary stated value
    r2 = m.blood_based_marrow_dose(blood, "Lu-177", rmblr=1.0, marrow_mass_g=1000.0, s_rm_rm_gy_per_bq_s=s)
    assert r2.self_gy == pytest.approx(tiac_exact * 1.0 * 1000.0 * s, rel=2e-3)


def test_budget_of_the_blood_method():
    blood, _ = _blood(hct=0.40)
    cross = m.CrossDose(whole_body_tia_bq_s=1e15, whole_body_rel_sd=0.1, body_mass_g=70000.0)
    r = m.blood_based_marrow_dose(blood, "Lu-177", haematocrit_sd=0.03, rmecff_sd=0.02, calibration_rel_sd=0.05,
                                  marrow_mass_g=1000.0, cross=cross)
    lines = {b["component"]: b for b in r.uncertainty.budget()}
    assert lines["RMBLR: RMECFF"]["relative_sd_percent"] == pytest.approx(100 * 0.02 / 0.19 * r.self_gy / r.total_gy)
    assert lines["RMBLR: haematocrit"]["relative_sd_percent"] == pytest.approx(100 * 0.05 * r.self_gy / r.total_gy)
    assert lines["counter calibration"]["relative_sd_percent"] == pytest.approx(5 * r.self_gy / r.total_gy)
    assert 0 < lines["blood TIAC (samples and fit)"]["relative_sd_percent"] < 3
    # the default photon model has no uncertainty: a line without a value, and the result says so
    assert lines["S(RM<-RB) photon model"]["relative_sd_percent"] is None and not r.uncertainty_complete
    assert any(n.startswith("uncertainty incomplete (lower bound)") for n in r.notes)
    assert r.uncertainty.sd_gy == pytest.approx(r.total_gy * r.uncertainty.relative_sd)


def test_marrow_photons_are_counted_once():
    """The default self factor is electrons and alphas only: the marrow's photons must stay in the body's photon
    source (not subtracted), so the dose grows with the marrow's TIA through the remainder too. With a stated
    S(RM<-RM) (all emissions) the marrow's TIA leaves the remainder."""
    blood, _ = _blood(hct=0.40)
    photon = m.body_photon_factor_gy_per_bq_s("Lu-177", 70000.0)
    cross = m.CrossDose(whole_body_tia_bq_s=1e15, whole_body_rel_sd=0.1, body_mass_g=70000.0)
    r = m.blood_based_marrow_dose(blood, "Lu-177", marrow_mass_g=1000.0, cross=cross)
    assert r.remainder_gy == pytest.approx(1e15 * photon)  # the whole body, the marrow included
    r2 = m.blood_based_marrow_dose(blood, "Lu-177", marrow_mass_g=1000.0, s_rm_rm_gy_per_bq_s=3e-14, cross=cross)
    assert r2.remainder_gy == pytest.approx((1e15 - r2.quantities["marrow_tia_bq_s"]) * photon)
    assert any("taken out of the remainder" in n for n in r2.notes)


def test_propagated_blood_uncertainty_matches_resampling():
    rng = np.random.default_rng(4)
    blood, _ = _blood(hct=0.42, sd=0.05)
    kw = dict(haematocrit_sd=0.03, rmecff_sd=0.02, calibration_rel_sd=0.04)
    r = m.blood_based_marrow_dose(blood, "Lu-177", **kw)
    assert "mono" in r.notes[0]  # the resampling below refits the model AICc chose (faster than reselecting)
    factor = r.self_gy / (r.quantities["blood_tiac_bq_s_per_ml"] * r.quantities["rmblr"])
    half_life_s = get_nuclide("Lu-177").half_life_s
    doses = []
    for _ in range(400):  # resample the samples' noise, the calibration, HCT and RMECFF; redo the fit and dose
        c = blood.values * (1 + 0.05 * rng.standard_normal(blood.values.size)) * (1 + 0.04 * rng.standard_normal())
        hct = 0.42 + 0.03 * rng.standard_normal()
        rmblr = (0.19 + 0.02 * rng.standard_normal()) / (1 - hct)
        doses.append(fit_tac(blood.times_s, c, "mono", half_life_s, sigma=0.05 * c).tia_bq_s * rmblr * factor)
    # n = 400: the SD's own sampling error is about 3.5 %; 15 % leaves room for the 1/(1 - HCT) non-linearity
    assert float(np.std(doses, ddof=1) / np.mean(doses)) == pytest.approx(r.uncertainty.relative_sd, rel=0.15)


def test_image_based_method():
    t = np.array([4.0, 24.0, 96.0, 168.0]) * 3600.0
    lam = math.log(2.0) / (80 * 3600.0)
    act = m.Samples(t, 2e6 * np.exp(-lam * t))
    r = m.image_based_marrow_dose(act, "Lu-177", fraction_in_l2l4=0.1, marrow_mass_g=1200.0, mass_rel_sd=0.1,
                                  recovery_rel_sd=0.1, fraction_rel_sd=0.2)
    n = get_nuclide("Lu-177")
    hand = 2e6 / lam / 0.1 * (n.electron_energy_per_decay_mev() + n.alpha_energy_per_decay_mev()) * MEV_G_TO_GY / 1200
    assert r.self_gy == pytest.approx(hand, rel=2e-3)
    lines = {b["component"]: b["relative_sd_percent"] for b in r.uncertainty.budget()}
    assert lines["L2-L4 fraction of the marrow"] == pytest.approx(20.0) and lines["marrow mass"] == pytest.approx(10.0)
    with pytest.raises(InputError):
        m.image_based_marrow_dose(act, "Lu-177", fraction_in_l2l4=0.0, marrow_mass_g=1200.0)


def test_remainder_of_body_correction_recovers_the_remainder():
    m_tb, m_rm, s_rm, s_rb = 70000.0, 1200.0, 3e-14, 2e-16
    s_tb = (m_rm * s_rm + (m_tb - m_rm) * s_rb) / m_tb  # S of the total body as the mass-weighted mixture
    assert m.s_rm_rb_from_total_body(s_tb, s_rm, m_tb, m_rm) == pytest.approx(s_rb)


def test_organs_and_csvs(tmp_path):
    p = tmp_path / "blood.csv"
    p.write_text("time_h,kbq_per_ml,sd_kbq_per_ml,haematocrit\n1,50,2,0.41\n24,20,1,0.43\n4,40,2,0.42\n")
    s = m.read_samples_csv(p)
    assert s.times_s.tolist() == [3600.0, 14400.0, 86400.0] and s.values[0] == 5e4
    assert s.haematocrit == pytest.approx(0.42) and s.sd[1] == 2e3
    o = tmp_path / "organs.csv"
    o.write_text("organ,tia_mbq_h,s_mgy_per_mbq_s,tia_sd_percent\nkidneys,1000,1e-6,10\n")
    rows = m.read_organs_csv(o)
    assert rows[0]["tia_bq_s"] == pytest.approx(3.6e12) and rows[0]["s_gy_per_bq_s"] == pytest.approx(1e-15)
    for text in ("time_h,bq\n1,2\n", "time_h,kbq_per_ml\n1,x\n", "time_h,kbq_per_ml\n1,-5\n", "a,b\n"):
        p.write_text(text)
        with pytest.raises(InputError):
            m.read_samples_csv(p)


def test_marrow_cli(cli, tmp_path):
    blood = tmp_path / "blood.csv"
    blood.write_text("time_h,kbq_per_ml,sd_kbq_per_ml\n0.5,48,2\n2,44,2\n6,33,1.5\n24,9,0.5\n48,1.6,0.1\n")
    before = blood.read_bytes()
    r = cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--haematocrit", "0.42", "--haematocrit-sd", "0.02",
            "--calibration-sd-percent", "3", "--whole-body-tia-mbq-h", "150000", "--whole-body-sd-percent", "10",
            "--body-mass-kg", "75", "--marrow-mass-g", "1100", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "marrow.json").read_text())
    assert doc["red_marrow_dose_Gy"] > 0 and doc["sd_Gy"] > 0 and doc["method"] == "blood"
    assert (tmp_path / "out" / "marrow_budget.csv").exists() and (tmp_path / "out" / "report.html").exists()
    assert "Gy (k=1)" in r.stdout and blood.read_bytes() == before
    l2 = tmp_path / "l2l4.csv"
    l2.write_text("time_h,mbq\n4,2.0\n24,1.6\n96,0.8\n168,0.4\n")
    wb = tmp_path / "wb.csv"
    wb.write_text("time_h,mbq\n4,5000\n24,3500\n96,1500\n168,600\n")
    org = tmp_path / "organs.csv"
    org.write_text("organ,tia_mbq_h,s_mgy_per_mbq_s,tia_sd_percent,s_sd_percent\nkidneys,20000,2e-7,10,5\n")
    r = cli("marrow", "--l2l4", l2, "--nuclide", "Lu-177", "--l2l4-fraction", "0.1", "--marrow-mass-g", "1100",
            "--whole-body", wb, "--whole-body-sd-percent", "5", "--body-mass-kg", "70", "--organs", org,
            "--out", tmp_path / "out2")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out2" / "marrow.json").read_text())
    assert doc["organs_Gy"]["kidneys"] == pytest.approx(20000 * 3.6e9 * 2e-7 * 1e-9)
    assert doc["remainder_of_body_Gy"] > 0 and doc["method"] == "image (L2-L4)"
    lines = {b["component"] for b in doc["budget"]}
    assert {"whole-body TIA", "organ kidneys TIA", "organ kidneys S", "L2-L4 activities and fit"} <= lines


def test_marrow_cli_bad_input(cli, tmp_path):
    blood = tmp_path / "blood.csv"
    blood.write_text("time_h,kbq_per_ml\n1,50\n24,x\n")
    out = tmp_path / "out"
    assert_clean_error(cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--rmblr", "1", "--out", out), "line 3")
    assert_clean_error(cli("marrow", "--nuclide", "Lu-177", "--out", out), "--blood")
    blood.write_text("time_h,kbq_per_ml\n1,50\n24,20\n")
    assert_clean_error(cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--out", out), "haematocrit")
    assert_clean_error(cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--haematocrit", "1.4",
                           "--out", out), "haematocrit")
    assert_clean_error(cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--rmblr", "1", "--out", blood), "--out")
    assert_clean_error(cli("marrow", "--l2l4", blood, "--nuclide", "Lu-177", "--out", out), "--l2l4-fraction")
    assert not out.exists()


# (whole-body TIA, its u, S(RM<-RB), organ TIA): a realistic one, where the whole-body and organ lines matter
# (the old formula gave 6.70 % against 10.09 % resampled), and an artificial one with S(RM<-RB) near S(RM<-RM)
# and a small body, where the marrow TIA's pull on the remainder matters (without it 8.22 % against 4.22 % resampled)
@pytest.mark.parametrize("wb, u_wb, s_rb, tia_h", [(2e15, 0.2, 2e-17, 1.5e15), (1.7e12, 0.02, 3e-14, 0.0)])
def test_propagated_budget_with_remainder_and_organs_matches_resampling(wb, u_wb, s_rb, tia_h):
    """All inputs resampled, the whole-body and organ TIAs included; the dose recomputed from the EANM formula
    D = A~_RM S(RM<-RM) + (A~_WB - A~_h - A~_RM) S(RM<-RB) + A~_h S(RM<-h) (Hindorf et al. 2010), written out
    here independently of the module. Figures: see docs/uncertainty.md."""
    rng = np.random.default_rng(7)
    blood, _ = _blood(hct=0.42, sd=0.05)
    u_srb, u_th, s_h, u_sh = 0.05, 0.05, 3e-17, 0.05
    s_rm, u_srm, mass = 4e-14, 0.05, 1000.0
    organ = {"organ": "liver", "tia_bq_s": tia_h, "s_gy_per_bq_s": s_h, "tia_rel_sd": u_th, "s_rel_sd": u_sh}
    cross = m.CrossDose(whole_body_tia_bq_s=wb, whole_body_rel_sd=u_wb, s_rm_rb_gy_per_bq_s=s_rb,
                        s_rm_rb_rel_sd=u_srb, organs=(organ,) if tia_h else ())
    r = m.blood_based_marrow_dose(blood, "Lu-177", haematocrit_sd=0.03, rmecff_sd=0.02, calibration_rel_sd=0.04,
                                  marrow_mass_g=mass, s_rm_rm_gy_per_bq_s=s_rm, s_rm_rm_rel_sd=u_srm, cross=cross)
    assert "mono" in r.notes[0]
    half_life_s = get_nuclide("Lu-177").half_life_s
    g = lambda u: 1.0 + u * rng.standard_normal()  # noqa: E731
    doses = []
    for _ in range(600):
        c = blood.values * (1 + 0.05 * rng.standard_normal(blood.values.size)) * g(0.04)
        hct = 0.42 + 0.03 * rng.standard_normal()
        tiac = fit_tac(blood.times_s, c, "mono", half_life_s, sigma=0.05 * c).tia_bq_s
        tia_rm = tiac * g(0.02) * 0.19 / (1 - hct) * mass
        th = tia_h * g(u_th)
        assert wb - th - tia_rm > 0  # the remainder stays positive (no clipping in the draws)
        doses.append(tia_rm * s_rm * g(u_srm) + (wb * g(u_wb) - th - tia_rm) * s_rb * g(u_srb) + th * s_h * g(u_sh))
    resampled = float(np.std(doses, ddof=1) / np.mean(doses))
    # n = 600: the SD's own sampling error is about 3 %; 12 % is four of them
    assert resampled == pytest.approx(r.uncertainty.relative_sd, rel=0.12), (r.uncertainty.relative_sd, resampled)
    assert r.uncertainty.complete


def test_missing_lines_stay_missing_and_the_result_says_so(cli, tmp_path):
    """A two-point blood curve without sample uncertainties has no fit covariance and an --rmblr without its
    uncertainty is not stated: their lines have no value (not 0), and output says the uncertainty is a lower
    bound."""
    blood = tmp_path / "blood.csv"
    blood.write_text("time_h,kbq_per_ml\n2,40\n24,10\n")
    r = m.blood_based_marrow_dose(m.read_samples_csv(blood), "Lu-177", rmblr=1.0, calibration_rel_sd=0.05)
    lines = {b["component"]: b for b in r.uncertainty.budget()}
    assert lines["RMBLR"]["relative_sd_percent"] is None and lines["RMBLR"]["note"] == "not stated"
    assert lines["blood TIAC (samples and fit)"]["relative_sd_percent"] is None
    assert r.uncertainty.relative_sd == pytest.approx(0.05) and not r.to_dict()["uncertainty_complete"]
    p = cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--rmblr", "1", "--out", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    assert "± - Gy" in p.stdout and "uncertainty incomplete (lower bound)" in p.stdout and "RMBLR" in p.stdout
    budget = json.loads((tmp_path / "out" / "marrow.json").read_text())["budget"]
    assert {b["component"]: b["relative_sd_percent"] for b in budget}["RMBLR"] is None


def test_a_single_blood_sample_is_refused(cli, tmp_path):
    blood = tmp_path / "blood.csv"
    blood.write_text("time_h,kbq_per_ml\n24,10\n")
    with pytest.raises(InputError, match="at least 2 blood samples"):
        m.blood_based_marrow_dose(m.read_samples_csv(blood), "Lu-177", rmblr=1.0)
    assert_clean_error(cli("marrow", "--blood", blood, "--nuclide", "Lu-177", "--rmblr", "1",
                           "--out", tmp_path / "out"), "at least 2 blood samples")


def test_marrow_cli_bad_csvs_and_unused_options(cli, tmp_path):
    blood = tmp_path / "blood.csv"
    blood.write_text("time_h,kbq_per_ml\n1,50\n24,20,7\n")  # an extra field on line 3
    out = tmp_path / "out"
    base = ["marrow", "--nuclide", "Lu-177", "--out", out]
    assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1"), "line 3", "more fields")
    blood.write_text("time_h,kbq_per_ml\n1,50\n24,20\n")
    org = tmp_path / "organs.csv"
    org.write_bytes("organ,tia_mbq_h,s_mgy_per_mbq_s\nk\xf6rper,10,1e-7\n".encode("latin-1"))  # not UTF-8
    assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1", "--organs", org), "organs.csv", "not a readable")
    org.write_text("organ,tia_mbq_h,s_mgy_per_mbq_s\nkidneys,10,1e-7,5\n")
    assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1", "--organs", org), "line 2", "more fields")
    assert_clean_error(cli(*base, "--blood", blood, "--haematocrit", "0.4", "--rmblr-sd-percent", "5"),
                       "--rmblr-sd-percent")
    assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1", "--haematocrit-sd", "0.02"), "--haematocrit-sd")
    assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1", "--rmecff-sd", "0.02"), "--rmecff-sd")
    assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1", "--marrow-mass-g", "1000",
                           "--marrow-mass-sd-percent", "10"), "--marrow-mass-sd-percent")
    for opt, val in (("--recovery-sd-percent", "5"), ("--l2l4-fraction", "0.2"), ("--l2l4-fraction-sd-percent", "5")):
        assert_clean_error(cli(*base, "--blood", blood, "--rmblr", "1", opt, val), opt, "image-based")
    assert not out.exists()
