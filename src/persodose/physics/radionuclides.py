"""Radionuclide decay data from ICRP Publication 107.

Source: ICRP, 2008. Nuclear Decay Data for Dosimetric Calculations. ICRP Publication 107.
Ann. ICRP 38 (3) (1252 radionuclides), read from the files of the ``icrp107-database``
package (``icrp107_database/icrp107/<Sym>-<A>[m|n].json``) through :mod:`importlib.resources`;
no data are copied into persodose.

Each file holds a JSON *string* that encodes the document ``{"name", "half_life",
"time_unit", "emissions"}``. ``emissions`` maps the ICRP-107 radiation types to lists of
``[energy_MeV, yield_per_decay]``:

=================  ==================================  ==========================================
database key       persodose key (:attr:`Nuclide.lines`)  meaning
=================  ==================================  ==========================================
``gamma``          ``gamma``                           gamma rays (prompt and delayed)
``X``              ``xray``                            X-rays (fluorescence)
``annihilation``   ``annihilation``                    0.511 MeV annihilation photons (2 per β+)
``auger``          ``auger``                           Auger electrons
``IE``             ``ic``                              internal-conversion electrons
``beta-``          ``beta-``                           β- branches: *mean* energy, branch yield
``beta+``          ``beta+``                           β+ branches: *mean* energy, branch yield
``betaD``          ``beta_delayed``                    delayed β- from fission fragments
``alpha``          ``alpha``                           alpha particles
``alpha recoil``   ``alpha_recoil``                    recoiling daughter nuclei
``neutron``        ``neutron``                         fission neutrons (mean energy)
``fission``        ``fission``                         fission fragments
``b-spectra``      :meth:`Nuclide.beta_spectrum`       combined β spectrum, particles/MeV/decay
=================  ==================================  ==========================================

The combined spectrum ``b-spectra`` sums all β- (including delayed β) and β+ branches.
For the few nuclides with both β- and β+ branches (e.g. Cu-64) it cannot be split by
shape; :meth:`Nuclide.beta_spectrum` scales it by the ratio of the branch-yield sums, so the
split spectra have the right yields but both carry the shape (and mean energy) of the
combined spectrum. Use :meth:`Nuclide.mean_energy_per_decay_mev` (branch mean energies)
for energies.

Half-life units in the files: ``us``, ``ms``, ``s``, ``m`` (minutes), ``h``, ``d``, ``y``;
the year is the Julian year of 365.25 d used by ICRP Publication 107 (and its predecessor
Publication 38).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Mapping

import numpy as np

from persodose.errors import InputError, NuclideError

#: Seconds per half-life time unit of the ICRP-107 files (year = 365.25 d, ICRP Publ. 107).
TIME_UNIT_S: Mapping[str, float] = MappingProxyType({
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "y": 365.25 * 86400.0,
})

#: Database emission key -> persodose line key.
_LINE_KEYS: Mapping[str, str] = MappingProxyType({
    "gamma": "gamma",
    "X": "xray",
    "annihilation": "annihilation",
    "auger": "auger",
    "IE": "ic",
    "beta-": "beta-",
    "beta+": "beta+",
    "betaD": "beta_delayed",
    "alpha": "alpha",
    "alpha recoil": "alpha_recoil",
    "neutron": "neutron",
    "fission": "fission",
})

#: Line types whose energy is carried by electrons or positrons (kinetic energy).
ELECTRON_TYPES = ("beta-", "beta+", "beta_delayed", "ic", "auger")
#: Line types that are photons.
PHOTON_TYPES = ("gamma", "xray", "annihilation")

_PACKAGE = "icrp107_database"

# numpy >= 2 names it trapezoid; numpy 1.26 (allowed by pyproject) only has trapz.
_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")


@dataclass(frozen=True, eq=False)
class Emission:
    """Discrete emissions of one radiation type.

    Attributes:
        energy_mev: energies, MeV, shape (n,); for β branches the branch *mean* energy.
        yield_per_decay: particles per decay, shape (n,).
    """

    energy_mev: np.ndarray
    yield_per_decay: np.ndarray

    def __post_init__(self) -> None:
        e = np.asarray(self.energy_mev, dtype=np.float64).reshape(-1)
        y = np.asarray(self.yield_per_decay, dtype=np.float64).reshape(-1)
        if e.shape != y.shape:
            raise InputError(f"emission energies {e.shape} and yields {y.shape} differ in length")
        e.setflags(write=False)
        y.setflags(write=False)
        object.__setattr__(self, "energy_mev", e)
        object.__setattr__(self, "yield_per_decay", y)

    @property
    def total_yield(self) -> float:
        """Particles per decay (sum of the yields)."""
        return float(self.yield_per_decay.sum())

    @property
    def energy_per_decay_mev(self) -> float:
        """Energy emitted per decay, MeV: ``sum(E * y)``."""
        return float(np.dot(self.energy_mev, self.yield_per_decay))

    def __len__(self) -> int:
        return int(self.energy_mev.size)


_EMPTY = Emission(np.zeros(0), np.zeros(0))


@dataclass(frozen=True, eq=False)
class Nuclide:
    """ICRP-107 decay data of one radionuclide.

    Attributes:
        name: canonical name, e.g. ``"Lu-177"``, ``"Tc-99m"``.
        half_life_s: half-life, s.
        lines: line key (see the module table) -> :class:`Emission`; every key is present,
            empty where the nuclide has no such emission.
        spectrum_energy_mev: energy grid of the combined β spectrum, MeV, shape (k,).
        spectrum_per_mev: combined β spectrum, particles per MeV per decay, shape (k,).
        half_life_as_published: ``(value, unit)`` as in the database.
    """

    name: str
    half_life_s: float
    lines: Mapping[str, Emission]
    spectrum_energy_mev: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spectrum_per_mev: np.ndarray = field(default_factory=lambda: np.zeros(0))
    half_life_as_published: tuple[float, str] = (math.nan, "")

    def __post_init__(self) -> None:
        lines = {key: _EMPTY for key in _LINE_KEYS.values()}
        lines.update(self.lines)
        object.__setattr__(self, "lines", lines)

    @property
    def decay_constant_per_s(self) -> float:
        """Decay constant ``ln 2 / T1/2``, 1/s."""
        return math.log(2.0) / self.half_life_s

    @property
    def half_life_h(self) -> float:
        """Half-life, h."""
        return self.half_life_s / 3600.0

    def _beta_yields(self) -> tuple[float, float]:
        minus = self.lines["beta-"].total_yield + self.lines["beta_delayed"].total_yield
        plus = self.lines["beta+"].total_yield
        return minus, plus

    def beta_spectrum(self, kind: str = "beta-") -> tuple[np.ndarray, np.ndarray]:
        """The β- or β+ spectrum.

        The database holds one combined spectrum for all β branches (β-, delayed β- and
        β+). For ``kind`` it is scaled by the share of that kind in the summed branch yields
        (1 for a pure emitter); a nuclide with both kinds thus gets the combined *shape*
        for both, with the right yields.

        Args:
            kind: ``"beta-"`` or ``"beta+"``.

        Returns:
            ``(energy_mev, dn_de_per_mev)``: energy grid, MeV, and particles per MeV per
            decay, both shape (k,); empty arrays when the nuclide has no branch of that kind.
        """
        if kind not in ("beta-", "beta+"):
            raise InputError(f"beta spectrum kind must be 'beta-' or 'beta+', got {kind!r}")
        minus, plus = self._beta_yields()
        share_of = minus if kind == "beta-" else plus
        total = minus + plus
        if share_of <= 0 or total <= 0 or self.spectrum_energy_mev.size == 0:
            return np.zeros(0), np.zeros(0)
        return self.spectrum_energy_mev.copy(), self.spectrum_per_mev * (share_of / total)

    def beta_spectrum_integrals(self, kind: str = "beta-") -> tuple[float, float]:
        """Trapezoidal integrals of :meth:`beta_spectrum`.

        Returns:
            ``(particles_per_decay, energy_per_decay_mev)``.
        """
        e, n = self.beta_spectrum(kind)
        if e.size < 2:
            return 0.0, 0.0
        return float(_trapezoid(n, e)), float(_trapezoid(n * e, e))

    def mean_energy_per_decay_mev(self) -> dict[str, float]:
        """Energy emitted per decay by radiation type, MeV.

        ``sum(E_i * y_i)`` over the discrete lines of each type; for ``beta-``, ``beta+`` and
        ``beta_delayed`` the branch mean energies times branch yields (ICRP 107's mean
        energies), not the spectrum integral (which agrees within about 1 %, see
        :meth:`beta_spectrum_integrals`). Types without emissions are omitted.
        """
        return {key: em.energy_per_decay_mev for key, em in self.lines.items() if len(em)}

    def electron_energy_per_decay_mev(self) -> float:
        """Kinetic energy per decay carried by β-, delayed β, β+, IC and Auger electrons, MeV.

        The 'non-penetrating' electron part used for local-deposition dosimetry
        (alpha particles and recoils are not included).
        """
        return sum(self.lines[k].energy_per_decay_mev for k in ELECTRON_TYPES)

    def photon_energy_per_decay_mev(self) -> float:
        """Energy per decay carried by gamma, X and annihilation photons, MeV."""
        return sum(self.lines[k].energy_per_decay_mev for k in PHOTON_TYPES)

    def alpha_energy_per_decay_mev(self) -> float:
        """Energy per decay carried by alpha particles and their recoils, MeV."""
        return sum(self.lines[k].energy_per_decay_mev for k in ("alpha", "alpha_recoil"))

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        v, u = self.half_life_as_published
        return f"Nuclide({self.name!r}, half-life {v} {u})"


# --------------------------------------------------------------------------- names
def _data_dir():
    return resources.files(_PACKAGE) / "icrp107"


@functools.lru_cache(maxsize=1)
def _available() -> tuple[str, ...]:
    names = [p.name[:-5] for p in _data_dir().iterdir() if p.name.endswith(".json")]
    return tuple(sorted(names, key=_sort_key))


def _sort_key(name: str):
    sym, rest = name.split("-", 1)
    digits = re.match(r"\d+", rest)
    return (sym, int(digits.group()) if digits else 0, rest)


def available_nuclides() -> list[str]:
    """Canonical names of all ICRP-107 radionuclides (1252), sorted by element and mass."""
    return list(_available())


_SYMBOL_FIRST = re.compile(r"^([a-z]{1,2})-?(\d{1,3})([mn]?)$")
_MASS_STATE_FIRST = re.compile(r"^(\d{1,3})([mn])-?([a-z]{1,2})$")
_MASS_FIRST = re.compile(r"^(\d{1,3})-?([a-z]{1,2})$")


def _candidates(name: str) -> list[str]:
    """Possible canonical names of ``name``, most plausible first.

    Mass-first spellings are ambiguous in lower case ("99mo" is Mo-99, "99mtc" is Tc-99m),
    so both readings are returned; the one whose element symbol is capitalised in the
    input comes first.
    """
    raw = re.sub(r"[\s_]+", "-", str(name).strip())
    text = raw.lower()
    found: list[tuple[bool, str]] = []
    m = _SYMBOL_FIRST.match(text)
    if m:
        sym, mass, state = m.groups()
        found.append((True, f"{sym.capitalize()}-{int(mass)}{state}"))
    for pattern, has_state in ((_MASS_STATE_FIRST, True), (_MASS_FIRST, False)):
        m = pattern.match(text)
        if not m:
            continue
        if has_state:
            mass, state, sym = m.groups()
        else:
            (mass, sym), state = m.groups(), ""
        start = len(raw) - len(sym)
        cased = raw[start].isupper() or raw.islower()
        found.append((cased, f"{sym.capitalize()}-{int(mass)}{state}"))
    found.sort(key=lambda t: not t[0])  # stable: case-consistent readings first
    return [c for _, c in found]


def normalise_nuclide_name(name: str) -> str:
    """Canonical ICRP-107 name of a radionuclide.

    Accepts ``"Lu-177"``, ``"Lu177"``, ``"lu-177"``, ``"177Lu"``, ``"177-Lu"``, ``"Lu 177"``,
    ``"Tc99m"``, ``"99mTc"``, ``"Tc-99m"``, ``"F18"``, ``"18F"`` ... (``m``/``n`` mark the first
    and second metastable states, as in the database).

    Raises:
        NuclideError: not a nuclide name, or a nuclide that ICRP 107 does not list; the
            message gives the closest names.
    """
    if not isinstance(name, str) or not name.strip():
        raise NuclideError(f"not a radionuclide name: {name!r} (expected e.g. 'Lu-177', '99mTc')")
    candidates = _candidates(name)
    if not candidates:
        raise NuclideError(f"not a radionuclide name: {name!r} (expected e.g. 'Lu-177', 'Tc-99m', '18F')")
    available = set(_available())
    for canonical in candidates:
        if canonical in available:
            return canonical
    canonical = candidates[0]
    sym = canonical.split("-", 1)[0]
    mass = _sort_key(canonical)[1]
    same_element = sorted((n for n in _available() if n.split("-", 1)[0] == sym),
                          key=lambda n: (abs(_sort_key(n)[1] - mass), _sort_key(n)))
    hint = same_element[:8] or difflib.get_close_matches(canonical, _available(), n=6, cutoff=0.5)
    hint_txt = f"; ICRP 107 has e.g. {', '.join(hint)}" if hint else "; see available_nuclides()"
    raise NuclideError(f"radionuclide {name!r} ({canonical}) is not in ICRP 107{hint_txt}")


# --------------------------------------------------------------------------- loading
def _pairs(raw, key: str, name: str) -> Emission:
    arr = np.asarray(raw, dtype=np.float64)
    if arr.size == 0:
        return _EMPTY
    if arr.ndim != 2 or arr.shape[1] != 2:  # pragma: no cover - guards the package data
        raise NuclideError(f"{name}: malformed '{key}' emissions in the ICRP-107 file")
    return Emission(arr[:, 0], arr[:, 1])


@functools.lru_cache(maxsize=None)
def _load(canonical: str) -> Nuclide:
    path = _data_dir() / f"{canonical}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(doc, str):  # the package stores a JSON string holding the JSON document
        doc = json.loads(doc)
    unit = str(doc["time_unit"]).strip()
    if unit not in TIME_UNIT_S:  # pragma: no cover - guards the package data
        raise NuclideError(f"{canonical}: unknown half-life unit {unit!r} in the ICRP-107 file")
    value = float(doc["half_life"])
    emissions = doc["emissions"]
    lines = {ours: _pairs(emissions.get(theirs, []), theirs, canonical)
             for theirs, ours in _LINE_KEYS.items()}
    spec = np.asarray(emissions.get("b-spectra", []), dtype=np.float64).reshape(-1, 2)
    e = spec[:, 0].copy()
    n = spec[:, 1].copy()
    e.setflags(write=False)
    n.setflags(write=False)
    return Nuclide(canonical, value * TIME_UNIT_S[unit], lines, e, n, (value, unit))


def get_nuclide(name: str) -> Nuclide:
    """ICRP-107 decay data of a radionuclide (cached).

    Args:
        name: any spelling accepted by :func:`normalise_nuclide_name`.

    Raises:
        NuclideError: unknown or malformed name, with a hint.
    """
    return _load(normalise_nuclide_name(name))
