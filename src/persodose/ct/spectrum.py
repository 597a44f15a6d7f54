"""X-ray tube spectra for CT with SpekPy.

The spectrum model is SpekPy v2 (G. Poludniowski, A. Omar, R. Bujila, P. Andreo, "SpekPy
v2.0 - a software toolkit for modeling x-ray tube spectra", Med. Phys. 48 (2021) 3630-3637),
physics mode ``spekpy-v2-casim`` (its default) for a tungsten target. The physics was
validated against measured spectra from 20 to 300 kV (A. Omar, P. Andreo, G. Poludniowski,
"A model for the energy and angular distribution of x rays emitted from an x-ray tube.
Part II. Validation of x-ray spectra from 20 to 300 kV", Med. Phys. 47 (2020) 4005-4019);
that is :data:`KVP_RANGE`. SpekPy ships its data tables, so nothing is downloaded.

Conventions: energies in MeV (bin centres), fluence in photons / cm2 / mAs at 1 m from the
focal spot on the central ray (SpekPy's default ``z = 100 cm``), per energy bin (not per keV).
The spectrum is the one leaving the tube and its flat filtration; the bowtie filter is
applied separately (:mod:`persodose.ct.bowtie`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from persodose._optional import optional_import
from persodose.errors import InputError

__all__ = ["KVP_RANGE", "ANODE_ANGLE_RANGE_DEG", "Spectrum", "tube_spectrum", "spekpy_material_name"]

#: Tube potentials for which the spectrum model is used, kV (the SpekPy v2 validation range,
#: Omar et al. 2020, see the module docstring). Clinical CT uses 70-150 kV.
KVP_RANGE = (20.0, 300.0)
#: Anode angles accepted, degrees (CT tubes use about 7-12 degrees).
ANODE_ANGLE_RANGE_DEG = (1.0, 45.0)

#: Filter material names accepted besides SpekPy's own names (the ``.comp`` files in
#: ``spekpy/data/matl_def``, element symbols or NIST material names).
_MATERIAL_ALIASES = {
    "al": "Al", "aluminium": "Al", "aluminum": "Al",
    "cu": "Cu", "copper": "Cu",
    "ti": "Ti", "titanium": "Ti",
    "sn": "Sn", "tin": "Sn",
    "be": "Be", "beryllium": "Be",
    "c": "C", "graphite": "C", "carbon": "C",
    "teflon": "Polytetrafluoroethylene (Teflon)", "ptfe": "Polytetrafluoroethylene (Teflon)",
    "water": "Water, Liquid",
    "air": "Air",
}


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A binned x-ray spectrum.

    Attributes:
        kvp: tube potential, kV.
        anode_angle_deg: anode (target) angle, degrees.
        filtration_mm: flat filtration, SpekPy material name -> thickness, mm.
        energy_mev: bin centres, MeV, shape (n,), increasing.
        bin_width_mev: width of every bin, MeV.
        fluence_per_mas_cm2: photons / cm2 / mAs at 1 m on the central ray, per bin, shape (n,).
        hvl_mm_al: first half-value layer in aluminium (air kerma), mm (SpekPy ``get_hvl1``).
        air_kerma_ugy_per_mas_1m: air kerma per mAs at 1 m, uGy/mAs (SpekPy ``get_kerma``).
    """

    kvp: float
    anode_angle_deg: float
    filtration_mm: Mapping[str, float]
    energy_mev: np.ndarray
    bin_width_mev: float
    fluence_per_mas_cm2: np.ndarray
    hvl_mm_al: float
    air_kerma_ugy_per_mas_1m: float

    @property
    def total_fluence_per_mas_cm2(self) -> float:
        """Photons / cm2 / mAs at 1 m, all bins."""
        return float(self.fluence_per_mas_cm2.sum())

    @property
    def probabilities(self) -> np.ndarray:
        """Fluence fraction of each bin (sums to 1), shape (n,)."""
        return self.fluence_per_mas_cm2 / self.fluence_per_mas_cm2.sum()

    @property
    def mean_energy_mev(self) -> float:
        """Fluence-weighted mean energy, MeV."""
        return float(np.sum(self.probabilities * self.energy_mev))

    @property
    def mean_energy_kev(self) -> float:
        """Fluence-weighted mean energy, keV."""
        return 1e3 * self.mean_energy_mev

    def sample_energies(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` photon energies, MeV: a bin by its fluence, then uniform within the bin.

        Energies are kept at or below the kVp.
        """
        p = self.probabilities
        idx = rng.choice(p.size, size=int(n), p=p)
        e = self.energy_mev[idx] + (rng.random(int(n)) - 0.5) * self.bin_width_mev
        return np.clip(e, 1e-3, self.kvp * 1e-3)


def spekpy_material_name(name: str) -> str:
    """The SpekPy material name for a filter material (alias, symbol or SpekPy name).

    Raises:
        InputError: SpekPy has no such material.
    """
    key = str(name).strip()
    spek_name = _MATERIAL_ALIASES.get(key.lower(), key)
    sp = optional_import("spekpy", "ct")
    import pathlib

    matl_dir = pathlib.Path(sp.__file__).parent / "data"
    known = {p.stem for d in ("matl_def", "matl_usr") for p in (matl_dir / d).glob("*.comp")}
    if spek_name not in known:
        raise InputError(f"unknown filter material {name!r} (use Al, Cu, Ti, Sn, Be, C/graphite, "
                         f"Teflon, water or a SpekPy material name)")
    return spek_name


def _normalise_filtration(filtration_mm) -> tuple[tuple[str, float], ...]:
    if filtration_mm is None:
        return ()
    if isinstance(filtration_mm, (int, float, np.floating, np.integer)):
        items = [("Al", float(filtration_mm))]
    elif isinstance(filtration_mm, Mapping):
        items = [(str(k), float(v)) for k, v in filtration_mm.items()]
    else:
        try:
            items = [(str(k), float(v)) for k, v in filtration_mm]
        except (TypeError, ValueError):
            raise InputError("filtration must be a thickness of Al in mm, a dict material -> mm "
                             f"or (material, mm) pairs, got {filtration_mm!r}") from None
    out: dict[str, float] = {}
    for mat, t in items:
        if not (math.isfinite(t) and t >= 0):
            raise InputError(f"filtration thickness of {mat} must be finite and >= 0 mm, got {t}")
        name = spekpy_material_name(mat)
        out[name] = out.get(name, 0.0) + t
    return tuple(sorted(out.items()))


def tube_spectrum(kvp: float, anode_angle_deg: float = 12.0,
                  filtration_mm: Mapping[str, float] | float | None = None,
                  bin_kev: float = 1.0) -> Spectrum:
    """Spectrum of a tungsten-anode tube with flat filtration (SpekPy v2).

    Args:
        kvp: tube potential, kV, within :data:`KVP_RANGE`.
        anode_angle_deg: anode angle, degrees.
        filtration_mm: flat filtration: a dict material -> thickness in mm (e.g.
            ``{"Al": 3.0, "Ti": 0.9}``), or one number = total Al-equivalent thickness in mm.
            Default ``{"Al": 7.0}``, a typical total CT filtration (see
            :data:`persodose.ct.scanner.TYPICAL_CT_FILTRATION_MM_AL`).
        bin_kev: energy bin width, keV (0.1-5).

    Returns:
        The :class:`Spectrum` (cached: equal arguments return the same object).

    Raises:
        InputError: kVp or anode angle out of range, unknown filter material, bad bin width.
    """
    kvp = float(kvp)
    if not (math.isfinite(kvp) and KVP_RANGE[0] <= kvp <= KVP_RANGE[1]):
        raise InputError(f"kVp {kvp:g} outside the spectrum model's range "
                         f"{KVP_RANGE[0]:g}-{KVP_RANGE[1]:g} kV")
    angle = float(anode_angle_deg)
    if not (math.isfinite(angle) and ANODE_ANGLE_RANGE_DEG[0] <= angle <= ANODE_ANGLE_RANGE_DEG[1]):
        raise InputError(f"anode angle {angle:g} deg outside {ANODE_ANGLE_RANGE_DEG[0]:g}-"
                         f"{ANODE_ANGLE_RANGE_DEG[1]:g} deg")
    bin_kev = float(bin_kev)
    if not (math.isfinite(bin_kev) and 0.1 <= bin_kev <= 5.0):
        raise InputError(f"spectrum bin width must be within 0.1-5 keV, got {bin_kev:g}")
    if filtration_mm is None:
        filtration_mm = {"Al": 7.0}
    filt = _normalise_filtration(filtration_mm)
    return _cached_spectrum(round(kvp, 6), round(angle, 6), filt, round(bin_kev, 6))


@functools.lru_cache(maxsize=64)
def _cached_spectrum(kvp: float, angle: float, filt: tuple[tuple[str, float], ...],
                     bin_kev: float) -> Spectrum:
    sp = optional_import("spekpy", "ct")
    spek = sp.Spek(kvp=kvp, th=angle, dk=bin_kev)  # z = 100 cm, mas = 1 (SpekPy defaults)
    if filt:
        spek.multi_filter([(m, t) for m, t in filt if t > 0] or [("Al", 0.0)])
    k_kev, flu = spek.get_spectrum(diff=False)  # photons / cm2 / mAs per bin at 1 m
    k_kev = np.asarray(k_kev, dtype=np.float64)
    flu = np.clip(np.asarray(flu, dtype=np.float64), 0.0, None)
    keep = flu > flu.max() * 1e-12
    energy = k_kev[keep] * 1e-3
    flu = flu[keep]
    energy.setflags(write=False)
    flu.setflags(write=False)
    return Spectrum(kvp=kvp, anode_angle_deg=angle, filtration_mm=dict(filt), energy_mev=energy,
                    bin_width_mev=bin_kev * 1e-3, fluence_per_mas_cm2=flu,
                    hvl_mm_al=float(spek.get_hvl1()),
                    air_kerma_ugy_per_mas_1m=float(spek.get_kerma()))
