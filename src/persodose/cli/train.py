"""``persodose train``: fit a registered network to a dataset (resumable, reproducible).

``persodose train segmenter --images DIR --labels DIR --out FILE.pt`` trains the ``builtin``
segmenter on CT and label NIfTI pairs instead (:mod:`persodose.segmentation.training`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from persodose.cli._common import count, positive


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _network_options(items: list[str]) -> dict[str, str]:
    from persodose.errors import InputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--network-option {item!r} must be SETTING=VALUE")
        out[key.strip()] = value
    return out


def train(
    network: str = typer.Argument(..., help="Registered network name (e.g. residual-cnn3d), or 'segmenter' (the builtin "
                                            "segmenter on --images/--labels pairs)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder written by 'persodose dataset make' (train and val splits)."),
    out: Path = typer.Option(..., "--out", help="Weights file to write (.pt); OUT.json, OUT.loss.csv/.png and OUT.ckpt beside it."),
    epochs: int = typer.Option(10, "--epochs", callback=count(1, 100000), help="Epochs in total (a resumed run continues up to it)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", callback=count(2, 100000), help="Samples per step, >= 2 (default 2)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=positive(1.0), help="Adam learning rate (default 1e-3)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint OUT.ckpt up to --epochs (same result as an uninterrupted run); options not given come from the checkpoint."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint file (default OUT.ckpt)."),
    init_weights: Optional[str] = typer.Option(None, "--init-weights", help="Fine-tune: start from these weights (registered name or file, checksum verified) with their own scales (segmenter: their classes and U-Net); a fresh optimiser."),
    seed: Optional[int] = typer.Option(None, "--seed", callback=count(0, 2**63 - 1), help="Random seed (default 0)."),
    patience: Optional[int] = typer.Option(None, "--patience", callback=count(1, 100000), help="Stop after this many epochs without a better validation loss."),
    plateau_factor: Optional[float] = typer.Option(None, "--plateau-factor", help="Reduce the learning rate by this factor (0..1) on a plateau."),
    plateau_patience: Optional[int] = typer.Option(None, "--plateau-patience", callback=count(0, 100000), help="Epochs of plateau before reducing (default 2)."),
    threads: Optional[int] = typer.Option(None, "--threads", callback=count(1, 4096), help="CPU threads of torch during the run (fix it for bitwise resumes)."),
    network_option: Optional[List[str]] = typer.Option(None, "--network-option", help="Network setting SETTING=VALUE (repeat)."),
    memory_budget_mb: Optional[float] = typer.Option(None, "--memory-budget-mb",
                                                     help="Stream the data from the shards when the train and val splits exceed this many MB (default 2048; 0: always). Same result either way."),
    images: Optional[Path] = typer.Option(None, "--images", help="segmenter: folder of CTs (NIfTI/MHA/NRRD, HU)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="segmenter: folder of label maps, same base names, names in FILE.json."),
    val_images: Optional[Path] = typer.Option(None, "--val-images", help="segmenter: validation CTs (default: the last pair of --images)."),
    val_labels: Optional[Path] = typer.Option(None, "--val-labels", help="segmenter: validation label maps."),
    steps: Optional[int] = typer.Option(None, "--steps", callback=count(1, 10**8), help="segmenter: optimiser steps (default 2000)."),
    val_every: Optional[int] = typer.Option(None, "--val-every", callback=count(1, 10**8), help="segmenter: steps between validations (default 250)."),
    voxel_mm: Optional[float] = typer.Option(None, "--voxel-mm", callback=positive(20.0), help="segmenter: isotropic voxel of the model, mm (default 3)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="segmenter: comma-separated organ names to learn (default: the builtin's organs found in the labels)."),
) -> None:
    """Train NETWORK on --data and write the weights --out (Adam, the network's loss, early stopping)."""
    if network.strip().lower() == "segmenter":
        return _train_segmenter(images, labels, val_images, val_labels, out, resume,
                                {"steps": steps, "val_every": val_every, "voxel_mm": voxel_mm, "batch_size": batch_size,
                                 "lr": lr, "seed": seed, "threads": threads, "device": device,
                                 "init_weights": init_weights,
                                 "classes": tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None})
    if data is None:
        from persodose.errors import InputError

        raise InputError("--data is required (a dataset folder written by 'persodose dataset make')")
    from persodose.dl.train import TrainSettings, checkpoint_settings, output_paths
    from persodose.dl.train import train as run_training
    from persodose.dl.device import parse_device

    from persodose.outputs import check_output_paths

    parse_device(device)
    side = output_paths(out)
    check_output_paths(inputs={"--data": data}, output_files={"--out": [side["weights"], side["sidecar"], side["csv"],
                                                                        side["png"]]})
    given = {"batch_size": batch_size, "lr": lr, "seed": seed, "patience": patience,
             "plateau_factor": plateau_factor, "plateau_patience": plateau_patience, "threads": threads,
             "memory_budget_mb": memory_budget_mb}
    given = {k: v for k, v in given.items() if v is not None}
    ck = checkpoint if checkpoint is not None else output_paths(out)["checkpoint"]
    base = checkpoint_settings(ck) if resume else {}
    base.pop("device", None)
    settings = TrainSettings(**{**base, **given, "epochs": epochs, "device": device})
    command = " ".join(["persodose train", network, f"--data {data}", f"--out {out}", f"--epochs {epochs}",
                        f"--batch-size {settings.batch_size}", f"--lr {settings.lr:g}", f"--seed {settings.seed}"]
                       + ([f"--patience {settings.patience}"] if settings.patience else [])
                       + ([f"--plateau-factor {settings.plateau_factor:g}"] if settings.plateau_factor else [])
                       + ([f"--threads {settings.threads}"] if settings.threads else [])
                       + [f"--network-option {o}" for o in network_option or []]
                       + ([f"--init-weights {init_weights}"] if init_weights else []))
    result = run_training(network, data, out, settings, network_settings=_network_options(network_option or []),
                          resume=resume, checkpoint=ck, init_weights=init_weights, command=command)
    last = result.history[-1]
    typer.echo(f"trained {network}: {len(result.history)} epoch(s), val loss {last['val_loss']:.6g} "
               f"(best {result.final_validation_loss:.6g} at epoch {result.best_epoch}"
               f"{', stopped early' if result.stopped_early else ''}); weights {result.weights}")


def _train_segmenter(images, labels, val_images, val_labels, out: Path, resume: bool, options: dict) -> None:
    from persodose.errors import InputError
    from persodose.outputs import check_output_paths
    from persodose.segmentation.training import SegmenterTrainSettings, train_segmenter

    if images is None or labels is None:
        raise InputError("train segmenter needs --images DIR and --labels DIR")
    inputs = {"--images": images, "--labels": labels, "--val-images": val_images, "--val-labels": val_labels}
    if options.get("init_weights") and Path(options["init_weights"]).exists():
        inputs["--init-weights"] = Path(options["init_weights"])
    check_output_paths(inputs={k: v for k, v in inputs.items() if v is not None},
                       output_files={"--out": [out, Path(f"{out}.json"), Path(f"{out}.loss.csv")]})
    settings = SegmenterTrainSettings(**{k: v for k, v in options.items() if v is not None})
    command = " ".join(["persodose train segmenter", f"--images {images}", f"--labels {labels}"]
                       + ([f"--val-images {val_images} --val-labels {val_labels}"] if val_images else [])
                       + [f"--out {out}", f"--steps {settings.steps}", f"--batch-size {settings.batch_size}",
                          f"--lr {settings.lr:g}", f"--val-every {settings.val_every}", f"--seed {settings.seed}"]
                       + ([f"--threads {settings.threads}"] if settings.threads else [])
                       + ([f"--init-weights {settings.init_weights}"] if settings.init_weights else []))
    r = train_segmenter(images, labels, out, settings, val_images=val_images, val_labels=val_labels, resume=resume,
                        command=command)
    typer.echo(f"trained segmenter: {len(r['unet']['classes'])} classes, {r['epochs']} validation(s), best mean "
               f"Dice {1 - r['final_validation_loss']:.4f} (epoch {r['best_epoch']}); weights {out}")
