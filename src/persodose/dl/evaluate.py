"""Evaluation of a trained network on the ``test`` split of a dataset.

:func:`evaluate` runs the network on every test sample and scores each prediction against its
target, channel by channel, with the voxel metrics of :mod:`persodose.metrics.voxel` (MAE,
ME, MRAE %, RMSE, NRMSE, SSIM, PSNR; definitions and sources there: SINFONIA D2.2 and
DblurDoseNet, Li et al. 2022). This module only adapts arrays to those functions and
averages over the samples.

When the test shards carry the truth label map of each sample (``labels``, see
:mod:`persodose.dl.datasets`), two more groups of metrics are added:

* organ and lesion level, per target channel: the mean of the target and of the prediction
  over each labelled structure of a sample, ``RE = 100 (mean_pred - mean_ref) / mean_ref`` %
  and ``RAE = |RE|`` % (SINFONIA D2.2, "Organ-level dose evaluation"; computed by
  :func:`persodose.metrics.compare.organ_errors`), averaged per structure over the samples
  where it has at least ``min_voxels`` voxels; structures named ``lesion_...`` are lesions,
  summarised apart from the organs (mean RE, mean and largest RAE);
* segmentation, for target channels that are label maps (named ``labels``, ``label_map`` or
  ``segmentation``): the prediction rounded to whole labels against the target, Dice,
  Jaccard, precision and recall per label (:func:`persodose.metrics.segmentation.label_overlap`),
  averaged over the samples.

Outputs (:func:`write_evaluation`): ``metrics.json`` (summary, per-sample scores, weights and
data provenance) and ``metrics.md`` (markdown tables).
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
           "write_evaluation", "markdown_table", "structure_errors", "summarise_structures",
           "segmentation_scores", "summarise_segmentation", "SEGMENTATION_CHANNELS"]


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
        gamma_pass_percent: global gamma pass rate at 3 %/3 mm with a 10 % dose cut-off
            (:func:`persodose.metrics.gamma.gamma_pass_rate`, pymedphys), % of the target's voxels
            above the cut-off (NaN without the voxel size or for an all-zero target).
    """

    mae: float
    me: float
    mrae_percent: float
    rmse: float
    nrmse: float
    ssim: float
    psnr_db: float
    gamma_pass_percent: float = math.nan


#: Column titles of the markdown table, in :class:`VoxelScores` order.
TITLES = {"mae": "MAE", "me": "ME", "mrae_percent": "MRAE (%)", "rmse": "RMSE", "nrmse": "NRMSE",
          "ssim": "SSIM", "psnr_db": "PSNR (dB)", "gamma_pass_percent": "gamma 3 %/3 mm (%)"}

#: Gamma criteria of :func:`score_sample`: the DblurDoseNet paper's and the deliverable's
#: customary 3 % (global) / 3 mm with a 10 % lower dose cut-off.
GAMMA_CRITERIA = {"dose_percent": 3.0, "distance_mm": 3.0, "lower_percent_dose_cutoff": 10.0}


def _or_nan(fn, *args, **kw) -> float:
    try:
        return float(fn(*args, **kw))
    except InputError:  # e.g. an all-zero target: no relative error, no data range
        return math.nan


def _gamma(target: np.ndarray, prediction: np.ndarray, spacing_zyx_mm) -> float:
    """Gamma pass rate (:data:`GAMMA_CRITERIA`) of a prediction, or NaN where it is undefined."""
    from persodose.errors import GeometryError
    from persodose.grid import Kind
    from persodose.metrics.gamma import gamma_pass_rate

    if spacing_zyx_mm is None or not np.any(np.asarray(target) > 0):
        return math.nan
    try:
        return float(gamma_pass_rate(_grid(target, spacing_zyx_mm, Kind.DOSE), _grid(prediction, spacing_zyx_mm, Kind.DOSE),
                                     **GAMMA_CRITERIA))
    except (GeometryError, InputError):
        return math.nan


