"""Training of the ``builtin`` segmenter on CT and label NIfTI pairs (``persodose train segmenter``).

Any labelled set works: ``IMAGES/NAME.nii.gz`` (CT, HU) and ``LABELS/NAME.nii.gz`` (same base
name; label names in ``LABELS/NAME.nii.gz.json``, ``{value: name}``, as persodose writes them)
(also ``.nii``, ``.mha``, ``.nrrd``). This is how a user gets a model for real CTs; the shipped
weights came from the same function on virtual patients (``validation/train_segmenter.py``).

Recipe (each a setting of :class:`SegmenterTrainSettings`):

* every case resampled to the model's isotropic voxel (CT linear, labels nearest), cropped to
  the body's bounding box (:func:`persodose.segmentation.builtin.body_box`), labels mapped to
  the classes by name (:func:`persodose.segmentation.builtin.organ_classes`: groups, lesions
  given to the organ around them);
* patches of ``patch_voxels``³ centred on a voxel of a class drawn uniformly among the classes
  the case has (background counted as one): small organs are seen as often as the liver;
* MONAI's Dice + cross-entropy loss (batch Dice: a class missing from one patch does not
  count), Adam, learning rate decayed polynomially to 0 over ``steps`` (exponent 0.9, as
  nnU-Net does: Isensee et al., Nat. Methods 18 (2021) 203);
* ``init_weights`` (fine-tuning): start from trained weights (a registered name or a ``.pt``
  file, checksum verified) instead of a random initialisation; the architecture and classes
  are theirs, the optimiser and the learning-rate schedule start afresh. This is how the
  shipped weights were trained further, and how a user adapts them to labelled real CTs;
* every ``val_every`` steps (one "epoch" here) the validation cases are segmented whole
  (sliding window, as at use) and the weights with the best mean Dice are kept; a checkpoint
  is written then, from which ``resume`` continues to the same result as an uninterrupted run
  (same data, seed and thread count).

Outputs beside ``OUT`` (``.pt``): ``OUT.json`` (the architecture, classes, the data manifest
with each file's SHA-256, seed, command, per-epoch history: a
:class:`~persodose.dl.weights_registry.WeightsEntry` plus more), ``OUT.loss.csv`` and the
checkpoint ``OUT.ckpt``. Weights are stored as float16 (half the size; the network runs in
float32).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from persodose.errors import InputError
from persodose.segmentation.builtin import (DEFAULT_CLASSES, DEFAULT_GROUPS, UNetConfig, body_box, build_unet,
                                            input_channels, isotropic_reference, organ_classes,
                                            predict_probabilities)

__all__ = ["SegmenterTrainSettings", "Case", "find_pairs", "load_case", "train_segmenter", "dice_per_class",
           "CHECKPOINT_FORMAT"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "persodose-segmenter-checkpoint/1"
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


@dataclass(frozen=True)
class SegmenterTrainSettings:
    """Settings of :func:`train_segmenter`.

    Attributes:
        steps: optimiser steps in all.
        batch_size: patches per step (>= 2: oneDNN's fast path on the CPU).
        lr: initial Adam learning rate.
        val_every: steps between validations (an "epoch").
        seed: seed of the weights' initialisation and of the patch draws.
        threads: torch CPU threads (fix it for bitwise resumes); None: torch's default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        patch_voxels, channels, res_units, voxel_mm: the architecture (:class:`UNetConfig`).
        classes: organ names to learn; None: :data:`DEFAULT_CLASSES` found in the labels.
        samples_per_class: voxels kept per class and case to draw patch centres from.
        init_weights: fine-tune from these weights (registered name or ``.pt`` file); None: a
            random start. Their architecture must be this one (``channels``, ``res_units``,
            ``patch_voxels``, ``voxel_mm``) and ``classes``, when given, theirs.
    """

    steps: int = 2000
    batch_size: int = 2
    lr: float = 2e-3
    val_every: int = 250
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    patch_voxels: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    res_units: int = 2
    voxel_mm: float = 3.0
    classes: tuple[str, ...] | None = None
    samples_per_class: int = 20000
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.val_every < 1 or self.batch_size < 2 or self.samples_per_class < 1:
            raise InputError("steps, val_every and samples_per_class must be >= 1 and batch_size >= 2")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise InputError(f"lr must be in (0, 1), got {self.lr}")


@dataclass
class Case:
    """One labelled CT on the model grid, cropped to the body: ``hu`` (int16) and ``classes`` (uint8)."""

    id: str
    hu: np.ndarray
    classes: np.ndarray
    files: dict[str, str]


def _base_name(path: Path) -> str | None:
    for suf in _IMAGE_SUFFIXES:
        if path.name.endswith(suf):
            return path.name[: -len(suf)]
    return None


def find_pairs(images: str | Path, labels: str | Path) -> list[tuple[str, Path, Path]]:
    """``(name, image, labels)`` for every image in ``images`` with a label map of the same base name."""
    images, labels = Path(images), Path(labels)
    for d, opt in ((images, "--images"), (labels, "--labels")):
        if not d.is_dir():
            raise InputError(f"{opt} {d}: not a folder")
    lab = {_base_name(p): p for p in sorted(labels.iterdir()) if _base_name(p)}
    pairs, missing = [], []
    for p in sorted(images.iterdir()):
        name = _base_name(p)
        if name is None:
            continue
        (pairs.append((name, p, lab[name])) if name in lab else missing.append(name))
    if missing:
        raise InputError(f"{labels}: no label map for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (same base name as the image)")
    if not pairs:
        raise InputError(f"{images}: no image (.nii.gz, .nii, .mha, .nrrd)")
    return pairs


def _names(path: Path) -> dict[int, str]:
    side = Path(f"{path}.json")
    try:
        return {int(k): str(v) for k, v in json.loads(side.read_text()).items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: no readable label names {side} ({exc})") from None


def load_case(name: str, image: Path, labels: Path, config: UNetConfig,
              groups: Mapping[str, Sequence[str]] = DEFAULT_GROUPS) -> Case:
    """A pair read, resampled to the model voxel, cropped to the body and mapped to classes."""
    from persodose.dl.datasets import sha256_file
    from persodose.grid import Kind
    from persodose.io.image import read_image

    ct = read_image(image, kind=Kind.CT)
    lab = read_image(labels, kind=Kind.LABELS)
    names = _names(labels)
    ref = isotropic_reference(ct, config.voxel_mm)
    hu = np.asarray(ct.resample_to(ref, "linear").array, dtype=np.float32)
    lab_ref = np.asarray(lab.resample_to(ref, "nearest").array).astype(np.int64)
    box = body_box(hu, config.voxel_mm)
    cls = organ_classes(lab_ref[box], names, config.classes, groups)
    return Case(name, np.clip(np.round(hu[box]), -1024, 3071).astype(np.int16), cls,
                {"image": str(image), "image_sha256": sha256_file(image), "labels": str(labels),
                 "labels_sha256": sha256_file(labels)})


def _centres(case: Case, n_classes: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class (0..n_classes) up to ``k`` flat voxel indices of that class (empty if absent)."""
    flat = case.classes.reshape(-1)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n_classes + 2))
    out = []
    for c in range(n_classes + 1):
        idx = order[bounds[c]:bounds[c + 1]]
        out.append(idx if len(idx) <= k else rng.choice(idx, size=k, replace=False))
    return out


