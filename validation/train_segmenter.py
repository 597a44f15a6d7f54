"""Recipe of the shipped ``builtin`` segmenter weights (issue 14): data, training, evaluation.

Steps (``--only STEP``; default: all, in order):

* ``population``: population seed 2026, ``N`` patients (default 40) at 3 mm, only the CT
  and the true label map (with its names) as NIfTI pairs, ``DIR/images/ID.nii.gz`` and
  ``DIR/labels/ID.nii.gz`` (+ ``.json``), and ``DIR/split.json`` (the population's own split:
  a function of the patient seed, :mod:`persodose.phantoms.population`).
* ``train``: ``persodose train segmenter`` on the training patients (validation patients
  for the best epoch), with the recipe below.
* ``evaluate``: the trained model on the test patients (never seen in training): Dice,
  Jaccard, precision, recall, HD95 per organ beside the deliverable's Table 1; timing.

Usage::

    python validation/train_segmenter.py --work /work/dl/seg3 [--only population|train|evaluate]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

POPULATION_SEED = 2026
VOXEL_MM = 3.0


def population(work: Path, n: int) -> None:
    from persodose.io.image import write_image
    from persodose.phantoms.population import draw_population, make_population_patient, split_of

    (work / "images").mkdir(parents=True, exist_ok=True)
    (work / "labels").mkdir(parents=True, exist_ok=True)
    split = {}
    for i, spec in enumerate(draw_population(n, POPULATION_SEED)):
        pid = f"patient_{i:03d}"
        split[pid] = {"seed": int(spec.seed), "split": split_of(spec.seed)}
        img = work / "images" / f"{pid}.nii.gz"
        if img.exists() and (work / "labels" / f"{pid}.nii.gz.json").exists():
            continue
        t = time.time()
        vp = make_population_patient(spec, tracer="fdg", voxel_mm=VOXEL_MM)
        write_image(vp.labels, work / "labels" / f"{pid}.nii.gz")
        write_image(vp.ct, img)
        (work / "labels" / f"{pid}.nii.gz.json").write_text(
            json.dumps({str(k): v for k, v in sorted(vp.label_names.items())}, indent=1))
        print(f"{pid} {split[pid]['split']} {vp.ct.shape} {time.time() - t:.1f} s", flush=True)
    (work / "split.json").write_text(json.dumps({"population_seed": POPULATION_SEED, "voxel_mm": VOXEL_MM,
                                                 "patients": split}, indent=1))


#: The recipe of the shipped weights (2-core CPU budget of 2026-12-01; scale ``steps`` up unchanged).
RECIPE = dict(steps=1800, batch_size=2, lr=2e-3, val_every=300, seed=0, threads=2, patch_voxels=64,
              channels=(16, 32, 64, 128), res_units=2, voxel_mm=VOXEL_MM)
N_VAL = 2


def split_dirs(work: Path) -> dict[str, Path]:
    """``work/{train,val,test}/{images,labels}`` of links to the pairs, by the population's split."""
    doc = json.loads((work / "split.json").read_text())
    names = {"training": "train", "validation": "val", "test": "test"}
    out = {}
    for pid, info in sorted(doc["patients"].items()):
        split = names[info["split"]]
        for sub in ("images", "labels"):
            d = work / split / sub
            d.mkdir(parents=True, exist_ok=True)
            srcs = [work / sub / f"{pid}.nii.gz"] + ([work / sub / f"{pid}.nii.gz.json"] if sub == "labels" else [])
            for src in srcs:
                link = d / src.name
                if split == "val" and sorted(p for p, i in doc["patients"].items()
                                             if names[i["split"]] == "val").index(pid) >= N_VAL:
                    continue  # validation during training: the first N_VAL validation patients
                if not link.exists():
                    link.symlink_to(src)
        out[split] = work / split
    return out


def train(work: Path, steps: int | None) -> None:
    import logging

    from persodose.segmentation.training import SegmenterTrainSettings, train_segmenter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    d = split_dirs(work)
    recipe = {**RECIPE, **({"steps": steps} if steps else {})}
    s = SegmenterTrainSettings(**recipe)
    out = work / "segmenter-virtual-3mm.pt"
    command = (f"persodose train segmenter --images {d['train']}/images --labels {d['train']}/labels "
               f"--val-images {d['val']}/images --val-labels {d['val']}/labels --out {out} "
               f"--steps {s.steps} --batch-size {s.batch_size} --lr {s.lr:g} --val-every {s.val_every} "
               f"--seed {s.seed} --threads {s.threads}")
    r = train_segmenter(d["train"] / "images", d["train"] / "labels", out, s, val_images=d["val"] / "images",
                        val_labels=d["val"] / "labels", command=command)
    print(json.dumps(r["history"], indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--only", choices=("population", "train", "evaluate"))
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    a = ap.parse_args()
    if a.only in (None, "population"):
        population(a.work, a.n)
    if a.only in (None, "train"):
        train(a.work, a.steps)


if __name__ == "__main__":
    main()
