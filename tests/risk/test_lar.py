"""LAR from a BEIR VII-layout table (synthetic values: the report's own are not shipped) and ICRP 103 detriment."""

import math

import pytest

from persodose.errors import InputError
from persodose.risk.lar import (BEIR_AGES, POPULATION_STATEMENT, detriment, lifetime_attributable_risk,
                                read_lar_table, site_for_label)

_HEADER = "measure,sex,site," + ",".join(str(a) for a in BEIR_AGES)


def _table(tmp_path):
    # Synthetic entries (not BEIR VII's): lung F incidence falls by 10 per age step.
    lines = [_HEADER,
             "incidence,F,lung," + ",".join(str(500 - 10 * i) for i in range(11)),
             "mortality,F,lung," + ",".join(str(300 - 10 * i) for i in range(11)),
             "incidence,M,leukaemia," + ",".join("100" for _ in range(11)),
             "incidence,F,breast," + ",".join(str(800 - 50 * i) for i in range(11))]
    p = tmp_path / "lar.csv"
    p.write_text("\n".join(lines) + "\n")
    return read_lar_table(p)


def test_table_entry_at_table_age_and_dose(tmp_path):
    t = _table(tmp_path)
    r = lifetime_attributable_risk({"lung_left": 0.1, "lung_right": 0.1}, "F", 30, t)
    (lung,) = r.organs
    assert lung.site == "lung"
    assert lung.lar_incidence == pytest.approx(450 / 1e5)  # age 30 is the 6th column
    assert lung.lar_mortality == pytest.approx(250 / 1e5)
    assert r.statement == POPULATION_STATEMENT and "not a prediction" in r.statement


def test_linear_in_dose_and_interpolated_in_age(tmp_path):
    t = _table(tmp_path)
    a = lifetime_attributable_risk({"lung": 0.05}, "F", 35, t).total_incidence
    b = lifetime_attributable_risk({"lung": 0.5}, "F", 35, t).total_incidence
    assert b == pytest.approx(10 * a)
    assert a == pytest.approx((450 + 440) / 2 / 1e5 * 0.5)
    assert lifetime_attributable_risk({"lung": 0.1}, "F", 95, t).total_incidence == pytest.approx(400 / 1e5)


def test_mapping_marrow_and_sex(tmp_path):
    t = _table(tmp_path)
    assert site_for_label("red_marrow") == "leukaemia"
    assert site_for_label("breast", "M") is None and site_for_label("breast", "F") == "breast"
    assert site_for_label("ovary_left", "F") == "ovary" and site_for_label("prostate", "F") is None
    r = lifetime_attributable_risk({"red_marrow": 0.2, "kidney_left": 1.0, "breast": 0.1}, "M", 50, t)
    assert [o.site for o in r.organs] == ["leukaemia"]
    assert r.organs[0].lar_incidence == pytest.approx(2e-3) and r.organs[0].lar_mortality is None
    assert set(r.unmapped_organs) == {"kidney_left", "breast"}


def test_bad_input(tmp_path):
    t = _table(tmp_path)
    for kwargs in ({"sex": "X", "age_at_exposure_y": 30}, {"sex": "F", "age_at_exposure_y": -1}):
        with pytest.raises(InputError):
            lifetime_attributable_risk({"lung": 0.1}, table=t, **kwargs)
    with pytest.raises(InputError):
        lifetime_attributable_risk({"lung": math.nan}, "F", 30, t)
    bad = tmp_path / "bad.csv"
    bad.write_text("measure,sex\nincidence,F\n")
    with pytest.raises(InputError):
        read_lar_table(bad)
    bad.write_text(_HEADER + "\nincidence,F,spleen," + ",".join("1" for _ in range(11)) + "\n")
    with pytest.raises(InputError):
        read_lar_table(bad)


def test_icrp103_detriment():
    d = detriment(0.01)
    assert d["cancer"] == pytest.approx(5.5e-4) and d["heritable"] == pytest.approx(0.2e-4)
    assert d["total"] == pytest.approx(5.7e-4)
    a = detriment(0.01, "adult")
    assert a["total"] == pytest.approx(4.2e-4)
    assert "not a prediction" in d["statement"]
    with pytest.raises(InputError):
        detriment(-1.0)
