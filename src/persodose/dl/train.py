"""One training loop for every registered network, resumable bit for bit.

:func:`train` fits a network of :mod:`persodose.dl.networks` to a dataset written by
``persodose dataset make`` (read by :func:`open_data`): Adam, the network's loss (MSE by
default) on inputs and targets divided by per-channel scales (the training split's root mean
square, saved in the weights: :func:`persodose.dl.networks.scaled`), the validation loss on the ``val`` split after every epoch, early stopping after
``patience`` epochs without improvement, optional reduce-on-plateau of the learning rate,
mixed precision (``torch.autocast``, bfloat16) on CUDA only.

After every epoch a checkpoint is written atomically (model, optimizer, scheduler, the RNG
states of torch, numpy, Python and the data loader, epoch, history, best weights), so that
``resume=True`` continues a stopped run and gives the same result as an uninterrupted one:
bitwise on the CPU, where deterministic algorithms are switched on for the run and the
number of threads is fixed (recorded in the checkpoint).

Outputs beside the weights file ``OUT`` (the state dict of the best validation epoch,
``torch.save``): ``OUT.json`` (the fields of
:class:`~persodose.dl.weights_registry.WeightsEntry` and how the weights were made),
``OUT.loss.csv`` and ``OUT.loss.png`` (loss curves) and the checkpoint ``OUT.ckpt``.

Data in memory or streamed: when the train and val splits together exceed
``memory_budget_mb`` (as float32 arrays), the samples are read from the shards on demand
(:class:`persodose.dl.datasets.ShardSamples`, one HDF5 chunk per sample) instead of being
loaded; the batches, the channel scales (:func:`persodose.dl.networks.channel_rms`, summed
shard by shard in both cases) and so the trained weights are the same bits either way.

Progress: a rich bar (steps, elapsed, ETA) on a terminal, plain log lines elsewhere
(:func:`persodose.progress.progress`), besides one log line per epoch.

Dataset format (``persodose-dataset/1``): a folder with ``manifest.json`` =
``{"format", "kind", "patients": [{"id", "seed", "split", "shard", "n", "sha256"}],
"input_shape": [C, D, H, W], "target_shape": [C', D, H, W]}`` and HDF5 shards holding
``inputs`` (N, C, D, H, W) and ``targets`` (N, C', D, H, W), float32. One shard per patient. :func:`open_data` opens it with
:func:`persodose.dl.datasets.open_dataset`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from persodose.errors import InputError
from persodose.outputs import atomic_file

__all__ = ["CHECKPOINT_FORMAT", "DatasetOnDisk", "TrainSettings",
           "TrainResult", "train", "weights_entry", "output_paths", "batches", "checkpoint_settings",
           "open_data", "check_dataset_for"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "persodose-checkpoint/1"


# --------------------------------------------------------------------------- dataset reader
@dataclass(frozen=True)
class DatasetOnDisk:
    """A dataset folder (its manifest read and checked; arrays read on demand).

    Attributes:
        path: the folder.
        kind: dataset kind (the networks' ``dataset_kind``).
        patients: manifest entries (``id``, ``split``, ``shard``, ``n`` ...), in manifest order.
        input_shape: ``(C, D, H, W)`` of one input sample.
        target_shape: ``(C', D, H, W)`` of one target sample.
        manifest_sha256: SHA-256 of ``manifest.json``.
    """

    path: Path
    kind: str
    patients: tuple
    input_shape: tuple
    target_shape: tuple
    manifest_sha256: str
    opened: Any = field(repr=False, compare=False)  #: the persodose.dl.datasets.Dataset

    def split_ids(self, split: str) -> list[str]:
        return [str(p["id"]) for p in self.patients if p["split"] == split]

    def load_split(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(inputs (N, C, D, H, W), targets (N, C', D, H, W), patient id of each sample)``, float32.

        Raises:
            InputError: no patient in ``split``, a missing, corrupt or mis-shaped shard.
        """
        chosen = [p for p in self.patients if p["split"] == split]
        if not chosen:
            raise InputError(f"dataset {self.path}: no patient in the {split!r} split")
        inputs, targets = self.opened.load_split(split)  # persodose.dl.datasets reads its own format
        ids = [str(p["id"]) for p in chosen for _ in range(int(p["n"]))]
        return self._checked(split, np.asarray(inputs, np.float32), np.asarray(targets, np.float32), ids)

    def _checked(self, split: str, inputs: np.ndarray, targets: np.ndarray, ids: list[str]):
        if inputs.shape[0] != len(ids) or targets.shape[0] != len(ids):
            raise InputError(f"dataset {self.path}: the {split!r} split holds {inputs.shape[0]} samples, "
                             f"the manifest says {len(ids)}")
        if inputs.shape[1:] != self.input_shape or targets.shape[1:] != self.target_shape:
            raise InputError(f"dataset {self.path}: shards hold {list(inputs.shape[1:])} / {list(targets.shape[1:])}"
                             f", the manifest says {list(self.input_shape)} / {list(self.target_shape)}")
        if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(targets))):
            raise InputError(f"dataset {self.path}: the {split!r} split holds NaN or infinite values")
        return inputs, targets, ids

    def describe(self) -> dict[str, Any]:
        """Kind, manifest checksum and the patients with their splits (for the weights sidecar)."""
        return {"path": str(self.path), "kind": self.kind, "manifest_sha256": self.manifest_sha256,
                "input_shape": list(self.input_shape), "target_shape": list(self.target_shape),
                "patients": [{"id": str(p["id"]), "split": p["split"]} for p in self.patients]}


