"""``persodose dataset``: make training datasets from patient folders, and describe them.

* ``persodose dataset make KIND --phantoms DIR --out DIR [--seed S] [--option KEY=VALUE ...]
  [--dask local|ADDRESS]``: one HDF5 shard per patient folder of ``DIR`` (a sub-folder with a
  ``manifest.json``); rerun with the same arguments to resume an interrupted run.
* ``persodose dataset merge A B ... --out DIR``: one dataset from several of the same kind and
  settings (a training set grown without remaking its shards).
* ``persodose dataset info DIR``: kind, settings, splits and shapes of a dataset (checksums
  verified).
* ``persodose dataset kinds``: the registered dataset kinds and their settings.

The format is described in :mod:`persodose.dl.datasets`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from persodose.cli._common import MAX_SEED, count

group = typer.Typer(name="dataset", help="Make and describe training datasets (one HDF5 shard per patient).",
                    no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="dataset")


def _parse_options(items: list[str]) -> dict[str, str]:
    from persodose.errors import InputError

    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option {item!r} must read KEY=VALUE, e.g. patch_voxels=16")
        out[key.strip()] = value.strip()
    return out


@group.command("make")
def make(
    kind: str = typer.Argument(..., help="Dataset kind (see 'persodose dataset kinds')."),
    phantoms: Path = typer.Option(..., "--phantoms", help="Folder of patient folders, each with a manifest.json."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (or to resume)."),
    seed: int = typer.Option(0, "--seed", callback=count(0, MAX_SEED), help="Dataset seed."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="A setting of the kind, KEY=VALUE; repeat."),
    dask: Optional[str] = typer.Option(None, "--dask", help="'local' (a Dask LocalCluster) or a scheduler address; "
                                                            "default: in this process."),
) -> None:
    """Make (or resume) a dataset of KIND from the patient folders of --phantoms."""
    import time

    from persodose.dl.datasets import find_patients, get_kind, make_dataset
    from persodose.outputs import check_output_paths

    k = get_kind(kind)
    settings = k.make_settings(_parse_options(option or []))
    patients = find_patients(phantoms)
    check_output_paths(inputs={"--phantoms": phantoms}, output_dirs={"--out": out})
    t0 = time.perf_counter()

    def said(entry: dict) -> None:
        typer.echo(f"  {entry['shard']}: patient {entry['id']} ({entry['split']}), {entry['n']} examples", err=True)

    ds = make_dataset(k, patients, out, settings, seed=seed, scheduler=dask, on_shard=said)
    counts = ", ".join(f"{s} {ds.count(s)}" for s in ("train", "val", "test"))
    typer.echo(f"dataset {ds.kind}: {len(ds.patients)} patients, examples {counts}; inputs {list(ds.input_shape)}, "
               f"targets {list(ds.target_shape)}; {time.perf_counter() - t0:.1f} s -> {out}")


@group.command("merge")
def merge(
    sources: List[Path] = typer.Argument(..., help="Two or more dataset folders of the same kind and settings."),
    out: Path = typer.Option(..., "--out", help="New dataset folder (must not exist or be empty)."),
) -> None:
    """Merge datasets of the same kind and settings into one (shards linked, checksums and splits kept)."""
    from persodose.dl.datasets import merge_datasets
    from persodose.outputs import check_output_paths

    check_output_paths(inputs={f"SOURCE {i + 1}": s for i, s in enumerate(sources)}, output_dirs={"--out": out})
    ds = merge_datasets(sources, out)
    counts = ", ".join(f"{s} {ds.count(s)}" for s in ("train", "val", "test"))
    typer.echo(f"dataset {ds.kind}: {len(ds.patients)} patients merged from {len(sources)} datasets, examples "
               f"{counts} -> {out}")


@group.command("info")
def info(
    path: Path = typer.Argument(..., help="Dataset folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Describe a dataset: kind, settings, seed, splits and shapes (every shard's checksum verified)."""
    import json

    from persodose.dl.datasets import SPLITS, open_dataset

    ds = open_dataset(path)
    if json_out:
        typer.echo(json.dumps(ds.manifest, indent=2))
        return
    m = ds.manifest
    typer.echo(f"{path}: {m['format']}, kind {ds.kind}, seed {ds.seed}, physics {m.get('physics_version')}, "
               f"created {m.get('created_utc')}")
    typer.echo(f"  settings: {json.dumps(ds.settings, sort_keys=True)}")
    typer.echo(f"  inputs {list(ds.input_shape)} {m.get('channels', {}).get('inputs', [])}, "
               f"targets {list(ds.target_shape)} {m.get('channels', {}).get('targets', [])}")
    for s in SPLITS:
        ids = [p["id"] for p in ds.patients if p["split"] == s]
        typer.echo(f"  {s}: {len(ids)} patients, {ds.count(s)} examples" + (f" ({', '.join(ids)})" if ids else ""))


@group.command("kinds")
def kinds() -> None:
    """List the registered dataset kinds, what they need and their settings."""
    from persodose.dl.datasets import available_kinds, get_kind
    from persodose.dose.registry import settings_doc

    for name in available_kinds():
        k = get_kind(name)
        typer.echo(f"{name}: {k.summary}")
        typer.echo(f"  needs: {', '.join(k.needs) or '-'}; inputs {list(k.input_channels)}, "
                   f"targets {list(k.target_channels)}")
        for f, t, d in settings_doc(k.settings_type):
            typer.echo(f"  --option {f}=...  ({t}, default {d})")
