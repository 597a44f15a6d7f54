"""Single voxel S-value convolution (SSV).

    D = A~ (*) S

the 3-D convolution of the time-integrated activity ``A~`` (Bq s per voxel) with one voxel
S-value kernel ``S`` (Gy/(Bq s)) computed in a homogeneous medium, by default ICRU soft tissue
(MIRD Pamphlet No. 17: W. E. Bolch et al., J. Nucl. Med. 40 (1999) 11S-36S). The density of
the patient is ignored: the result is the dose the activity would give in an infinite
soft-tissue medium. Convolution by FFT (:func:`persodose.dose.convolution.fft_convolve`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from persodose.dose.convolution import fft_convolve
from persodose.dose.kernels import KernelSet, VoxelKernel
from persodose.dose.registry import check_tia, dose_grid, register_method, resolve_settings
from persodose.errors import InputError
from persodose.grid import Grid

__all__ = ["ssv_dose", "convolve_kernel", "as_kernel_set", "select_kernel", "clip_roundoff", "soft_tissue_kernel_at",
           "ConvolutionSettings", "SSVSettings"]


@dataclass(frozen=True)
class ConvolutionSettings:
    """How a kernel convolution runs (shared by SSV, DSV and MSV).

    Attributes:
        workers: threads for the FFT (``-1``: all cores).
        block_z: overlap-add slab height for the FFT convolution, voxels (``None``: whole volume).
        backend: ``"scipy"`` or ``"torch"`` convolution.
    """

    workers: int = -1
    block_z: int | None = None
    backend: str = "scipy"

    def __post_init__(self) -> None:
        if self.backend not in ("scipy", "torch"):
            raise InputError(f"unknown convolution backend {self.backend!r}; use 'scipy' or 'torch'")
        if self.block_z is not None and int(self.block_z) < 1:
            raise InputError(f"block_z must be a positive number of slices, got {self.block_z}")


@dataclass(frozen=True)
class SSVSettings(ConvolutionSettings):
    """Settings of single voxel S-value convolution.

    Attributes:
        medium: the kernel medium used everywhere (``soft_tissue``: ICRU soft tissue).
    """

    medium: str = "soft_tissue"


def as_kernel_set(kernels: KernelSet | VoxelKernel | None, method: str) -> KernelSet:
    """A :class:`KernelSet` from a set or a single kernel.

    Raises:
        InputError: no kernels given.
    """
    if kernels is None:
        raise InputError(f"dose method {method!r} needs voxel S-value kernels")
    if isinstance(kernels, VoxelKernel):
        return KernelSet({kernels.medium: kernels})
    if isinstance(kernels, KernelSet):
        return kernels
    raise InputError(f"kernels must be a KernelSet or a VoxelKernel, got {type(kernels).__name__}")


def select_kernel(kernels: KernelSet | VoxelKernel | None, medium: str, tia: Grid, nuclide: str,
                  method: str) -> VoxelKernel:
    """The ``medium`` kernel of a set, checked against the grid's voxel size and the nuclide.

    A single kernel given alone is used whatever its medium.

    Raises:
        InputError: missing kernel; kernel for another voxel size (naming both) or nuclide.
    """
    if isinstance(kernels, VoxelKernel):
        k = kernels
    else:
        k = as_kernel_set(kernels, method)[medium]
    k.check_voxel_size(tia.spacing_zyx_mm, "the time-integrated activity grid")
    k.check_nuclide(nuclide)
    return k


def convolve_kernel(tia_bq_s: np.ndarray, kernel: VoxelKernel, settings=None) -> np.ndarray:
    """``tia (*) kernel`` in Gy, float32, shape of ``tia_bq_s``; with the kernel's far field
    (:class:`persodose.dose.far_field.FarField`) added where it has one.

    Args:
        tia_bq_s: time-integrated activity per voxel, Bq s, shape (nz, ny, nx).
        kernel: voxel S values (converted to Gy/(Bq s)).
        settings: :class:`ConvolutionSettings` (or a subclass); ``None``: defaults.
    """
    s = settings if settings is not None else ConvolutionSettings()
    if not np.any(tia_bq_s):
        return np.zeros(np.shape(tia_bq_s), dtype=np.float32)
    out = fft_convolve(tia_bq_s, kernel.gy_per_bq_s, workers=s.workers, block_z=s.block_z, backend=s.backend)
    if kernel.far_field is not None:
        out += kernel.far_field.dose(tia_bq_s, workers=s.workers)
    if float(np.min(tia_bq_s)) >= 0:
        clip_roundoff(out)
    return out


def clip_roundoff(dose_gy: np.ndarray) -> np.ndarray:
    """Set the small negative values left by FFT round-off to 0, in place.

    With non-negative activity and kernel the exact convolution is >= 0; float32 FFTs leave
    errors of about 1e-7 of the maximum, some of them negative, in the low-dose tail.
    """
    np.maximum(dose_gy, 0.0, out=dose_gy)
    return dose_gy


@register_method("ssv", settings=SSVSettings, needs=("kernels",), media=lambda s: (s.medium,), accuracy=0.05,
                 summary="single voxel S-value convolution (the patient is taken as soft tissue)")
def ssv_dose(tia: Grid, *, nuclide: str, density: Grid | None = None, kernels=None, settings=None) -> Grid:
    """Absorbed dose by single (soft-tissue) voxel S-value convolution.

    Args:
        tia: time-integrated activity, :attr:`Kind.TIA`, Bq s per voxel.
        nuclide: radionuclide name (checked against the kernel's when it has one).
        density: ignored (SSV assumes the kernel's medium everywhere).
        kernels: :class:`KernelSet` holding ``settings.medium`` (``"soft_tissue"``), or
            one :class:`VoxelKernel`; voxel size must be the grid's.
        settings: :class:`SSVSettings` or a mapping of its fields.

    Returns:
        Dose grid, :attr:`Kind.DOSE`, Gy, float32, same geometry.
    """
    s = resolve_settings(settings, SSVSettings, "ssv")
    a = check_tia(tia)
    k = select_kernel(kernels, s.medium, tia, nuclide, "ssv")
    return dose_grid(tia, convolve_kernel(a, k, s))


def soft_tissue_kernel_at(nuclide: str, voxel_mm: float) -> VoxelKernel:
    """The soft-tissue kernel of ``nuclide`` at ``voxel_mm`` from the kernel cache in force now
    (``$PERSODOSE_CACHE`` or ``~/.cache/persodose``; computed by Monte Carlo on first use), kept
    in memory: for methods whose network runs at its own voxel (``dnn``, ``dblurdosenet``)."""
    return kernel_at(nuclide, voxel_mm, "soft_tissue")


def kernel_at(nuclide: str, voxel_mm: float, medium: str) -> VoxelKernel:
    """The ``medium`` kernel of ``nuclide`` at ``voxel_mm``, as :func:`soft_tissue_kernel_at`."""
    import os

    return _kernel_at(nuclide, float(voxel_mm), str(medium), os.environ.get("PERSODOSE_CACHE", ""))


@functools.lru_cache(maxsize=8)
def _kernel_at(nuclide: str, voxel_mm: float, medium: str, cache: str) -> VoxelKernel:
    from persodose.mc.kernels import cached_kernel

    return cached_kernel(nuclide, voxel_mm, medium, cache_dir=cache or None)
