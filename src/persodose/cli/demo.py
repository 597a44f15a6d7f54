"""``persodose demo``: run every step on the built-in virtual patient."""

from __future__ import annotations

from pathlib import Path

import typer

from persodose.cli._common import MAX_SEED, count


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output directory (replaced when the run succeeds)."),
    voxel_mm: float = typer.Option(4.0, "--voxel-mm", help="Voxel size of the virtual patient, mm."),
    seed: int = typer.Option(0, "--seed", callback=count(0, MAX_SEED), help="Random seed."),
    tracer: list[str] = typer.Option(["lu177-dotatate", "fdg"], "--tracer", help="Tracers to run (repeatable)."),
) -> None:
    """Make a virtual patient, read it back through DICOM, run every step, write an HTML report."""
    from persodose.demo import TRACERS, DemoSettings, run_demo
    from persodose.logs import info
    from persodose.errors import InputError

    for t in tracer:
        if t not in TRACERS:
            raise InputError(f"unknown tracer {t!r}; choose from {', '.join(TRACERS)}")
    if not (1.0 <= voxel_mm <= 12.0):
        raise InputError(f"--voxel-mm must be between 1 and 12 mm, got {voxel_mm}")
    from persodose.outputs import check_output_paths

    check_output_paths(inputs={}, output_dirs={"--out": out})
    run_demo(out, DemoSettings(voxel_mm=voxel_mm, seed=seed, tracers=tuple(tracer)),
             log=info)
