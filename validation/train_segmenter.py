"""Recipe of the shipped ``builtin`` segmenter weights (issue 14): data, training, evaluation.

Steps (``--only STEP``; default: all, in order):

* ``population``: population seed 2026, ``N`` patients (default 40) at 3 mm, only the CT
  and the true label map (with its names) as NIfTI pairs, ``DIR/images/ID.nii.gz`` and
  ``DIR/labels/ID.nii.gz`` (+ ``.json``), and ``DIR/split.json`` (the population's own split:
  a function of the patient seed, :mod:`persodose.phantoms.population`).
* ``train``: ``persodose train segmenter`` on the training patients (validation patients
  for the best epoch), with the recipe below.
* ``continue`` (with ``--continue-from W``): train further from weights ``W`` for
  ``--continue-steps`` at ``--continue-lr`` with patch-sampling seed ``--continue-seed`` (how
  the shipped weights were made: see their sidecar's ``training_command`` and nested
  ``init_weights``); writes ``WORK/segmenter-continued.pt`` and
  ``WORK/continue.json`` (the validation Dice before and after, and whether to keep them).
* ``curve`` (with ``--train-subset K``): the learning curve's point at ``K`` training patients:
  the ``train`` step's recipe from a random start on the first ``K`` training patients (by id;
  the same validation patients), written to ``WORK/segmenter-n{K}.pt``; evaluate it on the
  test patients with ``--only evaluate --weights WORK/segmenter-n{K}.pt`` beside the ``train``
  step's weights (all training patients) evaluated the same way.
* ``register``: the weights (``--weights FILE``, default the ``train`` step's), their sidecar and the data manifest into ``persodose/dl/weights``
  (registry name ``segmenter-virtual-3mm``).
* ``evaluate``: the trained model on the test patients (never seen in training): Dice,
  Jaccard, precision, recall, HD95 per organ beside the deliverable's Table 1; timing.
* ``doses``: organ doses of a test patient with automatic against true labels, on the same
  internal (18F-FDG, ``msv``) and CT (Monte Carlo) dose maps.

Usage::

    python validation/train_segmenter.py --work /work/dl/seg3 [--only population|train|register|evaluate|doses]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

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
RECIPE = dict(steps=1000, batch_size=2, lr=2e-3, val_every=250, seed=0, threads=2, patch_voxels=64,
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


def subset_dir(work: Path, k: int) -> Path:
    """``work/train_n{k}/{images,labels}``: links to the first ``k`` training pairs (sorted by id)."""
    src = split_dirs(work)["train"]
    ids = sorted(p.name[:-7] for p in (src / "images").iterdir() if p.name.endswith(".nii.gz"))
    if not 1 <= k <= len(ids):
        raise SystemExit(f"--train-subset must be 1..{len(ids)} (the training patients), got {k}")
    out = work / f"train_n{k}"
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for pid in ids[:k]:
            for name in [f"{pid}.nii.gz"] + ([f"{pid}.nii.gz.json"] if sub == "labels" else []):
                link = out / sub / name
                if not link.exists():
                    link.symlink_to((src / sub / name).resolve())
    return out


def curve_point(work: Path, k: int, steps: int | None) -> Path:
    """The recipe from a random start on the first ``k`` training patients: ``work/segmenter-n{k}.pt``."""
    import logging

    from persodose.segmentation.training import SegmenterTrainSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    d = {**split_dirs(work), "train": subset_dir(work, k)}
    out = work / f"segmenter-n{k}.pt"
    r = _train(d, out, SegmenterTrainSettings(**{**RECIPE, **({"steps": steps} if steps else {})}))
    print(f"{k} training patients: best validation mean Dice {1.0 - r['final_validation_loss']:.4f}", flush=True)
    return out


def train(work: Path, steps: int | None) -> None:
    import logging

    from persodose.segmentation.training import SegmenterTrainSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    d = split_dirs(work)
    recipe = {**RECIPE, **({"steps": steps} if steps else {})}
    s = SegmenterTrainSettings(**recipe)
    r = _train(d, work / "segmenter-virtual-3mm.pt", s)
    print(json.dumps(r["history"], indent=1))


def _train(d: dict, out: Path, s) -> dict:
    """``train_segmenter`` on the split's training and validation pairs, with the CLI command it equals."""
    from persodose.segmentation.training import train_segmenter

    command = (f"persodose train segmenter --images {d['train']}/images --labels {d['train']}/labels "
               f"--val-images {d['val']}/images --val-labels {d['val']}/labels --out {out} "
               f"--steps {s.steps} --batch-size {s.batch_size} --lr {s.lr:g} --val-every {s.val_every} "
               f"--seed {s.seed} --threads {s.threads}"
               + (f" --init-weights {s.init_weights}" if s.init_weights else ""))
    return train_segmenter(d["train"] / "images", d["train"] / "labels", out, s, val_images=d["val"] / "images",
                           val_labels=d["val"] / "labels", command=command)


