"""``dnn``: convolution with patient-specific kernels predicted from the CT density (the deliverable's internal DNN).

The kernels come from the ``kernel-dnn`` network (:mod:`persodose.dl.kernel_dnn`, where the
design and its reasons are written down): for every voxel holding activity, the network gives
the 7x7x7 near field of that voxel's kernel as a ratio to the soft-tissue kernel, from the
density in the 11x11x11 voxels around it; the far photon field is the soft-tissue kernel's,
weighted by the target medium's mass energy-absorption coefficient. On the TIA grid:

1. at the voxel the weights were trained at (their sidecar's ``voxel_mm``). On a grid of another
   voxel the TIA is brought there (totals kept, density interpolated), and what comes back is
   the network's *correction*: the soft-tissue convolution (SSV) on the grid's own voxel times
   ``dnn / SSV`` on the network's voxel, interpolated. Interpolating the dose itself would add
   the resampling's partial-volume blur twice: the mean dose of a 24 mm cube of Lu-177 in soft
   tissue at 4 mm came out 13 % below the same cube's at 3 mm that way, and within 0.1 % of it
   with the correction;
2. near field: the network in chunks of ``chunk_slices`` slices over the in-plane box of the
   voxels with activity; each voxel's window is ``rank`` coefficients of learned kernel shapes,
   so the windows reach their targets by ``rank + 1`` convolutions with 7^3 kernels
   (:func:`near_field_dose`);
3. far field: the TIA convolved (FFT) with the soft-tissue kernel outside the window, times
   the target's weight (:func:`persodose.dl.kernel_dnn.far_field_weights`);
4. zero below 0.1 g/cm3 (with the :class:`ActivityInAirWarning` of the other methods), and
   no negative dose (the network's energy ratios are not constrained to be positive).

Accuracy claimed for the registry's contract (a homogeneous soft-tissue phantom): 5 %, the
convolution methods' claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from persodose.dose.registry import DoseInputs, MethodOutput, register_method
from persodose.errors import InputError
from persodose.grid import Kind

__all__ = ["DNNMethodSettings", "dnn_dose", "near_field_dose", "DEFAULT_WEIGHTS"]

#: The shipped weights for each nuclide (the method picks the nuclide's unless told otherwise).
DEFAULT_WEIGHTS = {"F-18": "kernel-dnn-f18", "Lu-177": "kernel-dnn-lu177"}
#: Density outside the map, for the network's context at the grid's faces: dry air at sea level,
#: 1.205e-3 g/cm3 (NIST/ICRU 37 "Air, dry"), rounded.
AIR_G_CM3 = 0.0012


@dataclass(frozen=True)
class DNNMethodSettings:
    """Settings of the ``dnn`` dose method.

    Attributes:
        weights: registered weights name or a weights file (with its ``.json`` sidecar); ``""``:
            the shipped weights of the nuclide (:data:`DEFAULT_WEIGHTS`).
        device: ``cpu``, ``auto``, ``cuda`` or ``cuda:N``.
        chunk_slices: source slices per network pass (memory: about 0.5 kB per voxel of a chunk).
        threads: CPU threads for the network (0: PyTorch's default; any other number stays set for
            the rest of the process, ``torch.set_num_threads``).
        far_weights: ``mu_en``: the far field times the target medium's mu_en/rho ratio to soft
            tissue over the emitted photon lines (:func:`persodose.dl.kernel_dnn.far_field_weights`,
            the deliverable's correction); ``none``: the soft-tissue kernel's far field as it is
            (measured on held-out patients: bone organs 8.7 % off instead of 10.3 %, see
            docs/validation_dl.md).
        lung_far: the far field (beyond the 7^3 window) of lung voxels (density below the
            first of :data:`persodose.dl.kernel_dnn.FAR_EDGES_G_CM3`). ``lung``: from the lung
            kernel, unweighted, as MSV does there: a lung's own photon cross-fire travels
            through lung, about four times less attenuating than the soft tissue the
            soft-tissue kernel assumes (the kernels' media: 0.26 against 1.0 g/cm3,
            :mod:`persodose.physics.materials`, with nearly equal mass attenuation coefficients
            at 511 keV). Measured on the F-18 held-out patients, docs/validation_dl.md. ``soft_tissue``: the soft-tissue kernel's, times ``far_weights``,
            as in every other voxel (the method before 2026-12-04).
    """

    weights: str = ""
    device: str = "cpu"
    chunk_slices: int = 16
    threads: int = 0
    far_weights: str = "mu_en"
    lung_far: str = "lung"

    def __post_init__(self) -> None:
        from persodose.dl.device import parse_device

        parse_device(self.device)
        if self.far_weights not in ("mu_en", "none"):
            raise InputError(f"dnn.far_weights must be 'mu_en' or 'none', got {self.far_weights!r}")
        if self.lung_far not in ("lung", "soft_tissue"):
            raise InputError(f"dnn.lung_far must be 'lung' or 'soft_tissue', got {self.lung_far!r}")
        if not 1 <= int(self.chunk_slices) <= 4096 or not 0 <= int(self.threads) <= 1024:
            raise InputError(f"dnn.chunk_slices must be 1..4096 and dnn.threads 0..1024, got "
                             f"{self.chunk_slices}, {self.threads}")


def _load(weights: str, device: str):
    """``(model, sidecar, loaded)`` in eval mode, on ``device``."""
    from persodose.dl.device import select_device
    from persodose.dl.evaluate import _load_model, _sidecar

    _, model, loaded, side = _load_model("kernel-dnn", weights, None, "cpu")
    return model.eval().to(select_device(device)), side or _sidecar(loaded.path) or {}, loaded


def _weights_for(settings: DNNMethodSettings, nuclide: str) -> str:
    if settings.weights:
        return settings.weights
    if nuclide not in DEFAULT_WEIGHTS:
        raise InputError(f"dose method 'dnn' has shipped weights for {', '.join(DEFAULT_WEIGHTS)} only, not {nuclide}; "
                         "give dnn.weights=FILE trained for it (persodose train kernel-dnn)")
    return DEFAULT_WEIGHTS[nuclide]


def near_field_dose(model, tia_bq_s: np.ndarray, density_g_cm3: np.ndarray, window_gy_per_bq_s: np.ndarray,
                    chunk_slices: int = 16, device: str = "cpu") -> np.ndarray:
    """``(1.04 / rho(t)) sum_o A(t - o) K(o) E_{t-o}(o)`` over the 7^3 window (Gy), (z, y, x) float32.

    ``E_s`` are the network's energy ratios for source ``s`` (the dose ratio times ``rho(t) /
    1.04``). They are ``E_s = sum_j c_j(s) B_j + B_0`` (:func:`persodose.dl.kernel_dnn.factors`),
    so the sum is ``sum_j [(A c_j) (*) (K B_j)] + A (*) (K B_0)``: ``rank + 1`` convolutions with
    7^3 kernels (one ``conv3d``), never the 343 ratios of every voxel; the target's factor
    ``1.04 / rho(t)`` (at most 20, as the network's own input) turns energy into dose.

    Args:
        model: the scaled ``kernel-dnn`` network, weights loaded, eval mode, on ``device``.
        tia_bq_s: time-integrated activity per voxel, Bq s.
        density_g_cm3: density, g/cm3, same shape.
        window_gy_per_bq_s: the soft-tissue kernel's central 7^3 voxels, Gy per Bq s.
        chunk_slices: source slices per network pass.
        device: torch device of the model.
    """
    import torch
    import torch.nn.functional as F

    from persodose.dl.kernel_dnn import CONTEXT, WINDOW, factors, kernel_features

    a = np.asarray(tia_bq_s, np.float32)
    nz, ny, nx = a.shape
    c, h = (CONTEXT - 1) // 2, WINDOW // 2
    hot = np.nonzero(np.any(a != 0, axis=(1, 2)))[0]
    if len(hot) == 0:
        return np.zeros(a.shape, np.float32)
    feats = kernel_features(np.pad(np.asarray(density_g_cm3, np.float32), c, constant_values=AIR_G_CM3))
    out = torch.zeros((nz + 2 * h, ny + 2 * h, nx + 2 * h), dtype=torch.float32, device=device)
    with torch.no_grad():
        coefficients, shapes = factors(model)
        k = torch.as_tensor(np.asarray(window_gy_per_bq_s, np.float32), device=device)
        weight = torch.flip(shapes * k, dims=(1, 2, 3))[None]  # conv3d correlates: flip to convolve
        for z0 in range(int(hot[0]), int(hot[-1]) + 1, int(chunk_slices)):
            z1 = min(z0 + int(chunk_slices), nz)
            sub = a[z0:z1]
            ys, xs = np.nonzero(np.any(sub != 0, axis=0))
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            x = torch.from_numpy(np.ascontiguousarray(feats[None, :, z0:z1 + 2 * c, y0:y1 + 2 * c, x0:x1 + 2 * c]))
            coef = coefficients(x.to(device))[0]
            src = torch.as_tensor(np.ascontiguousarray(sub[:, y0:y1, x0:x1]), device=device)[None]
            field = torch.cat([coef * src, src], 0)[None]
            d = F.conv3d(field, weight, padding=2 * h)[0, 0]  # targets z0 - h .. z1 + h (and y, x)
            out[z0:z1 + 2 * h, y0:y1 + 2 * h, x0:x1 + 2 * h] += d
            del coef, field, d
    return out[h:h + nz, h:h + ny, h:h + nx].cpu().numpy() * feats[1, c:c + nz, c:c + ny, c:c + nx]


def _far_kernel(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel, far)``: the kernel (padded to 7 voxels where smaller) and a copy with its central
    7^3 voxels set to 0."""
    from persodose.dl.kernel_dnn import WINDOW

    k = np.asarray(kernel, np.float32)
    if min(k.shape) < WINDOW:
        k = np.pad(k, [((WINDOW - s) // 2,) * 2 if s < WINDOW else (0, 0) for s in k.shape])
    far = k.copy()
    cz, cy, cx, h = k.shape[0] // 2, k.shape[1] // 2, k.shape[2] // 2, WINDOW // 2
    far[cz - h:cz + h + 1, cy - h:cy + h + 1, cx - h:cx + h + 1] = 0.0
    return k, far


def _transfer(dose_net: np.ndarray, ssv_net: np.ndarray, net_grid, tia: np.ndarray, kernel, grid) -> np.ndarray:
    """The dose on the TIA's own grid from the dose on the network's: the soft-tissue convolution
    on the own grid times the network's correction to it, ``dnn / ssv`` on the network's grid
    (both of the same resampled TIA, so that the resampling's partial-volume blur cancels)
    interpolated back. Where the network's SSV is below 1e-6 of its maximum, the factor is 1."""
    from persodose.dose.svalue import convolve_kernel

    factor = np.ones_like(ssv_net)
    ok = ssv_net > 1e-6 * float(np.max(ssv_net)) if np.any(ssv_net > 0) else np.zeros(ssv_net.shape, bool)
    factor[ok] = dose_net[ok] / ssv_net[ok]
    factor = np.asarray(net_grid.with_array(factor, Kind.SCALAR).resample_to(grid).array, np.float32)
    return convolve_kernel(tia, kernel) * factor


def _lung_kernel(kernels, nuclide: str, grid, native: bool, voxel_mm: float):
    """The lung kernel at the network's voxel: the given set's on the TIA's own grid, else the cache's."""
    from persodose.dose.svalue import as_kernel_set, kernel_at

    if native:
        given = as_kernel_set(kernels, "dnn")
        if "lung" not in given:
            raise InputError("dose method 'dnn' with lung_far=lung needs the lung kernel too "
                             "(or dnn.lung_far=soft_tissue)")
        k = given["lung"]
        k.check_voxel_size(grid.spacing_zyx_mm, "the time-integrated activity grid")
        return k
    return kernel_at(nuclide, voxel_mm, "lung")


def _far_field(tia: np.ndarray, kernel) -> np.ndarray:
    """``kernel``'s dose beyond its central 7^3 voxels (its far field beyond the box included)."""
    from persodose.dose.convolution import fft_convolve_many
    from persodose.dose.svalue import clip_roundoff

    _, far_k = _far_kernel(kernel.gy_per_bq_s)
    out = fft_convolve_many(tia, [far_k])[0]
    if kernel.far_field is not None:
        out += kernel.far_field.dose(tia)
    if float(np.min(tia)) >= 0:
        clip_roundoff(out)
    return out


@register_method("dnn", settings=DNNMethodSettings, needs=("density", "kernels", "device"),
                 media=lambda s: ("soft_tissue", "lung") if s.lung_far == "lung" else ("soft_tissue",),
                 linear=True, accuracy=0.05, takes_inputs=True,
                 summary="patient-specific kernels: a CNN predicts each voxel's near-field kernel from the CT density")
def dnn_dose(inputs: DoseInputs, settings: DNNMethodSettings) -> MethodOutput:
    """Absorbed dose (Gy) by convolution with network-predicted patient-specific kernels.

    Returns:
        The dose; ``info`` has the weights' file and checksum, the network's voxel, whether the
        grid was resampled, and the seconds of the near and far fields.

    Raises:
        InputError: a nuclide the weights were not trained for, missing weights or density.
    """
    import torch

    from persodose.dl.kernel_dnn import FAR_EDGES_G_CM3, WINDOW, far_field_weights
    from persodose.dose.convolution import fft_convolve_many
    from persodose.dose.registry import air_mask, check_density, check_tia, dose_grid
    from persodose.dose.svalue import as_kernel_set, clip_roundoff, soft_tissue_kernel_at
    from persodose.grid import cubic_grid_over, resample_sum
    from persodose.physics.radionuclides import get_nuclide

    nuclide = get_nuclide(inputs.nuclide).name
    a = check_tia(inputs.tia)
    rho = check_density(inputs.density, inputs.tia, "dnn")
    t0 = time.perf_counter()
    if int(settings.threads):
        torch.set_num_threads(int(settings.threads))
    model, side, loaded = _load(_weights_for(settings, nuclide), settings.device)
    named = str((side.get("dataset_settings") or {}).get("nuclide") or "")
    if not named or not side.get("voxel_mm"):
        raise InputError(f"dose method 'dnn': weights {loaded.path.name} do not say the nuclide and voxel they were "
                         "trained for (their sidecar FILE.json; make the dataset with --option nuclide=NAME)")
    trained = get_nuclide(named).name
    if trained != nuclide:
        raise InputError(f"dose method 'dnn': weights {loaded.path.name} are trained for {trained}, not {nuclide}")
    want = float(side["voxel_mm"])
    grid = inputs.tia
    native = all(abs(v - want) <= 0.01 * want for v in grid.spacing_zyx_mm)
    net_grid = grid if native else cubic_grid_over(grid, want)
    r = rho if native else np.asarray(inputs.density.resample_to(net_grid).array, np.float32)
    an = a if native else resample_sum(inputs.tia, net_grid).astype(np.float32)
    own = as_kernel_set(inputs.kernels, "dnn")["soft_tissue"]
    own.check_voxel_size(grid.spacing_zyx_mm, "the time-integrated activity grid")
    kern = own if native else soft_tissue_kernel_at(nuclide, want)
    full, far_k = _far_kernel(kern.gy_per_bq_s)
    cz, cy, cx, h = full.shape[0] // 2, full.shape[1] // 2, full.shape[2] // 2, WINDOW // 2
    window = full[cz - h:cz + h + 1, cy - h:cy + h + 1, cx - h:cx + h + 1]
    dev = next(model.parameters()).device
    near = near_field_dose(model, an, r, window, settings.chunk_slices, dev)
    t1 = time.perf_counter()
    # one transform of the TIA for the far field and, off the network's voxel, its own SSV
    far, *ssv_net = fft_convolve_many(an, [far_k] if native else [far_k, full])
    if kern.far_field is not None:  # the kernel's dose beyond its box (persodose.dose.far_field)
        tail = kern.far_field.dose(an)
        far += tail
        if ssv_net:
            ssv_net[0] += tail
        del tail
    if float(np.min(an)) >= 0:
        clip_roundoff(far)
    if settings.far_weights == "mu_en":
        far *= far_field_weights(nuclide, r)
    if settings.lung_far == "lung":
        lung = (r >= 0.1) & (r < FAR_EDGES_G_CM3[0])
        if np.any(lung):
            far[lung] = _far_field(an, _lung_kernel(inputs.kernels, nuclide, grid, native, want))[lung]
    dose = near + far
    dose[(r < 0.1) if not native else air_mask(r, an, 0.1, "dnn") | (r <= 0)] = 0.0
    np.maximum(dose, 0.0, out=dose)  # a network's energy ratio may dip below 0 where it is poorly trained
    if not native:
        dose = _transfer(dose, ssv_net[0], net_grid, a, own, grid)
        dose[air_mask(rho, a, 0.1, "dnn") | (rho <= 0)] = 0.0
    info = {"weights": str(loaded.path), "weights_sha256": loaded.sha256, "network_voxel_mm": want,
            "resampled": not native, "near_field_s": round(t1 - t0, 2),
            "far_field_s": round(time.perf_counter() - t1, 2)}
    return MethodOutput(dose_grid(inputs.tia, dose), None, info)
