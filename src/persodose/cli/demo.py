"""``persodose demo``: run every step on the built-in virtual patient."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output directory (replaced when the run succeeds)."),
    voxel_mm: float = typer.Option(4.0, "--voxel-mm", help="Voxel size of the virtual patient, mm."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    tracer: list[str] = typer.Option(["lu177-dotatate", "fdg"], "--tracer", help="Tracers to run (repeatable)."),
) -> None:
    """Make a virtual patient, read it back through DICOM, run every step, write an HTML report."""
    from persodose.demo import TRACERS, DemoSettings, run_demo
    from persodose.errors import InputError

    for t in tracer:
        if t not in TRACERS:
            raise InputError(f"unknown tracer {t!r}; choose from {', '.join(TRACERS)}")
    run_demo(out, DemoSettings(voxel_mm=voxel_mm, seed=seed, tracers=tuple(tracer)),
             log=lambda m: typer.echo(m))