def score_sample(target: np.ndarray, prediction: np.ndarray, spacing_zyx_mm=None) -> VoxelScores:
    """Scores of one ``(D, H, W)`` prediction against its target (thin adapter to persodose.metrics).

    ``spacing_zyx_mm`` (the voxel size) is needed for the gamma pass rate only.
    """
    from persodose.errors import GeometryError
    from persodose.metrics import voxel

    try:
        ssim = voxel.ssim(target, prediction)
    except (GeometryError, InputError):
        ssim = math.nan
    return VoxelScores(mae=voxel.mae(target, prediction), me=voxel.me(target, prediction),
                       mrae_percent=_or_nan(voxel.mrae, target, prediction), rmse=voxel.rmse(target, prediction),
                       nrmse=_or_nan(voxel.nrmse, target, prediction), ssim=ssim,
                       psnr_db=_or_nan(voxel.psnr, target, prediction),
                       gamma_pass_percent=_gamma(target, prediction, spacing_zyx_mm))


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
        structures: per channel and structure, the organ/lesion summary rows of
            :func:`summarise_structures` (empty without labels).
        structure_summary: per channel, ``{"organs": {...}, "lesions": {...}}`` over structures.
        structures_per_sample: the rows of :func:`structure_errors` of every sample.
        segmentation: per segmentation channel and label, the mean overlap scores.
        segmentation_per_sample: their per-sample rows.
    """

    network: str
    kind: str
    n_samples: int
    channels: list[VoxelScores]
    per_sample: list[dict] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    structures: list[dict] = field(default_factory=list)
    structure_summary: dict = field(default_factory=dict)
    structures_per_sample: list[dict] = field(default_factory=list)
    segmentation: list[dict] = field(default_factory=list)
    segmentation_per_sample: list[dict] = field(default_factory=list)
    #: for the figure (not in the JSON): per channel, the first samples' central axial slices
    #: ``(patient, target, prediction)`` and a voxel subsample ``(target, prediction)``
    examples: list = field(default_factory=list, repr=False)
    scatter: list = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {"network": self.network, "kind": self.kind, "n_samples": self.n_samples,
               "channels": [dataclasses.asdict(c) for c in self.channels], "per_sample": self.per_sample,
               "provenance": self.provenance}
        if self.structures:
            out.update(structures=self.structures, structure_summary=self.structure_summary,
                       structures_per_sample=self.structures_per_sample)
        if self.segmentation:
            out.update(segmentation=self.segmentation, segmentation_per_sample=self.segmentation_per_sample)
        return out


#: Names of target channels that hold label maps (scored by overlap, not only voxel error).
SEGMENTATION_CHANNELS = ("labels", "label_map", "segmentation")


def _grid(array: np.ndarray, spacing_zyx_mm, kind) -> "Any":
    from persodose.grid import Grid

    return Grid(np.asarray(array), tuple(float(q) for q in spacing_zyx_mm), (0.0, 0.0, 0.0), np.eye(3), kind)


def structure_errors(target: np.ndarray, prediction: np.ndarray, labels: np.ndarray,
                     names: dict[int, str] | None = None, spacing_zyx_mm=(1.0, 1.0, 1.0),
                     min_voxels: int = 1) -> list[dict]:
    """Per-structure mean of target and prediction, RE % and RAE % of one ``(D, H, W)`` sample.

    A thin adapter to :func:`persodose.metrics.compare.organ_errors` (SINFONIA D2.2 organ
    dose = mean voxel value in the organ). Structures with fewer than ``min_voxels`` voxels
    in the sample are left out; RE is NaN where the target mean is 0.

    Returns:
        rows ``{"name", "label", "n_voxels", "reference_mean", "test_mean", "re_percent",
        "rae_percent", "lesion"}``.
    """
    from persodose.grid import Kind
    from persodose.metrics.compare import organ_errors

    lab = _grid(np.asarray(labels).astype(np.int64), spacing_zyx_mm, Kind.LABELS)
    ref, test = _grid(target, spacing_zyx_mm, Kind.SCALAR), _grid(prediction, spacing_zyx_mm, Kind.SCALAR)
    present = {int(v) for v in np.unique(lab.array)} - {0}
    nm = {v: (names or {}).get(v, f"label_{v}") for v in sorted(present)}
    rows = []
    for r in organ_errors(ref, test, lab, nm, percents=()):
        if r["n_voxels"] < min_voxels:
            continue
        rm = next(v for k, v in r.items() if k.startswith("reference_mean_"))
        tm = next(v for k, v in r.items() if k.startswith("test_mean_"))
        rows.append({"name": r["name"], "label": int(r["label"]), "n_voxels": int(r["n_voxels"]),
                     "reference_mean": rm, "test_mean": tm, "re_percent": r["re_percent"],
                     "rae_percent": r["rae_percent"], "lesion": str(r["name"]).startswith("lesion_")})
    return rows


def _nanmean(vals) -> float:
    a = np.asarray([v for v in vals if v is not None], dtype=float)
    a = a[~np.isnan(a)]
    return float(np.mean(a)) if a.size else math.nan


def _nanmax(vals) -> float:
    a = np.asarray([v for v in vals if v is not None], dtype=float)
    a = a[~np.isnan(a)]
    return float(np.max(a)) if a.size else math.nan


def summarise_structures(rows: list[dict]) -> tuple[list[dict], dict]:
    """Per (channel, structure) means over samples, and per channel the organ and lesion summaries.

    ``rows`` are :func:`structure_errors` rows with a ``channel`` key. Summary rows:
    ``{"channel", "name", "lesion", "n_samples", "mean_re_percent", "mean_rae_percent",
    "max_rae_percent"}``; the summary of a group is the mean over its structures of their mean
    RE and RAE, and the largest RAE of any sample (``n_structures`` structures).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r.get("channel", 0)), r["name"]), []).append(r)
    table = []
    for (c, name), rs in sorted(groups.items()):
        table.append({"channel": c, "name": name, "lesion": bool(rs[0]["lesion"]), "n_samples": len(rs),
                      "mean_re_percent": _nanmean(r["re_percent"] for r in rs),
                      "mean_rae_percent": _nanmean(r["rae_percent"] for r in rs),
                      "max_rae_percent": _nanmax(r["rae_percent"] for r in rs)})
    summary: dict = {}
    for c in sorted({t["channel"] for t in table}):
        summary[str(c)] = {}
        for group, is_lesion in (("organs", False), ("lesions", True)):
            ts = [t for t in table if t["channel"] == c and t["lesion"] == is_lesion]
            summary[str(c)][group] = {"n_structures": len(ts),
                                      "mean_re_percent": _nanmean(t["mean_re_percent"] for t in ts),
                                      "mean_rae_percent": _nanmean(t["mean_rae_percent"] for t in ts),
                                      "max_rae_percent": _nanmax(t["max_rae_percent"] for t in ts)}
    return table, summary