def _patch(case: Case, centre_flat: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.array(np.unravel_index(int(centre_flat), case.hu.shape))
    lo = c - p // 2
    x = np.full((p, p, p), -1024, np.int16)
    y = np.zeros((p, p, p), np.uint8)
    src = tuple(slice(max(0, a), min(n, a + p)) for a, n in zip(lo, case.hu.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    x[dst], y[dst] = case.hu[src], case.classes[src]
    return x, y


def dice_per_class(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> dict[int, float]:
    """Dice of classes 1..n present in ``ref`` (or in ``pred``: a false class scores 0)."""
    out = {}
    for c in range(1, n_classes + 1):
        a, b = pred == c, ref == c
        s = int(a.sum()) + int(b.sum())
        if s:
            out[c] = 2.0 * int(np.logical_and(a, b).sum()) / s
    return out


def _validate(model, config: UNetConfig, cases: list[Case], device) -> float:
    scores = []
    for case in cases:
        prob = predict_probabilities(model, config, case.hu.astype(np.float32), device=str(device))
        d = dice_per_class(np.argmax(prob, axis=0), case.classes, len(config.classes))
        scores.append(float(np.mean(list(d.values()))) if d else 0.0)
    model.train()
    return float(np.mean(scores))


def _batch(torch, cases, centres, rng, p: int, n: int, device):
    xs, ys = [], []
    for _ in range(n):
        case_i = int(rng.integers(len(cases)))
        present = [c for c, idx in enumerate(centres[case_i]) if len(idx)]
        c = present[int(rng.integers(len(present)))]
        x, y = _patch(cases[case_i], int(centres[case_i][c][int(rng.integers(len(centres[case_i][c])))]), p)
        xs.append(input_channels(x))
        ys.append(y[None])
    return (torch.from_numpy(np.stack(xs)).to(device), torch.from_numpy(np.stack(ys).astype(np.int64)).to(device))


def _config(settings: SegmenterTrainSettings, cases_classes: set[str]) -> UNetConfig:
    classes = settings.classes or tuple(c for c in DEFAULT_CLASSES if c in cases_classes)
    if not classes:
        raise InputError("none of the label names is a class to learn (give classes=...)")
    return UNetConfig(tuple(classes), tuple(settings.channels), settings.res_units, settings.patch_voxels,
                      settings.voxel_mm)


def _label_names_seen(pairs) -> set[str]:
    seen = set()
    for _, _, lab in pairs:
        for n in _names(lab).values():
            seen.add(n)
            seen.update(g for g, members in DEFAULT_GROUPS.items() if n in members)
    return seen


def _write_outputs(torch, out: Path, model_state, sidecar: dict, history: list[dict]) -> None:
    from persodose.dl.datasets import sha256_file
    from persodose.dl.train import _save
    from persodose.outputs import atomic_file

    _save(torch, {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
                  for k, v in model_state.items()}, out)
    sidecar = {**sidecar, "sha256": sha256_file(out), "size_bytes": out.stat().st_size}
    with atomic_file(Path(f"{out}.json")) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=1))
    with atomic_file(Path(f"{out}.loss.csv")) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "step", "train_loss", "val_mean_dice", "lr", "seconds"])
            w.writeheader()
            w.writerows(history)


