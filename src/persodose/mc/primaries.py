"""The kinds of primaries a run simulates, each with the kernel it runs and that kernel's arguments.

* :class:`DecaySource`: radionuclide decays spread over voxels (``run_decays``);
* :class:`PointSource`: particles of one kind from a point (``run_particles``);
* :class:`BeamSource`: photons from external sources, sampled on the host (``run_beam``).

A kernel (:mod:`persodose.mc.transport` on the CPU, its twin in :mod:`persodose.mc.gpu` on
CUDA, same flat signature) takes, in this order: the master seed (uint64), the first random
stream of the batch, the batch's per-chunk work, the source's own arrays, the geometry,
(for decays) the decay tables, the physics tables, and finally the tallies. The geometry and
physics groups are the problem's (:meth:`persodose.mc.problem.MCProblem.static_args`); every
source kind builds the rest and the whole argument tuple in :meth:`~DecaySource.kernel_args`.
The groups are tuples that both targets' launchers take unpacked (the kernels keep flat
signatures, which the CPU and the CUDA kernels share and which the tests call directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from persodose.errors import InputError
from persodose.mc import transport as tr
from persodose.mc.sources import DecayTables

#: Particle names and their kernel codes.
_PARTICLES = {"photon": tr.PHOTON, "electron": tr.ELECTRON, "positron": tr.POSITRON}


def kernel_array(a, dtype=np.float64) -> np.ndarray:
    """``a`` as the kernels are compiled for it: C-contiguous, aligned and writeable.

    Arrays received from another process may arrive read-only, which Numba types
    differently and would compile again.
    """
    return np.require(a, dtype=dtype, requirements=("C", "W", "A"))


@dataclass(frozen=True)
class BatchPlan:
    """One batch as the kernels see it.

    Attributes:
        index: the batch index ``b``.
        seed: the run's master seed.
        stream0: the random stream of the batch's first chunk, ``b * chunks_per_batch``
            (chunk ``c`` draws from stream ``stream0 + c``).
        per_chunk: (chunks_per_batch,) int64 primaries of each chunk.
    """

    index: int
    seed: int
    stream0: int
    per_chunk: np.ndarray

    @property
    def n_primaries(self) -> int:
        return int(self.per_chunk.sum())


class _Primaries:
    """What every source kind has: its kernel, its arguments (built once per process), its info."""

    #: name of the kernel family: ``transport.run_<kernel>`` and ``gpu.run_<kernel>_cuda``
    kernel: ClassVar[str] = ""
    #: decays of the source when they are known (absolute dose), else None
    total_decays: ClassVar[float | None] = None

    def arg_groups(self) -> tuple[tuple, tuple]:
        """``(source, decay)``: the source's argument groups before and after the geometry.

        Built once per process (the kernels' dtypes, see :func:`kernel_array`) and not pickled.
        """
        cached = self.__dict__.get("_arg_groups")
        if cached is None:
            cached = self._build_arg_groups()
            self.__dict__["_arg_groups"] = cached  # frozen dataclass: a per-process cache
        return cached

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_arg_groups", None)
        return state

    def _build_arg_groups(self) -> tuple[tuple, tuple]:
        return (), ()

    def kernel_args(self, batch: BatchPlan, geometry: tuple, physics: tuple) -> tuple:
        """The kernel's arguments for ``batch``, up to (not including) the tallies."""
        source, decay = self.arg_groups()
        return (np.uint64(batch.seed), batch.stream0, batch.per_chunk, *source, *geometry, *decay, *physics)

    def describe(self, n_primaries: int) -> dict:
        """The source part of a run's ``info`` (:class:`persodose.mc.tally.MCResult`)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class DecaySource(_Primaries):
    """Radionuclide decays spread over voxels.

    Attributes:
        voxel_index: (n_src,) int64 flat indices (z, y, x order) of the voxels with activity.
        voxel_cdf: (n_src,) float64 cumulative of their weights (decays are drawn from it).
        decay: the nuclide's sampling tables (ICRP 107, see :mod:`persodose.mc.sources`).
        total_decays: decays of the source (Bq s summed over a TIA), or None when the
            source is only relative.
    """

    kernel: ClassVar[str] = "decays"

    voxel_index: np.ndarray
    voxel_cdf: np.ndarray
    decay: DecayTables
    total_decays: float | None = None

    def _build_arg_groups(self) -> tuple[tuple, tuple]:
        d, arr = self.decay, kernel_array
        source = (arr(self.voxel_index, np.int64), arr(self.voxel_cdf))
        decay = (float(d.local_mev), arr(d.beta_yields), arr(d.beta_minus_e), arr(d.beta_minus_cdf),
                 arr(d.beta_plus_e), arr(d.beta_plus_cdf), arr(d.line_kind, np.int64), arr(d.line_e),
                 arr(d.line_cum), float(d.line_total))
        return source, decay

    def charged_moments_mev(self) -> tuple[float, float]:
        """``(E[T], E[T^2])`` per decay of the emitted electrons' and positrons' kinetic energy
        ``T`` summed over them (MeV, MeV^2), each the exact moment of what the kernel samples:
        a beta branch of yield ``y`` emits ``int(y)`` or ``int(y) + 1`` particles (mean ``y``)
        whose energy is uniform within each bin ``[a, b]`` of the tabulated cumulative
        spectrum (moments ``(a + b) / 2`` and ``(a^2 + ab + b^2) / 3`` weighted by the bin's
        ``dC / C``), and a discrete electron line of yield ``y_j`` is emitted ``y_j`` times per
        decay on average."""
        d = self.decay
        s1 = s2 = 0.0
        for yb, grid, cdf in ((d.beta_yields[0], d.beta_minus_e, d.beta_minus_cdf),
                              (d.beta_yields[1], d.beta_plus_e, d.beta_plus_cdf)):
            if yb > 0:
                grid, cdf = np.asarray(grid, float), np.asarray(cdf, float)
                p = np.diff(cdf) / cdf[-1]
                a, b = grid[:-1], grid[1:]
                s1 += float(yb) * float(np.sum(p * 0.5 * (a + b)))
                s2 += float(yb) * float(np.sum(p * (a * a + a * b + b * b) / 3.0))
        w = np.diff(np.asarray(d.line_cum, float))
        charged = np.asarray(d.line_kind) != tr.PHOTON
        if d.line_total > 0 and charged.any():
            e = np.asarray(d.line_e, float)[charged]
            s1 += float(np.sum(w[charged] * e))
            s2 += float(np.sum(w[charged] * e * e))
        return s1, s2

    def control_expectation_mev(self) -> float:
        """Expected energy per decay that the control variate tallies without sampling, MeV:
        the energy left in place (``local_mev``) plus the electrons' and positrons' mean
        kinetic energy (:meth:`charged_moments_mev`)."""
        return float(self.decay.local_mev) + self.charged_moments_mev()[0]

    def charged_weighted_energy_mev(self) -> float:
        """Energy-weighted mean kinetic energy of the emitted electrons and positrons,
        ``E[T^2] / E[T]`` over all of them, MeV (0 when none): where their energy goes."""
        s1, s2 = self.charged_moments_mev()
        return s2 / s1 if s1 > 0 else 0.0

    def describe(self, n_primaries: int) -> dict:
        return {"nuclide": self.decay.nuclide, "mean_emitted_mev_per_decay": self.decay.mean_emitted_mev,
                "n_decays": int(n_primaries), "total_decays_of_source": self.total_decays}


@dataclass(frozen=True, eq=False)
class PointSource(_Primaries):
    """Primary particles of one kind from a point.

    Attributes:
        particle: ``"photon"``, ``"electron"`` or ``"positron"``.
        energy_nodes_mev: (n,) energies, MeV; one node for a monoenergetic source.
        energy_cdf: (n,) cumulative of the spectrum on the nodes.
        position_xyz_mm: (3,) mm from the grid's corner, (x, y, z) index axes.
        direction_xyz: (3,) unit vector of a pencil beam (ignored when isotropic).
        isotropic: emit isotropically.
    """

    kernel: ClassVar[str] = "particles"

    particle: str
    energy_nodes_mev: np.ndarray
    energy_cdf: np.ndarray
    position_xyz_mm: np.ndarray
    direction_xyz: np.ndarray
    isotropic: bool

    def _build_arg_groups(self) -> tuple[tuple, tuple]:
        arr = kernel_array
        source = (int(_PARTICLES[self.particle]), arr(self.energy_nodes_mev), arr(self.energy_cdf),
                  arr(self.position_xyz_mm), arr(self.direction_xyz), bool(self.isotropic))
        return source, ()

    def describe(self, n_primaries: int) -> dict:
        return {"particle": self.particle, "n_particles": int(n_primaries)}


@dataclass(frozen=True, eq=False)
class BeamSource(_Primaries):
    """Photons from external sources (a CT tube's focal-spot positions, any beam model).

    Attributes:
        sampler: a picklable object with ``sample(n, rng)`` returning at least
            ``(origins (n, 3), directions (n, 3), energies_mev (n,))`` in LPS mm, photons of
            equal weight (for example :class:`persodose.ct.trajectory.SourcePositions` in
            ``"importance"`` mode, through :class:`persodose.ct.dose.ScanSampler`).
        corner_xyz_mm: LPS position of the grid's corner (voxel [0, 0, 0]'s outer corner).
        to_grid: 3x3 matrix taking LPS vectors to the grid's (x, y, z) index axes.
    """

    kernel: ClassVar[str] = "beam"

    sampler: object
    corner_xyz_mm: np.ndarray
    to_grid: np.ndarray

    def photons(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n photons in grid coordinates (mm from the corner, index-axis directions)."""
        out = self.sampler.sample(int(n), rng)
        o = np.asarray(out[0], dtype=np.float64)
        d = np.asarray(out[1], dtype=np.float64)
        e = np.asarray(out[2], dtype=np.float64)
        if o.shape != (n, 3) or d.shape != (n, 3) or e.shape != (n,):
            raise InputError("a beam sampler must return origins (n, 3), directions (n, 3) and energies (n,)")
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(d)) and np.all(e > 0)):
            raise InputError("a beam sampler returned non-finite positions or directions, or energies <= 0")
        local_o = (o - self.corner_xyz_mm) @ self.to_grid.T
        local_d = d @ self.to_grid.T
        local_d /= np.linalg.norm(local_d, axis=1, keepdims=True)
        return (np.ascontiguousarray(local_o), np.ascontiguousarray(local_d), np.ascontiguousarray(e))

    def kernel_args(self, batch: BatchPlan, geometry: tuple, physics: tuple) -> tuple:
        """Chunk starts and sizes and the batch's photons, then the geometry and physics.

        The photons of batch ``b`` come from numpy's generator seeded with ``(seed, b)``:
        the same batch gives the same photons wherever it runs, on either backend.
        """
        per_chunk = batch.per_chunk
        o, d, e = self.photons(batch.n_primaries, np.random.default_rng([int(batch.seed), int(batch.index), 0xBEA]))
        starts = np.concatenate(([0], np.cumsum(per_chunk)[:-1])).astype(np.int64)
        return (np.uint64(batch.seed), batch.stream0, starts, per_chunk.astype(np.int64), o, d, e, *geometry,
                *physics)

    def describe(self, n_primaries: int) -> dict:
        return {"source": "beam", "n_photons": int(n_primaries)}
