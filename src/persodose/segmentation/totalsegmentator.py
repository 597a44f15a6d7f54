"""TotalSegmentator as a persodose segmenter (``"totalsegmentator"``, extra ``totalseg``).

Runs the ``total`` task of TotalSegmentator (Wasserthal et al. 2023; 117 classes in version 2)
through its Python API, :func:`totalsegmentator.python_api.totalsegmentator`, on the CT held in
memory (a ``nibabel.Nifti1Image`` in, a multi-label ``Nifti1Image`` out: ``ml=True``), and maps
its classes onto persodose's organ names (:data:`TOTAL_TO_PERSODOSE`), so that the result can
be used as ``--labels`` and its names map onto ICRP 103 tissues through
:func:`persodose.risk.effective_dose.tissue_for_label`.

Defaults: the fast 3 mm model (``fast=True``) on the CPU (``device="cpu"``), per-organ
statistics off (``statistics=False``), TotalSegmentator's usage statistics switched off in its
configuration (``send_usage_stats: false`` in ``$TOTALSEG_HOME_DIR/config.json``, written through
its own ``totalsegmentator.config.set_config_key``) before the call.

Nothing is downloaded at run time: before calling TotalSegmentator the weights are looked for
where it looks for them (``$TOTALSEG_WEIGHTS_PATH`` if set, else
``$TOTALSEG_HOME_DIR/nnunet/results``, ``TOTALSEG_HOME_DIR`` defaulting to
``~/.totalsegmentator``; TotalSegmentator's ``config.get_weights_dir``): the fast model is the
nnU-Net result folder ``Dataset297_TotalSegmentator_total_3mm_1559subj``, the full-resolution
model the five folders ``Dataset291``..``Dataset295``. Without them the run stops with one
:class:`~persodose.errors.InputError` line saying where to put them and how to get them
(``totalseg_download_weights -t total_fast`` on a machine with internet access, then copy the
folder, or ``totalseg_import_weights``).

Mapping (:data:`TOTAL_TO_PERSODOSE`): the five lung lobes to ``lung_left``/``lung_right``; the
vertebrae (C1-S1) to ``spine``, sacrum and hips to ``pelvis``, ribs, sternum and costal
cartilages to ``ribs``, scapulae and clavicles to ``shoulder_girdle``, humeri to ``arm_bones``,
femurs to ``femoral_head_left``/``_right`` (the phantom's proximal-femur labels); gluteal,
autochthonous and iliopsoas muscles to ``muscle``; small bowel and duodenum to
``small_intestine``; kidney cysts to their kidney; the adrenal glands to ``adrenals``; the
vessels persodose has (aorta, inferior vena cava, portal and splenic vein) to its names, the
others to ``other_vessels``; ``trachea`` stays ``trachea``. Differences from the phantom's
labels: TotalSegmentator's bones are whole bones (cortex and marrow), the phantom's ``spine``
and ``pelvis`` are cortical shells with the marrow in ``red_marrow``, which TotalSegmentator
does not deliver; its colon excludes the rectum.

What was and was not run (2026-12-01): TotalSegmentator is not installed on the development
machines and its weights cannot be fetched there, so the network has never been run by
persodose's tests. The tests (``tests/segmentation/test_totalsegmentator.py``) inject a fake
``totalsegmentator`` package in ``sys.modules`` that checks the arguments it receives and
returns a known multi-label image; they test the weights check and its message, the
arguments of the call (CPU, fast, ``ml=True``, statistics off, usage statistics off), the
image passed (affine, axis order), the class mapping and the registration. Whether the real
API accepts these arguments was checked against its source (``python_api.py`` of
TotalSegmentator 2.x), not by running it.

Sources:
    J. Wasserthal et al., "TotalSegmentator: robust segmentation of 104 anatomic structures in
    CT images", Radiology: Artificial Intelligence 5(5) (2023) e230024; class list of the
    ``total`` task: ``totalsegmentator/map_to_binary.py`` (``class_map["total"]``, v2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.segmentation._settings import SegmenterSettings, setting
from persodose.segmentation.registry import register_segmenter

__all__ = ["TOTAL_CLASSES", "TOTAL_TO_PERSODOSE", "TOTALSEG_LABELS", "TotalSegmentatorSettings",
           "weights_dir", "missing_weights", "map_total_labels", "totalsegmentator_segmenter"]

_VERTEBRAE = ([f"vertebrae_C{i}" for i in range(1, 8)] + [f"vertebrae_T{i}" for i in range(1, 13)]
              + [f"vertebrae_L{i}" for i in range(1, 6)] + ["vertebrae_S1"])
_RIBS = [f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)]

#: TotalSegmentator v2 ``total`` task: class value -> class name (``class_map["total"]``).
TOTAL_CLASSES: dict[int, str] = dict(enumerate([
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
    "kidney_cyst_right", "sacrum", *reversed(_VERTEBRAE), "heart", "aorta", "pulmonary_vein",
    "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left", "common_carotid_artery_right",
    "common_carotid_artery_left", "brachiocephalic_vein_left", "brachiocephalic_vein_right",
    "atrial_appendage_left", "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right", "humerus_left",
    "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right", "femur_left",
    "femur_right", "hip_left", "hip_right", "spinal_cord", "gluteus_maximus_left", "gluteus_maximus_right",
    "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right",
    "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull",
    *_RIBS, "sternum", "costal_cartilages"], start=1))

_OTHER_VESSELS = ("pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
                  "common_carotid_artery_right", "common_carotid_artery_left", "brachiocephalic_vein_left",
                  "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava", "iliac_artery_left",
                  "iliac_artery_right", "iliac_vena_left", "iliac_vena_right")
_MUSCLES = tuple(f"{m}_{s}" for m in ("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "autochthon",
                                       "iliopsoas") for s in ("left", "right"))

#: TotalSegmentator class name -> persodose organ name (see the module doc).
TOTAL_TO_PERSODOSE: dict[str, str] = {
    "spleen": "spleen", "kidney_right": "kidney_right", "kidney_left": "kidney_left",
    "kidney_cyst_right": "kidney_right", "kidney_cyst_left": "kidney_left", "gallbladder": "gall_bladder",
    "liver": "liver", "stomach": "stomach", "pancreas": "pancreas", "adrenal_gland_right": "adrenals",
    "adrenal_gland_left": "adrenals", "lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left",
    "lung_upper_lobe_right": "lung_right", "lung_middle_lobe_right": "lung_right",
    "lung_lower_lobe_right": "lung_right", "esophagus": "oesophagus", "trachea": "trachea",
    "thyroid_gland": "thyroid", "small_bowel": "small_intestine", "duodenum": "small_intestine", "colon": "colon",
    "urinary_bladder": "bladder", "prostate": "prostate", "sacrum": "pelvis", "hip_left": "pelvis",
    "hip_right": "pelvis", **{v: "spine" for v in _VERTEBRAE}, "heart": "heart", "aorta": "aorta",
    "inferior_vena_cava": "inferior_vena_cava", "portal_vein_and_splenic_vein": "portal_vein",
    **{v: "other_vessels" for v in _OTHER_VESSELS}, "humerus_left": "arm_bones", "humerus_right": "arm_bones",
    "scapula_left": "shoulder_girdle", "scapula_right": "shoulder_girdle", "clavicula_left": "shoulder_girdle",
    "clavicula_right": "shoulder_girdle", "femur_left": "femoral_head_left", "femur_right": "femoral_head_right",
    "spinal_cord": "spinal_cord", **{m: "muscle" for m in _MUSCLES}, "brain": "brain", "skull": "skull",
    **{r: "ribs" for r in _RIBS}, "sternum": "ribs", "costal_cartilages": "ribs",
}

#: persodose label value -> organ name of this back-end's output: the phantom's values where it
#: has the organ (:data:`persodose.phantoms.anatomy.LABELS`, ``ORGAN_LABELS``, ``SEX_LABELS``,
#: ``ARM_LABELS``), new values from 120 for the organs it has not.
TOTALSEG_LABELS: dict[int, str] = {
    3: "muscle", 4: "lung_left", 5: "lung_right", 6: "heart", 7: "liver", 8: "spleen", 9: "kidney_left",
    10: "kidney_right", 11: "bladder", 12: "stomach", 13: "brain", 14: "skull", 15: "spine", 16: "pelvis",
    17: "femoral_head_left", 18: "femoral_head_right", 27: "prostate", 30: "ribs", 31: "shoulder_girdle",
    32: "arm_bones", 100: "pancreas", 101: "oesophagus", 102: "spinal_cord", 103: "aorta",
    104: "inferior_vena_cava", 105: "portal_vein", 106: "gall_bladder", 107: "small_intestine", 108: "colon",
    111: "thyroid", 120: "adrenals", 121: "trachea", 122: "other_vessels",
}
_VALUE = {name: value for value, name in TOTALSEG_LABELS.items()}

#: nnU-Net result folders of the ``total`` task (TotalSegmentator 2.x): fast 3 mm, full 1.5 mm.
WEIGHT_FOLDERS = {True: ("Dataset297_TotalSegmentator_total_3mm_1559subj",),
                  False: tuple(f"Dataset29{i}_TotalSegmentator_part{i}_" for i in range(1, 6))}


@dataclass(frozen=True)
class TotalSegmentatorSettings(SegmenterSettings):
    """Settings of the ``totalsegmentator`` segmenter."""

    segmenter_name: ClassVar[str] = "totalsegmentator"

    fast: bool = setting(True, doc="the fast 3 mm model (false: the 1.5 mm model, five networks)")
    device: str = setting("cpu", doc="cpu, gpu (CUDA) or mps, passed to TotalSegmentator")
    threads: int = setting(1, min=1, max=64, doc="threads for resampling (nr_thr_resamp)")

    def check(self) -> None:
        if self.device.strip().lower() not in ("cpu", "gpu", "mps") and not self.device.startswith("gpu:"):
            raise InputError(f"totalsegmentator.device must be cpu, gpu, gpu:N or mps, got {self.device!r}")


def weights_dir() -> Path:
    """Where TotalSegmentator looks for its weights (``TOTALSEG_WEIGHTS_PATH``, else
    ``TOTALSEG_HOME_DIR/nnunet/results``, ``TOTALSEG_HOME_DIR`` defaulting to ``~/.totalsegmentator``)."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"]).expanduser()
    home = os.environ.get("TOTALSEG_HOME_DIR")
    base = Path(home).expanduser() if home else Path.home() / ".totalsegmentator"
    return base / "nnunet" / "results"


