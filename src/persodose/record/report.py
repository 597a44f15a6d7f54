"""Cumulative organ doses, effective dose and risk of one patient over time (JSON, HTML, figure).

* Cumulative organ dose: the sum over exams (internal and CT) of each organ's dose, its standard
  uncertainty the quadrature sum of the exams' (independent exams); organs are matched by name.
* Effective dose per exam: :func:`persodose.risk.effective_dose.effective_dose` (ICRP 103,
  partial where organs are missing, said so); cumulative: their running sum.
* Detriment: ICRP 103 Table 1 nominal coefficients on the cumulative effective dose.
* LAR (with a BEIR VII table, sex and birth date): each exam's LAR at the age at that exam,
  summed over exams (:func:`persodose.risk.lar.lifetime_attributable_risk`).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path

from persodose.record.store import Exam
from persodose.risk.effective_dose import effective_dose
from persodose.risk.lar import POPULATION_STATEMENT, LARTable, detriment, lifetime_attributable_risk

__all__ = ["cumulative", "build_report", "write_report"]


def cumulative(exams: list[Exam]) -> dict:
    """``{organ: {"internal_gy", "ct_gy", "total_gy", "sd_gy", "n_exams", "sd_missing_exams"}}`` over
    ``exams``; ``sd_missing_exams`` counts exams that gave no uncertainty (counted as 0 in ``sd_gy``:
    the combined uncertainty is then a lower bound)."""
    out: dict[str, dict] = {}
    var: dict[str, float] = {}
    for e in exams:
        for organ, (dose, sd, _mass) in e.organs.items():
            row = out.setdefault(organ, {"internal_gy": 0.0, "ct_gy": 0.0, "total_gy": 0.0, "n_exams": 0})
            row["internal_gy" if e.kind == "internal" else "ct_gy"] += dose
            row["total_gy"] += dose
            row["n_exams"] += 1
            row["sd_missing_exams"] = row.get("sd_missing_exams", 0) + (sd is None)
            var[organ] = var.get(organ, 0.0) + (sd or 0.0) ** 2
    for organ, row in out.items():
        row["sd_gy"] = math.sqrt(var[organ])
    return out


def _age(birth_date: str | None, exam_date: str) -> float | None:
    try:
        b = _dt.date.fromisoformat(str(birth_date)[:10])
        d = _dt.date.fromisoformat(str(exam_date)[:10])
    except (TypeError, ValueError):
        return None
    return (d - b).days / 365.25


def build_report(patient: dict, exams: list[Exam], lar_table: LARTable | None = None,
                 population: str = "whole") -> dict:
    """The report document (``report.json``) of a patient's exams."""
    timeline, e_cum, var_cum, inc_cum, mort_cum = [], 0.0, 0.0, 0.0, 0.0
    lar_notes = []
    for e in exams:
        doses = {k: v[0] for k, v in e.organs.items()}
        ed = effective_dose(doses, {k: v[2] for k, v in e.organs.items() if v[2]},
                            {k: v[1] for k, v in e.organs.items() if v[1] is not None})
        e_cum += ed.effective_dose_sv
        var_cum += ed.uncertainty_sv ** 2
        item = {"exam_date": e.exam_date, "kind": e.kind, "study_uid": e.study_uid, "series_uid": e.series_uid,
                "source": e.source, "effective_dose_msv": ed.effective_dose_msv, "effective_dose_sd_msv":
                ed.uncertainty_msv, "effective_dose_status": ed.status,
                "cumulative_effective_dose_msv": 1e3 * e_cum, "cumulative_effective_dose_sd_msv":
                1e3 * math.sqrt(var_cum), "organs_gy": doses}
        age = _age(patient.get("birth_date"), e.exam_date)
        if lar_table is not None and patient.get("sex") and age is not None:
            r = lifetime_attributable_risk(doses, patient["sex"], age, lar_table)
            inc_cum += r.total_incidence
            mort_cum += r.total_mortality
            item.update({"age_at_exposure_y": age, "lar": r.to_dict(), "cumulative_lar_incidence": inc_cum,
                         "cumulative_lar_mortality": mort_cum})
        timeline.append(item)
    if lar_table is None:
        lar_notes.append("no LAR: give --lar-table (BEIR VII Tables 12D-1/12D-2 as CSV, docs/risk.md)")
    elif not (patient.get("sex") and patient.get("birth_date")):
        lar_notes.append("no LAR: the patient's sex and birth date are not in the record (record add --sex "
                         "--birth-date, or DICOM PatientSex/PatientBirthDate)")
    return {"schema": "persodose.dose-record-report", "schema_version": 1, "patient": patient,
            "n_exams": len(exams), "cumulative_organ_doses": cumulative(exams), "timeline": timeline,
            "cumulative_effective_dose_msv": 1e3 * e_cum, "cumulative_effective_dose_sd_msv": 1e3 * math.sqrt(var_cum),
            "detriment_icrp103": detriment(e_cum, population),
            "cumulative_lar_incidence": inc_cum if lar_table is not None else None,
            "cumulative_lar_mortality": mort_cum if lar_table is not None else None,
            "notes": lar_notes, "statement": POPULATION_STATEMENT}


