"""The ``builtin`` segmenter: a residual U-Net (MONAI) for the deliverable's organs, at 3 mm.

The SINFONIA deliverable D2.2 segments 19 organs from the CT with a residual U-Net (its
Table 1). This back-end is MONAI's ``UNet`` with residual units (Kerfoot et al. 2019), trained
by :mod:`persodose.segmentation.training` (``persodose train segmenter``) on any set of CT and
label NIfTI pairs. The shipped weights (``segmenter-virtual-3mm`` in
:data:`persodose.dl.weights_registry.MANIFEST_PATH`) were trained on **virtual patients**
(:mod:`persodose.phantoms.population`), not on real CTs: on a real CT they give a rough
model at best; a user trains their own weights on labelled real CTs with the same command and
passes them as ``--settings weights=PATH``.

What it does with a CT:

1. resample to the model's isotropic voxel (3 mm; linear), keep the bounding box of the
   body (:func:`persodose.segmentation.threshold.body_mask`) plus a margin: air costs nothing;
2. two input channels from HU (:func:`input_channels`): a wide window for bone and lung and a
   soft-tissue window (organs differ by tens of HU);
3. sliding-window inference over the box (MONAI ``sliding_window_inference``, windows of the
   training patch, Gaussian-weighted overlap), the most probable class per voxel;
4. the largest connected component of each single-structure organ (:data:`SINGLE_COMPONENT`),
   so that stray islands far from the organ are dropped (setting ``largest_component``);
5. labels back on the CT's own grid (nearest neighbour), ``{value: organ name}``.

Class names are persodose's organ names (those of :data:`persodose.phantoms.anatomy.LABELS`
and the population's added organs), so effective dose maps them onto ICRP 103 tissues
(:func:`persodose.risk.effective_dose.tissue_for_label`); the bone groups of a virtual patient
(skull, spine, pelvis, ribs, shoulder girdle, arm bones and the marrow inside) form one class
``bone``, as in the deliverable's Table 1 ("Bones"), and the proximal femora are
``femoral_head_left/right`` ("Femural Heads").

Sources:
    Y. Salimi, A. Akhavanallaf, Z. Mansouri, H. Zaidi, SINFONIA (Euratom grant 945196)
    deliverable D2.2 (2023), section 3.1 and Table 1 (19 organs, residual U-Net).
    E. Kerfoot et al., "Left-ventricle quantification using residual U-Net", STACOM 2018,
    LNCS 11395 (2019) 371-380 (the residual units of MONAI's ``UNet``).
    MONAI Consortium, MONAI: Medical Open Network for AI, ``monai.networks.nets.UNet`` and
    ``monai.inferers.sliding_window_inference``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.segmentation._settings import SegmenterSettings, setting
from persodose.segmentation.registry import register_segmenter

__all__ = ["DEFAULT_CLASSES", "DEFAULT_GROUPS", "SHIPPED_WEIGHTS", "BuiltinSettings", "UNetConfig",
           "input_channels", "build_unet", "organ_classes", "absorb_lesions", "isotropic_reference",
           "body_box", "keep_largest_components", "SINGLE_COMPONENT", "predict_probabilities", "load_model", "builtin_segmenter"]

#: The shipped weights' registry name.
SHIPPED_WEIGHTS = "segmenter-virtual-3mm"

#: Classes of the shipped model (value = index + 1): the deliverable's Table 1 organs that the
#: virtual population has, the lungs and the brain (dosimetry needs both).
DEFAULT_CLASSES: tuple[str, ...] = (
    "liver", "heart", "pancreas", "bone", "kidney_left", "kidney_right", "spleen", "bladder", "oesophagus",
    "femoral_head_left", "femoral_head_right", "spinal_cord", "aorta", "gall_bladder", "inferior_vena_cava",
    "colon", "portal_vein", "rectum", "stomach", "thymus", "small_intestine", "lung_left", "lung_right", "brain",
    "thyroid",
)

#: Label names gathered into one class (virtual patients' bone groups -> ``bone``).
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "bone": ("bone", "skull", "spine", "pelvis", "ribs", "shoulder_girdle", "arm_bones", "red_marrow"),
}

#: Classes that are one connected structure: only their largest connected component is kept
#: (:func:`keep_largest_components`); bone, the bowel and the thyroid (two lobes) may be several.
SINGLE_COMPONENT: frozenset[str] = frozenset({
    "liver", "heart", "pancreas", "kidney_left", "kidney_right", "spleen", "bladder", "oesophagus",
    "femoral_head_left", "femoral_head_right", "spinal_cord", "aorta", "gall_bladder", "inferior_vena_cava",
    "portal_vein", "rectum", "stomach", "thymus", "lung_left", "lung_right", "brain",
})

#: Soft-tissue window of the second input channel, HU (centre, half width).
SOFT_WINDOW_HU = (40.0, 200.0)


def input_channels(hu: np.ndarray) -> np.ndarray:
    """``(2, ...)`` float32 network input from HU: wide window (-1000..2000 HU, /1000) and
    soft-tissue window (:data:`SOFT_WINDOW_HU`, -1..1)."""
    hu = np.asarray(hu, dtype=np.float32)
    c, w = SOFT_WINDOW_HU
    wide = np.clip(hu, -1000.0, 2000.0) / 1000.0
    soft = (np.clip(hu, c - w, c + w) - c) / w
    return np.stack([wide, soft]).astype(np.float32)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a builtin model (stored in its sidecar, so weights rebuild their net).

    Attributes:
        classes: organ names, class value = position + 1 (0: everything else).
        channels: feature maps per level of the U-Net.
        res_units: residual units per level.
        patch_voxels: edge of the training patch (and of the inference window), voxels.
        voxel_mm: isotropic voxel of the model, mm.
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    channels: tuple[int, ...] = (16, 32, 64, 128)
    res_units: int = 2
    patch_voxels: int = 64
    voxel_mm: float = 3.0

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise InputError("a segmenter needs at least one class and no class twice")
        if len(self.channels) < 2 or min(self.channels) < 1 or self.res_units < 0:
            raise InputError("a U-Net needs at least 2 levels of >= 1 channel and res_units >= 0")
        if self.patch_voxels % 2 ** (len(self.channels) - 1):
            raise InputError(f"patch_voxels must be a multiple of {2 ** (len(self.channels) - 1)} "
                             f"(the U-Net's {len(self.channels) - 1} down-samplings), got {self.patch_voxels}")
        if not (0.5 <= self.voxel_mm <= 20.0):
            raise InputError(f"voxel_mm must be 0.5 to 20 mm, got {self.voxel_mm}")

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "channels": list(self.channels), "res_units": self.res_units,
                "patch_voxels": self.patch_voxels, "voxel_mm": self.voxel_mm}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        try:
            return cls(tuple(str(c) for c in d["classes"]), tuple(int(c) for c in d["channels"]),
                       int(d["res_units"]), int(d["patch_voxels"]), float(d["voxel_mm"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"segmenter sidecar: bad 'unet' entry ({exc})") from None


def build_unet(config: UNetConfig):
    """MONAI residual U-Net: 2 inputs (:func:`input_channels`), ``len(classes) + 1`` outputs."""
    from persodose._optional import optional_import

    UNet = optional_import("monai.networks.nets", "dl").UNet

    return UNet(spatial_dims=3, in_channels=2, out_channels=len(config.classes) + 1,
                channels=tuple(config.channels), strides=(2,) * (len(config.channels) - 1),
                num_res_units=config.res_units)


def absorb_lesions(labels: np.ndarray, names: Mapping[int, str]) -> np.ndarray:
    """Labels with every lesion (names ``lesion*``, necrotic cores too) given to the organ around it.

    A liver metastasis belongs to the liver's contour, a vertebral one to the bone; each lesion
    voxel takes the label of the nearest non-lesion voxel (Euclidean, in voxels).
    """
    from scipy import ndimage

    lesion_values = [v for v, n in names.items() if str(n).lower().startswith("lesion")]
    if not lesion_values:
        return labels
    is_lesion = np.isin(labels, lesion_values)
    if not is_lesion.any():
        return labels
    idx = ndimage.distance_transform_edt(is_lesion, return_distances=False, return_indices=True)
    out = labels.copy()
    out[is_lesion] = labels[tuple(i[is_lesion] for i in idx)]
    return out


def organ_classes(labels: np.ndarray, names: Mapping[int, str], classes: Sequence[str],
                  groups: Mapping[str, Sequence[str]] = DEFAULT_GROUPS) -> np.ndarray:
    """uint8 class map (value = position in ``classes`` + 1, 0 elsewhere) from a named label map.

    A label joins a class by its name, or by a name in that class's group (``groups``); lesions
    first join the organ around them (:func:`absorb_lesions`); other labels become 0.
    """
    if len(classes) > 254:
        raise InputError(f"at most 254 classes, got {len(classes)}")
    labels = absorb_lesions(np.asarray(labels), names)
    member = {}
    for i, c in enumerate(classes, start=1):
        member[c] = i
        for n in groups.get(c, ()):
            member.setdefault(n, i)
    lut_keys = np.array(sorted(int(v) for v in names), dtype=np.int64)
    lut_vals = np.array([member.get(str(names[int(v)]), 0) for v in lut_keys], dtype=np.uint8)
    out = np.zeros(labels.shape, dtype=np.uint8)
    if len(lut_keys):
        pos = np.searchsorted(lut_keys, labels)
        pos = np.clip(pos, 0, len(lut_keys) - 1)
        hit = lut_keys[pos] == labels
        out[hit] = lut_vals[pos[hit]]
    return out


def isotropic_reference(grid: Grid, voxel_mm: float) -> Grid:
    """An empty grid of ``voxel_mm`` voxels covering ``grid``'s extent (same origin corner and direction)."""
    sp = np.asarray(grid.spacing_zyx_mm, dtype=float)
    extent = sp * np.asarray(grid.shape)
    n = np.maximum(1, np.round(extent / voxel_mm)).astype(int)
    # keep the outer corner: first voxel centre half a new voxel inside the old corner
    corner_idx = np.full(3, -0.5)
    corner = grid.index_to_physical(corner_idx)
    first = corner + (grid.direction_xyz @ np.full(3, voxel_mm / 2.0))
    return Grid(np.zeros(tuple(n), np.uint8), (voxel_mm,) * 3, tuple(first), grid.direction_xyz, Kind.LABELS)


