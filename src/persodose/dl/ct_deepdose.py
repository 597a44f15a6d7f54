"""Network ``ct-deepdose``: the SINFONIA CT-dose residual network, and the whole-body map it makes.

The network (SINFONIA D2.2 section 2.3): 20 convolutions without pooling: one 3x3x3, then three
groups of three residual blocks of two 3x3x3 convolutions with dilations 1, 2 and 4 (6 layers
each, a residual connection every two layers), a 1x1x1 convolution and a 1x1x1 **linear** head.
That is MONAI's ``HighResNet`` (Li et al. 2017) with its last block (batch norm and ReLU, for
segmentation) replaced by a plain convolution, which a regression needs. Feature widths are
settings: the deliverable's are not stated; MONAI's defaults (16, 32, 64, head 80) cost about
12x the default here (8, 8, 8, head 16), which is what a 2-core CPU can train and run over a
whole-body scan (docs/validation_dl.md gives the scale).

Inputs (``ct-sp`` dataset kind): density (g/cm3) and SP_uniform x CF, both on the position's
slab; output SP_MC. The core predicts a log-correction ``h`` of the uniform map:
``SP = SP_uniform x CF x exp(h)`` inside the body (density >= 0.05 g/cm3), 0 outside, so that an
untrained network (``h = 0``; the head starts at zero) gives the cylinder map, and the network
learns the patient's departure from water. It sees ``log`` of the uniform map (dose spans four
decades over a slab).

Whole body (:func:`whole_body_dose`): every focal-spot position's slab is predicted (batches of
positions, the body's bounding box in-plane), extended beyond the slab's ``depth`` slices by the
cylinder map's tail scaled per in-plane voxel by the prediction's ratio to the cylinder map in
the slab's end slices (the scatter tails are smooth; about 10 % of a position's energy lies
outside 33 slices at 5 mm), and summed with each position's source photons (tube current).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from persodose.dl.networks import register_network
from persodose.errors import InputError

__all__ = ["CTDeepDoseSettings", "ct_deepdose", "predict_positions", "whole_body_dose", "TAIL_SLICES",
           "source_photons_per_position"]

#: End slices of a predicted slab whose ratio to the cylinder map scales the tail beyond it.
TAIL_SLICES = 2


@dataclass(frozen=True)
class CTDeepDoseSettings:
    """Widths of ``ct-deepdose`` (the layer structure is fixed, module doc).

    Attributes:
        width_1, width_2, width_4: features of the residual groups of dilation 1, 2 and 4.
        head: features of the 1x1x1 convolution before the linear head.
    """

    width_1: int = 8
    width_2: int = 8
    width_4: int = 8
    head: int = 16

    def __post_init__(self) -> None:
        if min(self.width_1, self.width_2, self.width_4, self.head) < 1 or \
                max(self.width_1, self.width_2, self.width_4, self.head) > 256:
            raise InputError("ct-deepdose widths must lie within 1..256")


@functools.lru_cache(maxsize=None)
def _class():
    import torch
    from monai.networks.nets import HighResNet
    from torch import nn

    class CTDeepDose(nn.Module):
        """``SP = u exp(h(rho, log u))`` in the body; ``h`` a HighResNet with a linear head."""

        def __init__(self, s: CTDeepDoseSettings):
            super().__init__()
            params = ({"name": "conv_0", "n_features": s.width_1, "kernel_size": 3},
                      {"name": "res_1", "n_features": s.width_1, "kernels": (3, 3), "repeat": 3},
                      {"name": "res_2", "n_features": s.width_2, "kernels": (3, 3), "repeat": 3},
                      {"name": "res_3", "n_features": s.width_4, "kernels": (3, 3), "repeat": 3},
                      {"name": "conv_1", "n_features": s.head, "kernel_size": 1},
                      {"name": "conv_2", "kernel_size": 1})
            self.net = HighResNet(spatial_dims=3, in_channels=2, out_channels=1, layer_params=params)
            head = nn.Conv3d(s.head, 1, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.net.blocks[-1] = head  # linear regression head (MONAI's ends in BN + ReLU)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rho, u = x[:, 0:1], x[:, 1:2]
            feats = torch.cat([rho, torch.log(u.clamp_min(1e-6)) / 4.0], dim=1)
            h = self.net(feats).clamp(-8.0, 4.0)
            return u * torch.exp(h) * (rho >= 0.05).to(u.dtype)

    return CTDeepDose


def _scale_rule(s_in, s_out):
    """Density stays in g/cm3; the uniform channel takes the target's scale (the output is it times a factor)."""
    s_in[0] = 1.0
    s_in[1] = s_out[0]
    return s_in, s_out