def segmentation_scores(target_labels: np.ndarray, predicted: np.ndarray, names: dict[int, str] | None = None,
                        spacing_zyx_mm=(1.0, 1.0, 1.0)) -> list[dict]:
    """Dice, Jaccard, precision and recall per label of one sample (the prediction rounded to
    whole non-negative labels), via :func:`persodose.metrics.segmentation.label_overlap`.

    Returns:
        rows ``{"name", "dice", "jaccard", "precision", "recall", "reference_volume_ml",
        "test_volume_ml"}`` for every label in either map.
    """
    from persodose.grid import Kind
    from persodose.metrics.segmentation import label_overlap

    ref = np.rint(np.asarray(target_labels, dtype=float)).astype(np.int64)
    pred = np.clip(np.rint(np.nan_to_num(np.asarray(predicted, dtype=float))), 0, 65535).astype(np.int64)
    values = (set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0}
    nm = {int(v): (names or {}).get(int(v), f"label_{int(v)}") for v in sorted(values)}
    scores = label_overlap(_grid(pred, spacing_zyx_mm, Kind.LABELS), _grid(ref, spacing_zyx_mm, Kind.LABELS), nm, nm)
    return [{"name": n, "dice": s.dice, "jaccard": s.jaccard, "precision": s.precision, "recall": s.recall,
             "reference_volume_ml": s.reference_volume_ml, "test_volume_ml": s.test_volume_ml}
            for n, s in scores.items()]