def body_box(hu: np.ndarray, voxel_mm: float, margin_voxels: int = 4) -> tuple[slice, slice, slice]:
    """Bounding box of the body contour (``threshold`` segmenter's :func:`body_mask`) plus a margin."""
    from persodose.segmentation.threshold import body_mask

    body = body_mask(hu, (voxel_mm,) * 3)
    if not body.any():
        raise InputError("no body found in the CT (nothing above -500 HU): is it a CT in HU?")
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        where = np.flatnonzero(body.any(axis=other))
        out.append(slice(max(0, where[0] - margin_voxels), min(hu.shape[ax], where[-1] + 1 + margin_voxels)))
    return tuple(out)


def _padded(x: np.ndarray, least: int, value: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """``x`` (C, D, H, W) padded at the end to at least ``least`` per spatial axis."""
    pads = [(0, 0)] + [(0, max(0, least - n)) for n in x.shape[1:]]
    keep = tuple([slice(None)] + [slice(0, n) for n in x.shape[1:]])
    return np.pad(x, pads, constant_values=value), keep


def predict_probabilities(model, config: UNetConfig, hu: np.ndarray, device: str = "cpu",
                          batch: int = 4, overlap: float = 0.25):
    """Class scores ``(K+1, D, H, W)`` (softmax, float32 numpy) of an HU volume on the model grid."""
    import torch
    from monai.inferers import sliding_window_inference

    p = config.patch_voxels
    x = input_channels(hu)
    x, keep = _padded(x, p, -1.0)  # air is -1 in both channels
    xt = torch.from_numpy(x[None]).to(device)
    model.eval()
    with torch.no_grad():
        logits = sliding_window_inference(xt, (p, p, p), batch, model, overlap=overlap, mode="gaussian")
        prob = torch.softmax(logits[0].float(), dim=0)
    return prob.cpu().numpy()[keep]


def keep_largest_components(classes: np.ndarray, names: Sequence[str],
                            single: frozenset[str] = SINGLE_COMPONENT) -> np.ndarray:
    """The class map with every class of ``single`` reduced to its largest 26-connected component
    (stray islands far from the organ become 0): the usual clean-up of a network's output."""
    from scipy import ndimage

    out = classes.copy()
    objects = ndimage.find_objects(classes.astype(np.int32), max_label=len(names))
    for i, name in enumerate(names, start=1):
        box = objects[i - 1]
        if name not in single or box is None:
            continue
        mask = classes[box] == i
        lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            sub = out[box]
            sub[mask & (lab != 1 + int(np.argmax(sizes)))] = 0
    return out


@dataclass(frozen=True)
class BuiltinSettings(SegmenterSettings):
    """Settings of the ``builtin`` segmenter."""

    weights: str = setting(SHIPPED_WEIGHTS, doc="shipped weights name or a .pt file of "
                                                "'persodose train segmenter' (its .json sidecar beside it)")
    device: str = setting("cpu", doc="cpu, cuda or cuda:N")
    overlap: float = setting(0.25, min=0.0, max=0.9, doc="overlap of the inference windows (fraction)")
    batch: int = setting(4, min=1, max=64, doc="windows per forward pass")
    largest_component: bool = setting(True, doc="keep only the largest connected part of each single-structure "
                                                "organ (liver, kidneys, lungs, ...)")


def _sidecar(path) -> dict:
    from pathlib import Path

    side = Path(f"{path}.json")
    try:
        doc = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"segmenter weights {path}: cannot read its sidecar {side} ({exc})") from None
    if "unet" not in doc:
        raise InputError(f"segmenter weights {path}: {side} is not a segmenter sidecar (no 'unet')")
    return doc