def continue_training(work: Path, init: str, steps: int, lr: float, seed: int = 0) -> Path:
    """Train further from ``init`` (registered name or file) for ``steps`` at ``lr`` (a fresh Adam and
    polynomial decay) and patch-sampling ``seed`` (a seed of its own per round, so that a round does
    not replay the previous round's patches), the recipe's other settings unchanged; writes ``work/segmenter-continued.pt``.

    Before training, the validation Dice of ``init`` on the same validation cases is measured, so
    that the selection rule (keep the continued weights only if their best validation mean Dice
    beats it) is judged on figures of the same code and data."""
    import logging

    from persodose.segmentation.builtin import load_model
    from persodose.segmentation.training import SegmenterTrainSettings, _validate, find_pairs, load_case

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    d = split_dirs(work)
    model, config, prov = load_model(init)
    val = [load_case(*p, config) for p in find_pairs(d["val"] / "images", d["val"] / "labels")]
    t = time.time()
    base = _validate(model.eval(), config, val, "cpu")
    print(f"initial weights {init} (sha256 {prov['sha256'][:12]}): validation mean Dice {base:.4f} "
          f"({time.time() - t:.0f} s)", flush=True)
    s = SegmenterTrainSettings(**{**RECIPE, "steps": steps, "lr": lr, "seed": seed, "init_weights": str(init)})
    out = work / "segmenter-continued.pt"
    r = _train(d, out, s)
    best = 1.0 - r["final_validation_loss"]
    (work / "continue.json").write_text(json.dumps({"init": str(init), "init_sha256": prov["sha256"],
                                                    "init_val_mean_dice": base, "best_val_mean_dice": best,
                                                    "keep": best > base, "history": r["history"]}, indent=1))
    print(f"continued: best validation mean Dice {best:.4f} against {base:.4f} before: "
          f"{'keep' if best > base else 'do not keep'}", flush=True)
    return out


#: SINFONIA D2.2 Table 1: Dice (%, mean and SD) of the deliverable's residual U-Net, per organ,
#: keyed by the builtin's class (kidneys, femoral heads: the table gives both sides together).
TABLE1_DICE = {"liver": (96.94, 1.67), "heart": (91.6, 6.52), "pancreas": (77.53, 16.01), "bone": (94.16, 4.86),
               "kidney_left": (94.06, 4.8), "kidney_right": (94.06, 4.8), "spleen": (94.32, 9.89),
               "bladder": (83.42, 18.0), "oesophagus": (73.22, 10.96), "femoral_head_left": (95.68, 2.8),
               "femoral_head_right": (95.68, 2.8), "spinal_cord": (89.76, 3.64), "aorta": (93.03, 2.84),
               "gall_bladder": (77.13, 20.17), "inferior_vena_cava": (80.6, 11.32), "colon": (70.62, 11.97),
               "portal_vein": (60.78, 11.07), "rectum": (76.35, 16.07), "stomach": (85.4, 13.67),
               "thymus": (64.22, 23.51), "small_intestine": (88.89, 8.87)}