def missing_weights(fast: bool = True, where: Path | None = None) -> list[str]:
    """The nnU-Net result folders of the ``total`` task missing from :func:`weights_dir`.

    A folder counts as present when a folder whose name starts with it holds a
    ``checkpoint_final.pth`` somewhere below it.
    """
    where = weights_dir() if where is None else Path(where)
    missing = []
    for prefix in WEIGHT_FOLDERS[bool(fast)]:
        found = [d for d in (where.glob(prefix + "*") if where.is_dir() else []) if d.is_dir()]
        if not any(next(d.rglob("checkpoint_final.pth"), None) is not None for d in found):
            missing.append(prefix.rstrip("_"))
    return missing


def _require_weights(fast: bool) -> None:
    missing = missing_weights(fast)
    if missing:
        task = "total_fast" if fast else "total"
        raise InputError(
            f"TotalSegmentator weights not found: {', '.join(missing)} must be in {weights_dir()} (set "
            f"TOTALSEG_WEIGHTS_PATH to the folder holding them, or TOTALSEG_HOME_DIR to the folder above "
            f"nnunet/results); get them on a machine with internet access with 'totalseg_download_weights -t "
            f"{task}' (or 'totalseg_import_weights -i FILE.zip') and copy the folder over; persodose downloads "
            f"nothing")