def load_model(weights: str = SHIPPED_WEIGHTS, device: str = "cpu"):
    """``(model, config, provenance)`` of shipped weights (by name) or a trained ``.pt`` file."""
    from persodose.dl.device import select_device
    from persodose.dl.weights_registry import load_weights

    loaded = load_weights(weights, device="cpu")
    config = UNetConfig.from_dict(_sidecar(loaded.path)["unet"])
    model = build_unet(config)
    try:
        model.load_state_dict({k: v.float() for k, v in loaded.state_dict.items()})
    except RuntimeError as exc:
        raise InputError(f"segmenter weights {loaded.path}: do not fit the U-Net of its sidecar "
                         f"({str(exc).splitlines()[0][:160]})") from None
    dev = select_device(device)
    return model.to(dev), config, {**loaded.provenance(), "unet": config.to_dict()}


def segment_hu_grid(model, config: UNetConfig, ct: Grid, device: str = "cpu", batch: int = 4,
                    overlap: float = 0.25, largest_component: bool = True) -> Grid:
    """The class map of ``ct`` (on the CT's own geometry), values as :attr:`UNetConfig.classes` + 1."""
    ref = isotropic_reference(ct, config.voxel_mm)
    hu = np.asarray(ct.resample_to(ref, "linear").array, dtype=np.float32)
    box = body_box(hu, config.voxel_mm)
    prob = predict_probabilities(model, config, hu[box], device=device, batch=batch, overlap=overlap)
    cls = np.zeros(hu.shape, dtype=np.uint8)
    cls[box] = np.argmax(prob, axis=0).astype(np.uint8)
    if largest_component:
        cls = keep_largest_components(cls, config.classes)
    on_model = ref.with_array(cls, Kind.LABELS)
    return on_model.resample_to(ct.with_array(np.zeros(ct.shape, np.uint8), Kind.LABELS), "nearest")


@register_segmenter("builtin", settings=BuiltinSettings, organs=DEFAULT_CLASSES, requires=("torch", "monai"),
                    extra="dl")
def builtin_segmenter(ct: Grid, settings: BuiltinSettings) -> tuple[Grid, dict[int, str]]:
    """Residual U-Net (MONAI) for 25 organs at 3 mm; shipped weights trained on virtual patients."""
    model, config, _ = load_model(settings.weights, settings.device)
    labels = segment_hu_grid(model, config, ct, settings.device, settings.batch, settings.overlap,
                             settings.largest_component)
    return labels, {i: c for i, c in enumerate(config.classes, start=1)}