def summarise_segmentation(rows: list[dict]) -> list[dict]:
    """Mean Dice, Jaccard, precision and recall per (channel, label) over samples (NaN left out)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r.get("channel", 0)), r["name"]), []).append(r)
    return [{"channel": c, "name": n, "n_samples": len(rs),
             **{k: _nanmean(r[k] for r in rs) for k in ("dice", "jaccard", "precision", "recall")}}
            for (c, n), rs in sorted(groups.items())]


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


def _label_metrics(data, targets: np.ndarray, preds: np.ndarray, ids: list, min_voxels: int) -> dict:
    """Organ/lesion and segmentation results of the test split when its shards carry labels."""
    labels, names = data.opened.load_labels("test")
    if labels is None:
        return {}
    if labels.shape[0] != targets.shape[0] or labels.shape[1:] != targets.shape[2:]:
        raise InputError(f"dataset {data.path}: test labels of shape {labels.shape} for targets {targets.shape}")
    metas = data.opened.metas("test")
    channels = list((data.opened.manifest.get("channels") or {}).get("targets") or [])
    seg = {c for c, n in enumerate(channels) if str(n).lower() in SEGMENTATION_CHANNELS}
    rows, seg_rows = [], []
    for i in range(targets.shape[0]):
        spacing = (metas[i] if i < len(metas) else {}).get("spacing_zyx_mm") or (1.0, 1.0, 1.0)
        for c in range(targets.shape[1]):
            if c in seg:
                for r in segmentation_scores(targets[i, c], preds[i, c], names, spacing):
                    seg_rows.append({"patient": ids[i], "sample": i, "channel": c, **r})
                continue
            for r in structure_errors(targets[i, c], preds[i, c], labels[i], names, spacing, min_voxels):
                rows.append({"patient": ids[i], "sample": i, "channel": c, **r})
    table, summary = summarise_structures(rows)
    return {"structures": table, "structure_summary": summary, "structures_per_sample": rows,
            "segmentation": summarise_segmentation(seg_rows), "segmentation_per_sample": seg_rows}


def evaluate(network: str, test_dir: str | Path, weights: str | Path, *, expected_sha256: str | None = None,
             device: str = "auto", batch_size: int = 2, min_voxels: int = 1) -> EvaluationResult:
    """Run ``network`` with ``weights`` on the ``test`` split of ``test_dir`` and score it.

    ``min_voxels``: a structure enters the organ/lesion metrics of a sample only with at least
    this many voxels in it (labelled datasets only).

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
    metas = data.opened.metas("test")
    if spec.channel_window:  # each output voxel's channels are the voxels of one window: score each window
        per_sample = int(np.prod(targets.shape[2:]))
        targets, preds = (np.moveaxis(a, 1, -1).reshape(-1, 1, *spec.channel_window) for a in (targets, preds))
        ids = [i for i in ids for _ in range(per_sample)]
        metas = [m for m in metas for _ in range(per_sample)]
    per_channel: list[list[VoxelScores]] = [[] for _ in range(targets.shape[1])]
    rows = []
    for i in range(targets.shape[0]):
        spacing = (metas[i] if i < len(metas) else {}).get("spacing_zyx_mm")
        for c in range(targets.shape[1]):
            s = score_sample(targets[i, c], preds[i, c], spacing)
            per_channel[c].append(s)
            rows.append({"patient": ids[i], "sample": i, "channel": c, **dataclasses.asdict(s)})
    prov = {**loaded.provenance(), "data": data.describe()}
    result = EvaluationResult(spec.name, data.kind, int(targets.shape[0]), [summarise(p) for p in per_channel],
                              rows, prov, **_label_metrics(data, targets, preds, ids, int(min_voxels)))
    result.examples, result.scatter = _figure_data(targets, preds, ids)
    return result


def _figure_data(targets: np.ndarray, preds: np.ndarray, ids: list, n_examples: int = 3, n_points: int = 20000):
    """Central axial slices of the first samples and a fixed voxel subsample, per channel."""
    examples, scatter = [], []
    rng = np.random.default_rng(0)
    for c in range(targets.shape[1]):
        z = targets.shape[2] // 2
        examples.append([(ids[i], targets[i, c, z], preds[i, c, z]) for i in range(min(n_examples, targets.shape[0]))])
        t = targets[:, c].ravel()
        p = preds[:, c].ravel()
        pick = rng.choice(t.size, size=min(n_points, t.size), replace=False)
        scatter.append((t[pick], p[pick]))
    return examples, scatter


