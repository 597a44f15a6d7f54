"""``persodose marrow``: red-marrow absorbed dose by the EANM blood-based or image-based (L2-L4) method.

Writes ``marrow.json`` (dose, parts, quantities, notes, budget), ``marrow_budget.csv`` and
``report.html`` into ``--out``; see :mod:`persodose.dose.marrow` for the models and sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persodose.cli._common import about, positive


def register(app: typer.Typer) -> None:
    app.command("marrow")(marrow)


def _pct(value: float | None) -> float | None:
    return None if value is None else float(value) / 100.0


def _refuse_unused(blood, rmblr, rmblr_sd_percent, haematocrit_sd, rmecff_sd, marrow_mass_sd_percent, s_rm_rm):
    """A stated uncertainty that the chosen model does not use is a user's mistake, not something to drop
    silently: one-line error."""
    from persodose.errors import InputError

    if rmblr_sd_percent is not None and rmblr is None:
        raise InputError("--rmblr-sd-percent is the uncertainty of --rmblr: give --rmblr, or --haematocrit-sd and "
                         "--rmecff-sd for the ratio from the haematocrit")
    if rmblr is not None and (haematocrit_sd is not None or rmecff_sd is not None):
        raise InputError("--haematocrit-sd and --rmecff-sd are not used with --rmblr (the ratio is given): state "
                         "its uncertainty with --rmblr-sd-percent")
    if marrow_mass_sd_percent is not None and (blood is not None or s_rm_rm is not None):
        raise InputError("--marrow-mass-sd-percent is used only by the image-based method's default self-dose "
                         "factor E/m: the blood-based self-dose needs no mass, and --s-rm-rm is already scaled to "
                         "the patient")


def _fraction(value):
    if value is not None and not (0.0 < value < 1.0):
        raise typer.BadParameter(f"must be a fraction between 0 and 1, got {value!r}")
    return value


def _percent(value):
    if value is not None and not (0.0 <= value < 100.0):
        raise typer.BadParameter(f"must be a percentage within 0-100, got {value!r}")
    return value


_PCT = dict(callback=_percent)


def marrow(
    nuclide: str = typer.Option(..., "--nuclide", help="Radionuclide, e.g. Lu-177."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    blood: Optional[Path] = typer.Option(
        None, "--blood", help="Blood samples CSV: time_h, kbq_per_ml (or bq_/mbq_), optional sd_kbq_per_ml and "
                              "haematocrit: blood-based method. Concentrations at the sampling time, not decay "
                              "corrected; at least 2 samples."),
    l2l4: Optional[Path] = typer.Option(None, "--l2l4", help="L2-L4 VOI activity CSV: time_h, mbq (or bq/kbq), optional "
                                                            "sd_mbq: image-based method."),
    haematocrit: Optional[float] = typer.Option(None, "--haematocrit", callback=_fraction,
                                                help="Haematocrit (fraction); default the CSV's column."),
    haematocrit_sd: Optional[float] = typer.Option(None, "--haematocrit-sd", min=0.0,
                                                   help="Its standard uncertainty."),
    rmblr: Optional[float] = typer.Option(None, "--rmblr", callback=positive(), help="Red-marrow-to-blood ratio "
                                          "(e.g. 1 for 177Lu-DOTATATE); default RMECFF/(1-HCT) (Sgouros 1993)."),
    rmblr_sd_percent: Optional[float] = typer.Option(None, "--rmblr-sd-percent", **_PCT,
        help="Relative uncertainty of --rmblr (%)."),
    rmecff_sd: Optional[float] = typer.Option(None, "--rmecff-sd", min=0.0, help="Uncertainty of RMECFF = 0.19."),
    calibration_sd_percent: Optional[float] = typer.Option(None, "--calibration-sd-percent", **_PCT,
                                                           help="Well counter (blood) or camera (L2-L4) calibration."),
    recovery_sd_percent: Optional[float] = typer.Option(None, "--recovery-sd-percent", **_PCT,
        help="Relative uncertainty of the L2-L4 recovery (%)."),
    l2l4_fraction: Optional[float] = typer.Option(None, "--l2l4-fraction", callback=_fraction,
                                                  help="Fraction of the red marrow in L2-L4 (give its source; none "
                                                       "is shipped)."),
    l2l4_fraction_sd_percent: Optional[float] = typer.Option(None, "--l2l4-fraction-sd-percent", **_PCT,
        help="Relative uncertainty of --l2l4-fraction (%)."),
    marrow_mass_g: Optional[float] = typer.Option(None, "--marrow-mass-g", callback=positive(),
                                                  help="The patient's red-marrow mass (g)."),
    marrow_mass_sd_percent: Optional[float] = typer.Option(None, "--marrow-mass-sd-percent", **_PCT,
        help="Relative uncertainty of --marrow-mass-g (%)."),
    s_rm_rm: Optional[float] = typer.Option(None, "--s-rm-rm", callback=positive(),
                                            help="S(RM<-RM), mGy/(MBq s), scaled to the patient (default: "
                                                 "electrons absorbed in the marrow)."),
    s_rm_rm_sd_percent: Optional[float] = typer.Option(None, "--s-rm-rm-sd-percent", **_PCT,
        help="Relative uncertainty of --s-rm-rm (%)."),
    whole_body: Optional[Path] = typer.Option(None, "--whole-body", help="Whole-body activity CSV (time_h, mbq): the "
                                                                        "remainder-of-body cross-dose."),
    whole_body_tia_mbq_h: Optional[float] = typer.Option(None, "--whole-body-tia-mbq-h", callback=positive(),
                                                         help="Or the whole-body TIA (MBq h)."),
    whole_body_sd_percent: Optional[float] = typer.Option(None, "--whole-body-sd-percent", **_PCT,
        help="Relative uncertainty of the whole-body TIA (%), e.g. its calibration."),
    body_mass_kg: Optional[float] = typer.Option(None, "--body-mass-kg", callback=positive(500.0),
                                                 help="Patient mass (kg), for the remainder's photon cross-dose."),
    s_rm_rb: Optional[float] = typer.Option(None, "--s-rm-rb", callback=positive(),
                                            help="S(RM<-RB), mGy/(MBq s) (default: photons of a uniform body)."),
    s_rm_rb_sd_percent: Optional[float] = typer.Option(None, "--s-rm-rb-sd-percent", **_PCT,
        help="Relative uncertainty of --s-rm-rb (%)."),
    organs: Optional[Path] = typer.Option(None, "--organs", help="Organs irradiating the marrow, CSV: organ, "
                                                                "tia_mbq_h, s_mgy_per_mbq_s [, tia_sd_percent, s_sd_percent]."),
) -> None:
    """Red-marrow absorbed dose with its uncertainty budget (EANM, Hindorf et al. 2010)."""
    import numpy as np

    from persodose.dose import marrow as m
    from persodose.errors import InputError
    from persodose.outputs import check_output_paths

    if (blood is None) == (l2l4 is None):
        raise InputError("give one of --blood (blood-based method) or --l2l4 (image-based method)")
    if whole_body is not None and whole_body_tia_mbq_h is not None:
        raise InputError("give --whole-body or --whole-body-tia-mbq-h, not both")
    _refuse_unused(blood, rmblr, rmblr_sd_percent, haematocrit_sd, rmecff_sd, marrow_mass_sd_percent, s_rm_rm)
    if blood is not None:  # the image-based method's inputs mean nothing to blood samples
        given = [o for o, v in (("--recovery-sd-percent", recovery_sd_percent), ("--l2l4-fraction", l2l4_fraction),
                                ("--l2l4-fraction-sd-percent", l2l4_fraction_sd_percent)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} belong to the image-based method (--l2l4), not to --blood")
    check_output_paths(inputs={"--blood": blood, "--l2l4": l2l4, "--whole-body": whole_body, "--organs": organs},
                       output_dirs={"--out": out})
    from persodose.physics.radionuclides import get_nuclide

    nuclide = get_nuclide(nuclide).name
    wb_tia, wb_rel, wb_note = None, _pct(whole_body_sd_percent), ""
    if whole_body is not None:
        with about("--whole-body", whole_body):
            wb_tia, fit_rel, _ = m.time_integral(m.read_samples_csv(whole_body, per_ml=False),
                                                 get_nuclide(nuclide).half_life_s, "whole body")
        if wb_rel is not None and fit_rel is not None:  # stated (calibration) and the fit's, independent
            wb_rel, wb_note = float(np.hypot(wb_rel, fit_rel)), "stated and the fit's"
        elif fit_rel is not None:
            wb_rel, wb_note = fit_rel, "the fit's only (calibration not stated)"
    elif whole_body_tia_mbq_h is not None:
        wb_tia = whole_body_tia_mbq_h * 3.6e9
    organ_rows = ()
    if organs is not None:
        with about("--organs", organs):
            organ_rows = tuple(m.read_organs_csv(organs))
    cross = m.CrossDose(wb_tia, wb_rel, None if body_mass_kg is None else 1e3 * body_mass_kg,
                        None if s_rm_rb is None else s_rm_rb * m.GY_PER_BQ_S_PER_MGY_PER_MBQ_S,
                        _pct(s_rm_rb_sd_percent), organ_rows, wb_note)
    s_rm = None if s_rm_rm is None else s_rm_rm * m.GY_PER_BQ_S_PER_MGY_PER_MBQ_S
    if blood is not None:
        with about("--blood", blood):
            samples = m.read_samples_csv(blood, per_ml=True)
        result = m.blood_based_marrow_dose(
            samples, nuclide, rmblr=rmblr, haematocrit=haematocrit,
            rmblr_sd=None if rmblr_sd_percent is None else rmblr * _pct(rmblr_sd_percent),
            haematocrit_sd=haematocrit_sd, rmecff_sd=rmecff_sd, calibration_rel_sd=_pct(calibration_sd_percent),
            marrow_mass_g=marrow_mass_g, s_rm_rm_gy_per_bq_s=s_rm, s_rm_rm_rel_sd=_pct(s_rm_rm_sd_percent), cross=cross)
    else:
        if l2l4_fraction is None or marrow_mass_g is None:
            raise InputError("the image-based method needs --l2l4-fraction and --marrow-mass-g")
        with about("--l2l4", l2l4):
            samples = m.read_samples_csv(l2l4, per_ml=False)
        result = m.image_based_marrow_dose(
            samples, nuclide, fraction_in_l2l4=l2l4_fraction, fraction_rel_sd=_pct(l2l4_fraction_sd_percent),
            marrow_mass_g=marrow_mass_g, mass_rel_sd=_pct(marrow_mass_sd_percent),
            calibration_rel_sd=_pct(calibration_sd_percent), recovery_rel_sd=_pct(recovery_sd_percent),
            s_rm_rm_gy_per_bq_s=s_rm, s_rm_rm_rel_sd=_pct(s_rm_rm_sd_percent), cross=cross)
    inputs = {k: str(v) for k, v in (("blood", blood), ("l2l4", l2l4), ("whole_body", whole_body),
                                     ("organs", organs)) if v is not None}
    write_marrow(result, out, inputs)
    typer.echo(summary_line(result) + f"; report: {out / 'report.html'}")


def summary_line(result) -> str:
    """``red marrow (method): D ± u Gy (k=1)``; "± -" when no line has a value, and "uncertainty incomplete
    (lower bound)" with the lines that have none."""
    u = result.uncertainty
    sd = f"{u.sd_gy:.2g}" if u.relative_sd > 0 else "-"
    text = f"red marrow ({result.method}): {result.total_gy:.4g} ± {sd} Gy (k=1)"
    if not u.complete:
        text += "; uncertainty incomplete (lower bound): no value for " + ", ".join(
            c.name for c in u.components if c.relative_sd is None)
    return text


