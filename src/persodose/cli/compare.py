"""``persodose compare``: a dose (or dose-rate) map against a reference."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from persodose.cli._common import about, fraction, label_sidecars, read_labels


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)


def compare(
    reference: Path = typer.Option(..., "--reference", help="Reference map (e.g. Monte Carlo dose), NIfTI/MHA/NRRD."),
    test: Path = typer.Option(..., "--test", help="Map to evaluate, on the reference's geometry."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label map for organ-wise errors (names from FILE.json)."),
    units: Optional[str] = typer.Option(None, "--units", help="Unit of untagged files, e.g. Gy or mGy."),
    gamma: bool = typer.Option(False, "--gamma", help="Also the gamma pass rate (pymedphys)."),
    gamma_criteria: str = typer.Option("3,3", "--gamma-criteria", help="dose %, distance mm (global)."),
    realisation: Optional[List[Path]] = typer.Option(None, "--realisation",
                                                     help="Noise realisations of the test map (repeat): ensemble noise."),
    threshold: Optional[float] = typer.Option(None, "--threshold", callback=fraction, help="Relative metrics above this fraction of the reference maximum."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for comparison.json and the joint histogram."),
) -> None:
    """Voxel metrics (MAE, ME, RMSE, NRMSE, MRAE, RE, RAE, SSIM, PSNR), gamma, organ errors, ensemble noise."""
    import json

    from persodose.errors import InputError
    from persodose.io.image import read_image
    from persodose.metrics.compare import compare as compare_maps
    from persodose.metrics.compare import ensemble_noise
    from persodose.outputs import atomic_dir, check_output_paths, jsonable, write_provenance

    try:
        dose_pct, dist_mm = (float(x) for x in gamma_criteria.split(","))
    except ValueError:
        raise InputError(f"--gamma-criteria {gamma_criteria!r} must be 'dose_percent,distance_mm'") from None
    if not (0 < dose_pct <= 100 and 0 < dist_mm <= 100):
        raise InputError(f"--gamma-criteria {gamma_criteria!r}: dose % and distance mm must be positive "
                         "(at most 100)")
    if realisation and len(realisation) < 2:
        raise InputError("ensemble noise needs at least two --realisation maps")
    if out is not None:
        check_output_paths(inputs={"--reference": reference, "--test": test, "--labels": label_sidecars(labels, None),
                                   "--realisation": list(realisation or [])},
                           output_dirs={"--out": out})

    def load(option: str, path: Path):
        with about(option, path):
            return read_image(path, unit=units) if units else read_image(path)

    ref = load("--reference", reference)
    tst = load("--test", test)
    lab, names = None, None
    if labels is not None:
        lab, names = read_labels(labels, ref)
        if not lab.same_geometry(ref):
            lab = lab.resample_to(ref)
    with about("--test", test):
        result = compare_maps(ref, tst, lab, names, gamma=gamma,
                              gamma_options={"dose_percent": dose_pct, "distance_mm": dist_mm},
                              threshold_fraction=threshold)
    result = {k: v for k, v in result.items() if k != "mask"}
    if realisation:
        grids = [load("--realisation", p) for p in realisation]
        for p, g in zip(realisation, grids):
            if g.kind is not tst.kind or g.unit != tst.unit or not g.same_geometry(tst):
                raise InputError(f"--realisation {p} holds {g.kind.value} ({g.unit}) on a {g.shape} grid; "
                                 f"the realisations must be maps like --test {test} ({tst.kind.value}, {tst.unit}, "
                                 f"{tst.shape})")
        result["ensemble_noise_percent"] = ensemble_noise(grids, (lab.array > 0) if lab is not None else None)
    v = result["voxel"]
    typer.echo(f"MAE {v['mae']:.4g}  ME {v['me']:.4g}  RMSE {v['rmse']:.4g}  NRMSE {v['nrmse']:.4g}  "
               f"MRAE {v['mrae_percent']:.2f}%  SSIM {v.get('ssim') or float('nan'):.4f}  PSNR {v['psnr_db']:.2f} dB "
               f"({v['n_voxels']} voxels, {result.get('unit', '')})")
    if result.get("gamma"):
        typer.echo(f"gamma {dose_pct:g}%/{dist_mm:g} mm pass rate: {result['gamma']['gamma_pass_rate_percent']:.1f}%")
    for row in result.get("organs", []):
        typer.echo(f"  {row['name']:24s} RE {row['re_percent']:+7.2f}%")
    if "ensemble_noise_percent" in result:
        typer.echo(f"ensemble noise: {result['ensemble_noise_percent']:.2f}%")
    if out is not None:
        from persodose.metrics.voxel import joint_histogram_figure

        with atomic_dir(out) as work:
            (work / "comparison.json").write_text(json.dumps(jsonable(result), indent=2, default=str))
            try:
                fig = joint_histogram_figure(ref, tst, None, unit=ref.unit or "", reference_name=reference.name,
                                             test_name=test.name)
                fig.savefig(work / "joint_histogram.png", dpi=90, bbox_inches="tight")
            except InputError as exc:  # e.g. a uniform reference: no regression line to draw
                typer.echo(f"joint histogram not drawn: {exc}")
            write_provenance(work / "provenance.json", "compare",
                             inputs={"reference": str(reference), "test": str(test), "labels": str(labels) if labels else None})
