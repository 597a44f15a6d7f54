"""``persodose internal``: dosimetry of a radiopharmaceutical from PET/CT or SPECT/CT."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from persodose.cli._common import (MAX_SEED, about, count, label_sidecars, photon_estimator_option, positive,
                                   read_labels, read_method_options, require_volume, target_above_opt,
                                   target_region_opt, target_uncertainty_opt)


def add_mc_options(options: dict, **given) -> dict:
    """Command-line options of the Monte Carlo method (``--target-uncertainty`` as
    ``mc.target_uncertainty``, ...) into ``options``; one given both ways must agree."""
    from persodose.errors import InputError

    for name, value in given.items():
        if value is None:
            continue
        have = options.get("mc", {}).get(name)
        if have is not None and str(have) != str(value):
            raise InputError(f"--{name.replace('_', '-')} {value} and mc.{name}={have} disagree: give one of them")
        options.setdefault("mc", {})[name] = str(value)
    return options


def _hours(times_h: str | None, n_images: int) -> list[float] | None:
    """``--times-h`` as hours, one per emission image."""
    from persodose.errors import InputError

    if not times_h:
        return None
    try:
        hours = [float(x) for x in times_h.split(",")]
    except ValueError:
        raise InputError(f"--times-h {times_h!r} must be comma-separated numbers") from None
    if not all(0 <= h < 1e5 for h in hours):
        raise InputError(f"--times-h {times_h!r}: hours after injection must be finite and not negative")
    if len(hours) != n_images:
        raise InputError(f"--times-h {times_h!r} gives {len(hours)} time(s) for {n_images} --emission "
                         "image(s): give one time per image")
    return hours


def uncertainty_options(items: list[str] | None) -> dict:
    """``--uncertainty NAME=PERCENT`` (repeat or comma-separate) as fractions ``{name: value}``; the bare word
    ``recovery-per-time-point`` makes the recovery coefficients independent between time points."""
    from persodose.dose.uncertainty import UncertaintySettings
    from persodose.errors import InputError

    out: dict = {}
    for item in items or []:
        for part in (p.strip() for p in item.split(",") if p.strip()):
            if part.lower().replace("_", "-") == "recovery-per-time-point":
                out["recovery_per_time_point"] = True
                continue
            name, sep, value = part.partition("=")
            try:
                out[name.strip().lower()] = float(value.strip().rstrip("%")) / 100.0
            except ValueError:
                raise InputError(f"--uncertainty {part!r}: give NAME=PERCENT, e.g. calibration=5") from None
            if not sep:
                raise InputError(f"--uncertainty {part!r}: give NAME=PERCENT, e.g. calibration=5")
    UncertaintySettings.of(out)  # unknown names and bad values are said now
    return out


def register(app: typer.Typer) -> None:
    app.command("internal")(internal)


def _injection(injection_time: str | None):
    """The --injection-time as a datetime (None when not given)."""
    import datetime as dt

    from persodose.errors import InputError

    if not injection_time:
        return None
    try:
        return dt.datetime.fromisoformat(injection_time)
    except ValueError:
        raise InputError(f"--injection-time {injection_time!r} is not an ISO date-time") from None


def internal(
    ct: Optional[Path] = typer.Option(None, "--ct", help="CT: DICOM series (or image in HU); or --pacs."),
    emission: Optional[List[Path]] = typer.Option(None, "--emission",
                                                  help="PET or SPECT series, one per time point (repeat); or --pacs."),
    emission_ct: Optional[List[Path]] = typer.Option(None, "--emission-ct",
                                                     help="Each time point's own CT, in --emission order (repeat): "
                                                          "registered to --ct and applied to the emission image."),
    registration: str = typer.Option("rigid", "--registration", help="rigid or affine (with --emission-ct)."),
    nuclide: str = typer.Option(..., "--nuclide", help="Radionuclide, e.g. Lu-177, F-18."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    method: List[str] = typer.Option(["led", "ssv", "dsv", "msv", "mc"], "--method",
                                     help="Dose methods (repeat, or comma-separated): led, ssv, dsv, msv, mc, or any "
                                          "registered by a plug-in; 'persodose methods' lists them."),
    method_option: Optional[List[str]] = typer.Option(None, "--method-option",
                                                      help="A method's setting, METHOD.SETTING=VALUE (repeat), e.g. "
                                                           "msv.density_scaling=true; 'persodose methods' lists them."),
    method_options_file: Optional[Path] = typer.Option(None, "--method-options",
                                                       help="JSON file {method: {setting: value}}; --method-option "
                                                            "overrides it."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Organ/lesion label map (NIfTI, DICOM SEG or RTSTRUCT), or 'auto' / "
                                                           "'auto:NAME' to segment the CT (NAME: a registered segmenter, "
                                                           "default threshold)."),
    label_names: Optional[Path] = typer.Option(None, "--label-names",
                                               help="JSON {label: name} for a NIfTI label map (default: FILE.json beside it)."),
    injected_mbq: Optional[float] = typer.Option(None, "--injected-mbq", callback=positive(), help="Injected activity (MBq), for the report."),
    injection_time: Optional[str] = typer.Option(None, "--injection-time", help="ISO date-time of the injection if the images lack it."),
    calibration_cps_per_mbq: Optional[float] = typer.Option(None, "--calibration-cps-per-mbq", callback=positive(),
                                                            help="SPECT sensitivity for images in counts."),
    times_h: Optional[str] = typer.Option(None, "--times-h",
                                          help="Comma-separated hours after injection, one per --emission: needed "
                                               "for image files; for DICOM it overrides their own times."),
    units: Optional[str] = typer.Option(None, "--units", help="Unit of image files, e.g. Bq/mL."),
    tia_method: str = typer.Option("auto", "--tia-method", help="auto, mono, biexp, trapezoid, hanscheid, ..."),
    dose_voxel_mm: Optional[float] = typer.Option(None, "--dose-voxel-mm", callback=positive(50.0), help="Cubic dose voxel (default: the emission image's)."),
    decays: Optional[int] = typer.Option(None, "--decays", callback=count(),
                                         help="Monte Carlo decays (the same as --method-option mc.decays=N; "
                                              "default 2e6)."),
    target_uncertainty: Optional[str] = target_uncertainty_opt("--decays (default 2e6) and mc.batches (50)"),
    target_above: Optional[float] = target_above_opt(),
    target_region: Optional[str] = target_region_opt(),
    photon_estimator: Optional[str] = typer.Option(
        None, "--photon-estimator", callback=photon_estimator_option,
        help="Monte Carlo photon energy deposition: analog (default) or tle (track-length estimator)."),
    dose_rate: bool = typer.Option(False, "--dose-rate", help="Also write dose-rate maps at each time point."),
    uncertainty: Optional[List[str]] = typer.Option(
        None, "--uncertainty", help="An input's relative uncertainty, NAME=PERCENT (repeat): calibration, activity, "
                                    "recovery, mass (or recovery-per-time-point); every organ dose gets a budget."),
    seed: int = typer.Option(12345, "--seed", callback=count(0, MAX_SEED), help="Random seed."),
    mc_backend: str = typer.Option("cpu", "--mc-backend", help="cpu, or cuda (an NVIDIA GPU) for the Monte Carlo "
                                                               "method and kernels not yet cached."),
    pacs: Optional[str] = typer.Option(None, "--pacs", help="Read the study (CT, NM/PT series) from this PACS and "
                                                            "store the RT Dose back; needs --study."),
    study: Optional[str] = typer.Option(None, "--study", help="StudyInstanceUID on --pacs."),
) -> None:
    """Time-integrated activity, voxel dose by every method, organ doses, DVHs and a report."""
    params = dict(locals())
    if pacs is not None or study is not None:  # pull before, push after: persodose.cli.pacs
        from persodose.cli.pacs import run_with_pacs

        return run_with_pacs(internal, params, emission=True)
    import json

    from persodose.errors import InputError
    from persodose.io.load import load_ct
    from persodose.mc.engine import check_backend
    from persodose.outputs import check_output_paths
    from persodose.workflows.internal import InternalSettings, load_time_points, run_internal, write_outputs

    if ct is None or not emission:
        raise InputError("give --ct and --emission (or --pacs and --study)")
    methods = tuple(m.strip().lower() for item in method for m in item.split(",") if m.strip())
    options = read_method_options(method_options_file, method_option, decays)
    for name, value in (("--target-region", target_region), ("--target-above", target_above)):
        if value is not None and target_uncertainty is None:
            raise InputError(f"{name} needs --target-uncertainty")
    options = add_mc_options(options, target_uncertainty=target_uncertainty, target_above=target_above,
                             target_region=target_region, photon_estimator=photon_estimator)
    settings = InternalSettings(nuclide, methods=methods, method_options=options, tia_method=tia_method,
                                dose_voxel_mm=dose_voxel_mm, seed=seed, dose_rate=dose_rate,
                                registration=registration, mc_backend=mc_backend,
                                uncertainty=uncertainty_options(uncertainty))
    check_backend(mc_backend)  # a missing GPU is said before the images are read
    check_output_paths(inputs={"--ct": ct, "--emission": list(emission), "--emission-ct": list(emission_ct or []),
                               "--labels": label_sidecars(labels, label_names), "--method-options": method_options_file},
                       output_dirs={"--out": out})
    injection = _injection(injection_time)
    hours = _hours(times_h, len(emission))
    with about("--ct", ct):
        ct_grid, ct_info = load_ct(ct)
        require_volume(ct_grid)
    points, injection = load_time_points(emission, settings.nuclide, calibration_cps_per_mbq=calibration_cps_per_mbq,
                                         units=units, times_h=hours, injection=injection, ct_info=ct_info,
                                         ct_paths=emission_ct or None)
    lab, names = None, None
    if labels is not None:
        lab, names = read_labels(labels, ct_grid, label_names)
    from persodose.logs import info

    result = run_internal(ct_grid, points, settings, labels=lab, label_names=names, log=info)
    report = write_outputs(result, out, ct_files=ct_info.files if ct_info else None,
                           inputs={"ct": str(ct), "emission": [str(e) for e in emission],
                                   "labels": str(labels) if labels else None, "injected_mbq": injected_mbq,
                                   "injection": injection.isoformat() if injection else None})
    typer.echo(f"report: {report}")
    target = result.mc_info.get("target")
    if target and target.get("met"):  # an unmet target is a warning already
        from persodose.mc.tally import TargetOutcome

        typer.echo(f"Monte Carlo: {TargetOutcome(**target).summary('decays')}")
    if "mc" in result.doses and result.comparison:
        from persodose.workflows.internal import comparison_rows

        cols, rows = comparison_rows(result)
        typer.echo(json.dumps({r[0]: {c: (round(v, 2) if isinstance(v, float) else v) for c, v in zip(cols[1:4], r[1:4])}
                               for r in rows}))

