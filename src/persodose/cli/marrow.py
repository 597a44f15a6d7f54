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


def _pct(value: float | None) -> float:
    return 0.0 if value is None else float(value) / 100.0


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
    blood: Optional[Path] = typer.Option(None, "--blood", help="Blood samples CSV: time_h, kbq_per_ml (or bq_/mbq_), "
                                                              "optional sd_kbq_per_ml and haematocrit: blood-based method."),
    l2l4: Optional[Path] = typer.Option(None, "--l2l4", help="L2-L4 VOI activity CSV: time_h, mbq (or bq/kbq), optional "
                                                            "sd_mbq: image-based method."),
    haematocrit: Optional[float] = typer.Option(None, "--haematocrit", callback=_fraction,
                                                help="Haematocrit (fraction); default the CSV's column."),
    haematocrit_sd: float = typer.Option(0.0, "--haematocrit-sd", min=0.0, help="Its standard uncertainty."),
    rmblr: Optional[float] = typer.Option(None, "--rmblr", callback=positive(), help="Red-marrow-to-blood ratio "
                                          "(e.g. 1 for 177Lu-DOTATATE); default RMECFF/(1-HCT) (Sgouros 1993)."),
    rmblr_sd_percent: Optional[float] = typer.Option(None, "--rmblr-sd-percent", **_PCT,
        help="Relative uncertainty of --rmblr (%)."),
    rmecff_sd: float = typer.Option(0.0, "--rmecff-sd", min=0.0, help="Uncertainty of RMECFF = 0.19."),
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
    check_output_paths(inputs={"--blood": blood, "--l2l4": l2l4, "--whole-body": whole_body, "--organs": organs},
                       output_dirs={"--out": out})
    from persodose.physics.radionuclides import get_nuclide

    nuclide = get_nuclide(nuclide).name
    wb_tia, wb_rel = None, _pct(whole_body_sd_percent)
    if whole_body is not None:
        with about("--whole-body", whole_body):
            wb_tia, fit_rel, _ = m.time_integral(m.read_samples_csv(whole_body, per_ml=False),
                                                 get_nuclide(nuclide).half_life_s, "whole body")
        wb_rel = float(np.hypot(wb_rel, fit_rel or 0.0))  # stated (calibration) and the fit's, independent
    elif whole_body_tia_mbq_h is not None:
        wb_tia = whole_body_tia_mbq_h * 3.6e9
    organ_rows = ()
    if organs is not None:
        with about("--organs", organs):
            organ_rows = tuple(m.read_organs_csv(organs))
    cross = m.CrossDose(wb_tia, wb_rel, None if body_mass_kg is None else 1e3 * body_mass_kg,
                        None if s_rm_rb is None else s_rm_rb * m.GY_PER_BQ_S_PER_MGY_PER_MBQ_S,
                        _pct(s_rm_rb_sd_percent), organ_rows)
    s_rm = None if s_rm_rm is None else s_rm_rm * m.GY_PER_BQ_S_PER_MGY_PER_MBQ_S
    if blood is not None:
        with about("--blood", blood):
            samples = m.read_samples_csv(blood, per_ml=True)
        result = m.blood_based_marrow_dose(
            samples, nuclide, rmblr=rmblr, rmblr_sd=(rmblr or 0.0) * _pct(rmblr_sd_percent), haematocrit=haematocrit,
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
    typer.echo(f"red marrow ({result.method}): {result.total_gy:.4g} ± {result.uncertainty.sd_gy:.2g} Gy (k=1); "
               f"report: {out / 'report.html'}")


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
                  + [["total", result.total_gy], ["standard uncertainty (k=1)", result.uncertainty.sd_gy]])
        rep.heading("Uncertainty budget")
        rep.table(["component", "relative sd (%)", "share of variance (%)", "note"],
                  [[b["component"], b["relative_sd_percent"], b["share_percent"] if b["share_percent"] is not None
                    else "-", b["note"]] for b in doc["budget"]])
        rep.heading("Quantities and notes")
        rep.table(["quantity", "value"], [[k, v if v is not None else "-"] for k, v in doc["quantities"].items()])
        for note in doc["notes"]:
            rep.text(note, "small")
        rep.write(work / "report.html")
