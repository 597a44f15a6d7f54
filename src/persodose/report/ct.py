"""The HTML report of a CT dosimetry run (:func:`persodose.workflows.ct.ct_dose`).

Acquisition, CTDI calibration, dose overlays, the tube-current profile, organ doses and the
effective dose; it reads a result object and writes one HTML file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

def build_ct_report(result, path: Path, title: str) -> Path:
    """HTML report: acquisition, calibration, dose overlays, tube-current profile, organ doses."""
    from persodose.report import figures
    from persodose.report.html import Report

    plt = figures._mpl()
    rep = Report(title)
    a, c, k = result.acquisition, result.calibration, result.ctdi
    rep.table(["setting", "value"], [
        ["kVp", a.kvp], ["mode / pitch", f"{a.mode} / {a.pitch:g}"], ["collimation (mm)", a.total_collimation_mm],
        ["rotation time (s)", a.rotation_time_s], ["bowtie", a.bowtie], ["tube current from", a.tube_current_source],
        ["scanner model", result.scanner.name], ["dose grid", f"{result.dose_mgy.shape} voxels of "
                                                               f"{result.dose_mgy.spacing_zyx_mm[0]:g} mm"],
        ["photons", result.statistics.get("n_photons")], ["start angle", result.statistics.get("start_angle")]])
    for w in result.warnings:
        rep.text("Warning: " + w, "warn")
    rep.heading("Calibration on the CTDI phantom")
    rep.table(["quantity", "value"], [
        ["CTDI phantom (mm)", k.diameter_mm], ["C/P ratio", f"{k.centre_to_periphery:.3f} ± {k.centre_to_periphery_unc:.3f}"],
        ["air/PMMA conversion centre, periphery", f"{k.conversion['centre']['ratio']:.3f}, {k.conversion['periphery']['ratio']:.3f}"],
        ["nCTDIw SpekPy model (mGy/mAs)", k.nctdiw_mgy_per_mas],
        ["CTDIvol target (mGy)", f"{c.ctdivol_target_mgy:.4g} ({c.ctdivol_source})"],
        ["CTDIvol of the SpekPy model (mGy)", c.ctdivol_model_mgy],
        ["implied photons/mAs (before bowtie)", c.implied_photons_per_mas],
        ["SpekPy photons/mAs", c.spekpy_photons_per_mas], ["tube output factor", c.tube_output_factor],
        ["mGy per (Gy per simulated photon)", c.mgy_per_gy_per_simulated_photon]])
    for n in c.notes:
        rep.text(n, "warn")
    _size_section(rep, plt, result)
    rep.heading("Dose map")
    vmax = float(np.percentile(result.dose_mgy.array, 99.9)) or 1.0
    rep.figure(figures.slices_figure([("CT", result.ct, {"cmap": "gray", "vmin": -1000, "vmax": 1000}),
                                      ("dose (mGy)", result.dose_mgy, {"cmap": "inferno", "vmin": 0, "vmax": vmax})],
                                     overlay_labels=result.labels), caption="Whole-body dose (mGy), axial and coronal")
    fig, ax = plt.subplots(figsize=(7, 3))
    if a.tube_current_ma is not None:
        ax.plot(a.slice_z_mm, a.tube_current_ma)
        ax.set_ylabel("tube current (mA)")
    else:
        ax.plot(a.slice_z_mm, a.relative_current)
        ax.set_ylabel("relative tube current")
    ax.set_xlabel("z (mm)")
    ax.set_title(f"tube current along z ({a.tube_current_source})", fontsize=9)
    rep.figure(fig, caption="Tube current profile along the table axis")
    if result.organs:
        rep.heading("Organ doses (mGy)")
        rows = sorted(result.organs, key=lambda r: -r.mass_weighted_mean_gy)
        ctdivol = float(c.ctdivol_target_mgy)
        ssde = getattr(result.size_dose, "ssde_mgy", None)
        rep.table(["organ", "mass (g)", "mean (mGy)", "uncertainty (%)", "dose / CTDIvol", "dose / SSDE"],
                  [[r.name, r.mass_g, 1e3 * r.mass_weighted_mean_gy, r.uncertainty_percent,
                    f"{1e3 * r.mass_weighted_mean_gy / ctdivol:.3f}" if ctdivol > 0 else "",
                    f"{1e3 * r.mass_weighted_mean_gy / ssde:.3f}" if ssde else ""] for r in rows],
                  caption=f"CTDIvol {ctdivol:.4g} mGy; SSDE " + (f"{ssde:.4g} mGy" if ssde else "n/a"))
        fig, ax = plt.subplots(figsize=(8, 0.25 * len(rows) + 1.2))
        ax.barh([r.name for r in rows][::-1], [1e3 * r.mass_weighted_mean_gy for r in rows][::-1],
                xerr=[2e1 * (r.uncertainty_percent or 0.0) * r.mass_weighted_mean_gy for r in rows][::-1])
        ax.set_xlabel("mean absorbed dose (mGy), error bars 2 SD")
        rep.figure(fig, caption="Organ mean doses")
    if result.effective_dose:
        e = result.effective_dose
        rep.heading("Effective dose (ICRP 103)")
        rep.text(f"E = {e.effective_dose_msv:.3g} ± {e.uncertainty_msv:.2g} mSv, {e.status}")
        rep.text("Missing tissues: " + (", ".join(e.missing_tissues) or "none"))
        for n in e.notes:
            rep.text(n, "small")
    rep.table(["step", "seconds"], [[s, v] for s, v in result.statistics.get("timings_s", {}).items()],
              caption="Run time")
    return rep.write(path)


def _size_section(rep, plt, result) -> None:
    """Scan type (the rule that decided), CTDI phantom, Dw per slice and SSDE (AAPM 204/220)."""
    p, sd = getattr(result, "protocol", None), getattr(result, "size_dose", None)
    if p is None or sd is None:
        return
    rep.heading("Scan type and size-specific dose")
    rep.table(["quantity", "value"], [
        ["scan type", f"{p.region} ({p.region_rule})"],
        ["CTDI phantom", f"{p.ctdi_phantom_mm / 10:g} cm ({p.ctdi_phantom_rule})"],
        ["CTDIvol (mGy)", f"{sd.ctdivol_mgy:.4g}"],
        ["mean water-equivalent diameter Dw (cm)", f"{sd.dw_mean_mm / 10:.2f}"],
        ["size conversion factor f(Dw)", "n/a" if sd.ssde_mgy is None else f"{sd.factor:.3f}"],
        ["SSDE (mGy)", "n/a" if sd.ssde_mgy is None else f"{sd.ssde_mgy:.4g}"],
        ["SSDE method", sd.method]])
    for line in p.evidence:
        rep.text("header/image: " + line, "small")
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ok = sd.dw_mm > 0
    ax.plot(sd.slice_z_mm[ok], sd.dw_mm[ok] / 10.0, ".-")
    ax.set_xlabel("z (mm)")
    ax.set_ylabel("Dw (cm)")
    rep.figure(fig, caption="Water-equivalent diameter per slice (AAPM Report 220)")
