"""Patient-specific dose kernels predicted from the CT density: the ``kernel-dnn`` network.

The SINFONIA deliverable D2.2 (sections 1.2.2 and 2.1.1) predicts, for every source voxel, the
Monte Carlo kernel of a unit source there from the density around it, and convolves these
kernels with the time-integrated activity. Its network (HighRes3DNet on 64^3 patches) gives the
whole kernel, which is out of reach for every voxel of a whole-body map on a CPU: one forward
pass on a 64^3 patch takes about 5 s on these 2-core machines. What is done here instead:

* **Heterogeneity changes the kernel near its source only.** The electron and positron ranges
  (F-18: 2.4 mm at most in soft tissue, about 9 mm in lung; Lu-177: 1.7 mm) and the nearest
  photon interactions lie within :data:`WINDOW`\\ :sup:`3` = 7^3 voxels of 3 mm. The network
  predicts the kernel in that window only, as the ratio of the energy each window voxel
  receives to what it receives from the soft-tissue kernel (the dose ratio times ``rho / 1.04``:
  near 1 in every tissue, where a dose ratio is 8 beside a lung source); the far photon field
  comes from the soft-tissue kernel (:func:`far_field_weights`).
* **One network pass for all voxels.** The network is fully convolutional with unpadded
  ("valid") 3x3x3 convolutions: on an 11^3 density context it gives one 343-vector (the window's
  ratios), so on a whole density map it gives every voxel's window at once, sharing the
  features of overlapping contexts. Training on single contexts and running on whole maps is
  the same network (:data:`CONTEXT` = 11: five convolutions see 5 voxels around the source).
* **Only where there is activity.** Each chunk of slices runs on the in-plane box of the voxels
  that hold activity.

The absorbed dose (Gy) of a TIA ``A`` (Bq s per voxel) is then, for a target voxel ``t``,

``D(t) = (1.04 / rho(t)) sum_{|o| <= 3} A(t - o) K(o) E_{t-o}(o) + w(t) [K_far (*) A](t)``,

``K`` the soft-tissue kernel of the nuclide (Gy per Bq s, :mod:`persodose.mc.kernels`), ``E_s``
the network's energy ratios for source ``s``, ``K_far`` the kernel outside the window and ``w(t)``
the ratio of mass energy-absorption coefficients of the target's medium and soft tissue (the
deliverable's correction), averaged over the nuclide's photon spectrum
(:func:`far_field_weights`). Voxels below 0.1 g/cm3 get no dose, as in the other methods.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from persodose.dl.networks import register_network
from persodose.errors import InputError

__all__ = ["KernelDNNSettings", "kernel_dnn", "kernel_features", "window_reference", "far_field_weights",
           "factors", "WINDOW", "CONTEXT", "PHANTOM", "RHO_REF"]

#: Edge of the predicted window, voxels (the near field).
WINDOW = 7
#: Edge of the density context a prediction sees, voxels.
CONTEXT = 11
#: Edge of the Monte Carlo phantom a training kernel is computed in, voxels (the context and
#: 5 voxels more on each side for the radiation scattered back into the window).
PHANTOM = 21
#: Density of the soft-tissue kernel the ratios refer to (ICRU soft tissue), g/cm3.
RHO_REF = 1.04
#: Media and the density edges between them (the MSV defaults, :mod:`persodose.dose.msv`), for the
#: far-field weights.
FAR_MEDIA = ("lung", "soft_tissue", "bone_low", "bone")
FAR_EDGES_G_CM3 = (0.65, 1.22, 1.66)


def kernel_features(rho: np.ndarray) -> np.ndarray:
    """The network's two input channels of a density array (g/cm3): the density and ``RHO_REF / rho``
    (at most 20; the electron dose of a voxel goes as the inverse of its density)."""
    rho = np.asarray(rho, np.float32)
    inv = np.minimum(np.float32(RHO_REF) / np.maximum(rho, np.float32(1e-3)), np.float32(20.0))
    return np.stack([rho, inv]).astype(np.float32)


@functools.lru_cache(maxsize=8)
def window_reference(nuclide: str, voxel_mm: float, n_decays: int = 20_000_000, seed: int = 4321) -> np.ndarray:
    """The soft-tissue kernel's central 7^3 voxels computed in a homogeneous cube of :data:`PHANTOM`
    voxels (mGy/(MBq s)): the denominator of the training ratios. Computed by Monte Carlo
    (symmetrised over the lattice) once and cached on disk beside the other kernels."""
    from persodose.dose.kernels import read_octant_table, write_octant_table
    from persodose.mc.kernels import generate_kernel, kernel_cache_path
    from persodose.mc.settings import MCSettings

    margin = (PHANTOM - WINDOW) // 2
    base = kernel_cache_path(nuclide, voxel_mm, "soft_tissue", WINDOW, n_decays, seed)
    path = base.with_name(base.stem + f"_cube{PHANTOM}.txt")
    if path.exists():
        k = read_octant_table(path, voxel_mm, medium="soft_tissue", density_g_cm3=RHO_REF, nuclide=nuclide)
    else:
        k, _ = generate_kernel(nuclide, voxel_mm, "soft_tissue", WINDOW, int(n_decays), margin=margin,
                               settings=MCSettings(seed=int(seed)))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_octant_table(k, path)
    return np.asarray(k.s_mgy_per_mbq_s, np.float64)


def far_field_weights(nuclide: str, rho: np.ndarray) -> np.ndarray:
    """``w(t)``: (mu_en/rho of the voxel's medium) / (mu_en/rho of soft tissue), averaged over the
    nuclide's photon lines weighted by energy x yield (ICRP 107), per voxel; 0 below 0.1 g/cm3.

    The medium is lung, soft tissue or one of two bones by the MSV density edges; coefficients
    from :func:`persodose.physics.photon_data.photon_tables`. A nuclide whose photons carry less
    than 1 % of its electron energy (a pure beta emitter: its far field is bremsstrahlung): 1.
    """
    idx = np.digitize(np.asarray(rho, np.float32), np.asarray(FAR_EDGES_G_CM3, np.float32))
    out = _medium_ratios(nuclide)[idx].astype(np.float32)
    out[np.asarray(rho) < 0.1] = 0.0
    return out


@functools.lru_cache(maxsize=16)
def _medium_ratios(nuclide: str) -> np.ndarray:
    """The weight of each of :data:`FAR_MEDIA` for ``nuclide`` (see :func:`far_field_weights`)."""
    from persodose.mc.kernels import kernel_material
    from persodose.physics.photon_data import photon_tables
    from persodose.physics.radionuclides import get_nuclide

    nuc = get_nuclide(nuclide)
    e, w = [], []
    photons = sum(nuc.lines[k].energy_per_decay_mev for k in ("gamma", "xray", "annihilation"))
    kinds = ("gamma", "xray", "annihilation") if photons > 0.01 * nuc.electron_energy_per_decay_mev() else ()
    for kind in kinds:
        lines = nuc.lines[kind]
        for en, y in zip(lines.energy_mev, lines.yield_per_decay):
            if en >= 0.01:
                e.append(float(en))
                w.append(float(en) * float(y))
    ratios = np.ones(len(FAR_MEDIA))
    if w:
        e, w = np.asarray(e), np.asarray(w) / np.sum(w)

        def mean_mu_en(medium):
            return float(np.dot(w, photon_tables(kernel_material(medium)[0]).mu_over_rho(e, "mu_en")))

        soft = mean_mu_en("soft_tissue")
        ratios = np.array([mean_mu_en(m) / soft for m in FAR_MEDIA])
    ratios.setflags(write=False)
    return ratios


# --------------------------------------------------------------------------- network
@dataclass(frozen=True)
class KernelDNNSettings:
    """Settings of ``kernel-dnn``.

    Attributes:
        width: feature channels of the five 3x3x3 convolutions.
        rank: kernel shapes the network mixes: each voxel's 343 ratios are ``B c + b``, ``c`` its
            ``rank`` coefficients, ``B`` (343 x rank) and ``b`` learned with the rest; the dose
            method then needs ``rank + 1`` convolutions of 7^3 instead of 343 shifted sums.
    """

    width: int = 24
    rank: int = 32

    def __post_init__(self) -> None:
        if not 4 <= int(self.width) <= 256 or not 1 <= int(self.rank) <= WINDOW ** 3:
            raise InputError(f"kernel-dnn.width must be 4..256 and rank 1..{WINDOW ** 3}, got "
                             f"{self.width}, {self.rank}")


@functools.lru_cache(maxsize=None)
def _kernel_net_class():
    import torch
    from torch import nn

    class KernelNet(nn.Module):
        """Five unpadded 3x3x3 convolutions (ReLU; residual from the second on, the skip cropped to
        the smaller grid), a 1x1x1 linear head to ``rank`` coefficients and a 1x1x1 linear map
        of those to the 343 ratios of the window (the kernel shapes ``B`` and ``b``)."""

        def __init__(self, width: int, rank: int):
            super().__init__()
            self.first = nn.Conv3d(2, width, 3)
            self.convs = nn.ModuleList(nn.Conv3d(width, width, 3) for _ in range((CONTEXT - 1) // 2 - 1))
            self.head = nn.Conv3d(width, rank, 1)
            self.basis = nn.Conv3d(rank, WINDOW ** 3, 1)
            self.act = nn.ReLU()

        def coefficients(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.first(x))
            for conv in self.convs:
                h = self.act(conv(h)) + h[:, :, 1:-1, 1:-1, 1:-1]
            return self.head(h)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.basis(self.coefficients(x))

    return KernelNet


@register_network("kernel-dnn", dataset_kind="kernels", in_channels=2, out_channels=WINDOW ** 3,
                  settings=KernelDNNSettings, loss="mse", min_spatial=CONTEXT, output_crop=(CONTEXT - 1) // 2,
                  channel_window=(WINDOW,) * 3,
                  summary="patient-specific kernel: 11^3 density context -> 7^3 near-field energy ratio to soft tissue")
def kernel_dnn(settings: KernelDNNSettings):
    """Patient-specific kernel network: density context (11^3, unpadded convolutions) -> the 7^3
    window's energy ratio to the soft-tissue kernel (343 channels), per voxel on a whole map."""
    return _kernel_net_class()(int(settings.width), int(settings.rank))


def factors(model):
    """``(coefficients, shapes)`` of a scaled ``kernel-dnn``: ``coefficients(x)`` the per-voxel
    coefficient maps ``(1, rank, ...)`` of features ``x`` (physical units) and ``shapes`` the
    ``(rank + 1, 7, 7, 7)`` ratio shapes in physical units, the last one the constant term, so that
    ``ratios = sum_j c_j shapes[j] + shapes[rank]``."""
    import torch

    core = model.core
    ts = model.target_scale.reshape(-1)
    w = core.basis.weight.reshape(WINDOW ** 3, -1) * ts[:, None]
    b = core.basis.bias * ts
    shapes = torch.cat([w.T, b[None]], 0).reshape(-1, WINDOW, WINDOW, WINDOW)
    return (lambda x: core.coefficients(x / model.input_scale)), shapes
