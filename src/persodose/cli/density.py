"""``persodose density``: CT numbers to mass density and materials."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


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
    from persodose.outputs import atomic_file, write_provenance
    from persodose.physics.materials import (ct_to_density_and_materials, load_calibration_csv,
                                             materials_table)

    for target in (out, materials_out):
        if target is not None and not str(target).lower().endswith(WRITE_SUFFIXES):
            raise InputError(f"cannot write {target}: use one of {', '.join(WRITE_SUFFIXES)}")
    cal = load_calibration_csv(calibration) if calibration is not None else None
    ct_grid, info = load_ct(ct)
    dens, mats, mat_list = ct_to_density_and_materials(ct_grid, calibration=cal)
    write_image(dens, out)
    prov = Path(str(out) + ".provenance.json")
    with atomic_file(prov) as tmp:
        write_provenance(tmp, "density", settings={"calibration": str(calibration) if calibration else
                                                   "Schneider, Bortfeld and Schlegel 2000"},
                         inputs={"ct": str(ct), "series_uid": getattr(info, "series_instance_uid", None)})
    if materials_out is not None:
        write_image(mats, materials_out)
        with atomic_file(Path(str(materials_out) + ".json")) as tmp:
            tmp.write_text(json.dumps(materials_table(mat_list), indent=2))
    typer.echo(f"density: {out} (range {float(dens.array.min()):.4f} to {float(dens.array.max()):.3f} g/cm3)")
    if materials_out is not None:
        typer.echo(f"materials: {materials_out} ({len(mat_list)} classes, table {materials_out}.json)")
