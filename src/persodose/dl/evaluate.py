"""Evaluation of a trained network on the ``test`` split of a dataset.

:func:`evaluate` runs the network on every test sample and scores each prediction against its
target, channel by channel, with the voxel metrics of :mod:`persodose.metrics.voxel` (MAE,
ME, MRAE %, RMSE, NRMSE, SSIM, PSNR; definitions and sources there: SINFONIA D2.2 and
DblurDoseNet, Li et al. 2022). This module only adapts arrays to those functions and
averages over the samples; organ metrics come with the real networks.

Outputs (:func:`write_evaluation`): ``metrics.json`` (summary, per-sample scores, weights and
data provenance) and ``metrics.md`` (a markdown table).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persodose.errors import InputError

__all__ = ["VoxelScores", "EvaluationResult", "score_sample", "summarise", "predict", "evaluate",
           "write_evaluation", "markdown_table"]


@dataclass(frozen=True)
class VoxelScores:
    """Voxel metrics of one prediction (or their mean over samples), prediction minus target.

    Attributes:
        mae: mean absolute error, target unit.
        me: mean error, target unit.
        mrae_percent: mean relative absolute error over voxels above 1 % of the target maximum, %
            (NaN when no voxel exceeds it).
        rmse: root mean square error, target unit.
        nrmse: RMSE / RMS of the target (DblurDoseNet's normalisation), dimensionless.
        ssim: structural similarity, dimensionless (NaN for grids under 3 voxels per axis).
        psnr_db: peak signal-to-noise ratio, dB (inf for a perfect prediction).
    """

    mae: float
    me: float
    mrae_percent: float
    rmse: float
    nrmse: float
    ssim: float
    psnr_db: float


#: Column titles of the markdown table, in :class:`VoxelScores` order.
TITLES = {"mae": "MAE", "me": "ME", "mrae_percent": "MRAE (%)", "rmse": "RMSE", "nrmse": "NRMSE",
          "ssim": "SSIM", "psnr_db": "PSNR (dB)"}


def _or_nan(fn, *args, **kw) -> float:
    try:
        return float(fn(*args, **kw))
    except InputError:  # e.g. an all-zero target: no relative error, no data range
        return math.nan


def score_sample(target: np.ndarray, prediction: np.ndarray) -> VoxelScores:
    """Scores of one ``(D, H, W)`` prediction against its target (thin adapter to persodose.metrics.voxel)."""
    from persodose.errors import GeometryError
    from persodose.metrics import voxel

    try:
        ssim = voxel.ssim(target, prediction)
    except (GeometryError, InputError):
        ssim = math.nan
    return VoxelScores(mae=voxel.mae(target, prediction), me=voxel.me(target, prediction),
                       mrae_percent=_or_nan(voxel.mrae, target, prediction), rmse=voxel.rmse(target, prediction),
                       nrmse=_or_nan(voxel.nrmse, target, prediction), ssim=ssim,
                       psnr_db=_or_nan(voxel.psnr, target, prediction))


def summarise(scores: list[VoxelScores]) -> VoxelScores:
    """Mean of each metric over the samples (NaN entries left out; inf kept for PSNR)."""
    out = {}
    for name in TITLES:
        vals = np.array([getattr(s, name) for s in scores], dtype=float)
        vals = vals[~np.isnan(vals)]
        out[name] = float(np.mean(vals)) if vals.size else math.nan
    return VoxelScores(**out)


@dataclass
class EvaluationResult:
    """Scores of a network on a test split.

    Attributes:
        network: network name.
        kind: dataset kind.
        n_samples: test samples scored.
        channels: per target channel, the mean :class:`VoxelScores` over the samples.
        per_sample: one row per sample and channel (``patient``, ``sample``, ``channel`` and the scores).
        provenance: weights file, checksum, data manifest.
    """

    network: str
    kind: str
    n_samples: int
    channels: list[VoxelScores]
    per_sample: list[dict] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"network": self.network, "kind": self.kind, "n_samples": self.n_samples,
                "channels": [dataclasses.asdict(c) for c in self.channels], "per_sample": self.per_sample,
                "provenance": self.provenance}


def predict(model, inputs: np.ndarray, batch_size: int = 2, device: str = "cpu", channels_last: bool = False
            ) -> np.ndarray:
    """The network's outputs for ``inputs`` (N, C, D, H, W), float32, in batches (>= 2 where possible)."""
    import torch

    from persodose.dl.device import select_device
    from persodose.dl.train import batches

    dev = select_device(device)
    fmt = torch.channels_last_3d if (dev.type == "cpu" and channels_last) else torch.contiguous_format
    model = model.to(dev, memory_format=fmt).eval()
    outs = []
    with torch.no_grad():
        for s in batches(inputs.shape[0], max(2, int(batch_size))):
            x = torch.from_numpy(np.ascontiguousarray(inputs[s])).to(dev, memory_format=fmt)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                outs.append(model(x).float().cpu().numpy())
    return np.concatenate(outs).astype(np.float32)


def _sidecar(path: Path) -> dict | None:
    side = Path(f"{path}.json")
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"weights sidecar {side}: not readable JSON") from None


