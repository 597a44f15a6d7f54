"""Focal-spot trajectory of a CT scan and the x-ray beam sampled from each focal-spot position.

Geometry (patient LPS coordinates, mm; the rotation axis is parallel to z, through the
acquisition's isocentre ``(x_c, y_c)``):

* gantry angle ``theta``: the focal spot is at ``(x_c + R sin theta, y_c - R cos theta, z)``
  with ``R`` the source-to-isocentre distance; ``theta = 0`` puts it anterior of the
  isocentre (-y), ``theta = 90 deg`` to the patient's left (+x). The angle increases with
  time (the rotation sense is not in the DICOM headers; for dose the sense only matters
  with the start angle, see below).
* central ray ``d0 = (-sin theta, cos theta, 0)`` (towards the isocentre); in-plane
  tangent ``t = (cos theta, sin theta, 0)``.
* helical: ``z`` moves by ``pitch x total collimation`` per rotation, from one end of the
  irradiated range to the other (default from high z to low z: head-first patients are
  usually scanned cranio-caudally); the start angle is not recorded in DICOM.
* axial: full rotations at table positions ``pitch x collimation`` apart (contiguous when
  the pitch is 1), centred on the slice range.

Start angle: ``start_angle_rad="average"`` (the default) repeats the trajectory with
``n_start_angles`` start angles evenly spread over 2 pi; every position then carries
``1 / n_start_angles`` of its mAs, so that summing all positions estimates the dose averaged
over the unknown start angle. ``"random"`` draws one start angle from ``rng`` (reproducible
with a seeded generator); a number fixes it.

Beam: a point focal spot emitting, per unit solid angle, the tube spectrum, into a fan of
full angle :attr:`Scanner.fan_angle_deg` (fan angle ``phi`` uniform) and a cone whose width at
the isocentre distance is the collimation (cone angle ``psi`` uniform within
``+-atan(W / 2R)``, W = nominal collimation + overbeaming). The bowtie transmission relative
to the central ray, ``T(phi, E)``, enters as a weight (``mode="weighted"``) or through
importance sampling of ``(phi, E)`` with the constant weight ``<T>`` (``mode="importance"``);
both have the same expectation. Heel effect and focal-spot size are neglected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from persodose.ct.acquisition import Acquisition
from persodose.ct.bowtie import BowtieFilter
from persodose.ct.scanner import Scanner
from persodose.ct.spectrum import Spectrum
from persodose.errors import InputError

__all__ = ["SourcePositions", "helical_positions", "axial_positions", "DEFAULT_N_START_ANGLES"]

#: Start angles averaged over by default.
DEFAULT_N_START_ANGLES = 4
#: Fan-angle cells of the importance-sampling table.
_N_FAN_CELLS = 512


@dataclass(frozen=True, eq=False)
class SourcePositions:
    """Focal-spot positions of a CT scan and their beam.

    Attributes:
        position_xyz_mm: focal spot, LPS mm, shape (N, 3).
        gantry_angle_rad: gantry angle (module doc), rad, shape (N,).
        table_z_mm: z of the beam centre (table position relative to the patient), mm, (N,).
        direction_xyz: central-ray unit vector towards the isocentre, shape (N, 3).
        collimation_mm: beam width at the isocentre (nominal + overbeaming), mm, shape (N,).
        weight: relative tube current mA(z) / mean over positions, shape (N,).
        time_s: beam-on time since the start of the (first) trajectory, s, shape (N,).
        start_index: which start angle each position belongs to, shape (N,).
        mas: mAs each position stands for (mA(z) x time step / n_start_angles), shape (N,),
            or ``None`` when the absolute tube current is unknown.
        spectrum: tube spectrum (behind the flat filtration, before the bowtie).
        bowtie: bowtie filter.
        fan_half_angle_rad: half the full fan angle, rad.
        source_to_isocentre_mm: R, mm.
        isocentre_xy_mm: (x, y) of the rotation axis, mm.
        n_per_rotation: positions per rotation.
        n_start_angles: number of start angles the positions average over.
        mode: ``"helical"`` or ``"axial"``.
    """

    position_xyz_mm: np.ndarray
    gantry_angle_rad: np.ndarray
    table_z_mm: np.ndarray
    direction_xyz: np.ndarray
    collimation_mm: np.ndarray
    weight: np.ndarray
    time_s: np.ndarray
    start_index: np.ndarray
    mas: np.ndarray | None
    spectrum: Spectrum
    bowtie: BowtieFilter
    fan_half_angle_rad: float
    source_to_isocentre_mm: float
    isocentre_xy_mm: tuple[float, float]
    n_per_rotation: int
    n_start_angles: int
    mode: str
    _tables: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.gantry_angle_rad.size)

    # ------------------------------------------------------------------ normalisation
    def cone_half_angle_rad(self, index=None) -> np.ndarray:
        """Half cone angle ``atan(W / 2R)`` of every (or the given) position, rad."""
        w = self.collimation_mm if index is None else self.collimation_mm[index]
        return np.arctan(0.5 * np.asarray(w) / self.source_to_isocentre_mm)

    def beam_solid_angle_sr(self, index: int = 0) -> float:
        """Solid angle of the fan x cone of one position, sr: ``2 Phi_half x 2 sin(psi_max)``."""
        return float(2.0 * self.fan_half_angle_rad * 2.0 * math.sin(float(self.cone_half_angle_rad(index))))

    def photons_per_mas(self, index: int = 0) -> float:
        """Photons per mAs emitted into the beam of one position, before the bowtie.

        ``fluence at 1 m (photons/cm2/mAs) x (100 cm)^2 per sr x solid angle``. A photon of
        :meth:`sample_beam` with weight ``w`` out of ``n`` stands for
        ``photons_per_mas x mas[i] x w / (n x weight[i])`` photons.
        """
        return self.spectrum.total_fluence_per_mas_cm2 * 1.0e4 * self.beam_solid_angle_sr(index)

    def mean_bowtie_transmission(self) -> float:
        """``<T>``: bowtie transmission averaged over the fan (uniform) and the spectrum."""
        return self._importance_table()[2]

    # ------------------------------------------------------------------ sampling
    def _importance_table(self):
        if "imp" not in self._tables:
            edges = np.linspace(-self.fan_half_angle_rad, self.fan_half_angle_rad, _N_FAN_CELLS + 1)
            mids = 0.5 * (edges[1:] + edges[:-1])
            tab = self.bowtie.transmission_table(mids, self.spectrum.energy_mev)  # (nphi, nE)
            joint = tab * self.spectrum.probabilities[None, :]
            mean_t = float(joint.sum() / _N_FAN_CELLS)
            cdf = np.cumsum(joint.ravel())
            cdf /= cdf[-1]
            self._tables["imp"] = (edges, cdf, mean_t)
        return self._tables["imp"]

    def _fan_energy(self, n: int, rng: np.random.Generator, mode: str):
        if mode == "weighted":
            phi = rng.uniform(-self.fan_half_angle_rad, self.fan_half_angle_rad, n)
            e = self.spectrum.sample_energies(n, rng)
            return phi, e, self.bowtie.relative_fluence(phi, e)
        if mode == "importance":
            edges, cdf, mean_t = self._importance_table()
            n_e = self.spectrum.energy_mev.size
            cell = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), cdf.size - 1)
            i_phi, i_e = np.divmod(cell, n_e)
            phi = edges[i_phi] + rng.random(n) * (edges[1] - edges[0])
            e = self.spectrum.energy_mev[i_e] + (rng.random(n) - 0.5) * self.spectrum.bin_width_mev
            e = np.clip(e, 1e-3, self.spectrum.kvp * 1e-3)
            return phi, e, np.full(n, mean_t)
        raise InputError(f"beam sampling mode must be 'weighted' or 'importance', got {mode!r}")

    def _beam(self, idx: np.ndarray, rng: np.random.Generator, mode: str):
        n = idx.size
        phi, e, w = self._fan_energy(n, rng, mode)
        psi_max = self.cone_half_angle_rad(idx)
        psi = (2.0 * rng.random(n) - 1.0) * psi_max
        th = self.gantry_angle_rad[idx]
        d0 = self.direction_xyz[idx]
        t = np.stack([np.cos(th), np.sin(th), np.zeros(n)], axis=1)
        inplane = np.cos(phi)[:, None] * d0 + np.sin(phi)[:, None] * t
        dirs = np.cos(psi)[:, None] * inplane
        dirs[:, 2] += np.sin(psi)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        origins = self.position_xyz_mm[idx].copy()
        return origins, dirs, e, w

    def sample_beam(self, position_index: int, n: int, rng: np.random.Generator,
                    mode: str = "weighted"):
        """Photons leaving the focal spot at one position.

        Args:
            position_index: index of the position, 0..N-1.
            n: number of photons.
            rng: numpy random generator.
            mode: ``"weighted"``: fan angle uniform, energy from the spectrum, weight x
                bowtie transmission; ``"importance"``: (fan angle, energy) drawn from
                spectrum x transmission, constant weight x ``<T>``.

        Returns:
            ``(origins (n, 3) mm, directions (n, 3) unit, energies_mev (n,), weights (n,))``;
            weights are ``self.weight[i]`` (relative mA) x the bowtie factor.
        """
        i = int(position_index)
        if not 0 <= i < len(self):
            raise InputError(f"position index {position_index} outside 0..{len(self) - 1}")
        n = int(n)
        if n < 0:
            raise InputError(f"number of photons must be >= 0, got {n}")
        o, d, e, w = self._beam(np.full(n, i, dtype=np.int64), rng, mode)
        return o, d, e, w * self.weight[i]

    def sample(self, n: int, rng: np.random.Generator, mode: str = "weighted"):
        """Photons of the whole scan: positions drawn with probability ∝ ``weight``.

        Returns:
            ``(origins, directions, energies_mev, weights, position_index)``; weights carry
            only the bowtie factor (the tube current is in the position sampling).
        """
        n = int(n)
        p = self.weight / self.weight.sum()
        idx = rng.choice(len(self), size=n, p=p)
        o, d, e, w = self._beam(idx, rng, mode)
        return o, d, e, w, idx


# ---------------------------------------------------------------------------- builders
def _start_angles(start_angle_rad, n_start_angles: int, rng) -> np.ndarray:
    if start_angle_rad is None:
        return np.zeros(1)
    if isinstance(start_angle_rad, str):
        key = start_angle_rad.strip().lower()
        if key == "average":
            k = int(n_start_angles)
            if k < 1:
                raise InputError(f"n_start_angles must be >= 1, got {n_start_angles}")
            return 2.0 * math.pi * np.arange(k) / k
        if key == "random":
            rng = rng if rng is not None else np.random.default_rng()
            return np.array([rng.uniform(0.0, 2.0 * math.pi)])
        raise InputError(f"start_angle_rad must be a number, 'random' or 'average', got {start_angle_rad!r}")
    a = float(start_angle_rad)
    if not math.isfinite(a):
        raise InputError(f"start angle must be finite, got {start_angle_rad!r}")
    return np.array([a])


def _assemble(acq: Acquisition, scanner: Scanner, z_beam: np.ndarray, theta_rel: np.ndarray,
              time_s: np.ndarray, dt_s: float, starts: np.ndarray, n_per_rotation: int,
              bin_kev: float) -> SourcePositions:
    k = starts.size
    theta = (theta_rel[None, :] + starts[:, None]).ravel()
    z = np.tile(z_beam, k)
    tt = np.tile(time_s, k)
    start_index = np.repeat(np.arange(k), z_beam.size)
    r = scanner.source_to_isocentre_mm
    xc, yc = acq.isocentre_xy_mm
    pos = np.stack([xc + r * np.sin(theta), yc - r * np.cos(theta), z], axis=1)
    direction = np.stack([-np.sin(theta), np.cos(theta), np.zeros_like(theta)], axis=1)
    rel = acq.relative_current_at(z)
    weight = rel / rel.mean()
    ma = acq.tube_current_ma_at(z)
    mas = None if ma is None else ma * dt_s / k
    coll = np.full(theta.size, acq.total_collimation_mm + scanner.overbeaming_mm)
    arrays = dict(position_xyz_mm=pos, gantry_angle_rad=theta, table_z_mm=z, direction_xyz=direction,
                  collimation_mm=coll, weight=weight, time_s=tt, start_index=start_index)
    if mas is not None:
        arrays["mas"] = mas
    for a in arrays.values():
        a.setflags(write=False)
    arrays.setdefault("mas", None)
    return SourcePositions(**arrays, spectrum=scanner.spectrum(acq.kvp, bin_kev),
                           bowtie=scanner.bowtie(acq.bowtie), fan_half_angle_rad=scanner.fan_half_angle_rad,
                           source_to_isocentre_mm=float(r), isocentre_xy_mm=acq.isocentre_xy_mm,
                           n_per_rotation=int(n_per_rotation), n_start_angles=int(k), mode=acq.mode)


def _check_common(acq: Acquisition, scanner: Scanner, n_per_rotation: int) -> int:
    n = int(n_per_rotation)
    if n < 4:
        raise InputError(f"n_per_rotation must be >= 4, got {n_per_rotation}")
    if acq.total_collimation_mm > scanner.max_collimation_mm * 1.001:
        raise InputError(f"collimation {acq.total_collimation_mm:g} mm exceeds the maximum "
                         f"{scanner.max_collimation_mm:g} mm of scanner {scanner.name!r}")
    return n


def helical_positions(acq: Acquisition, scanner: Scanner, n_per_rotation: int = 64,
                      start_angle_rad: float | str | None = "average",
                      n_start_angles: int = DEFAULT_N_START_ANGLES,
                      rng: np.random.Generator | None = None, z_direction: int = -1,
                      bin_kev: float = 1.0) -> SourcePositions:
    """Focal-spot positions of a helical scan (axial acquisitions go to :func:`axial_positions`).

    Positions ``i = 0 .. N-1`` are at gantry angle ``theta_0 + 2 pi i / n_per_rotation`` and
    table position ``z_start + z_direction x i x pitch x W / n_per_rotation`` over the
    irradiated range :attr:`Acquisition.scan_range_mm`, ``N = floor(L n / (pitch W)) + 1``.

    Args:
        acq: the acquisition.
        scanner: geometry, spectrum and bowtie.
        n_per_rotation: positions per rotation (>= 4).
        start_angle_rad: ``"average"`` (default; ``n_start_angles`` evenly spread start
            angles), ``"random"`` (one, from ``rng``), a number (rad) or ``None`` (0).
        n_start_angles: start angles for ``"average"``.
        rng: generator for ``"random"``.
        z_direction: -1 (default: from high to low z) or +1.
        bin_kev: spectrum bin width, keV.

    Raises:
        InputError: bad arguments, collimation wider than the scanner's.
    """
    if acq.mode == "axial":
        return axial_positions(acq, scanner, n_per_rotation, start_angle_rad, n_start_angles, rng, bin_kev)
    n = _check_common(acq, scanner, n_per_rotation)
    if z_direction not in (-1, 1):
        raise InputError(f"z_direction must be -1 or +1, got {z_direction!r}")
    z0, z1 = acq.scan_range_mm
    feed = acq.pitch * acq.total_collimation_mm
    dz = feed / n
    count = int(math.floor((z1 - z0) / dz + 1e-9)) + 1
    i = np.arange(count, dtype=np.float64)
    z = z0 + i * dz if z_direction > 0 else z1 - i * dz
    theta_rel = 2.0 * math.pi * i / n
    dt = acq.rotation_time_s / n
    starts = _start_angles(start_angle_rad, n_start_angles, rng)
    return _assemble(acq, scanner, z, theta_rel, i * dt, dt, starts, n, bin_kev)


def axial_positions(acq: Acquisition, scanner: Scanner, n_per_rotation: int = 64,
                    start_angle_rad: float | str | None = "average",
                    n_start_angles: int = DEFAULT_N_START_ANGLES,
                    rng: np.random.Generator | None = None, bin_kev: float = 1.0) -> SourcePositions:
    """Focal-spot positions of an axial (step-and-shoot) scan.

    One full rotation per table position; positions ``pitch x W`` apart, as few as cover
    the slice range, centred on it. Each rotation starts at the same start angle.
    """
    n = _check_common(acq, scanner, n_per_rotation)
    lo, hi = acq.slice_range_mm or (float(acq.slice_z_mm[0]), float(acq.slice_z_mm[-1]))
    inc = acq.pitch * acq.total_collimation_mm
    n_ax = max(1, int(math.ceil((hi - lo) / inc - 1e-9)))
    centres = 0.5 * (lo + hi) - 0.5 * (n_ax - 1) * inc + inc * np.arange(n_ax)
    j = np.arange(n, dtype=np.float64)
    z = np.repeat(centres, n)
    theta_rel = np.tile(2.0 * math.pi * j / n, n_ax)
    dt = acq.rotation_time_s / n
    time_s = np.arange(n_ax * n, dtype=np.float64) * dt
    starts = _start_angles(start_angle_rad, n_start_angles, rng)
    return _assemble(acq, scanner, z, theta_rel, time_s, dt, starts, n, bin_kev)
