"""``persodose kernel``: voxel S-value kernels by Monte Carlo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persodose.cli._common import MAX_SEED, count, positive
from persodose.cli.mc import ESTIMATOR_HELP, EMISSIONS_HELP


def register(app: typer.Typer) -> None:
    app.command("kernel")(kernel)


def kernel(
    nuclide: str = typer.Option(..., "--nuclide", help="Radionuclide (ICRP-107)."),
    voxel_mm: float = typer.Option(..., "--voxel-mm", callback=positive(100.0), help="Cubic voxel size, mm."),
    out: Path = typer.Option(..., "--out", help="Kernel file: an octant text table (.txt) or an image (.nii.gz)."),
    medium: str = typer.Option("soft_tissue", "--medium", help="soft_tissue, bone, lung or water."),
    size: int = typer.Option(11, "--size", callback=count(1, 301), help="Kernel width in voxels (odd)."),
    decays: int = typer.Option(1_000_000, "--decays", callback=count(), help="Decays in the central voxel."),
    density: Optional[float] = typer.Option(None, "--density", callback=positive(22.6), help="Override the medium density, g/cm3."),
    seed: int = typer.Option(12345, "--seed", callback=count(0, MAX_SEED), help="Random seed."),
    backend: str = typer.Option("cpu", "--backend", help="cpu, or cuda (an NVIDIA GPU)."),
    emissions: str = typer.Option("all", "--emissions", help=EMISSIONS_HELP),
    photon_estimator: str = typer.Option("analog", "--photon-estimator", help=ESTIMATOR_HELP),
) -> None:
    """Voxel S-value kernel in mGy/(MBq s) for a nuclide, voxel size and medium."""
    from persodose.dose.kernels import write_octant_table
    from persodose.errors import InputError
    from persodose.grid import Grid, Kind
    from persodose.io.image import WRITE_SUFFIXES, write_image
    from persodose.cli.mc import emissions_line, run_settings
    from persodose.mc.engine import check_backend
    from persodose.mc.kernels import generate_kernel
    from persodose.outputs import check_output_paths
    from persodose.physics.radionuclides import get_nuclide

    check_backend(backend)
    settings, decay = run_settings(get_nuclide(nuclide).name, emissions, photon_estimator, seed=seed, backend=backend)
    text = str(out).lower().endswith(".txt")
    if not text and not str(out).lower().endswith(WRITE_SUFFIXES):
        raise InputError(f"--out {out}: cannot write it, use .txt (octant table) or one of {', '.join(WRITE_SUFFIXES)}")
    if size % 2 == 0:
        raise InputError(f"--size {size} must be odd (the source voxel sits at the centre)")
    check_output_paths(inputs={}, output_files={"--out": out})
    k, unc = generate_kernel(nuclide, voxel_mm, medium, size, decays, density, settings=settings)
    if text:
        write_octant_table(k, out)
    else:
        write_image(Grid(k.s_mgy_per_mbq_s, k.voxel_mm, kind=Kind.SCALAR, unit="mGy/(MBq s)"), out)
    h = size // 2
    s = k.s_mgy_per_mbq_s
    typer.echo(f"{k.nuclide} {medium} ({k.density_g_cm3} g/cm3), {voxel_mm} mm voxels, {size}^3: "
               f"S(0,0,0) = {s[h, h, h]:.5g} mGy/(MBq s) (+-{100 * unc:.2f}%), "
               f"S(1,0,0) = {s[h, h, h + 1] if size > 1 else float('nan'):.5g}; written to {out}")
    if emissions_line(decay):
        typer.echo(emissions_line(decay))