def open_data(path: str | Path) -> DatasetOnDisk:
    """The dataset at ``path``, opened by :func:`persodose.dl.datasets.open_dataset` (the reader
    of ``persodose dataset make``, which checks every shard's SHA-256 and shape), with the
    checks training needs (splits, sample counts).
    """
    from persodose.dl.datasets import SPLITS, open_dataset
    from persodose.dl.weights_registry import sha256_file

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"dataset {root}: no such folder")
    ds = open_dataset(root)
    try:
        patients = tuple(dict(p) for p in ds.patients)
        for p in patients:
            if p["split"] not in SPLITS or int(p["n"]) < 1:
                raise ValueError(f"patient {p.get('id')!r}: split must be one of {SPLITS} and n >= 1")
        shapes = tuple(int(v) for v in ds.input_shape), tuple(int(v) for v in ds.target_shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"dataset {root}: malformed manifest ({type(exc).__name__}: {exc})") from None
    return DatasetOnDisk(root, str(ds.kind), patients, shapes[0], shapes[1], sha256_file(root / "manifest.json"),
                         opened=ds)


def check_dataset_for(spec, data: DatasetOnDisk, split: str) -> None:
    """Refuse a dataset of another kind, shapes that do not fit, or an empty ``split``."""
    from persodose.dl.networks import check_shapes

    if data.kind != spec.dataset_kind:
        raise InputError(f"dataset {data.path} is of kind {data.kind!r}; network {spec.name!r} trains on "
                         f"{spec.dataset_kind!r}")
    check_shapes(spec, data.input_shape, data.target_shape, where=f"dataset {data.path}")
    if not data.split_ids(split):
        raise InputError(f"dataset {data.path}: no patient in the {split!r} split; network {spec.name!r} needs one")


# --------------------------------------------------------------------------- settings, result
@dataclass(frozen=True)
class TrainSettings:
    """Settings of a training run.

    Attributes:
        epochs: epochs to reach in total (a resumed run continues up to it).
        batch_size: samples per step, >= 2 (a batch of 1 leaves oneDNN's fast 3-D path).
        lr: Adam learning rate.
        seed: seed of torch, numpy, Python and the data loader.
        patience: stop after this many epochs without a better validation loss; None: never.
        plateau_factor: reduce-on-plateau factor of the learning rate (0 < f < 1); None: off.
        plateau_patience: epochs without improvement before the learning rate is reduced.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: CPU threads of torch during the run (None: as it is; recorded either way).
        amp: mixed precision (bfloat16 autocast), used on CUDA only.
        memory_budget_mb: above this size of the train and val splits (float32, MB) the data
            are streamed from the shards instead of loaded (0: always stream). It does not
            change the result, so a run may be resumed with another budget.
    """

    epochs: int = 10
    batch_size: int = 2
    lr: float = 1e-3
    seed: int = 0
    patience: int | None = None
    plateau_factor: float | None = None
    plateau_patience: int = 2
    device: str = "auto"
    threads: int | None = None
    amp: bool = True
    memory_budget_mb: float = 2048.0

    def __post_init__(self) -> None:
        from persodose.dl.device import parse_device

        if self.epochs < 1 or self.batch_size < 2:
            raise InputError(f"epochs must be >= 1 and batch size >= 2, got {self.epochs}, {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.seed < 0:
            raise InputError(f"learning rate must be positive and seed >= 0, got {self.lr}, {self.seed}")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"patience must be >= 1, got {self.patience}")
        if self.plateau_factor is not None and not (0 < self.plateau_factor < 1):
            raise InputError(f"plateau factor must lie in (0, 1), got {self.plateau_factor}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")
        if not (math.isfinite(self.memory_budget_mb) and self.memory_budget_mb >= 0):
            raise InputError(f"memory budget must be a finite number of MB >= 0, got {self.memory_budget_mb}")
        parse_device(self.device)


