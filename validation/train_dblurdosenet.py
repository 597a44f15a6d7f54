"""The recipe that made the shipped DblurDoseNet weights, its learning curve and its ablations.

Every step is a persodose command (printed before it runs) and is skipped when its output
exists, so an interrupted run continues. The same commands scale up unchanged: more patients
(``--train-patients``), more epochs, ``--device cuda``.

1. A virtual 177Lu-DOTATATE population at 4.8 mm (``persodose phantom --population``); its
   seeds' SHA-256 split rule puts each patient in training, validation or test once and for all.
2. Folders of links: the first ``--train-patients`` training patients and every validation
   patient (``train``), and every test patient (``test``, for ``validation/dblurdosenet.py``).
3. The ``spect-doserate`` dataset of the training folder (``persodose dataset make``).
4. Training (``persodose train dblurdosenet``): the main network on all training patients;
   the learning curve on nested subsets (``--curve``); the paper's two ablations (no residual,
   2-D only) on ``--ablation-patients`` patients.
5. Growing (``--grow-to N``, step ``grow``): the ``spect-doserate`` dataset of the next training
   patients only (dataset seed ``--dataset-seed + 1``), merged with the first one
   (``persodose dataset merge``), and the main network fine-tuned on the merge from its own
   weights (``--init-weights``) for ``--grow-epochs`` epochs at ``--grow-lr``; ``register``
   then ships the grown network (the shards already made are never remade).
6. Continuing (``--continue-from W``, step ``continue``): instead of 4-5's training, the
   weights ``W`` (the shipped network, by its registered name) fine-tuned on the training
   data (the grown merge with ``--grow-to``) for ``--continue-epochs`` at ``--continue-lr``;
   ``register`` then ships it.

Usage::

    python validation/train_dblurdosenet.py --work /work/dl --epochs 15
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path


def run(cmd: list[str], log: Path) -> None:
    print("$", shlex.join(cmd), flush=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def link_folder(pop: Path, dest: Path, folders: list[str]) -> None:
    """``dest`` holding links to ``folders`` of ``pop`` and a copy of its population.json (the splits)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "population.json").write_text((pop / "population.json").read_text())
    for f in folders:
        if not (dest / f).exists():
            os.symlink(pop / f, dest / f)


