"""CT bowtie (beam-shaping) filters: thickness profiles and energy-dependent transmission.

Generic filters: a documented parametric model, not measured shapes
------------------------------------------------------------------------
Vendors do not publish their bowtie shapes. Measured equivalent profiles exist (J. M. Boone,
"Method for evaluating bow tie filter angle-dependent attenuation in CT: theory and
simulation results", Med. Phys. 37 (2010) 40-48; A. C. Turner et al., "A method to generate
equivalent energy spectra and filtration models based on measurement for multidetector CT
Monte Carlo dosimetry simulations", Med. Phys. 36 (2009) 2154-2164; K. McMillan et al.,
Med. Phys. 40 (2013)), but as per-scanner results of measurements, not as reusable tables
that persodose could ship. The generic filters here are therefore persodose's own
parametric model, built on the design principle that a bowtie compensates the path length
through a water cylinder centred on the isocentre (e.g. J. Hsieh, "Computed Tomography:
Principles, Design, Artifacts, and Recent Advances", SPIE, 2nd ed. 2009, section on the
bowtie filter):

* a ray at fan angle ``phi`` passes at distance ``d = SID sin(phi)`` from the isocentre
  (SID = source-to-isocentre distance) and crosses ``L(phi) = 2 sqrt(R^2 - d^2)`` of a
  water cylinder of radius ``R`` (0 for ``d >= R``);
* the filter thickness is ``t(phi) = mu_water(E_d) / mu_filter(E_d) (L(0) - L(phi))``, so that
  at the design energy ``E_d`` (:data:`DESIGN_ENERGY_MEV`) the primary signal behind the
  cylinder is the same at every fan angle inside it, and constant beyond the cylinder;
* ``t`` is optionally capped at ``max_thickness_mm``.

Generic sizes (:data:`GENERIC_BOWTIES`): ``head``/``small`` compensates a 160 mm water
cylinder (the CTDI head phantom diameter, IEC 60601-2-44), ``body``/``large`` a 320 mm one
(the CTDI body phantom), ``medium`` 240 mm (persodose's choice, between the two), all in
aluminium; ``flat``/``none`` is no bowtie. Thickness is relative to the central ray (the
filter's central thickness is part of the scanner's flat filtration). Real filters are
often weaker at the fan edge than full compensation; give a measured profile
(:func:`load_bowtie_csv`) when it matters.

User profiles
-------------
A CSV file with a header ``angle_deg,thickness_mm,material`` (``#`` starts a comment); rows
of the same material form one layer, layers of different materials add up (e.g. a flat Ti
plate and an Al form filter). If every angle is >= 0 the profile is mirrored (symmetric
filter). Outside the tabulated angles the end thickness is kept.

Attenuation coefficients come from :mod:`persodose.physics.photon_data` (xraylib, total with
coherent scattering: narrow-beam attenuation). Filter material compositions and densities:
NIST (ESTAR material table / XCOM): aluminium 2.699 g/cm3, graphite 1.7 g/cm3 (C), PTFE
(Teflon) C 24.0183 % F 75.9817 % 2.2 g/cm3, titanium 4.54 g/cm3, copper 8.96 g/cm3.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from persodose.errors import InputError, MaterialError

__all__ = ["FILTER_MATERIALS", "GENERIC_BOWTIES", "DEFAULT_COMPENSATION", "DESIGN_ENERGY_MEV", "BowtieLayer", "BowtieFilter",
           "generic_bowtie", "bowtie_from_table", "load_bowtie_csv", "filter_mu_per_mm",
           "normalise_bowtie_name"]

#: Filter materials: name -> (element mass fractions, density g/cm3); NIST values (module doc).
FILTER_MATERIALS: Mapping[str, tuple[Mapping[str, float], float]] = {
    "al": ({"Al": 1.0}, 2.699),
    "graphite": ({"C": 1.0}, 1.7),
    "teflon": ({"C": 0.240183, "F": 0.759817}, 2.2),
    "ti": ({"Ti": 1.0}, 4.54),
    "cu": ({"Cu": 1.0}, 8.96),
    "water": ({"H": 0.111894, "O": 0.888106}, 1.0),
}
_MATERIAL_ALIASES = {"aluminium": "al", "aluminum": "al", "c": "graphite", "carbon": "graphite",
                     "ptfe": "teflon", "titanium": "ti", "copper": "cu"}

#: Design energy of the generic filters, MeV: close to the mean energy of a 120 kVp CT beam
#: behind typical filtration (55-65 keV, see :func:`persodose.ct.spectrum.tube_spectrum`).
DESIGN_ENERGY_MEV = 0.060

#: Generic filters: name -> diameter of the compensated water cylinder, mm (0: no bowtie).
#: Fraction of the full water-cylinder compensation of the generic filters. Full compensation
#: made the CTDI centre-to-periphery ratio too high (Monte Carlo, 120 kVp, 40 mm: 0.57 for the
#: 32 cm body phantom, 1.26 for the 16 cm head phantom) against the typical published ranges
#: (about 0.40-0.55 body and 0.9-1.0 head: ImPACT CTDI tables; M. F. McNitt-Gray, RadioGraphics
#: 22 (2002) 1541). These fractions bring them to 0.45 (body, 0.5) and 0.96 (head, 0.3); they
#: are a tuning of persodose's generic shapes to those typical ratios, not a vendor's filter:
#: give a measured profile (CSV) for a specific scanner.
DEFAULT_COMPENSATION: Mapping[str, float] = {"head": 0.3, "small": 0.3, "medium": 0.4, "body": 0.5, "large": 0.5}

GENERIC_BOWTIES: Mapping[str, float] = {
    "head": 160.0, "small": 160.0, "medium": 240.0, "body": 320.0, "large": 320.0,
    "flat": 0.0, "none": 0.0,
}

#: Largest fan half-angle covered by the generic tables, rad (wider than any CT fan).
_MAX_HALF_ANGLE_RAD = math.radians(40.0)
_N_ANGLES = 801


def normalise_bowtie_name(name: str) -> str:
    """Lower-case generic bowtie name; :class:`InputError` if unknown."""
    key = str(name).strip().lower()
    if key not in GENERIC_BOWTIES:
        raise InputError(f"unknown bowtie filter {name!r}; known: {', '.join(GENERIC_BOWTIES)}")
    return key


def _material_key(name: str, where: str = "") -> str:
    key = str(name).strip().lower()
    key = _MATERIAL_ALIASES.get(key, key)
    if key not in FILTER_MATERIALS:
        raise MaterialError(f"{where}unknown bowtie material {name!r}; known: "
                            f"{', '.join(FILTER_MATERIALS)}")
    return key


def filter_mu_per_mm(material: str, energy_mev) -> np.ndarray:
    """Linear attenuation coefficient of a filter material, 1/mm (shape of ``energy_mev``)."""
    from persodose.physics.photon_data import as_material, photon_tables

    fractions, rho = FILTER_MATERIALS[_material_key(material)]
    tables = photon_tables(as_material(fractions, rho))
    return tables.mu_over_rho(np.asarray(energy_mev, dtype=np.float64)) * rho * 0.1


@dataclass(frozen=True, eq=False)
class BowtieLayer:
    """One material of a bowtie: thickness vs fan angle.

    Attributes:
        material: key of :data:`FILTER_MATERIALS`.
        angles_rad: fan angles, rad, increasing, shape (n,).
        thickness_mm: thickness along the ray at each angle, mm, shape (n,).
    """

    material: str
    angles_rad: np.ndarray
    thickness_mm: np.ndarray

    def thickness_at(self, fan_angle_rad) -> np.ndarray:
        """Thickness at fan angles (linear interpolation, end values held), mm."""
        return np.interp(np.asarray(fan_angle_rad, dtype=np.float64), self.angles_rad, self.thickness_mm)


@dataclass(frozen=True, eq=False)
class BowtieFilter:
    """A bowtie filter: layers of materials with angle-dependent thickness.

    Attributes:
        name: filter name.
        layers: the material layers (none: no bowtie, transmission 1).
        source: where the profile comes from (citation or file).
    """

    name: str
    layers: tuple[BowtieLayer, ...] = ()
    source: str = ""
    _mu_cache: dict = field(default_factory=dict, repr=False)

    def thickness_mm(self, fan_angle_rad, material: str | None = None) -> np.ndarray:
        """Thickness relative to the central ray (sum over layers or of one material), mm."""
        phi = np.asarray(fan_angle_rad, dtype=np.float64)
        out = np.zeros(phi.shape)
        for layer in self.layers:
            if material is None or layer.material == _material_key(material):
                out = out + layer.thickness_at(phi) - layer.thickness_at(0.0)
        return out

    def _mu(self, material: str, energy_mev: np.ndarray) -> np.ndarray:
        return filter_mu_per_mm(material, energy_mev)

    def relative_fluence(self, fan_angle_rad, energy_mev) -> np.ndarray:
        """Primary transmission relative to the central ray.

        ``T(phi, E) = exp(-sum_layers mu_l(E) (t_l(phi) - t_l(0)))``.

        Args:
            fan_angle_rad: fan angles, rad (0 = central ray), any shape.
            energy_mev: photon energies, MeV, broadcastable against ``fan_angle_rad``.

        Returns:
            Transmission, broadcast shape; 1 at the centre, below 1 outward for a bowtie.
        """
        phi = np.asarray(fan_angle_rad, dtype=np.float64)
        e = np.asarray(energy_mev, dtype=np.float64)
        expo = np.zeros(np.broadcast_shapes(phi.shape, e.shape))
        for layer in self.layers:
            dt = layer.thickness_at(phi) - layer.thickness_at(0.0)
            expo = expo + self._mu(layer.material, e) * dt
        return np.exp(-expo)

    def transmission_table(self, fan_angles_rad: np.ndarray, energy_mev: np.ndarray) -> np.ndarray:
        """Relative transmission on a grid, shape (n_angles, n_energies)."""
        return self.relative_fluence(np.asarray(fan_angles_rad)[:, None], np.asarray(energy_mev)[None, :])


def _layer(material: str, angles: np.ndarray, thickness: np.ndarray) -> BowtieLayer:
    a = np.asarray(angles, dtype=np.float64).copy()
    t = np.asarray(thickness, dtype=np.float64).copy()
    a.setflags(write=False)
    t.setflags(write=False)
    return BowtieLayer(material, a, t)


def generic_bowtie(name: str, source_to_isocentre_mm: float, material: str = "al",
                   design_energy_mev: float = DESIGN_ENERGY_MEV,
                   max_thickness_mm: float | None = None,
                   compensation: float | None = None) -> BowtieFilter:
    """A generic bowtie that compensates a water cylinder (module doc: persodose's model).

    Args:
        name: a key of :data:`GENERIC_BOWTIES` (``head``/``small``, ``medium``,
            ``body``/``large``, ``flat``/``none``).
        source_to_isocentre_mm: the scanner's focal-spot to isocentre distance, mm.
        material: filter material (key or alias of :data:`FILTER_MATERIALS`).
        design_energy_mev: energy at which the compensation is exact, MeV.
        max_thickness_mm: optional cap on the thickness, mm.
        compensation: fraction of the full compensation (1: the signal behind the design
            cylinder is flat); default :data:`DEFAULT_COMPENSATION` for the size.

    Returns:
        A :class:`BowtieFilter` with one layer on fan angles -40..40 degrees.
    """
    key = normalise_bowtie_name(name)
    diameter = GENERIC_BOWTIES[key]
    sid = float(source_to_isocentre_mm)
    if not (math.isfinite(sid) and sid > 0):
        raise InputError(f"source-to-isocentre distance must be > 0 mm, got {source_to_isocentre_mm}")
    if diameter <= 0:
        return BowtieFilter(key, (), "no bowtie filter")
    mat = _material_key(material)
    radius = 0.5 * diameter
    phi = np.linspace(-_MAX_HALF_ANGLE_RAD, _MAX_HALF_ANGLE_RAD, _N_ANGLES)
    d = sid * np.abs(np.sin(phi))
    path = 2.0 * np.sqrt(np.clip(radius * radius - d * d, 0.0, None))
    ratio = float(filter_mu_per_mm("water", design_energy_mev) / filter_mu_per_mm(mat, design_energy_mev))
    if compensation is None:
        compensation = DEFAULT_COMPENSATION.get(key, 1.0)
    if not (math.isfinite(compensation) and 0.0 <= compensation <= 1.5):
        raise InputError(f"bowtie compensation must lie within 0-1.5, got {compensation}")
    t = compensation * ratio * (diameter - path)
    if max_thickness_mm is not None:
        t = np.minimum(t, float(max_thickness_mm))
    src = (f"persodose parametric bowtie: compensates {compensation:g} of a {diameter:g} mm water cylinder at "
           f"{design_energy_mev * 1e3:g} keV with {mat}, SID {sid:g} mm"
           + (f", capped at {max_thickness_mm:g} mm" if max_thickness_mm is not None else ""))
    return BowtieFilter(key, (_layer(mat, phi, t),), src)


def bowtie_from_table(name: str, angle_deg: Sequence[float], thickness_mm: Sequence[float],
                      material: Sequence[str] | str, source: str = "user table") -> BowtieFilter:
    """A bowtie from tabulated thickness vs fan angle (one or more materials).

    Args:
        name: filter name.
        angle_deg: fan angles, degrees (per row).
        thickness_mm: thickness along the ray, mm (per row), >= 0.
        material: per row, or one for all rows.
        source: description for provenance.

    Raises:
        InputError: empty table, non-finite or negative values, fewer than 2 angles for a
            material, repeated angles. MaterialError: unknown material.
    """
    a = np.asarray(angle_deg, dtype=np.float64).reshape(-1)
    t = np.asarray(thickness_mm, dtype=np.float64).reshape(-1)
    mats = [material] * a.size if isinstance(material, str) else list(material)
    where = f"{source}: "
    if a.size == 0 or a.size != t.size or len(mats) != a.size:
        raise InputError(f"{where}bowtie table needs rows of angle_deg, thickness_mm, material")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(t))):
        raise InputError(f"{where}bowtie table holds non-finite values")
    if np.any(t < 0):
        raise InputError(f"{where}bowtie thickness must be >= 0 mm")
    keys = [_material_key(m, where) for m in mats]
    layers = []
    for mat in dict.fromkeys(keys):
        sel = np.array([k == mat for k in keys])
        aa, tt = a[sel], t[sel]
        order = np.argsort(aa)
        aa, tt = aa[order], tt[order]
        if aa.size < 2:
            raise InputError(f"{where}bowtie layer {mat!r} needs at least 2 angles")
        if np.any(np.diff(aa) <= 0):
            raise InputError(f"{where}bowtie layer {mat!r} has repeated angles")
        if aa[0] >= 0:  # one side given: mirror
            keep = aa > 0
            aa = np.concatenate((-aa[keep][::-1], aa))
            tt = np.concatenate((tt[keep][::-1], tt))
        layers.append(_layer(mat, np.radians(aa), tt))
    return BowtieFilter(str(name), tuple(layers), source)


def load_bowtie_csv(path, name: str | None = None) -> BowtieFilter:
    """Read a bowtie profile from CSV (``angle_deg,thickness_mm,material``; module doc).

    Raises:
        InputError: missing file, missing columns, unreadable numbers (message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"bowtie table does not exist: {p}")
    try:
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read bowtie table {p}: {exc}") from None
    table = list(csv.reader(lines))
    header = [h.strip().lower() for h in (table[0] if table else [])]
    rows = [dict(zip(header, (c.strip() for c in r))) for r in table[1:]]
    need = {"angle_deg", "thickness_mm", "material"}
    if not need <= set(header):
        raise InputError(f"{p}: bowtie table needs columns {sorted(need)}, found {sorted(header)}")
    try:
        a = [float(r["angle_deg"]) for r in rows]
        t = [float(r["thickness_mm"]) for r in rows]
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{p}: cannot read a number in the bowtie table ({exc})") from None
    m = [str(r.get("material", "")).strip() for r in rows]
    return bowtie_from_table(name or p.stem, a, t, m, source=str(p))