def _scores(pred, ref, spacing) -> dict:
    from persodose.metrics.segmentation import dice, hd95_mm, jaccard, precision, recall

    both = pred | ref
    if both.any():  # HD95 on the masks' bounding box (plus a margin): the same distances, far less work
        box = tuple(slice(max(0, int(w.min()) - 2), int(w.max()) + 3) for w in np.nonzero(both))
        hd = hd95_mm(pred[box], ref[box], spacing)
    else:
        hd = float("nan")
    return {"dice": dice(pred, ref), "jaccard": jaccard(pred, ref), "precision": precision(pred, ref),
            "recall": recall(pred, ref), "hd95_mm": hd,
            "volume_ml_true": float(ref.sum()) * float(np.prod(spacing)) / 1000.0,
            "volume_ml_auto": float(pred.sum()) * float(np.prod(spacing)) / 1000.0}


def evaluate(work: Path, weights: Path | None = None) -> dict:
    """Every test patient segmented by the trained model: per-organ scores, timing (``eval.json``)."""
    from persodose.grid import Kind
    from persodose.io.image import read_image
    from persodose.segmentation import segment
    from persodose.segmentation.builtin import organ_classes
    from persodose.segmentation.training import _names

    weights = weights or work / "segmenter-virtual-3mm.pt"
    d = split_dirs(work)
    rows = {}
    for img in sorted((d["test"] / "images").iterdir()):
        pid = img.name[:-7]
        ct = read_image(img, kind=Kind.CT)
        lab_path = d["test"] / "labels" / img.name
        t = time.perf_counter()
        res = segment(ct, "builtin", settings={"weights": str(weights)})
        seconds = time.perf_counter() - t
        classes = list(res.names.values())
        truth = organ_classes(np.asarray(read_image(lab_path, kind=Kind.LABELS).array), _names(lab_path), classes)
        auto = np.asarray(res.labels.array)
        per = {c: _scores(auto == i, truth == i, ct.spacing_zyx_mm) for i, c in enumerate(classes, start=1)}
        rows[pid] = {"seconds": seconds, "shape": list(ct.shape), "organs": per}
        print(f"{pid}: {seconds:.1f} s; Dice " + ", ".join(f"{c} {v['dice']:.3f}" for c, v in per.items()), flush=True)
    doc = {"weights": str(weights), "patients": rows, "machine": _machine(), "date": time.strftime("%Y-%m-%d")}
    (work / "eval.json").write_text(json.dumps(doc, indent=1, default=float))
    print(summarise(doc))
    return doc


def _organ_means(dose, labels_on_dose, density, classes) -> dict:
    """Mass-weighted mean dose per class (dose grid units)."""
    from persodose.metrics.organ import mass_weighted_means

    return mass_weighted_means(dose, labels_on_dose, {i: c for i, c in enumerate(classes, start=1)}, density)