@dataclass
class TrainResult:
    """What a training run made.

    Attributes:
        weights: the weights file (state dict of the best validation epoch).
        sidecar: its JSON sidecar (WeightsEntry fields and provenance).
        checkpoint: the last checkpoint.
        history: one row per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``lr``.
        best_epoch: the epoch whose weights were written (1-based).
        final_validation_loss: validation loss of the written weights.
        stopped_early: whether the patience ran out.
        state_dict: the written state dict (tensors).
    """

    weights: Path
    sidecar: Path
    checkpoint: Path
    history: list[dict]
    best_epoch: int
    final_validation_loss: float
    stopped_early: bool
    state_dict: Any = field(default=None, repr=False)


def output_paths(out: str | Path) -> dict[str, Path]:
    """The files written beside the weights file ``out``."""
    o = Path(out)
    return {"weights": o, "sidecar": Path(f"{o}.json"), "csv": Path(f"{o}.loss.csv"),
            "png": Path(f"{o}.loss.png"), "checkpoint": Path(f"{o}.ckpt")}


def batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of ``n`` samples; a last batch of 1 is merged into the one before."""
    out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(out) > 1 and out[-1].stop - out[-1].start == 1:
        out[-2] = slice(out[-2].start, n)
        out.pop()
    return out


# --------------------------------------------------------------------------- torch state
@contextlib.contextmanager
def _deterministic(torch, threads: int | None) -> Iterator[int]:
    """Deterministic algorithms and a fixed thread count for the block; restored after."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        torch.set_num_threads(old_threads)


