"""The recipe that made the shipped ``ct-deepdose`` weights (``persodose ct --method dl``) and its learning curve.

Every step is a persodose command (printed before it runs) and is skipped when its output
exists, so an interrupted run continues. The same commands scale up unchanged: more patients
(``--train-patients``), more positions per patient, more photons, more epochs, ``--device cuda``.

1. A virtual FDG population at 5 mm (``persodose phantom --population``; the deliverable's CT
   dose voxel); its seeds' SHA-256 split rule puts each patient in training, validation or test.
   Only the test patients are evaluated (``validation/ct_deepdose.py``); no training step reads them.
2. The ``ct-sp`` datasets at 120 kVp (all training and validation patients) and 90 kVp (the first
   ``--ft-patients`` of them): Monte Carlo maps of single focal-spot positions of each patient's
   helical scan with the rotated cylinder map x CF beside them.
3. Training (``persodose train ct-deepdose``) at 120 kVp, and the learning curve on nested subsets.
4. The 90 kVp network fine-tuned from the 120 kVp weights (``--init-weights``; the deliverable's
   section 2.3 fine-tunes 50 epochs at 1e-7; at that rate Adam moves the weights by about
   1e-7 per step, nothing in a few hundred steps, so this recipe uses ``--ft-lr``, see
   docs/validation_dl.md).
5. ``calibrate``: the head's bias set from the training data (:func:`calibrate`).
6. ``register`` (only when asked: ``--only register``) ships both (float32, 0.17 MB each). The
   weights made so far are not shipped: they miss their targets (docs/validation_dl.md).

Usage::

    python validation/train_ct_deepdose.py --work /work/ctdl --epochs 3 --ft-epochs 2 --curve 2
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_dblurdosenet import link_folder, register, run, subset_dataset  # noqa: E402
from train_kernel_dnn import _complete  # noqa: E402


def make_data(exe, folder: Path, ds: Path, seed: int, options: list[str], log: Path) -> None:
    if not _complete(ds):
        opts = [x for o in options for x in ("--option", o)]
        run([exe, "dataset", "make", "ct-sp", "--phantoms", str(folder), "--out", str(ds), "--seed", str(seed), *opts],
            log)


def train(exe, data: Path, out: Path, common: list[str], log: Path, extra=()) -> None:
    if Path(f"{out}.json").exists():
        return
    resume = ["--resume"] if Path(f"{out}.ckpt").exists() else list(extra)
    run([exe, "train", "ct-deepdose", "--data", str(data), "--out", str(out), *common, *resume], log)


def calibrate(weights: Path, data: Path, out: Path, split: str = "train") -> float:
    """``out``: ``weights`` with the linear head's bias raised by ``log c``, ``c`` the ratio of the
    summed Monte Carlo targets to the summed predictions over the ``split`` examples of ``data``.

    The network predicts a log-correction of the cylinder map x CF, which overestimates the
    patient by 3-7x (the cylinder's scatter at the depth CF reaches); Adam moves the head's bias by
    about the learning rate per step, so a few hundred steps leave that constant unlearned. This
    sets it from the training data (no test patient is read); the sidecar records it.
    """
    import hashlib

    import torch

    from persodose.dl.datasets import open_dataset
    from persodose.dl.evaluate import _load_model

    if out.exists() and Path(f"{out}.json").exists():
        return float(json.loads(Path(f"{out}.json").read_text())["head_bias_calibration"]["factor"])
    _, model, _, side = _load_model("ct-deepdose", weights, None, "cpu")
    model.eval()
    num = den = 0.0
    ds = open_dataset(data)
    with torch.inference_mode():
        for x, y, _ in ds.iter_examples(split):
            t = torch.from_numpy(x[None]).contiguous(memory_format=torch.channels_last_3d)
            den += float(model(t).sum())
            num += float(y.sum())
    c = num / den
    head = model.core.net.blocks[-1]
    with torch.no_grad():
        head.bias += float(np.log(c))
    torch.save(model.state_dict(), out)
    side = dict(side or json.loads(Path(f"{weights}.json").read_text()))
    side["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    side["head_bias_calibration"] = {"factor": c, "from": str(weights), "data": str(data), "split": split,
                                     "rule": "head bias += log(sum MC targets / sum predictions)"}
    Path(f"{out}.json").write_text(json.dumps(side, indent=1))
    print(f"calibrated {weights} -> {out}: factor {c:.4g}")
    return c


def population(exe, w: Path, args, log: Path) -> tuple[Path, dict]:
    """The population folder and its patients' folders by split."""
    pop = w / "pop"
    if not (pop / "population.json").exists():
        run([exe, "phantom", "--out", str(pop), "--tracer", "fdg", "--voxel-mm", "5",
             "--population", str(args.population), "--seed", str(args.population_seed)], log)
    doc = json.loads((pop / "population.json").read_text())
    return pop, {s: [p["folder"] for p in doc["patients"] if p["split"] == s] for s in ("training", "validation", "test")}


def common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--population", type=int, default=24)
    ap.add_argument("--population-seed", type=int, default=1313)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_args(ap)
    ap.add_argument("--train-patients", type=int, default=10)
    ap.add_argument("--val-patients", type=int, default=2)
    ap.add_argument("--ft-patients", type=int, default=4, help="training patients of the 90 kVp fine-tuning")
    ap.add_argument("--positions", type=int, default=16, help="source positions per patient")
    ap.add_argument("--photons", type=int, default=1_000_000, help="MC photons per position")
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ft-epochs", type=int, default=8)
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--curve", type=int, nargs="*", default=[2, 5], help="training-set sizes of the learning curve")
    ap.add_argument("--only", choices=["data", "main", "ft90", "curve", "calibrate", "register"], nargs="*", default=None)
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).with_name("persodose"))
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    log = w / "recipe.log"
    steps = set(args.only or ["data", "main", "ft90", "curve", "calibrate"])
    pop, by = population(exe, w, args, log)
    train_f, val_f = by["training"][: args.train_patients], by["validation"][: args.val_patients]
    n = len(train_f)
    link_folder(pop, w / f"train{n}", train_f + val_f)
    link_folder(pop, w / f"ft{args.ft_patients}", train_f[: args.ft_patients] + val_f[:1])
    opts = [f"positions_per_patient={args.positions}", f"photons_per_map={args.photons}", f"patch={args.patch}"]
    ds120, ds90 = w / f"ds120_train{n}", w / f"ds90_ft{args.ft_patients}"
    if "data" in steps:
        make_data(exe, w / f"train{n}", ds120, 11, ["kvp=120", *opts], log)
        make_data(exe, w / f"ft{args.ft_patients}", ds90, 12, ["kvp=90", *opts], log)
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}",
              "--plateau-factor", "0.5", "--plateau-patience", "1", "--patience", "4", "--seed", str(args.seed),
              "--device", args.device, "--threads", str(args.threads)]
    w120, w90 = w / "ct-deepdose-120kv.pt", w / "ct-deepdose-90kv.pt"
    if "main" in steps:
        train(exe, ds120, w120, common, log)
    if "ft90" in steps:
        tune = list(common)
        tune[tune.index("--epochs") + 1], tune[tune.index("--lr") + 1] = str(args.ft_epochs), f"{args.ft_lr:g}"
        train(exe, ds90, w90, tune, log, extra=["--init-weights", str(w120)])
    if "curve" in steps:
        for k in args.curve:
            sub = w / f"ds120_train{k}"
            if not (sub / "manifest.json").exists():
                ids = [json.loads((pop / f / "manifest.json").read_text()).get("id", f) for f in train_f[:k]]
                subset_dataset(ds120, sub, ids)
            train(exe, sub, w / f"curve_n{k}.pt", common, log)
    if "calibrate" in steps:
        calibrate(w120, ds120, w / "ct-deepdose-120kv-cal.pt")
        if Path(f"{w90}.json").exists():
            calibrate(w90, ds90, w / "ct-deepdose-90kv-cal.pt")
    w120, w90 = w / "ct-deepdose-120kv-cal.pt", w / "ct-deepdose-90kv-cal.pt"
    if "register" in steps:  # not run by default: the weights made so far miss their targets
        recipe = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        register(w120, ds120, recipe, name="ct-deepdose-120kv", half=False,
                 what="ct-deepdose, 120 kV single-position CT dose (5 mm) from density + SP_uniform x CF")
        if Path(f"{w90}.json").exists():
            register(w90, ds90, recipe, name="ct-deepdose-90kv", half=False,
                     what="ct-deepdose, 90 kV, fine-tuned from ct-deepdose-120kv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
