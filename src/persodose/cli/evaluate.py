"""``persodose evaluate``: a trained network on the test split of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persodose.cli._common import count


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    network: str = typer.Argument(..., help="Registered network name."),
    test: Path = typer.Option(..., "--test", help="Dataset folder with a test split."),
    weights: str = typer.Option(..., "--weights", help="Weights file (checked against --sha256 or FILE.json) or a registered name."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 of the weights file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for metrics.json and metrics.md."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(2, "--batch-size", callback=count(2, 100000), help="Samples per forward pass (>= 2)."),
    min_voxels: int = typer.Option(1, "--min-voxels", callback=count(1, 10 ** 9),
                                   help="Organ/lesion metrics: a structure counts in a sample from this many voxels."),
) -> None:
    """Voxel MAE, ME, MRAE, RMSE, NRMSE, SSIM and PSNR of NETWORK on the test split; with labels in
    the dataset also organ and lesion RE/RAE, and Dice, Jaccard, precision, recall for label channels."""
    from persodose.dl.device import parse_device
    from persodose.dl.evaluate import evaluate as run_evaluation
    from persodose.dl.evaluate import markdown_table, write_evaluation

    parse_device(device)
    if out is not None:
        from persodose.outputs import check_output_paths

        check_output_paths(inputs={"--test": test}, output_dirs={"--out": out})
    result = run_evaluation(network, test, weights, expected_sha256=sha256, device=device, batch_size=batch_size,
                            min_voxels=min_voxels)
    if out is not None:
        write_evaluation(result, out)
    typer.echo(markdown_table(result).rstrip())