def train_segmenter(images: str | Path, labels: str | Path, out: str | Path,
                    settings: SegmenterTrainSettings | None = None, *, val_images: str | Path | None = None,
                    val_labels: str | Path | None = None, resume: bool = False, command: str = "",
                    progress: Callable[[dict], None] | None = None) -> dict:
    """Train a builtin segmenter; returns the sidecar written beside ``out`` (see the module doc).

    Without ``val_images``/``val_labels`` the last case (by name) of ``images`` is the validation case.
    """
    import torch

    from persodose.dl.device import select_device
    from persodose.dl.train import _deterministic, _save, _seed_everything

    s = settings or SegmenterTrainSettings()
    out = Path(out)
    pairs = find_pairs(images, labels)
    if val_images is not None or val_labels is not None:
        if val_images is None or val_labels is None:
            raise InputError("give both --val-images and --val-labels, or neither")
        val_pairs = find_pairs(val_images, val_labels)
    else:
        if len(pairs) < 2:
            raise InputError("training needs at least 2 pairs (the last one validates), or --val-images/--val-labels")
        pairs, val_pairs = pairs[:-1], pairs[-1:]
    init = _init_model(s) if s.init_weights else None
    if init:
        s = init[3]
    config = init[1] if init else _config(s, _label_names_seen(pairs))
    device = select_device(s.device)
    t0 = time.time()
    cases = [load_case(*p, config) for p in pairs]
    val_cases = [load_case(*p, config) for p in val_pairs]
    log.info("segmenter training: %d training and %d validation cases loaded in %.0f s", len(cases),
             len(val_cases), time.time() - t0)
    with _deterministic(torch, s.threads) as threads:
        return _run(torch, s, config, cases, val_cases, device, out, threads, resume, command, progress,
                    _seed_everything, _save, init)


_ARCHITECTURE = ("channels", "res_units", "patch_voxels", "voxel_mm")