def subset_dataset(src: Path, dest: Path, train_ids: list[str]) -> None:
    """A dataset folder with the shards of ``train_ids`` and every validation patient of ``src``."""
    doc = json.loads((src / "manifest.json").read_text())
    keep = [p for p in doc["patients"] if p["split"] != "train" or p["id"] in train_ids]
    dest.mkdir(parents=True, exist_ok=True)
    for p in keep:
        if not (dest / p["shard"]).exists():
            os.symlink(src / p["shard"], dest / p["shard"])
    doc.update(patients=keep, planned=[p["id"] for p in keep], complete=True,
               subset_of=str(src / "manifest.json"))
    (dest / "manifest.json").write_text(json.dumps(doc, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--population", type=int, default=40)
    ap.add_argument("--population-seed", type=int, default=2026)
    ap.add_argument("--train-patients", type=int, default=16)
    ap.add_argument("--dataset-seed", type=int, default=1)
    ap.add_argument("--camera", default="blur", help="SPECT model of the training data: blur or camera")
    ap.add_argument("--decays", type=int, default=2_000_000, help="MC decays per frame of the labels")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--curve", type=int, nargs="*", default=[4, 8], help="training-set sizes of the learning curve")
    ap.add_argument("--ablation-patients", type=int, default=8)
    ap.add_argument("--grow-to", type=int, default=0, help="fine-tune on this many training patients (0: no)")
    ap.add_argument("--grow-epochs", type=int, default=10)
    ap.add_argument("--grow-lr", type=float, default=5e-4)
    ap.add_argument("--continue-from", default=None,
                    help="fine-tune these weights (a registered name, e.g. the shipped dblurdosenet-lu177, or a "
                         "file) on the training data (the grown merge with --grow-to) instead of training the "
                         "main or grown network: step 'continue', which then ships")
    ap.add_argument("--continue-epochs", type=int, default=10)
    ap.add_argument("--continue-lr", type=float, default=2.5e-4)
    ap.add_argument("--only", choices=["data", "main", "curve", "ablations", "grow", "continue", "register"],
                    nargs="*", default=None)
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).with_name("persodose"))
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    log = w / "recipe.log"
    steps = set(args.only or (["data", "grow", "continue", "register"] if args.continue_from else
                              ["data", "main", "curve", "ablations", "grow", "register"]))
    pop = w / "pop_lu"
    if not (pop / "population.json").exists():
        run([exe, "phantom", "--out", str(pop), "--tracer", "lu177-dotatate", "--voxel-mm", "4.8",
             "--population", str(args.population), "--seed", str(args.population_seed)], log)
    doc = json.loads((pop / "population.json").read_text())
    all_train = [p["folder"] for p in doc["patients"] if p["split"] == "training"]
    train = all_train[: args.train_patients]
    val = [p["folder"] for p in doc["patients"] if p["split"] == "validation"]
    test = [p["folder"] for p in doc["patients"] if p["split"] == "test"]
    link_folder(pop, w / f"train{args.train_patients}", train + val)
    link_folder(pop, w / f"test{len(test)}", test)
    ds = w / f"ds_train{args.train_patients}"
    done = (ds / "manifest.json").exists() and json.loads((ds / "manifest.json").read_text()).get("complete")
    if "data" in steps and not done:
        run([exe, "dataset", "make", "spect-doserate", "--phantoms", str(w / f"train{args.train_patients}"),
             "--out", str(ds), "--seed", str(args.dataset_seed), "--option", f"camera={args.camera}",
             "--option", f"decays={args.decays}"], log)
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", "1e-3",
              "--plateau-factor", "0.5", "--plateau-patience", "2", "--seed", str(args.seed),
              "--device", args.device, "--threads", str(args.threads)]
    runs = []
    if "main" in steps:
        runs.append((ds, w / "dblurdosenet-lu177.pt", []))
    if "curve" in steps:
        for n in args.curve:
            runs.append((w / f"ds_train{n}", w / f"curve_n{n}.pt", []))
    if "ablations" in steps:
        n = args.ablation_patients
        runs.append((w / f"ds_train{n}", w / f"ablation_n{n}_noresidual.pt", ["--network-option", "residual=false"]))
        runs.append((w / f"ds_train{n}", w / f"ablation_n{n}_2d.pt", ["--network-option", "mode=2d"]))
    for data, out, extra in runs:
        if data != ds and not (data / "manifest.json").exists():
            subset_dataset(ds, data, train[: int(data.name.removeprefix("ds_train"))])
        if Path(f"{out}.json").exists():
            continue
        resume = ["--resume"] if Path(f"{out}.ckpt").exists() else []
        run([exe, "train", "dblurdosenet", "--data", str(data), "--out", str(out), *common, *extra, *resume], log)
    shipped, shipped_data = w / "dblurdosenet-lu177.pt", ds
    if args.grow_to > args.train_patients:
        shipped, shipped_data = grow(exe, args, w, pop, all_train, common, log, steps,
                                     fine_tune=not args.continue_from)
    if args.continue_from:
        shipped = w / f"dblurdosenet-lu177-continued-n{max(args.grow_to, args.train_patients)}.pt"
        if "continue" in steps and not Path(f"{shipped}.json").exists():
            tune = list(common)
            tune[tune.index("--epochs") + 1] = str(args.continue_epochs)
            tune[tune.index("--lr") + 1] = f"{args.continue_lr:g}"
            resume = ["--resume"] if Path(f"{shipped}.ckpt").exists() else ["--init-weights", args.continue_from]
            run([exe, "train", "dblurdosenet", "--data", str(shipped_data), "--out", str(shipped), *tune, *resume],
                log)
    if "register" in steps:
        register(shipped, shipped_data, " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    return 0


def grow(exe: str, args, w: Path, pop: Path, train: list[str], common: list[str], log: Path, steps: set,
         fine_tune: bool = True):
    """Step 5: the dataset of training patients ``train_patients .. grow_to`` (``train``: all the
    population's training patients, in order), merged with the first one, and (``fine_tune``) the
    main network fine-tuned on the merge. Returns (weights, dataset)."""
    n0, n = args.train_patients, args.grow_to
    extra = w / f"train_extra{n0}_{n}"
    link_folder(pop, extra, train[n0:n])
    ds_extra, merged = w / f"ds_extra{n0}_{n}", w / f"ds_train{n}_grown"
    out = w / f"dblurdosenet-lu177-n{n}.pt"
    if "grow" not in steps:
        return out, merged
    done = (ds_extra / "manifest.json").exists() and json.loads((ds_extra / "manifest.json").read_text()).get("complete")
    if not done:
        run([exe, "dataset", "make", "spect-doserate", "--phantoms", str(extra), "--out", str(ds_extra),
             "--seed", str(args.dataset_seed + 1), "--option", f"camera={args.camera}",
             "--option", f"decays={args.decays}"], log)
    if not (merged / "manifest.json").exists():
        run([exe, "dataset", "merge", str(w / f"ds_train{n0}"), str(ds_extra), "--out", str(merged)], log)
    if fine_tune and not Path(f"{out}.json").exists():
        tune = list(common)
        tune[tune.index("--epochs") + 1], tune[tune.index("--lr") + 1] = str(args.grow_epochs), f"{args.grow_lr:g}"
        resume = ["--resume"] if Path(f"{out}.ckpt").exists() else ["--init-weights", str(w / "dblurdosenet-lu177.pt")]
        run([exe, "train", "dblurdosenet", "--data", str(merged), "--out", str(out), *tune, *resume], log)
    return out, merged


#: How the shipped file stores the trained weights, and what it was measured to change.
HALF_NOTE = ("float16 for tensors of more than 1024 elements (convolution weights), float32 for the rest (the "
             "input/target scales, of order 1e-9, would underflow in float16; normalisation statistics); loaded "
             "into the float32 network. Against the float32 weights on the 36 validation slabs: voxels above 10 % "
             "of the maximum at most 0.31 % apart (median 0.16 %), hot-region sums at most 0.0093 % "
             "(validation/check_half_weights.py; the first shipped weights: 0.52 %, 0.21 %, 0.011 %)")


def half_precision(state: dict) -> dict:
    """The state dict as shipped: float16 for floating tensors of more than 1024 elements, the rest as they are."""
    return {k: (v.half() if v.is_floating_point() and v.numel() > 1024 else v) for k, v in state.items()}


def register(weights: Path, data: Path, recipe: str, name: str = "dblurdosenet-lu177", what: str | None = None,
             half: bool = True) -> None:
    """Copy the main weights (in half precision with ``half``), their sidecar and the training data's
    manifest into the package's weights folder and add (or replace) the entry ``name`` of its
    manifest, described as ``what`` and the number of training patients."""
    import dataclasses
    import shutil

    from persodose.dl.train import weights_entry
    from persodose.dl.weights_registry import MANIFEST_PATH, WEIGHTS_DIR

    import torch

    from persodose.dl.train import _save
    from persodose.dl.weights_registry import sha256_file

    shipped = WEIGHTS_DIR / f"{name}.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    _save(torch, half_precision(state) if half else state, shipped)
    side = json.loads(Path(f"{weights}.json").read_text())
    data_file = f"{name}.data-manifest.json"
    shutil.copyfile(data / "manifest.json", WEIGHTS_DIR / data_file)
    side.update(trained_weights_sha256=side["sha256"], sha256=sha256_file(shipped), size_bytes=shipped.stat().st_size,
                stored_as=HALF_NOTE if half else "float32, as trained")
    side.update(file=f"{name}.pt", name=name, data_manifest_file=data_file,
                training_command=f"python validation/{recipe}  (which ran: {side['training_command']})")
    (WEIGHTS_DIR / f"{name}.pt.json").write_text(json.dumps(side, indent=1) + "\n")
    entry = weights_entry(WEIGHTS_DIR / f"{name}.pt.json")
    what = what or "DblurDoseNet, 177Lu SPECT + density -> dose rate (4.8 mm)"
    entry = dataclasses.replace(entry, description=f"{what}; trained on "
                                f"{sum(p['split'] == 'train' for p in side['data']['patients'])} virtual patients")
    doc = json.loads(MANIFEST_PATH.read_text())
    at = next((i for i, e in enumerate(doc) if e.get("name") == name), len(doc))  # replaced in place
    doc[at:at + 1] = [dataclasses.asdict(entry)]
    MANIFEST_PATH.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"registered {name} in {MANIFEST_PATH}")


if __name__ == "__main__":
    sys.exit(main())