def map_total_labels(ts_labels: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """TotalSegmentator ``total`` class values to persodose label values and names.

    Args:
        ts_labels: integer array of TotalSegmentator class values (0 = background).

    Returns:
        ``(labels, names)``: uint16 array of persodose values (:data:`TOTALSEG_LABELS`), same
        shape, and ``{value: name}`` of the organs present.

    Raises:
        InputError: a value that is no class of the ``total`` task (a wrong task or version).
    """
    arr = np.asarray(ts_labels)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = arr.astype(np.int64)
    unknown = sorted(set(np.unique(arr).tolist()) - set(TOTAL_CLASSES) - {0})
    if unknown:
        raise InputError(f"TotalSegmentator returned values {unknown[:10]} that are no class of its 'total' task "
                         f"(1..{max(TOTAL_CLASSES)}): another task or version?")
    lut = np.zeros(max(TOTAL_CLASSES) + 1, dtype=np.uint16)
    for value, cls in TOTAL_CLASSES.items():
        lut[value] = _VALUE[TOTAL_TO_PERSODOSE[cls]]
    out = lut[arr]
    present = set(np.unique(out).tolist()) - {0}
    return out, {v: TOTALSEG_LABELS[v] for v in sorted(present)}


def _switch_off_usage_statistics() -> None:
    """``send_usage_stats: false`` in TotalSegmentator's config.json (its own helpers)."""
    try:
        from totalsegmentator import config as ts_config
    except ImportError:  # a version without the module sends nothing
        return
    setup = getattr(ts_config, "setup_totalseg", None)
    set_key = getattr(ts_config, "set_config_key", None)
    if setup is not None and set_key is not None:
        setup()
        set_key("send_usage_stats", False)


def _to_nifti(ct: Grid):
    """The CT as a ``nibabel.Nifti1Image`` (array x, y, z; RAS affine), float32 HU."""
    import nibabel as nib

    return nib.Nifti1Image(np.ascontiguousarray(np.asarray(ct.array, dtype=np.float32).transpose(2, 1, 0)),
                           ct.affine_ras)


@register_segmenter("totalsegmentator", settings=TotalSegmentatorSettings, organs=tuple(TOTALSEG_LABELS.values()),
                    requires=("totalsegmentator", "nibabel"), extra="totalseg")
def totalsegmentator_segmenter(ct: Grid, settings: TotalSegmentatorSettings) -> tuple[Grid, dict[int, str]]:
    """TotalSegmentator's 'total' task (weights on disk; fast 3 mm model on the CPU by default)."""
    _require_weights(settings.fast)
    from totalsegmentator.python_api import totalsegmentator

    _switch_off_usage_statistics()
    device = settings.device.strip().lower()
    result = totalsegmentator(_to_nifti(ct), None, ml=True, fast=settings.fast, task="total", statistics=False,
                              radiomics=False, preview=False, device=device, quiet=True,
                              nr_thr_resamp=settings.threads, nr_thr_saving=1)
    if result is None or not hasattr(result, "get_fdata"):
        raise InputError("TotalSegmentator returned no label image (an older version? persodose needs >= 2.4)")
    data = np.asarray(result.dataobj)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape[::-1] != ct.shape:
        raise InputError(f"TotalSegmentator returned labels of shape {data.shape[::-1]} (z, y, x) for a CT of "
                         f"{ct.shape}")
    labels, names = map_total_labels(data.transpose(2, 1, 0))
    return ct.with_array(labels, Kind.LABELS), names
