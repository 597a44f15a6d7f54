"""``persodose density``: CT numbers to mass density and materials."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persodose.cli._common import about


def register(app: typer.Typer) -> None:
    app.command("density")(density)


def density(
    ct: Path = typer.Option(..., "--ct", help="CT as a DICOM directory/file or a NIfTI/MHA/NRRD in HU."),
    out: Path = typer.Option(..., "--out", help="Density map to write (.nii.gz, .nii, .mha, .nrrd), g/cm3."),
    materials_out: Optional[Path] = typer.Option(
        None, "--materials-out", help="Material-index map to write; its table goes to FILE.json beside it."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="CSV of HU,density (g/cm3) knots replacing Schneider et al. (2000)."),
) -> None:
    """Convert a CT to mass density (g/cm3) and tissue materials (Schneider et al. 2000)."""
    import json

    from persodose.errors import InputError
    from persodose.io.image import WRITE_SUFFIXES, write_image
    from persodose.io.load import load_ct
    from persodose.outputs import atomic_file, check_output_paths, write_provenance
    from persodose.physics.materials import (ct_to_density_and_materials, load_calibration_csv,
                                             materials_table)

    for option, target in (("--out", out), ("--materials-out", materials_out)):
        if target is not None and not str(target).lower().endswith(WRITE_SUFFIXES):
            raise InputError(f"{option} {target}: cannot write it, use one of {', '.join(WRITE_SUFFIXES)}")
    prov = Path(str(out) + ".provenance.json")
    table = Path(str(materials_out) + ".json") if materials_out is not None else None
    check_output_paths(inputs={"--ct": ct, "--calibration": calibration},
                       output_files={"--out": out, "--out provenance": prov,
                                     "--materials-out": materials_out, "--materials-out table": table})
    with about("--calibration", calibration):
        cal = load_calibration_csv(calibration) if calibration is not None else None
    with about("--ct", ct):
        ct_grid, info = load_ct(ct)
        dens, mats, mat_list = ct_to_density_and_materials(ct_grid, calibration=cal)
    # every file is complete before the first is moved into place
    with atomic_file(out) as tmp_dens, atomic_file(prov) as tmp_prov:
        write_image(dens, tmp_dens)
        write_provenance(tmp_prov, "density", settings={"calibration": str(calibration) if calibration else
                                                        "Schneider, Bortfeld and Schlegel 2000"},
                         inputs={"ct": str(ct), "series_uid": getattr(info, "series_instance_uid", None)})
        if materials_out is not None:
            with atomic_file(materials_out) as tmp_mats, atomic_file(table) as tmp_table:
                write_image(mats, tmp_mats)
                tmp_table.write_text(json.dumps(materials_table(mat_list), indent=2))
    typer.echo(f"density: {out} (range {float(dens.array.min()):.4f} to {float(dens.array.max()):.3f} g/cm3)")
    if materials_out is not None:
        typer.echo(f"materials: {materials_out} ({len(mat_list)} classes, table {materials_out}.json)")