def _load_model(network: str, weights: str | Path, expected_sha256: str | None, device: str):
    """``(spec, model, verified weights, sidecar)``: the network with the weights loaded, checksum checked.

    The expected SHA-256 is ``expected_sha256`` or, for a user's file, the one in its sidecar
    ``FILE.json`` when there is one.
    """
    from persodose.dl.networks import build_network
    from persodose.dl.weights_registry import load_weights, verify_weights

    v = verify_weights(weights)  # finds the file (registered name or path) and checks a registered one
    side = _sidecar(v.path) if v.entry is None else None
    want = expected_sha256 or (side or {}).get("sha256")
    if side is not None and side.get("network") and side["network"] != network:
        raise InputError(f"weights {weights} are for network {side['network']!r}, not {network!r}")
    if v.entry is not None and v.entry.network and v.entry.network != network:
        raise InputError(f"weights {weights} are for network {v.entry.network!r}, not {network!r}")
    loaded = load_weights(weights, want, device="cpu")
    spec, _, model = build_network(network, (side or {}).get("network_settings"))
    if not isinstance(loaded.state_dict, dict):
        raise InputError(f"weights {loaded.path}: not a state dict")
    try:
        model.load_state_dict(loaded.state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"weights {loaded.path} do not fit network {network!r} ({first[:160]})") from None
    return spec, model, loaded, side


def evaluate(network: str, test_dir: str | Path, weights: str | Path, *, expected_sha256: str | None = None,
             device: str = "auto", batch_size: int = 2) -> EvaluationResult:
    """Run ``network`` with ``weights`` on the ``test`` split of ``test_dir`` and score it.

    Raises:
        InputError: unknown network, data of another kind or shape, no test split, a missing
            or corrupt weights file (checksum), weights of another network.
    """
    from persodose.dl.train import check_dataset_for, open_data

    spec, model, loaded, _ = _load_model(network, weights, expected_sha256, device)
    data = open_data(test_dir)
    check_dataset_for(spec, data, "test")
    inputs, targets, ids = data.load_split("test")
    preds = predict(model, inputs, batch_size, device, spec.channels_last_cpu)
    per_channel: list[list[VoxelScores]] = [[] for _ in range(targets.shape[1])]
    rows = []
    for i in range(targets.shape[0]):
        for c in range(targets.shape[1]):
            s = score_sample(targets[i, c], preds[i, c])
            per_channel[c].append(s)
            rows.append({"patient": ids[i], "sample": i, "channel": c, **dataclasses.asdict(s)})
    prov = {**loaded.provenance(), "data": data.describe()}
    return EvaluationResult(spec.name, data.kind, int(targets.shape[0]), [summarise(p) for p in per_channel],
                            rows, prov)


def _fmt(v: float) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}"


def markdown_table(result: EvaluationResult) -> str:
    """The mean scores as a markdown table, one row per target channel."""
    head = "| channel | " + " | ".join(TITLES.values()) + " |"
    sep = "|" + "---|" * (len(TITLES) + 1)
    rows = [f"| {c} | " + " | ".join(_fmt(getattr(s, k)) for k in TITLES) + " |"
            for c, s in enumerate(result.channels)]
    intro = (f"# {result.network} on the test split ({result.kind}, {result.n_samples} samples)\n\n"
             "Means over the samples; errors are prediction minus target, in the target's unit.\n\n")
    return intro + "\n".join([head, sep, *rows]) + "\n"


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def write_evaluation(result: EvaluationResult, out: str | Path) -> Path:
    """Write ``metrics.json`` and ``metrics.md`` into the folder ``out`` (atomically)."""
    from persodose.outputs import atomic_dir

    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(_json_safe(result.to_json()), indent=2) + "\n", encoding="utf-8")
        (tmp / "metrics.md").write_text(markdown_table(result), encoding="utf-8")
    return Path(out)