def _figure(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    tl = doc["timeline"]
    x = list(range(1, len(tl) + 1))
    ax1.errorbar(x, [t["cumulative_effective_dose_msv"] for t in tl],
                 yerr=[t["cumulative_effective_dose_sd_msv"] for t in tl], marker="o", capsize=3)
    ax1.set_xticks(x, [f"{t['exam_date']}\n{t['kind']}" for t in tl], fontsize=7)
    ax1.set_ylabel("cumulative effective dose (mSv)")
    ax1.set_title("Effective dose over time")
    organs = doc["cumulative_organ_doses"]
    names = sorted(organs)
    ax2.barh(names, [organs[n]["internal_gy"] for n in names], label="internal")
    ax2.barh(names, [organs[n]["ct_gy"] for n in names], left=[organs[n]["internal_gy"] for n in names],
             label="CT", xerr=[organs[n]["sd_gy"] for n in names])
    ax2.set_xscale("symlog", linthresh=1e-3)
    ax2.set_xlabel("cumulative organ dose (Gy)")
    ax2.tick_params(axis="y", labelsize=7)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(doc: dict) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(n)}</td><td>{r['internal_gy']:.4g}</td><td>{r['ct_gy']:.4g}</td>"
                   f"<td>{r['total_gy']:.4g} &plusmn; {r['sd_gy']:.2g}"
                   f"{' (no uncertainty from ' + str(r['sd_missing_exams']) + ' exam(s))' if r['sd_missing_exams'] else ''}"
                   f"</td><td>{r['n_exams']}</td></tr>"
                   for n, r in sorted(doc["cumulative_organ_doses"].items()))
    tl = "".join(f"<tr><td>{esc(t['exam_date'])}</td><td>{esc(t['kind'])}</td>"
                 f"<td>{t['effective_dose_msv']:.3g} &plusmn; {t['effective_dose_sd_msv']:.2g}</td>"
                 f"<td>{esc(t['effective_dose_status'])}</td><td>{t['cumulative_effective_dose_msv']:.3g}</td>"
                 f"<td>{'' if 'lar' not in t else format(t['lar']['total_incidence'], '.2e')}</td></tr>"
                 for t in doc["timeline"])
    det = doc["detriment_icrp103"]
    lar = ("" if doc["cumulative_lar_incidence"] is None else
           f"<p>Cumulative LAR (BEIR VII): incidence {doc['cumulative_lar_incidence']:.2e}, mortality "
           f"{doc['cumulative_lar_mortality']:.2e}.</p>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in doc["notes"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Dose record {esc(doc['patient']['patient_id'])}"
            f"</title></head><body><h1>Cumulative dose record: patient {esc(doc['patient']['patient_id'])}</h1>"
            f"<p><strong>{esc(doc['statement'])}</strong></p><img src='record.png' alt='record figure'>"
            f"<h2>Cumulative organ doses (Gy, &plusmn; standard uncertainty, exams in quadrature)</h2>"
            f"<table border='1'><tr><th>organ</th><th>internal</th><th>CT</th><th>total</th><th>exams</th></tr>"
            f"{rows}</table><h2>Exams</h2><table border='1'><tr><th>date</th><th>kind</th><th>E (mSv)</th>"
            f"<th>coverage</th><th>cumulative E (mSv)</th><th>LAR incidence</th></tr>{tl}</table>"
            f"<h2>Risk</h2><p>Cumulative effective dose {doc['cumulative_effective_dose_msv']:.3g} &plusmn; "
            f"{doc['cumulative_effective_dose_sd_msv']:.2g} mSv; ICRP 103 detriment ({esc(det['population'])}): "
            f"{det['total']:.2e} (cancer {det['cancer']:.2e}, heritable {det['heritable']:.2e}).</p>{lar}"
            f"<ul>{notes}</ul></body></html>")


def write_report(doc: dict, out) -> Path:
    """``report.json``, ``report.html`` and ``record.png`` in ``out`` (written atomically)."""
    from persodose.outputs import atomic_dir, jsonable

    with atomic_dir(out) as work:
        (work / "report.json").write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False))
        _figure(doc, work / "record.png")
        (work / "report.html").write_text(_html(doc))
    return Path(out) / "report.html"
