"""The HTML report of an internal-dosimetry run (:func:`persodose.workflows.internal.run_internal`).

Settings, time points, organ kinetics with the fit verdicts, dose slices, organ doses by
every method beside organ-level MIRD, DVHs and the comparison with Monte Carlo. It reads a
result object and writes one HTML file; it computes no dose.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SUMMARY_ORGANS_MAX = 12


def comparison_rows(result) -> tuple[list[str], list[list]]:
    """Method comparison in the style of the SINFONIA FDG study: voxel MRAE and organ RE vs MC."""
    organs = [r.name for r in result.organ_tables.get("mc", []) if r.n_voxels > 0]
    rows = []
    for method, comp in result.comparison.items():
        voxel = comp.get("voxel", {})
        org = {o["name"]: o for o in comp.get("organs", [])}
        rows.append([method.upper(), voxel.get("mrae_percent"), voxel.get("nrmse"), voxel.get("ssim")]
                    + [org.get(n, {}).get("re_percent") for n in organs[:SUMMARY_ORGANS_MAX]])
    return ["method", "voxel MRAE (%) above 10% of max", "NRMSE", "SSIM"] + [f"{n} RE (%)" for n in organs[:SUMMARY_ORGANS_MAX]], rows


def budget_focus(budgets: dict) -> list[str]:
    """The structures whose budget is shown in full: the kidneys, else the highest dose."""
    kidneys = [n for n in budgets if "kidney" in n.lower()]
    if kidneys:
        return sorted(kidneys)
    return [max(budgets, key=lambda n: budgets[n].dose_gy)] if budgets else []


def _uncertainty_section(rep, result, method: str) -> None:
    """Budget of the kidney dose (or the highest dose) and every structure's lines, for ``method``."""
    from persodose.dose.uncertainty import LIMITATIONS

    budgets = getattr(result, "organ_uncertainty", {}).get(method)
    if not budgets:
        return
    rep.heading(f"Uncertainty of the organ doses ({method.upper()})")
    given = result.settings.uncertainty or {}
    stated = {k: v for k, v in given.items() if v is not None and not isinstance(v, bool)}
    per_tp = " (recovery independent at each time point)" if given.get("recovery_per_time_point") else ""
    rep.text("Stated relative standard uncertainties: " + (", ".join(f"{k} {100 * v:g} %" for k, v in stated.items())
                                                          or "none (lines without a value are 'not stated')") + per_tp
             + f". Propagation after the EANM guidance (Gear et al., EJNMMI 45 (2018) 2456); {LIMITATIONS}.",
             "small")
    for name in budget_focus(budgets):
        u = budgets[name]
        rep.table(["component", "relative sd (%)", "share of variance (%)", "note"],
                  [[b["component"], b["relative_sd_percent"] if b["relative_sd_percent"] is not None else "-",
                    b["share_percent"] if b["share_percent"] is not None else "-", b["note"]] for b in u.budget()]
                  + [["combined", 100 * u.relative_sd, 100.0 if u.relative_sd > 0 else "-", ""]],
                  caption=f"Uncertainty budget of the {name} dose: {u.dose_gy:.4g} ± {u.sd_gy:.2g} Gy (k=1)")
    comps = []
    for u in budgets.values():
        for b in u.budget():
            if b["component"] not in comps:
                comps.append(b["component"])
    rows = []
    for name, u in sorted(budgets.items(), key=lambda kv: -kv[1].dose_gy):
        line = {b["component"]: b["relative_sd_percent"] for b in u.budget()}
        rows.append([name, u.dose_gy, u.sd_gy, 100 * u.relative_sd]
                    + [line.get(c) if line.get(c) is not None else "-" for c in comps])
    rep.table(["structure", "dose (Gy)", "sd (Gy)", "combined (%)"] + [f"{c} (%)" for c in comps], rows,
              caption="Every organ and lesion: combined relative standard uncertainty and each line of its budget")