def write_marrow(result, out: Path, inputs: dict) -> None:
    """``marrow.json``, ``marrow_budget.csv``, ``report.html`` and ``provenance.json``, all or nothing."""
    import json

    from persodose.metrics.organ import write_table_csv
    from persodose.outputs import atomic_dir, jsonable, write_provenance
    from persodose.report.html import Report

    doc = result.to_dict()
    with atomic_dir(out) as work:
        (work / "marrow.json").write_text(json.dumps(jsonable(doc), indent=2))
        write_table_csv(doc["budget"], work / "marrow_budget.csv")
        write_provenance(work / "provenance.json", "marrow", inputs=inputs)
        rep = Report(f"persodose red-marrow dose ({result.method})")
        rep.table(["part", "Gy"], [["self-dose", result.self_gy], ["remainder of body", result.remainder_gy]]
                  + [[f"organ {k}", v] for k, v in result.organs_gy.items()]
                  + [["total", result.total_gy], ["standard uncertainty (k=1)", result.uncertainty.sd_gy
                                                   if result.uncertainty_complete else
                                                   f"{result.uncertainty.sd_gy:.3g} (incomplete: a lower bound)"]])
        rep.heading("Uncertainty budget")
        rep.table(["component", "relative sd (%)", "share of variance (%)", "note"],
                  [[b["component"], b["relative_sd_percent"] if b["relative_sd_percent"] is not None else "-",
                    b["share_percent"] if b["share_percent"] is not None else "-", b["note"]] for b in doc["budget"]])
        rep.heading("Quantities and notes")
        rep.table(["quantity", "value"], [[k, v if v is not None else "-"] for k, v in doc["quantities"].items()])
        for note in doc["notes"]:
            rep.text(note, "small")
        rep.write(work / "report.html")