def _write_figure(result: EvaluationResult, path: Path) -> None:
    """``figures.png``: per channel, target / prediction / difference of the first test samples
    (central axial slice) and predicted against target voxel values."""
    from matplotlib.figure import Figure

    rows = sum(len(e) for e in result.examples)
    fig = Figure(figsize=(11.0, 2.6 * rows + 2.6), layout="constrained")
    grid = fig.add_gridspec(rows + 1, 4)
    r = 0
    for c, exs in enumerate(result.examples):
        for patient, t, p in exs:
            vmax = float(max(np.max(t), np.max(p))) or 1.0
            for k, (img, title) in enumerate(((t, "target"), (p, "prediction"))):
                ax = fig.add_subplot(grid[r, k])
                ax.imshow(img, cmap="magma", vmin=0.0, vmax=vmax)
                ax.set_title(f"{patient} ch {c}: {title}", fontsize=8)
                ax.axis("off")
            ax = fig.add_subplot(grid[r, 2])
            lim = float(np.max(np.abs(p - t))) or 1.0
            im = ax.imshow(p - t, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title("prediction - target", fontsize=8)
            ax.axis("off")
            fig.colorbar(im, ax=ax, shrink=0.8)
            r += 1
    for c, (t, p) in enumerate(result.scatter[: 4]):
        ax = fig.add_subplot(grid[rows, c])
        ax.plot(t, p, ",", alpha=0.3)
        hi = float(max(np.max(t), np.max(p))) or 1.0
        ax.plot([0, hi], [0, hi], "k-", lw=0.8)
        ax.set_xlabel("target", fontsize=8)
        ax.set_ylabel("prediction", fontsize=8)
        ax.set_title(f"channel {c}: {t.size} voxels", fontsize=8)
    fig.savefig(path, dpi=90)


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
    return intro + "\n".join([head, sep, *rows]) + "\n" + _structure_tables(result) + _segmentation_table(result)


def _structure_tables(result: EvaluationResult) -> str:
    """Organ and lesion tables (mean RE and RAE of the structure mean over samples) and summaries."""
    if not result.structures:
        return ""
    out = ["", "## Organs and lesions", "",
           "Mean over a structure's voxels in each sample; RE = 100 (prediction - target) / target, RAE = |RE|; "
           "means over the samples that hold the structure.", ""]
    for c, groups in result.structure_summary.items():
        for g in ("organs", "lesions"):
            s = groups[g]
            out.append(f"- channel {c}, {g}: {s['n_structures']} structures, mean RE {_fmt(s['mean_re_percent'])} %, "
                       f"mean RAE {_fmt(s['mean_rae_percent'])} %, largest RAE {_fmt(s['max_rae_percent'])} %")
    out += ["", "| channel | structure | samples | mean RE (%) | mean RAE (%) | max RAE (%) |", "|---|---|---|---|---|---|"]
    for t in sorted(result.structures, key=lambda t: (t["channel"], t["lesion"], t["name"])):
        out.append(f"| {t['channel']} | {t['name']} | {t['n_samples']} | {_fmt(t['mean_re_percent'])} | "
                   f"{_fmt(t['mean_rae_percent'])} | {_fmt(t['max_rae_percent'])} |")
    return "\n".join(out) + "\n"


def _segmentation_table(result: EvaluationResult) -> str:
    if not result.segmentation:
        return ""
    out = ["", "## Segmentation", "", "| channel | label | samples | Dice | Jaccard | precision | recall |",
           "|---|---|---|---|---|---|---|"]
    for t in result.segmentation:
        out.append(f"| {t['channel']} | {t['name']} | {t['n_samples']} | {_fmt(t['dice'])} | {_fmt(t['jaccard'])} | "
                   f"{_fmt(t['precision'])} | {_fmt(t['recall'])} |")
    return "\n".join(out) + "\n"


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def write_evaluation(result: EvaluationResult, out: str | Path) -> Path:
    """Write ``metrics.json``, ``metrics.md`` and ``figures.png`` into the folder ``out`` (atomically)."""
    from persodose.outputs import atomic_dir

    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(_json_safe(result.to_json()), indent=2) + "\n", encoding="utf-8")
        (tmp / "metrics.md").write_text(markdown_table(result), encoding="utf-8")
        if result.examples:
            _write_figure(result, tmp / "figures.png")
    return Path(out)
