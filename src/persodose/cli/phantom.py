"""``persodose phantom``: write the built-in virtual patient, or a population of them."""

from __future__ import annotations

from pathlib import Path

import typer

from persodose.cli._common import MAX_SEED, count

TRACERS = ("lu177-dotatate", "fdg")


def register(app: typer.Typer) -> None:
    app.command("phantom")(phantom)


def phantom(
    out: Path = typer.Option(..., "--out", help="Directory to write (DICOM, NIfTI, manifest.json)."),
    tracer: str = typer.Option("lu177-dotatate", "--tracer", help="lu177-dotatate (SPECT, 4 time points) or fdg (dynamic PET)."),
    voxel_mm: float = typer.Option(4.0, "--voxel-mm", help="Isotropic voxel size of the anatomy and CT, mm."),
    seed: int = typer.Option(0, "--seed", callback=count(0, MAX_SEED), help="Random seed; seed 0 is the canonical patient."),
    workers: int = typer.Option(None, "--workers", callback=count(1, 256),
                                help="Processes that make a population's patients at once (default: one per core)."),
    population: int = typer.Option(None, "--population",
                                   help="Write N different patients (1-1000) drawn from --seed, with population.json "
                                        "(seeds, training/validation/test split, sizes, organ masses) and a report."),
) -> None:
    """Write a virtual adult patient (or --population N of them): CT, labels, emission images and the truth."""
    from persodose.errors import InputError

    if population is not None and not (1 <= population <= 1000):
        raise InputError(f"--population must be a whole number from 1 to 1000, got {population}")

    if tracer not in TRACERS:
        raise InputError(f"unknown tracer {tracer!r}; choose one of {', '.join(TRACERS)}")
    if not (1.0 <= voxel_mm <= 12.0):
        raise InputError(f"--voxel-mm must be between 1 and 12 mm, got {voxel_mm}")
    from persodose.outputs import check_output_paths

    check_output_paths(inputs={}, output_dirs={"--out": out})
    if population is not None:
        from persodose.phantoms.population import write_population

        path = write_population(out, population, seed, tracer=tracer, voxel_mm=voxel_mm, workers=workers)
        typer.echo(f"virtual population ({population} patients, {tracer}, {voxel_mm} mm, seed {seed}): {path}")
        return
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    vp = make_virtual_patient(tracer=tracer, voxel_mm=voxel_mm, seed=seed)
    manifest = write_virtual_patient(vp, out)
    typer.echo(f"virtual patient ({tracer}, {voxel_mm} mm, seed {seed}): {manifest}")