def doses(work: Path, patient: str = "patient_004", weights: Path | None = None) -> dict:
    """Organ doses of one held-out patient with the automatic labels against the true labels.

    The same dose map each time (so only the labels differ): internal, 18F-FDG true TIA by the
    ``msv`` method on a 4 mm dose grid (the cached kernels); CT, a 120 kV helical scan of the whole patient at
    CTDIvol 10 mGy (Monte Carlo, 6 mm dose grid).
    """
    import warnings

    from persodose.grid import Kind
    from persodose.mc.engine import MCSettings
    from persodose.phantoms.population import draw_population, make_population_patient
    from persodose.segmentation import segment
    from persodose.segmentation.builtin import organ_classes
    from persodose.workflows.ct import CT_TRANSPORT, ct_dose
    from persodose.workflows.internal import InternalSettings, run_internal

    weights = weights or work / "segmenter-virtual-3mm.pt"
    doc = json.loads((work / "split.json").read_text())
    assert doc["patients"][patient]["split"] == "test", "the dose check is on a test patient"
    spec = draw_population(int(patient.split("_")[1]) + 1, POPULATION_SEED)[-1]
    vp = make_population_patient(spec, tracer="fdg", voxel_mm=VOXEL_MM)
    res = segment(vp.ct, "builtin", settings={"weights": str(weights)})
    classes = list(res.names.values())
    truth = vp.labels.with_array(organ_classes(np.asarray(vp.labels.array), vp.label_names, classes), Kind.LABELS)
    out = {"patient": patient, "classes": classes}
    internal = run_internal(vp.ct, [], InternalSettings(nuclide=vp.nuclide, methods=("msv",), dose_voxel_mm=4.0),
                            truth, res.names, tia_override=vp.truth_tia, log=lambda *a: None)
    dose = internal.doses["msv"]
    on = [lab.resample_to(dose, "nearest") for lab in (truth, res.labels)]
    out["internal"] = {"method": "msv", "true": _organ_means(dose, on[0], internal.density, classes),
                       "auto": _organ_means(dose, on[1], internal.density, classes), "unit": "Gy"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov = {"kvp": 120.0, "pitch": 1.0, "total_collimation_mm": 40.0, "rotation_time_s": 0.5, "ctdivol_mgy": 10.0,
              "bowtie": "body"}
        ct = ct_dose(vp.ct, None, truth, res.names, overrides=ov, n_photons=2_000_000, ctdi_photons=400_000,
                     dose_voxel_mm=6.0, ctdi_diameter_mm=320.0,
                     settings=MCSettings(n_batches=8, seed=23, transport=CT_TRANSPORT))
    on = [lab.resample_to(ct.dose_mgy, "nearest") for lab in (truth, res.labels)]
    out["ct"] = {"true": _organ_means(ct.dose_mgy, on[0], ct.density, classes),
                 "auto": _organ_means(ct.dose_mgy, on[1], ct.density, classes), "unit": "mGy",
                 "ctdivol_mgy": 10.0, "n_photons": 2_000_000,
                 "organ_uncertainty_percent": {r.name: r.uncertainty_percent for r in ct.organs}}
    (work / "doses.json").write_text(json.dumps(out, indent=1))
    print(summarise_doses(out))
    return out


def summarise_doses(out: dict) -> str:
    lines = ["| organ | internal true (Gy) | internal auto | diff % | CT true (mGy) | CT auto | diff % |",
             "|---|---|---|---|---|---|---|"]
    for c in out["classes"]:
        row = [c]
        for k in ("internal", "ct"):
            t, a = out[k]["true"].get(c), out[k]["auto"].get(c)
            row += ["-", "-", "-"] if t is None or a is None else [f"{t:.4g}", f"{a:.4g}", f"{100 * (a / t - 1):+.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def register(work: Path, weights: Path | None = None) -> None:
    """Copy the trained weights (default ``work/segmenter-virtual-3mm.pt``), their sidecar and a
    data manifest into the package's weights folder and add (or replace) the
    ``segmenter-virtual-3mm`` entry of its manifest."""
    import dataclasses
    import shutil

    from persodose.dl.train import weights_entry
    from persodose.dl.weights_registry import MANIFEST_PATH, WEIGHTS_DIR

    name = "segmenter-virtual-3mm"
    weights = weights or work / f"{name}.pt"
    side = json.loads(Path(f"{weights}.json").read_text())
    shutil.copyfile(weights, WEIGHTS_DIR / f"{name}.pt")
    data_file = f"{name}.data-manifest.json"
    manifest = {"population": json.loads((work / "split.json").read_text()), "pairs": side["data"],
                "made_by": "python validation/train_segmenter.py --work WORK --only population"}
    (WEIGHTS_DIR / data_file).write_text(json.dumps(manifest, indent=1) + "\n")
    init = side.get("init_weights")
    step = "" if not init else (f" --only continue --continue-from {init['weights']} (sha256 {init['sha256']}) "
                                f"--continue-steps {side['train_settings']['steps']} "
                                f"--continue-lr {side['train_settings']['lr']:g} "
                                f"--continue-seed {side['train_settings']['seed']}")
    side.update(file=f"{name}.pt", name=name, data_manifest_file=data_file,
                training_command=f"python validation/train_segmenter.py --work WORK{step}  (which ran: "
                                 f"{side['training_command']})")
    (WEIGHTS_DIR / f"{name}.pt.json").write_text(json.dumps(side, indent=1) + "\n")
    entry = weights_entry(WEIGHTS_DIR / f"{name}.pt.json")
    n_train = sum(d["split"] == "train" for d in side["data"])
    entry = dataclasses.replace(entry, description=f"builtin segmenter: residual U-Net, {len(side['unet']['classes'])} "
                                f"organs at 3 mm; trained on {n_train} virtual patients (not real CTs)")
    doc = [e for e in json.loads(MANIFEST_PATH.read_text()) if e.get("name") != name]
    doc.append(dataclasses.asdict(entry))
    MANIFEST_PATH.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"registered {name} in {MANIFEST_PATH}")


def _machine() -> str:
    import os
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def summarise(doc: dict) -> str:
    """Markdown table: mean ± SD over the test patients per organ, beside Table 1."""
    pats = doc["patients"]
    organs = list(next(iter(pats.values()))["organs"])
    lines = ["| organ | Dice % (ours) | Dice % (D2.2 Table 1) | Jaccard % | precision % | recall % | HD95 mm | "
             "met |", "|---|---|---|---|---|---|---|---|"]
    for o in organs:
        vals = {k: np.array([p["organs"][o][k] for p in pats.values()], float) for k in
                ("dice", "jaccard", "precision", "recall", "hd95_mm")}
        m = {k: np.nanmean(v) * (1 if k == "hd95_mm" else 100) for k, v in vals.items()}
        sd = np.nanstd(vals["dice"]) * 100
        ref = TABLE1_DICE.get(o)
        ref_s = f"{ref[0]:.1f} ± {ref[1]:.1f}" if ref else "-"
        met = "-" if not ref else ("yes" if m["dice"] >= ref[0] else "no")
        lines.append(f"| {o} | {m['dice']:.1f} ± {sd:.1f} | {ref_s} | {m['jaccard']:.1f} | {m['precision']:.1f} | "
                     f"{m['recall']:.1f} | {m['hd95_mm']:.1f} | {met} |")
    secs = [p["seconds"] for p in pats.values()]
    lines.append(f"\n{len(pats)} test patients; segmentation time {np.mean(secs):.1f} s mean, {np.max(secs):.1f} s "
                 f"max ({doc['machine']}, {doc['date']}).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--only", choices=("population", "train", "continue", "curve", "register", "evaluate",
                                                    "doses"))
    ap.add_argument("--weights", type=Path, default=None, help="evaluate these weights (default: the trained ones)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    ap.add_argument("--train-subset", type=int, default=None,
                    help="step 'curve': train on the first K training patients only")
    ap.add_argument("--continue-from", default=None,
                    help="step 'continue': train further from these weights (registered name or file)")
    ap.add_argument("--continue-steps", type=int, default=2000)
    ap.add_argument("--continue-lr", type=float, default=1e-3)
    ap.add_argument("--continue-seed", type=int, default=0,
                    help="patch-sampling seed of the continued round (give each round its own)")
    a = ap.parse_args()
    if a.only in (None, "population"):
        population(a.work, a.n)
    if a.only in (None, "train"):
        train(a.work, a.steps)
    if a.only == "continue" or (a.only is None and a.continue_from):
        if not a.continue_from:
            ap.error("--only continue needs --continue-from WEIGHTS")
        continued = continue_training(a.work, a.continue_from, a.continue_steps, a.continue_lr, a.continue_seed)
        if a.only is None and a.weights is None:
            a.weights = continued
    if a.only == "curve":
        if a.train_subset is None:
            ap.error("--only curve needs --train-subset K")
        curve_point(a.work, a.train_subset, a.steps)
        return
    if a.only in (None, "register"):
        register(a.work, a.weights)
    if a.only in (None, "evaluate"):
        evaluate(a.work, a.weights)
    if a.only in (None, "doses"):
        doses(a.work, weights=a.weights)


if __name__ == "__main__":
    main()