def build_report(result, path: Path, title: str) -> Path:
    """Write the report of an :class:`~persodose.workflows.internal.InternalResult` to ``path``."""
    from persodose.report import figures
    from persodose.report.html import Report

    rep = Report(title)
    s = result.settings
    rep.table(["setting", "value"], [["nuclide", s.nuclide], ["methods", ", ".join(m.upper() for m in s.methods)],
                                    ["dose grid", f"{result.density.shape} voxels of {result.density.spacing_zyx_mm[0]:g} mm"],
                                    ["TIA", result.tia_report.get("method_used", result.tia_report.get("method"))],
                                    ["total TIA (MBq h)", result.tia.total() / 3.6e9]])
    if result.time_points:
        rep.heading("Time points")
        rep.table(["image", "time after injection (h)", "activity in FOV (MBq)"],
                  [[tp.label, tp.time_s / 3600, a.total() / 1e6] for tp, a in zip(result.time_points, result.activities)])
    if result.organ_kinetics:
        rep.heading("Organ kinetics")
        from persodose.kinetics.models import get_model
        from persodose.physics.radionuclides import get_nuclide

        half_life = get_nuclide(s.nuclide).half_life_s
        rows = []
        curves = {}
        t_h = np.array([tp.time_s / 3600 for tp in result.time_points])
        t_dense = np.linspace(0.0, float(t_h.max()) * 1.15, 200)
        for name, ok in sorted(result.organ_kinetics.items(), key=lambda kv: -kv[1].tia_bq_s):
            r2 = ok.fit.r2 if ok.fit is not None else None
            rel = ok.tia_sd_bq_s / ok.tia_bq_s if ok.tia_bq_s > 0 and math.isfinite(ok.tia_sd_bq_s) else None
            q = getattr(ok, "quality", None)
            rows.append([name, ok.chosen_model, ok.tia_bq_s / 3.6e9, 100 * rel if rel is not None else None, r2,
                         q.verdict if q else "-", "; ".join(q.reasons) if q else ""])
            if len(curves) < 8 and ok.tia_bq_s > 0:
                fitted = None
                if ok.fit is not None:
                    model = get_model(ok.fit.model, half_life)
                    fitted = np.asarray(model.evaluate(t_dense * 3600.0, ok.fit.params)) / 1e6
                curves[name] = (np.asarray(ok.activities_bq) / 1e6, fitted)
        rep.table(["organ", "model (AICc)", "TIA (MBq h)", "TIA uncertainty (%)", "R2", "fit verdict", "reasons"],
                  rows)
        if curves:
            rep.figure(figures.fit_figure(t_h, t_dense, curves, "organ activity (MBq)"),
                       caption="Organ time-activity data (markers) and the fitted model chosen by AICc (lines)")
    rep.heading("Dose maps")
    vmax = float(np.percentile(result.doses.get("mc", next(iter(result.doses.values()))).array, 99.9)) or 1.0
    panels = [("CT", result.ct, {"cmap": "gray", "vmin": -1000, "vmax": 1000})]
    panels += [(m.upper(), d, {"cmap": "inferno", "vmin": 0, "vmax": vmax}) for m, d in result.doses.items()]
    # slices through the hottest voxel; Monte Carlo dose in air voxels (tiny mass) hidden in the display only
    ref_dose = result.doses.get("mc", next(iter(result.doses.values()))).array
    hot = np.unravel_index(int(np.argmax(np.where(result.density.array >= 0.1, ref_dose, 0))), ref_dose.shape)
    rep.figure(figures.slices_figure(panels, z_index=int(hot[0]), y_index=int(hot[1]), overlay_labels=result.labels,
                                     display_mask=result.density.array >= 0.1),
               caption="CT with organ outlines, and absorbed dose (Gy) by each method through the hottest voxel; "
                       "dose in air (density < 0.1 g/cm3) not displayed")
    if result.organ_tables:
        rep.heading("Organ doses (Gy)")
        methods = list(result.organ_tables)
        names = [r.name for r in result.organ_tables[methods[0]] if r.n_voxels > 0]
        by = {m: {r.name: r for r in rows} for m, rows in result.organ_tables.items()}
        mird = {r["name"]: r.get("dose_gy") for r in result.organ_mird}
        last = by[methods[-1]]
        rep.table(["organ", "mass (g)"] + [f"{m.upper()} mean" for m in methods] + [f"{methods[-1].upper()} ± (%)"]
                  + ["organ MIRD", "D98", "D50", "D2", "TIA fit"],
                  [[n, by[methods[0]][n].mass_g] + [by[m][n].mean_gy for m in methods] + [last[n].uncertainty_percent]
                   + [mird.get(n), last[n].d_gy.get("D98"), last[n].d_gy.get("D50"), last[n].d_gy.get("D2"),
                      last[n].tia_fit or "-"]
                   for n in names],
                  caption="Mean absorbed dose by each voxel method and by organ-level MIRD (self-dose only, this "
                          f"patient's masses); ±: combined standard uncertainty (k=1) of {methods[-1].upper()}'s "
                          "mass-weighted mean dose (budget below); "
                          f"D98/D50/D2 of {methods[-1].upper()}; TIA fit: the verdict on the "
                          "organ's time-activity fit ('unreliable': do not use that organ's dose)")
        _uncertainty_section(rep, result, methods[-1])
        if result.unreliable_kinetics:
            rep.table(["organ", "why its dose is unreliable"], [[o, w] for o, w in result.unreliable_kinetics])
        from persodose.metrics.dvh import dvh_figure, dvhs_for_labels

        ref_method = "mc" if "mc" in result.doses else methods[0]
        dvhs = dvhs_for_labels(result.doses[ref_method], result.labels, result.label_names)
        means = {r.name: r.mean_gy or 0.0 for r in result.organ_tables[ref_method]}
        top = sorted(dvhs.values(), key=lambda d: -means.get(d.name, 0.0))[:10]
        if top:
            rep.figure(dvh_figure(top, "cumulative"), caption=f"Cumulative DVHs of the ten organs with the highest "
                                                              f"mean dose ({ref_method.upper()})")
    if result.organ_mird:
        rep.heading("Organ-level MIRD (this patient's masses, sphere photon model)")
        keys = [k for k in ("name", "mass_g", "tia_bq_s", "electron_dose_gy", "photon_dose_gy", "dose_gy") if k in result.organ_mird[0]]
        rep.table(keys, [[r.get(k) for k in keys] for r in result.organ_mird if r.get("mass_g")])
    if result.comparison:
        rep.heading("Methods against Monte Carlo")
        cols, rows = comparison_rows(result)
        rep.table(cols, rows, caption="Voxel mean relative absolute error and organ relative errors of each method, "
                                      "Monte Carlo as reference (as in the SINFONIA FDG study)")
    rep.table(["step", "seconds"], [[k, v] for k, v in result.timings_s.items()], caption="Run time")
    return rep.write(path)