def _rng_state(torch, loader_gen) -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "loader": loader_gen.get_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(torch, loader_gen, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(torch, seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _loss_function(torch, name: str):
    return {"mse": torch.nn.functional.mse_loss, "l1": torch.nn.functional.l1_loss,
            "smooth_l1": torch.nn.functional.smooth_l1_loss}[name]


# --------------------------------------------------------------------------- the loop
@dataclass
class _Run:
    """Everything a step needs (built once per run)."""

    torch: Any
    spec: Any
    network_settings: Any
    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    loader_gen: Any
    val: Any  # callable: iterator of (x, y) validation batches, always the same ones
    device: Any
    loss_fn: Any
    amp: bool
    batch_size: int
    memory_format: Any
    streamed: bool = False
    sources: tuple = ()  # ShardSamples to close at the end
    init: dict | None = None  # provenance of the initial weights of a fine-tuning run


def _normalised(r: _Run, x):
    """The model's normalised output on a batch; only the inner slices for a network with a depth margin."""
    m = r.spec.depth_margin
    return r.model.normalised(x, margin=m) if m else r.model.normalised(x)


def _inner(r: _Run, y):
    """The target slices the loss compares (all but ``depth_margin`` at each end of D)."""
    m = r.spec.depth_margin
    return y[:, :, m:y.shape[2] - m] if m else y


def _train_epoch(r: _Run, step=None) -> float:
    torch = r.torch
    r.model.train()
    total, count = 0.0, 0
    for x, y in r.loader:
        x, y = x.to(r.device, memory_format=r.memory_format), y.to(r.device)
        r.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=r.amp):
            loss = r.loss_fn(_normalised(r, x).float(), _inner(r, y) / r.model.target_scale)
        loss.backward()
        r.optimizer.step()
        total += float(loss.detach()) * x.shape[0]
        count += x.shape[0]
        if step is not None:
            step()
    return total / count


def _val_loss(r: _Run) -> float:
    torch = r.torch
    r.model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in r.val():
            x, y = x.to(r.device, memory_format=r.memory_format), y.to(r.device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=r.amp):
                pred = _normalised(r, x).float()
            total += float(r.loss_fn(pred, _inner(r, y) / r.model.target_scale)) * x.shape[0]
            n += x.shape[0]
    return total / n


def _checkpoint(r: _Run, epoch: int, history: list, best: dict, stopped: bool, settings: TrainSettings,
                data: DatasetOnDisk, threads: int) -> dict:
    return {"format": CHECKPOINT_FORMAT, "network": r.spec.name,
            "network_settings": dataclasses.asdict(r.network_settings),
            "train_settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "epochs"},
            "data": {"kind": data.kind, "patients": data.describe()["patients"]},
            "model": r.model.state_dict(), "optimizer": r.optimizer.state_dict(),
            "scheduler": r.scheduler.state_dict() if r.scheduler is not None else None,
            "rng": _rng_state(r.torch, r.loader_gen), "epoch": epoch, "history": history,
            "best": best, "stopped_early": stopped, "threads": threads, "init": r.init}


def _save(torch, obj: Any, path: Path) -> None:
    """``torch.save`` atomically; through a buffer, so that the bytes do not depend on the
    temporary file's name (torch names the archive's folder after the file)."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_file(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _read_checkpoint(torch, path: Path, spec, network_settings, settings: TrainSettings,
                     data: DatasetOnDisk) -> dict:
    """The checkpoint at ``path``, checked to belong to this network, data and settings."""
    ck = _load_checkpoint(path)
    if ck["network"] != spec.name or ck["network_settings"] != dataclasses.asdict(network_settings):
        raise InputError(f"checkpoint {path} is of network {ck['network']!r} {ck['network_settings']}, "
                         f"not {spec.name!r} {dataclasses.asdict(network_settings)}; cannot resume")
    if ck["data"] != {"kind": data.kind, "patients": data.describe()["patients"]}:
        raise InputError(f"checkpoint {path} was trained on other data (kind or patients differ); cannot resume")
    mine = {k: v for k, v in dataclasses.asdict(settings).items() if k != "epochs"}
    diff = sorted(k for k in mine if k not in ("patience", "device", "memory_budget_mb")
                  and ck["train_settings"].get(k) != mine[k])
    if diff:
        theirs = ", ".join(f"{k}={ck['train_settings'].get(k)}" for k in diff)
        raise InputError(f"checkpoint {path}: {', '.join(diff)} differ from the checkpoint's "
                         f"({theirs}); cannot resume")
    return ck


def _split_chunks(data: DatasetOnDisk, split: str, x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
    """In-memory arrays of a split cut back into its shards (for :func:`channel_rms`)."""
    counts = [int(p["n"]) for p in data.patients if p["split"] == split]
    cut = np.cumsum(counts)[:-1]
    return np.split(x, cut), np.split(y, cut)


def _streamed_sources(data: DatasetOnDisk):
    """The train and val :class:`ShardSamples`, and the train split's channel RMS, in one pass
    over the shards (one in memory at a time) that also checks every value finite."""
    from persodose.dl.datasets import ShardSamples
    from persodose.dl.networks import ChannelRMS

    tr, va = ShardSamples(data.opened, "train"), ShardSamples(data.opened, "val")
    acc = (ChannelRMS(), ChannelRMS())
    for src in (tr, va):
        for x, y in src.iter_shards():
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise InputError(f"dataset {data.path}: the {src.split_name!r} split holds NaN or infinite values")
            if src is tr:
                acc[0].add(x)
                acc[1].add(y)
    return tr, va, (acc[0].value(), acc[1].value())


def _data_sources(torch, data: DatasetOnDisk, settings: TrainSettings):
    """``(train source, val batches callable, train channel scales (in, out), streamed, sources)``."""
    from persodose.dl.datasets import ShardSamples

    n_tr = len(ShardSamples(data.opened, "train"))
    if n_tr < 2:
        raise InputError(f"dataset {data.path}: the train split holds {n_tr} sample; at least 2 are needed")
    size = ShardSamples(data.opened, "train").nbytes + ShardSamples(data.opened, "val").nbytes
    if size > settings.memory_budget_mb * 2 ** 20:
        tr, va, scales = _streamed_sources(data)
        val_batches = [list(range(s.start, s.stop)) for s in batches(len(va), settings.batch_size)]

        def val():
            return iter(torch.utils.data.DataLoader(va, batch_sampler=val_batches, num_workers=0))

        return tr, val, scales, True, (tr, va)
    x_tr, y_tr, _ = data.load_split("train")
    x_va, y_va, _ = data.load_split("val")
    xv, yv = torch.from_numpy(x_va), torch.from_numpy(y_va)

    def val():
        return ((xv[s], yv[s]) for s in batches(xv.shape[0], settings.batch_size))

    from persodose.dl.networks import channel_rms

    xs, ys = _split_chunks(data, "train", x_tr, y_tr)
    scales = (channel_rms(xs), channel_rms(ys))
    return torch.utils.data.TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)), val, scales, False, ()


def _build_run(torch, spec, network_settings, settings: TrainSettings, data: DatasetOnDisk, device,
               init_state: dict | None = None) -> _Run:
    train_src, val, scales, streamed, sources = _data_sources(torch, data, settings)
    loader_gen = _seed_everything(torch, settings.seed)
    from persodose.dl.networks import apply_scales, scaled

    model = scaled(spec.builder(network_settings), spec.in_channels, spec.out_channels)  # seeded init
    if spec.scale_rule is not None:
        scales = spec.scale_rule(np.asarray(scales[0], np.float64).copy(), np.asarray(scales[1], np.float64).copy())
    apply_scales(model, *scales)
    if init_state is not None:  # fine-tuning: the given weights and their own scales (the same function at step 0)
        model.load_state_dict(init_state)
    model.to(device)
    fmt = torch.channels_last_3d if (device.type == "cpu" and spec.channels_last_cpu) else torch.contiguous_format
    model.to(memory_format=fmt)
    n_tr = len(train_src)
    loader = torch.utils.data.DataLoader(train_src, batch_size=settings.batch_size, shuffle=True, generator=loader_gen,
                                         num_workers=0, drop_last=(n_tr % settings.batch_size == 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = None
    if settings.plateau_factor is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=settings.plateau_factor,
                                                               patience=settings.plateau_patience)
    return _Run(torch, spec, network_settings, model, optimizer, scheduler, loader, loader_gen, val, device,
                _loss_function(torch, spec.loss), bool(settings.amp and device.type == "cuda"), settings.batch_size,
                fmt, streamed, sources)


def train(network: str, data_dir: str | Path, out: str | Path, settings: TrainSettings | None = None, *,
          network_settings: Any = None, resume: bool = False, checkpoint: str | Path | None = None,
          init_weights: str | Path | None = None, command: str = "", after_epoch=None,
          show_progress: bool = True) -> TrainResult:
    """Train ``network`` on the dataset at ``data_dir``; write the weights ``out`` and its sidecars.

    Args:
        network: a registered network name (:func:`persodose.dl.networks.available_networks`).
        data_dir: dataset folder (``train`` and ``val`` splits needed).
        out: weights file to write (``.pt``); see :func:`output_paths` for the others.
        settings: :class:`TrainSettings` (default: its defaults).
        network_settings: the network's settings (instance or mapping).
        resume: continue from the checkpoint (default ``OUT.ckpt``) up to ``settings.epochs``.
        checkpoint: the checkpoint file (default ``OUT.ckpt``).
        init_weights: fine-tuning (transfer learning): start from these weights (a registered
            name or a file, checksum verified) instead of a random initialisation, with their
            own input and target scales, so that the network computes at step 0 exactly what the
            given weights compute; a fresh optimiser. Recorded in the sidecar. A resumed run
            takes its weights from the checkpoint, which records the initial weights too.
        command: the command line, recorded in the sidecar.
        after_epoch: ``callback(epoch, history)`` after each checkpoint (tests interrupt here).
        show_progress: a progress bar of the steps (:func:`persodose.progress.progress`).

    Raises:
        InputError: data of another kind or shape, no train/val split, a checkpoint of another
            network, data or settings.
    """
    from persodose.dl.device import select_device
    from persodose.dl.networks import get_network

    settings = settings or TrainSettings()
    spec = get_network(network)
    net_settings = spec.settings(network_settings)
    data = open_data(data_dir)
    check_dataset_for(spec, data, "train")
    check_dataset_for(spec, data, "val")
    paths = output_paths(out)
    ck_path = Path(checkpoint) if checkpoint is not None else paths["checkpoint"]
    torch = __import__("torch")
    device = select_device(settings.device)
    with _deterministic(torch, settings.threads) as threads:
        ck = _read_checkpoint(torch, ck_path, spec, net_settings, settings, data) if resume else None
        init = _init_state(torch, spec, net_settings, init_weights) if (init_weights and ck is None) else None
        r = _build_run(torch, spec, net_settings, settings, data, device, init[1] if init else None)
        r.init = ck.get("init") if ck is not None else (init[0] if init else None)
        if init is not None:  # how the given weights do on this validation split, before any step
            r.init["validation_loss_before"] = _val_loss(r)
        try:
            history, best, stopped = _epochs(r, ck, settings, data, threads, ck_path, after_epoch, show_progress)
        finally:
            for src in r.sources:
                src.close()
    if best["model"] is None:  # every validation loss was NaN: the run diverged
        raise InputError(f"training of {spec.name!r} diverged (validation loss not finite); try a smaller --lr")
    return _write_outputs(torch, paths, spec, net_settings, settings, data, history, best, stopped, ck_path,
                          command, threads, str(device), r.init)


def _init_state(torch, spec, network_settings, init_weights: str | Path) -> tuple[dict, dict]:
    """``(provenance, state dict)`` of the initial weights of a fine-tuning run, checked to fit the network."""
    from persodose.dl.networks import scaled
    from persodose.dl.weights_registry import load_weights

    w = load_weights(init_weights)
    probe = scaled(spec.builder(network_settings), spec.in_channels, spec.out_channels)
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in w.state_dict.items()}
    if want != have:
        bad = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise InputError(f"--init-weights {init_weights}: not weights of {spec.name!r} with settings "
                         f"{dataclasses.asdict(network_settings)} ({len(bad)} tensor(s) differ, e.g. {bad[0]})")
    prov = {"file": str(w.path), "sha256": w.sha256, "name": w.entry.name if w.entry is not None else None}
    return prov, dict(w.state_dict)


def _epochs(r: _Run, ck, settings: TrainSettings, data: DatasetOnDisk, threads: int, ck_path: Path, after_epoch,
            show_progress: bool):
    """The epochs of a run (from a checkpoint ``ck`` when resuming): ``(history, best, stopped)``."""
    torch, model = r.torch, r.model
    history: list[dict] = []
    best = {"epoch": 0, "val_loss": math.inf, "model": None}
    stopped, start = False, 0
    if ck is not None:
        if ck["threads"] != threads:
            log.warning("resuming with %d threads; the checkpoint was made with %d: results may differ "
                        "in the last bits", threads, ck["threads"])
        model.load_state_dict(ck["model"])
        r.optimizer.load_state_dict(ck["optimizer"])
        if r.scheduler is not None:
            r.scheduler.load_state_dict(ck["scheduler"])
        _set_rng_state(torch, r.loader_gen, ck["rng"])
        history, best, stopped, start = list(ck["history"]), dict(ck["best"]), bool(ck["stopped_early"]), ck["epoch"]
    steps = len(r.loader)
    total = max(settings.epochs - start, 0) * steps
    how = "streamed from the shards" if r.streamed else "in memory"
    with _progress_bar(show_progress, f"training {r.spec.name} ({how})", total) as update:
        done = [0]

        def step():
            done[0] += 1
            update(done[0], total)

        for epoch in range(start + 1, settings.epochs + 1):
            if stopped:
                break
            train_loss = _train_epoch(r, step)
            val_loss = _val_loss(r)
            if r.scheduler is not None:
                r.scheduler.step(val_loss)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "lr": float(r.optimizer.param_groups[0]["lr"])})
            if val_loss < best["val_loss"]:
                best = {"epoch": epoch, "val_loss": val_loss,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            stopped = settings.patience is not None and epoch - best["epoch"] >= settings.patience
            log.info("epoch %d/%d: train loss %.6g, val loss %.6g", epoch, settings.epochs, train_loss, val_loss)
            _save(torch, _checkpoint(r, epoch, history, best, stopped, settings, data, threads), ck_path)
            if after_epoch is not None:
                after_epoch(epoch, history)
    return history, best, stopped


@contextlib.contextmanager
def _progress_bar(show: bool, description: str, total: int):
    if not show or total <= 0:
        yield lambda done, tot: None
        return
    from persodose.progress import progress

    with progress(description, total, unit="steps") as update:
        yield update


# --------------------------------------------------------------------------- outputs
def _write_outputs(torch, paths, spec, net_settings, settings, data, history, best, stopped, ck_path,
                   command, threads, device, init: dict | None = None) -> TrainResult:
    from persodose.dl.weights_registry import sha256_file

    if init and command and "--init-weights" not in command:  # a resumed fine-tuning run: say where it started
        command = f"{command} --init-weights {init['file']}"
    state = {k: v.contiguous() for k, v in best["model"].items()}
    _save(torch, state, paths["weights"])
    _write_curves(paths, history, spec.loss)
    sha, size = sha256_file(paths["weights"]), paths["weights"].stat().st_size
    described = data.describe()
    sidecar = {
        "name": paths["weights"].name.split(".")[0] or spec.name, "file": paths["weights"].name,
        "sha256": sha, "size_bytes": size,
        "training_command": command or f"persodose train {spec.name} --data {data.path} --out {paths['weights']}",
        "seed": settings.seed, "epochs": len(history), "final_validation_loss": float(best["val_loss"]),
        "network": spec.name, "description": f"{spec.name} trained on {data.kind} ({len(data.patients)} patients)",
        "data_manifest": f"{data.path / 'manifest.json'} sha256 {data.manifest_sha256} (kind {data.kind})",
        "best_epoch": int(best["epoch"]), "stopped_early": bool(stopped), "loss": spec.loss,
        "loss_unit": "normalised: prediction and target divided by target_scale (train-split RMS per channel)",
        "input_scale": state["input_scale"].flatten().tolist(), "target_scale": state["target_scale"].flatten().tolist(),
        "network_settings": dataclasses.asdict(net_settings), "train_settings": dataclasses.asdict(settings),
        "data": described, "history": history, "checkpoint": str(ck_path), "threads": threads, "device": device,
        "torch": torch.__version__, **_data_geometry(data),
        "initialised_from": init,
    }
    with atomic_file(paths["sidecar"]) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return TrainResult(paths["weights"], paths["sidecar"], ck_path, history, int(best["epoch"]),
                       float(best["val_loss"]), bool(stopped), state)


def _data_geometry(data: DatasetOnDisk) -> dict:
    """The dataset kind's settings and the voxel size of its samples (``spacing_zyx_mm`` of the first
    training example's meta, when the kind records it), for the sidecar: a network is used at
    the voxel size it was trained at."""
    out: dict[str, Any] = {"dataset_settings": data.opened.settings}
    metas = data.opened.metas("train")
    sp = metas[0].get("spacing_zyx_mm") if metas else None
    if sp:
        out["spacing_zyx_mm"] = [float(v) for v in sp]
        if max(sp) - min(sp) <= 1e-6 * max(sp):
            out["voxel_mm"] = float(sp[0])
    return out


def _write_curves(paths, history: list[dict], loss: str) -> None:
    with atomic_file(paths["csv"]) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_loss", "lr"])
            w.writeheader()
            w.writerows(history)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.5), layout="constrained")
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({loss})")
    if all(h["train_loss"] > 0 and h["val_loss"] > 0 for h in history):
        ax.set_yscale("log")
    ax.legend()
    with atomic_file(paths["png"]) as tmp:
        fig.savefig(tmp, dpi=100)


def weights_entry(sidecar: str | Path):
    """The :class:`~persodose.dl.weights_registry.WeightsEntry` of a training sidecar (to register it)."""
    from persodose.dl.weights_registry import WeightsEntry

    raw = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    names = {f.name for f in dataclasses.fields(WeightsEntry)}
    return WeightsEntry(**{k: v for k, v in raw.items() if k in names})


def checkpoint_settings(path: str | Path) -> dict[str, Any]:
    """The training settings stored in a checkpoint (all but ``epochs``), to resume with them.

    Raises:
        InputError: no such file, or not a persodose checkpoint.
    """
    return dict(_load_checkpoint(path)["train_settings"])


def _load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's content (tensors and plain values only: ``weights_only=True``)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--resume: no checkpoint {p} (train without --resume first)")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"checkpoint {p}: not a readable persodose checkpoint ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {p}: not a persodose checkpoint")
    return ck
