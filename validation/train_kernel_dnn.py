"""The recipe that made the shipped ``kernel-dnn`` weights (the ``dnn`` dose method) and its learning curve.

Every step is a persodose command (printed before it runs) and is skipped when its output
exists, so an interrupted run continues. The same commands scale up unchanged: more patients
(``--train-patients``), more kernels per patient, more decays, more epochs, ``--device cuda``.

1. A virtual FDG population at 3 mm (``persodose phantom --population``; the deliverable's
   voxel); its seeds' SHA-256 split rule puts each patient in training, validation or test.
2. Folders of links: the first ``--train-patients`` training patients and the first
   ``--val-patients`` validation patients (``train``), the first ``--test-patients`` test
   patients (``test``).
3. The ``kernels`` datasets (``persodose dataset make kernels``) of both folders: Monte Carlo
   kernels of unit F-18 sources in each patient's own tissue.
4. Training (``persodose train kernel-dnn``): the main network on all training patients, the
   learning curve on nested subsets (``--curve``).
5. 177Lu by transfer learning (``--lu-patients``): the ``kernels`` datasets for Lu-177 of the
   first few training patients (and the validation and test patients) and the FDG network
   fine-tuned on them (``--init-weights``; the deliverable's section 2.1.2).
6. ``register`` ships both (float32; about 0.5 MB each).

Usage::

    python validation/train_kernel_dnn.py --work /work/dnn
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_dblurdosenet import link_folder, register, run, subset_dataset  # noqa: E402


def _complete(ds: Path) -> bool:
    return (ds / "manifest.json").exists() and bool(json.loads((ds / "manifest.json").read_text()).get("complete"))


def make_data(exe, folder: Path, ds: Path, seed: int, options: list[str], log: Path) -> None:
    if not _complete(ds):
        opts = [x for o in options for x in ("--option", o)]
        run([exe, "dataset", "make", "kernels", "--phantoms", str(folder), "--out", str(ds), "--seed", str(seed),
             *opts], log)


def train(exe, data: Path, out: Path, common: list[str], log: Path, extra=()) -> None:
    if Path(f"{out}.json").exists():
        return
    resume = ["--resume"] if Path(f"{out}.ckpt").exists() else list(extra)
    run([exe, "train", "kernel-dnn", "--data", str(data), "--out", str(out), *common, *resume], log)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--population", type=int, default=40)
    ap.add_argument("--population-seed", type=int, default=4242)
    ap.add_argument("--train-patients", type=int, default=8)
    ap.add_argument("--val-patients", type=int, default=2)
    ap.add_argument("--test-patients", type=int, default=5)
    ap.add_argument("--kernels-per-patient", type=int, default=80)
    ap.add_argument("--decays", type=int, default=300_000, help="MC decays per kernel")
    ap.add_argument("--symmetries", type=int, default=8)
    ap.add_argument("--border-fraction", type=float, default=0.0,
                    help="share of kernels drawn among soft-tissue voxels beside bone or lung (dataset option)")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--curve", type=int, nargs="*", default=[2, 4], help="training-set sizes of the learning curve")
    ap.add_argument("--lu-patients", type=int, default=3, help="training patients of the 177Lu fine-tuning (0: none)")
    ap.add_argument("--lu-epochs", type=int, default=60)
    ap.add_argument("--lu-lr", type=float, default=3e-4)
    ap.add_argument("--only", choices=["data", "main", "curve", "lu177", "register"], nargs="*", default=None)
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).with_name("persodose"))
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    log = w / "recipe.log"
    steps = set(args.only or ["data", "main", "curve", "lu177", "register"])
    pop = w / "pop"
    if not (pop / "population.json").exists():
        run([exe, "phantom", "--out", str(pop), "--tracer", "fdg", "--voxel-mm", "3",
             "--population", str(args.population), "--seed", str(args.population_seed)], log)
    doc = json.loads((pop / "population.json").read_text())
    by = {s: [p["folder"] for p in doc["patients"] if p["split"] == s] for s in ("training", "validation", "test")}
    train_f, val_f, test_f = (by["training"][: args.train_patients], by["validation"][: args.val_patients],
                              by["test"][: args.test_patients])
    n = len(train_f)
    link_folder(pop, w / f"train{n}", train_f + val_f)
    link_folder(pop, w / "test", test_f)
    opts = [f"kernels_per_patient={args.kernels_per_patient}", f"decays={args.decays}",
            f"symmetries={args.symmetries}"] + ([f"border_fraction={args.border_fraction:g}"]
                                                 if args.border_fraction > 0 else [])
    tag = f"_border{args.border_fraction:g}" if args.border_fraction > 0 else ""
    ds, ds_test = w / f"ds_train{n}{tag}", w / "ds_test"
    if "data" in steps:
        make_data(exe, w / f"train{n}", ds, 1, ["nuclide=F-18", *opts], log)
        make_data(exe, w / "test", ds_test, 2, ["nuclide=F-18", *opts[:3]], log)  # the test set: no border share
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}",
              "--plateau-factor", "0.5", "--plateau-patience", "3", "--patience", "8", "--seed", str(args.seed),
              "--device", args.device, "--threads", str(args.threads)]
    main_w = w / f"kernel-dnn-f18{tag}.pt"
    if "main" in steps:
        train(exe, ds, main_w, common, log)
    if "curve" in steps:
        for k in args.curve:
            sub = w / f"ds_train{k}{tag}"
            if not (sub / "manifest.json").exists():
                ids = [json.loads((pop / f / "manifest.json").read_text()).get("id", f) for f in train_f[:k]]
                subset_dataset(ds, sub, ids)
            train(exe, sub, w / f"curve_n{k}{tag}.pt", common, log)
    lu_w, ds_lu = w / "kernel-dnn-lu177.pt", w / f"ds_lu_train{args.lu_patients}"
    if args.lu_patients and "lu177" in steps:
        link_folder(pop, w / f"lu_train{args.lu_patients}", train_f[: args.lu_patients] + val_f[:1])
        make_data(exe, w / f"lu_train{args.lu_patients}", ds_lu, 3, ["nuclide=Lu-177", *opts], log)
        make_data(exe, w / "test", w / "ds_lu_test", 4, ["nuclide=Lu-177", *opts], log)
        tune = list(common)
        tune[tune.index("--epochs") + 1], tune[tune.index("--lr") + 1] = str(args.lu_epochs), f"{args.lu_lr:g}"
        train(exe, ds_lu, lu_w, tune, log, extra=["--init-weights", str(main_w)])
    if "register" in steps:
        recipe = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        register(main_w, ds, recipe, name="kernel-dnn-f18", half=False,
                 what="kernel-dnn, F-18 near-field kernels (7^3 of 3 mm) from the density")
        if args.lu_patients and Path(f"{lu_w}.json").exists():
            register(lu_w, ds_lu, recipe, name="kernel-dnn-lu177", half=False,
                     what="kernel-dnn, Lu-177 near-field kernels (7^3 of 3 mm), fine-tuned from kernel-dnn-f18")
    return 0


if __name__ == "__main__":
    sys.exit(main())