def _init_model(s: SegmenterTrainSettings):
    """``(state, config, provenance, settings)`` of ``s.init_weights``.

    The architecture is the weights' own: a setting of it left at its default takes their
    value (the returned settings say so); one set to something else is refused."""
    import dataclasses

    from persodose.segmentation.builtin import _sidecar as _sidecar_of
    from persodose.segmentation.builtin import load_model

    model, config, prov = load_model(s.init_weights, "cpu")
    theirs = {k: tuple(v) if k == "channels" else v for k, v in config.to_dict().items() if k in _ARCHITECTURE}
    default = SegmenterTrainSettings()
    for k, v in theirs.items():
        ours = tuple(getattr(s, k)) if k == "channels" else getattr(s, k)
        if ours != getattr(default, k) and ours != v:
            raise InputError(f"--init-weights {s.init_weights}: their {k} is {v}, the settings ask for {ours} "
                             f"(fine-tuning keeps the U-Net of the weights)")
    if s.classes is not None and tuple(s.classes) != tuple(config.classes):
        raise InputError(f"--init-weights {s.init_weights}: their classes are {', '.join(config.classes)}; "
                         f"fine-tuning keeps them (leave --classes out)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    side = _sidecar_of(Path(prov["weights_file"]))
    return state, config, {"weights": str(s.init_weights), "sha256": prov["sha256"],
                           "training_command": side.get("training_command"), "init_weights": side.get("init_weights")}, \
        dataclasses.replace(s, **theirs)


def _run(torch, s, config, cases, val_cases, device, out: Path, threads, resume, command, progress,
         seed_everything, save, init=None) -> dict:
    from monai.losses import DiceCELoss

    seed_everything(torch, s.seed)
    rng = np.random.default_rng(s.seed)
    centres = [_centres(c, len(config.classes), s.samples_per_class, rng) for c in cases]
    model = build_unet(config)
    if init is not None:
        model.load_state_dict(init[0])
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: max(0.0, 1.0 - k / s.steps) ** 0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    ck_path = Path(f"{out}.ckpt")
    step, history, best = 0, [], {"dice": -1.0, "state": None, "epoch": 0}
    if resume:
        if not ck_path.is_file():
            raise InputError(f"--resume: no checkpoint {ck_path} (train without --resume first)")
        try:
            ck = torch.load(ck_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise InputError(f"--resume: {ck_path} is not a readable checkpoint ({type(exc).__name__})") from None
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or ck.get("settings") != asdict(s):
            raise InputError(f"--resume: {ck_path} is not a checkpoint of these settings")
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        step, history, best = ck["step"], ck["history"], ck["best"]
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
    model.train()
    running, t_epoch = [], time.time()
    while step < s.steps:
        x, y = _batch(torch, cases, centres, rng, config.patch_voxels, s.batch_size, device)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        running.append(float(loss.detach()))
        if step % s.val_every == 0 or step == s.steps:
            dice = _validate(model, config, val_cases, device)
            row = {"epoch": len(history) + 1, "step": step, "train_loss": float(np.mean(running)),
                   "val_mean_dice": dice, "lr": float(opt.param_groups[0]["lr"]),
                   "seconds": round(time.time() - t_epoch, 1)}
            history.append(row)
            log.info("segmenter step %d/%d: train loss %.4f, validation mean Dice %.4f", step, s.steps,
                     row["train_loss"], dice)
            if dice > best["dice"]:
                best = {"dice": dice, "epoch": row["epoch"],
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            running, t_epoch = [], time.time()
            save(torch, {"format": CHECKPOINT_FORMAT, "settings": asdict(s), "model": model.state_dict(),
                         "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "history": history,
                         "best": best, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, ck_path)
            if progress:
                progress(row)
    sidecar = _sidecar(s, config, cases, val_cases, history, best, threads, command, out)
    if init is not None:
        sidecar["init_weights"] = init[2]
    _write_outputs(torch, out, best["state"], sidecar, history)
    return json.loads(Path(f"{out}.json").read_text())


def _sidecar(s, config, cases, val_cases, history, best, threads, command, out: Path) -> dict:
    from persodose.outputs import versions

    data = [{"id": c.id, "split": "train", **c.files} for c in cases] + \
           [{"id": c.id, "split": "val", **c.files} for c in val_cases]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return {
        "name": out.stem, "file": out.name, "network": "builtin-segmenter (MONAI UNet, residual units)",
        "training_command": command or "persodose.segmentation.training.train_segmenter",
        "seed": s.seed, "epochs": len(history), "epoch_steps": s.val_every,
        "final_validation_loss": 1.0 - float(best["dice"]),
        "loss_unit": "1 - mean Dice of the validation cases (whole-case sliding-window inference)",
        "best_epoch": int(best["epoch"]), "data_manifest": f"{len(cases)} training + {len(val_cases)} validation "
                                                            f"pairs, sha256 of the list {digest}",
        "data": data, "unet": config.to_dict(), "groups": {k: list(v) for k, v in DEFAULT_GROUPS.items()},
        "train_settings": {**asdict(s), "threads_used": threads}, "history": history, "versions": versions(),
        "description": f"residual U-Net, {len(config.classes)} organs at {config.voxel_mm:g} mm",
    }
