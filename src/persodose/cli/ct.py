"""``persodose ct``: patient dose of a CT scan by Monte Carlo, calibrated on CTDIvol."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persodose.cli._common import (MAX_SEED, about, count, label_sidecars, photon_estimator_option, positive,
                                   read_labels, require_volume, target_above_opt, target_region_opt,
                                   target_uncertainty_opt)

#: Batches of the scan without and with a target uncertainty (when --batches is not given).
BATCHES, TARGET_BATCHES = 10, 50


def register(app: typer.Typer) -> None:
    app.command("ct")(ct)


def ct(
    ct: Optional[Path] = typer.Option(None, "--ct", help="CT series (DICOM directory or file; or an image in HU with "
                                                         "overrides); or --pacs."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Organ label map (NIfTI, DICOM SEG or RTSTRUCT), or 'auto' / 'auto:NAME' "
                                                           "to segment the CT (NAME: a registered segmenter, default "
                                                           "threshold)."),
    label_names: Optional[Path] = typer.Option(None, "--label-names", help="JSON {label: name} for a NIfTI label map."),
    scanner: Optional[str] = typer.Option(None, "--scanner", help="Scanner preset (default: guessed from the headers)."),
    kvp: Optional[float] = typer.Option(None, "--kvp", callback=positive(200.0), help="Tube potential (kV), replaces the header."),
    pitch: Optional[float] = typer.Option(None, "--pitch", callback=positive(10.0), help="Spiral pitch factor, replaces the header."),
    collimation_mm: Optional[float] = typer.Option(None, "--collimation-mm", callback=positive(500.0), help="Total collimation nT (mm)."),
    rotation_s: Optional[float] = typer.Option(None, "--rotation-s", callback=positive(100.0), help="Rotation time (s)."),
    ctdivol: Optional[float] = typer.Option(None, "--ctdivol", callback=positive(1e4), help="CTDIvol (mGy) to calibrate to, replaces the header mean."),
    bowtie: Optional[str] = typer.Option(None, "--bowtie", help="head or body: the scan type and its bowtie, replaces "
                                                              "what the headers or the image say."),
    ctdi_phantom: Optional[int] = typer.Option(None, "--ctdi-phantom", help="CTDI phantom (cm) the CTDIvol refers "
                                                                            "to: 16 or 32 (default: from the headers, "
                                                                            "else the scan type)."),
    photons: int = typer.Option(20_000_000, "--photons", callback=count(),
                                help="Photons of the whole scan (the most, with --target-uncertainty)."),
    ctdi_photons: int = typer.Option(2_000_000, "--ctdi-photons", callback=count(), help="Photons of the CTDI calibration run."),
    dose_voxel_mm: float = typer.Option(5.0, "--dose-voxel-mm", callback=positive(50.0), help="Cubic dose voxel (mm)."),
    batches: Optional[int] = typer.Option(None, "--batches", callback=count(1, 10_000),
                                          help="Independent batches (uncertainty from their spread); default 10, "
                                               "or 50 (the most) with --target-uncertainty."),
    target_uncertainty: Optional[str] = target_uncertainty_opt("--photons and --batches (50 by default)"),
    target_above: float = target_above_opt(0.1),
    target_region: Optional[str] = target_region_opt(),
    photon_estimator: str = typer.Option("tle", "--photon-estimator", callback=photon_estimator_option,
                                         help="Photon energy deposition: tle (track-length estimator, the default "
                                              "for CT: docs/benchmarks.md) or analog."),
    seed: int = typer.Option(12345, "--seed", callback=count(0, MAX_SEED), help="Random seed."),
    sp_maps: int = typer.Option(0, "--sp-maps", callback=count(0, 10_000), help="Also write this many single-position dose maps "
                                                      "(patient and 400 mm water cylinder; evenly spaced positions)."),
    sp_photons: int = typer.Option(200_000, "--sp-photons", callback=count(), help="Photons per single-position map."),
    backend: str = typer.Option("cpu", "--backend", help="cpu, or cuda (an NVIDIA GPU) for the Monte Carlo runs."),
    method: str = typer.Option("mc", "--method", help="mc (Monte Carlo, the reference) or dl (the ct-deepdose network, "
                                                      "SINFONIA; needs --weights: none are shipped yet)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="dl: ct-deepdose weights (registered name or file; "
                                                                  "default: shipped ones of the scan's kVp, if any)."),
    device: str = typer.Option("cpu", "--device", help="dl: where the network runs (cpu, auto, cuda)."),
    pacs: Optional[str] = typer.Option(None, "--pacs", help="Read the CT from this PACS and store the RT Dose back; "
                                                            "needs --study."),
    study: Optional[str] = typer.Option(None, "--study", help="StudyInstanceUID on --pacs."),
) -> None:
    """Whole-body dose map (mGy), organ doses, effective dose (ICRP 103) and a report."""
    params = dict(locals())
    if pacs is not None or study is not None:  # pull before, push after: persodose.cli.pacs
        from persodose.cli.pacs import run_with_pacs

        return run_with_pacs(globals()["ct"], params, emission=False)  # the command (--ct shadows its name)

    from persodose.errors import InputError
    from persodose.io.load import load_ct
    from persodose.mc.engine import MCSettings, TransportSettings, check_backend
    from persodose.outputs import check_output_paths
    from persodose.workflows.ct import ct_dose, write_ct_outputs

    if ct is None:
        raise InputError("give --ct (or --pacs and --study)")
    if bowtie is not None and bowtie.strip().lower() not in ("head", "body"):
        raise InputError(f"--bowtie must be head or body, got {bowtie!r}")
    if ctdi_phantom is not None and ctdi_phantom not in (16, 32):
        raise InputError(f"--ctdi-phantom must be 16 or 32 (cm), got {ctdi_phantom}")
    check_backend(backend)
    method = method.strip().lower()
    if method not in ("mc", "dl"):
        raise InputError(f"--method must be mc or dl, got {method!r}")
    if method == "dl" and target_uncertainty is not None:
        raise InputError("--target-uncertainty applies to --method mc only")
    if method != "dl" and weights is not None:
        raise InputError("--weights applies to --method dl only")
    from persodose.dl.device import parse_device

    parse_device(device)
    if batches is None:
        batches = TARGET_BATCHES if target_uncertainty is not None else BATCHES
    if target_region is not None and target_uncertainty is None:
        raise InputError("--target-region needs --target-uncertainty")
    if target_uncertainty is not None and batches < 5:
        raise InputError(f"--target-uncertainty needs at least 5 --batches, got {batches}")
    for option, n in (("--photons", photons), ("--ctdi-photons", ctdi_photons)):
        if n < batches:
            raise InputError(f"{option} {n} cannot fill --batches {batches}: give at least one photon per batch")
    check_output_paths(inputs={"--ct": ct, "--labels": label_sidecars(labels, label_names)},
                       output_dirs={"--out": out})
    overrides = {k: v for k, v in {"kvp": kvp, "pitch": pitch, "total_collimation_mm": collimation_mm,
                                   "rotation_time_s": rotation_s, "ctdivol_mgy": ctdivol,
                                   "bowtie": bowtie.strip().lower() if bowtie else None}.items() if v is not None}
    with about("--ct", ct):
        ct_grid, info = load_ct(ct)
        require_volume(ct_grid)
    lab, names = None, None
    if labels is not None:
        lab, names = read_labels(labels, ct_grid, label_names)
    transport = TransportSettings(photon_estimator=photon_estimator)
    settings = MCSettings(n_batches=batches, seed=seed, backend=backend, transport=transport)
    with about("--ct", ct):
        result = ct_dose(ct_grid, info, lab, names, scanner=scanner, overrides=overrides, n_photons=photons,
                         dose_voxel_mm=dose_voxel_mm, settings=settings, ctdi_photons=ctdi_photons,
                         target_uncertainty=target_uncertainty, target_above=target_above,
                         target_region=target_region, method=method, dl_weights=weights, device=device,
                         ctdi_diameter_mm=None if ctdi_phantom is None else 10.0 * ctdi_phantom)
    sp = None
    if sp_maps > 0:
        import numpy as np

        from persodose.ct.dose import single_position_maps

        idx = np.unique(np.linspace(0, len(result.positions) - 1, sp_maps).round().astype(int))
        sp = single_position_maps(result.phantom, result.positions, idx, sp_photons,
                                  MCSettings(n_batches=max(2, min(batches, 4)), seed=seed + 2, backend=backend,
                                             transport=transport),
                                  calibration=result.calibration)
    report = write_ct_outputs(result, out, sp_maps=sp, ct_files=getattr(info, "files", None) if info is not None else None,
                              inputs={"ct": str(ct), "labels": str(labels) if labels else None,
                                      "label_names": str(label_names) if label_names else None,
                                      "overrides": overrides, "scanner": scanner, "photons": photons,
                                      "ctdi_photons": ctdi_photons, "dose_voxel_mm": dose_voxel_mm,
                                      "batches": batches, "seed": seed, "backend": backend,
                                      "target_uncertainty": target_uncertainty,
                                      "target_above": target_above if target_uncertainty else None,
                                      "target_region": target_region, "photon_estimator": photon_estimator,
                                      "ctdi_phantom_cm": ctdi_phantom, "method": method,
                                      "weights": weights, "device": device if method == "dl" else None})
    _echo_summary(result, report)


def _echo_summary(result, report) -> None:
    """The lines the command prints after a run: report, CTDIvol, scan type and SSDE, E, organ doses."""
    import json

    c = result.calibration
    typer.echo(f"report: {report}")
    target = result.statistics.get("target")
    if target and target.get("met"):  # an unmet target is a warning already
        from persodose.mc.tally import TargetOutcome

        typer.echo(f"scan: {TargetOutcome(**target).summary('photons')}")
    typer.echo(f"CTDIvol {c.ctdivol_target_mgy:.3g} mGy ({c.ctdivol_source}); CTDI C/P "
               f"{result.ctdi.centre_to_periphery:.3f}; max dose {float(result.dose_mgy.array.max()):.3g} mGy")
    p, sd = result.protocol, result.size_dose
    if p is not None and sd is not None:
        ssde = "n/a" if sd.ssde_mgy is None else f"{sd.ssde_mgy:.3g} mGy"
        typer.echo(f"scan type {p.region} ({p.region_rule}); CTDI phantom {p.ctdi_phantom_mm / 10:g} cm "
                   f"({p.ctdi_phantom_rule}); mean Dw {sd.dw_mean_mm / 10:.1f} cm; SSDE {ssde}")
    if result.effective_dose:
        e = result.effective_dose
        typer.echo(f"effective dose {e.effective_dose_msv:.3g} mSv ({e.status})")
    if result.organs:
        typer.echo("organ doses (mGy): " + json.dumps({r.name: round(1e3 * r.mass_weighted_mean_gy, 3)
                                                      for r in result.organs}))