@register_network("ct-deepdose", dataset_kind="ct-sp", in_channels=2, out_channels=1, settings=CTDeepDoseSettings,
                  loss="mse", min_spatial=3, channels_last_cpu=True, scale_rule=_scale_rule,
                  summary="SINFONIA CT dose: density + rotated SP_uniform x CF -> SP_MC (HighResNet, linear head)")
def ct_deepdose(settings: CTDeepDoseSettings):
    """SINFONIA CT-dose network (HighResNet of 20 convolutions, dilations 1/2/4, linear head)."""
    return _class()(settings)


# --------------------------------------------------------------------------- whole body
def _bbox(density: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    body = (density >= 0.05).any(axis=0)
    ys, xs = np.nonzero(body)
    if ys.size == 0:
        raise InputError("the density map holds no body voxel")
    ny, nx = body.shape
    return (slice(max(0, ys.min() - margin), min(ny, ys.max() + margin + 1)),
            slice(max(0, xs.min() - margin), min(nx, xs.max() + margin + 1)))


def predict_positions(model, density, positions, indices, umap, depth: int, tail_depth: int = 0, batch: int = 2,
                      device: str = "cpu"):
    """Yield ``(index, inputs, SP_DL slab Gy/photon)`` per position, ``inputs`` those of
    :func:`persodose.ct.deepdose.position_inputs` over ``max(depth, tail_depth)`` slices cut to
    the body's bounding box (plus 3 voxels) in-plane, the slab their central ``depth`` slices."""
    import torch

    from persodose.ct.deepdose import position_inputs

    ys, xs = _bbox(np.asarray(density.array))
    unit = umap.unit_gy
    full = max(int(depth), int(tail_depth))
    off = (full - int(depth)) // 2
    idx = [int(i) for i in indices]
    for start in range(0, len(idx), int(batch)):
        group = idx[start:start + int(batch)]
        inputs = []
        for i in group:
            inputs.append(position_inputs(density, positions, i, umap, full, box=(ys, xs)))
        x = np.stack([np.stack([p["density"][off:off + depth], p["uniform"][off:off + depth] / unit]) for p in inputs])
        t = torch.from_numpy(x).to(device)
        if device == "cpu":
            t = t.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            y = model(t).float().cpu().numpy()[:, 0] * unit
        for p, i, yi in zip(inputs, group, y):
            yield i, p, yi


def _end_ratio(pred: np.ndarray, uni: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Per in-plane voxel, the prediction over the cylinder map in end slices (``(k, ny, nx)``
    each); columns without body or without dose there take the end's overall ratio."""
    p, u = pred.sum(axis=0), uni.sum(axis=0)
    ok = body.any(axis=0) & (u > 0)
    overall = float(p[ok].sum() / u[ok].sum()) if ok.any() and u[ok].sum() > 0 else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, p / np.where(ok, u, 1.0), overall)
    return np.clip(r, 0.0, 10.0)


def _accumulate(total: np.ndarray, weight: np.ndarray, p: dict, pred: np.ndarray, depth: int, box) -> None:
    """Add one position to each ``total[k]`` with ``weight[k]``: its slab, and beyond it (when
    ``p`` spans more slices) the cylinder map x CF scaled by :func:`_end_ratio` of the slab's
    :data:`TAIL_SLICES` end slices."""
    ys, xs = box
    full = p["density"].shape[0]
    off = (full - depth) // 2
    kz, vz = p["z_index"], p["valid"][:, 0, 0]
    body = p["density"] >= 0.05
    slab = slice(off, off + depth)
    rows = np.flatnonzero(vz[slab]) + off
    contrib = [(kz[rows], pred[rows - off])]
    if off > 0:
        uni = p["uniform"]
        for rows_t, end in ((np.arange(0, off), slice(0, TAIL_SLICES)), (np.arange(off + depth, full),
                                                                          slice(depth - TAIL_SLICES, depth))):
            rows_t = rows_t[vz[rows_t]]
            if rows_t.size:
                ratio = _end_ratio(pred[end], uni[slab][end], body[slab][end])
                contrib.append((kz[rows_t], uni[rows_t] * ratio[None] * body[rows_t]))
    for k in range(total.shape[0]):
        sub = total[k, :, ys, xs]  # a view
        for z, d in contrib:
            sub[z] += weight[k] * d


def whole_body_dose(model, density, positions, umap, weights, depth: int, tail_depth: int = 0, batch: int = 2,
                    device: str = "cpu", progress=None) -> np.ndarray:
    """WBDM_DL: ``sum_i weights[i] x SP_DL_i`` on the density's grid (Gy when the weights are
    source photons per position), each slab extended to ``tail_depth`` slices (module doc).

    Args:
        model: a trained scaled ``ct-deepdose`` (eval mode).
        density: the patient's density on the cubic dose grid.
        positions: the scan's positions; ``weights`` (N,) their source photons, or (K, N) for K
            maps of the same predictions at once (e.g. two tube-current profiles; then (K, ...)).
        umap: SP_uniform of the beam, covering ``max(depth, tail_depth)`` slices.
        depth: slices of a slab (odd); ``tail_depth``: slices with the tails (0: none).
        progress: ``progress(done, total)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    n = len(positions)
    if w.shape[1] != n:
        raise InputError(f"{w.shape[1]} weights for {n} source positions")
    total = np.zeros((w.shape[0],) + tuple(density.shape), dtype=np.float64)
    box = _bbox(np.asarray(density.array))
    for k, (i, p, pred) in enumerate(predict_positions(model, density, positions, range(n), umap, depth, tail_depth,
                                                       batch, device)):
        _accumulate(total, w[:, i], p, pred, int(depth), box)
        if progress is not None:
            progress(k + 1, n)
    return total[0] if single else total


def source_photons_per_position(calibration, acq, positions, fixed_current: bool = False) -> np.ndarray:
    """Source photons of every position of the calibrated scan (:mod:`persodose.ct.dose`):
    ``N_rot x rel(z_i) / (n_per_rotation x n_start_angles)``; with ``fixed_current`` every position
    carries the mean (rel = 1)."""
    n_rot_pos = positions.n_per_rotation * positions.n_start_angles
    rel = np.ones(len(positions)) if fixed_current else acq.relative_current_at(positions.table_z_mm)
    return calibration.source_photons_per_rotation * np.asarray(rel, dtype=np.float64) / n_rot_pos


# --------------------------------------------------------------------------- weights for a scan
@dataclass
class CTDeepDoseModel:
    """A loaded ``ct-deepdose`` and the beam it was trained for (its sidecar's dataset settings).

    Attributes:
        model: the scaled network, eval mode, on ``device``.
        name: the weights' name or file; provenance: what the result records of them.
        kvp, bowtie, voxel_mm, collimation_mm: the training beam and dose voxel.
        depth: slab slices; uniform_depth: slices of the cylinder map (and of the tails);
        uniform_photons: photons of the cylinder map (the training's, so the cache is shared).
        batch: positions per network pass; warnings: one line each (e.g. another collimation).
    """

    model: object
    name: str
    provenance: dict
    kvp: float
    bowtie: str
    voxel_mm: float
    collimation_mm: float
    depth: int
    uniform_depth: int
    uniform_photons: int
    device: str = "cpu"
    batch: int = 2
    warnings: list = None


def _beam_of(side: dict) -> dict:
    from persodose.ct.deepdose import UNIFORM_DEPTH
    from persodose.dl.dataset_kinds.ct_sp import CTSPSettings

    d = {**CTSPSettings().__dict__, **(side.get("dataset_settings") or {})}
    return {"kvp": float(d["kvp"]), "bowtie": str(d["bowtie"]), "voxel_mm": float(d["voxel_mm"]),
            "collimation_mm": float(d["total_collimation_mm"]), "depth": int(d["depth"]),
            "uniform_depth": max(UNIFORM_DEPTH, int(d["depth"])), "uniform_photons": int(d["uniform_photons"])}


def shipped_weights() -> dict:
    """``{kVp: registered name}`` of the shipped ``ct-deepdose`` weights."""
    from persodose.dl.evaluate import _sidecar
    from persodose.dl.weights_registry import list_weights

    out = {}
    for e in list_weights():
        if e.network == "ct-deepdose":
            out[_beam_of(_sidecar(e.path()) or {})["kvp"]] = e.name
    return dict(sorted(out.items()))


def select_weights(acq, voxel_mm: float, weights: str | None = None, device: str = "cpu") -> CTDeepDoseModel:
    """The ``ct-deepdose`` weights for the scan ``acq`` (given, or the shipped ones of its kVp).

    Raises:
        InputError: no weights for the scan's kVp, or weights for another kVp, bowtie or voxel.
    """
    from persodose.dl.device import select_device
    from persodose.dl.evaluate import _load_model, _sidecar

    kvp = float(acq.kvp)
    if not weights:
        have = shipped_weights()
        match = [n for k, n in have.items() if abs(k - kvp) < 0.5]
        if not match:
            listed = f"shipped: {', '.join(f'{k:g}' for k in have)} kV" if have else "none are shipped"
            raise InputError(f"no ct-deepdose weights for {kvp:g} kV ({listed}); use --method mc, or give --weights "
                             "trained with validation/train_ct_deepdose.py")
        weights = match[0]
    _, model, loaded, side = _load_model("ct-deepdose", weights, None, "cpu")
    side = side or _sidecar(loaded.path) or {}
    beam = _beam_of(side)
    if abs(beam["kvp"] - kvp) >= 0.5:
        raise InputError(f"ct-deepdose weights {weights} are for {beam['kvp']:g} kV, the scan is {kvp:g} kV")
    if beam["bowtie"] != acq.bowtie:
        raise InputError(f"ct-deepdose weights {weights} are for the {beam['bowtie']} bowtie, the scan uses {acq.bowtie}; "
                         "use --method mc")
    if abs(beam["voxel_mm"] - float(voxel_mm)) > 1e-6:
        raise InputError(f"ct-deepdose weights {weights} work on a {beam['voxel_mm']:g} mm dose grid, not "
                         f"{float(voxel_mm):g} mm (give --dose-voxel-mm {beam['voxel_mm']:g})")
    notes = []
    if abs(beam["collimation_mm"] - float(acq.total_collimation_mm)) > 0.5:
        notes.append(f"ct-deepdose was trained at {beam['collimation_mm']:g} mm collimation, the scan has "
                     f"{float(acq.total_collimation_mm):g} mm (its cylinder map is this scan's; not validated)")
    dev = select_device(device)
    return CTDeepDoseModel(model.eval().to(dev), str(weights), loaded.provenance(), device=str(dev), warnings=notes,
                           **beam)
