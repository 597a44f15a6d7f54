"""``density-led``: patches of a patient's density and TIA, with their local-deposition dose.

The small built-in kind, the example for new ones and the one the dataset tests use. For
each patient (a folder written by :func:`persodose.phantoms.write_virtual_patient`):

1. density (g/cm3) from the CT (``nifti/ct.nii.gz``) through the Schneider HU-to-density
   curve (:func:`persodose.physics.materials.ct_to_density_and_materials`);
2. the absorbed dose (Gy) of the true time-integrated activity (``nifti/truth_tia.nii.gz``)
   by the registered ``led`` dose method (:mod:`persodose.dose.led`: every decay's energy
   deposited in its own voxel, MIRD Pamphlet No. 21 with absorbed fraction 1);
3. ``patches_per_patient`` cubes of ``patch_voxels`` voxels, their centres drawn (with the
   given seed) among the voxels at least ``min_density_g_cm3`` dense, moved inside the volume.

Inputs have two channels, density (g/cm3) and TIA (Bq s per voxel): the LED dose is
``TIA * E / (rho * V)``, so a network can learn it from these two. The target is one
channel, the LED dose (Gy). With ``with_labels`` (the default) each patch also carries the
patient's truth label map (``nifti/labels.nii.gz``) and its names, stored in the shard for
the organ- and lesion-level metrics of ``persodose evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persodose.dl.datasets import PatientData, register_kind
from persodose.errors import InputError

__all__ = ["DensityLEDSettings", "make_density_led_examples"]


@dataclass(frozen=True)
class DensityLEDSettings:
    """Settings of the ``density-led`` kind.

    Attributes:
        patch_voxels: edge of the cubic patches, voxels (2 to 256).
        patches_per_patient: patches drawn per patient (1 to 100000).
        energy: LED variant, ``"all"`` or ``"electron"`` (:class:`persodose.dose.led.LEDSettings`).
        min_density_g_cm3: patch centres are drawn among voxels at least this dense, g/cm3
            (0.5 keeps them inside the body, lungs excluded).
        with_labels: store the truth label patch with each example.
    """

    patch_voxels: int = 16
    patches_per_patient: int = 8
    energy: str = "all"
    min_density_g_cm3: float = 0.5
    with_labels: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.patch_voxels <= 256:
            raise InputError(f"density-led.patch_voxels must be 2 to 256, got {self.patch_voxels}")
        if not 1 <= self.patches_per_patient <= 100000:
            raise InputError(f"density-led.patches_per_patient must be 1 to 100000, got {self.patches_per_patient}")
        if self.energy not in ("all", "electron"):
            raise InputError(f"density-led.energy must be 'all' or 'electron', got {self.energy!r}")
        if not (np.isfinite(self.min_density_g_cm3) and self.min_density_g_cm3 >= 0):
            raise InputError(f"density-led.min_density_g_cm3 must be finite and >= 0, got {self.min_density_g_cm3}")


def _corners(rho: np.ndarray, p: int, k: int, min_density: float, rng: np.random.Generator, who: str) -> np.ndarray:
    """``k`` patch corners (z, y, x): centres among dense voxels, shifted inside the volume."""
    shape = np.array(rho.shape)
    if np.any(shape < p):
        raise InputError(f"{who}: the volume {tuple(rho.shape)} is smaller than a patch of {p} voxels")
    centres = np.argwhere(rho >= min_density)
    if len(centres) == 0:
        raise InputError(f"{who}: no voxel is at least {min_density} g/cm3 dense")
    pick = centres[rng.choice(len(centres), size=k, replace=len(centres) < k)]
    return np.clip(pick - p // 2, 0, shape - p)


@register_kind("density-led", settings=DensityLEDSettings, needs=("ct_nifti", "truth_tia", "labels"),
               input_channels=("density_g_cm3", "tia_bq_s"), target_channels=("dose_gy",),
               summary="patches of density and TIA -> local-energy-deposition dose (the example kind)")
def make_density_led_examples(patient: PatientData, settings: DensityLEDSettings, seed: int) -> list:
    """Patches of density and TIA (inputs) and their LED dose (target); see the module doc."""
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.physics.materials import ct_to_density_and_materials

    who = f"patient {patient.id}"
    ct, tia = patient["ct_nifti"], patient["truth_tia"]
    tia.require_same_geometry(ct, f"{who}: TIA and CT")
    density, _, _ = ct_to_density_and_materials(ct)
    nuclide = patient.manifest.get("nuclide")
    if not nuclide:
        raise InputError(f"{who}: manifest.json names no nuclide")
    spec = get_spec("led")
    dose = spec.run(DoseInputs(tia=tia, nuclide=nuclide, density=density), {"energy": settings.energy}).dose
    rho = np.asarray(density.array, np.float32)
    a = np.asarray(tia.array, np.float32)
    d = np.asarray(dose.array, np.float32)
    p = settings.patch_voxels
    lab, names = None, {}
    if settings.with_labels:
        labels = patient["labels"]
        labels.require_same_geometry(ct, f"{who}: labels and CT")
        lab = np.asarray(labels.array)
        names = {int(k): str(v) for k, v in (patient.manifest.get("label_names") or {}).items()}
    rng = np.random.default_rng(seed)
    out = []
    for z, y, x in _corners(rho, p, settings.patches_per_patient, settings.min_density_g_cm3, rng, who):
        sl = (slice(z, z + p), slice(y, y + p), slice(x, x + p))
        meta = {"corner_zyx": [int(z), int(y), int(x)], "spacing_zyx_mm": list(ct.spacing_zyx_mm), "nuclide": nuclide}
        if lab is not None:
            meta["labels"] = lab[sl].astype(np.uint16)
            meta["label_names"] = names
        out.append((np.stack([rho[sl], a[sl]]), d[sl][None], meta))
    return out
