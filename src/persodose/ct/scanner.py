"""CT scanner geometry presets.

Every number of a preset says where it comes from. Values marked "typical" are from
vendors' technical descriptions as commonly quoted in the CT dosimetry literature, recalled
rather than re-read from a document: treat them as representative, not as the specification
of a particular installation. In particular:

* Source-to-isocentre / source-to-detector distances: GE LightSpeed family 541 / 949 mm;
  Siemens SOMATOM Definition family 595 / 1085.6 mm; Philips Brilliance 64 570 / 1040 mm;
  Toshiba (Canon) Aquilion 64 600 / 1072 mm (typical).
* Full fan angle: computed, not quoted: the fan that covers the 500 mm scan field of view,
  ``2 asin(250 mm / SID)``.
* Maximum collimation (nominal beam width at isocentre, N x T): 64 x 0.625 mm = 40 mm (GE
  LightSpeed VCT, Philips Brilliance 64), 32 x 0.6 mm = 19.2 mm (Siemens Definition AS,
  64 slices by z flying focal spot), 64 x 0.5 mm = 32 mm (Aquilion 64) (typical).
* Anode angle 7 degrees and total flat filtration 7 mm Al-equivalent for all presets
  (typical of CT tubes; :data:`TYPICAL_CT_FILTRATION_MM_AL` gives an HVL near 7 mm Al at
  120 kV, inside the 6-9 mm Al range reported for CT at 120 kVp). Adjust the filtration to a
  measured HVL with :func:`filtration_for_hvl` when the HVL of the scanner is known.
* Bowties: persodose's generic parametric filters (:mod:`persodose.ct.bowtie`) computed for
  the preset's SID, not the vendor shapes.
* ``overbeaming_mm`` (beam width at isocentre minus N x T, from the penumbra): 0 by default;
  a few mm on real scanners (typical).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from persodose.ct.bowtie import BowtieFilter, generic_bowtie, normalise_bowtie_name
from persodose.ct.spectrum import Spectrum, tube_spectrum
from persodose.errors import InputError

__all__ = ["Scanner", "SCANNERS", "TYPICAL_CT_FILTRATION_MM_AL", "get_scanner", "scanner_names",
           "guess_scanner", "filtration_for_hvl", "fan_angle_for_fov_deg"]

#: Total flat filtration of the presets, mm Al-equivalent (typical, see module doc).
TYPICAL_CT_FILTRATION_MM_AL = 7.0
#: Scan field of view used to derive the fan angle, mm.
SCAN_FOV_MM = 500.0


def fan_angle_for_fov_deg(source_to_isocentre_mm: float, fov_mm: float = SCAN_FOV_MM) -> float:
    """Full fan angle that covers a field of view of diameter ``fov_mm``, degrees."""
    return math.degrees(2.0 * math.asin(0.5 * fov_mm / source_to_isocentre_mm))


@dataclass(frozen=True)
class Scanner:
    """Geometry and beam quality of a CT scanner.

    Attributes:
        name: preset name.
        source_to_isocentre_mm: focal spot to rotation axis, mm.
        source_to_detector_mm: focal spot to detector, mm.
        fan_angle_deg: full fan angle, degrees.
        max_collimation_mm: widest nominal beam width at isocentre (N x T), mm.
        anode_angle_deg: anode angle, degrees.
        inherent_filtration_mm: flat filtration, material -> mm (SpekPy names or aliases).
        bowtie_names: generic bowtie names the scanner offers.
        default_bowtie: used when the DICOM filter type is unknown.
        overbeaming_mm: added to the nominal collimation to give the beam width at isocentre.
        source: where the numbers come from.
        custom_bowties: name -> user-supplied :class:`BowtieFilter`, used before the generic ones.
    """

    name: str
    source_to_isocentre_mm: float
    source_to_detector_mm: float
    fan_angle_deg: float
    max_collimation_mm: float
    anode_angle_deg: float = 7.0
    inherent_filtration_mm: Mapping[str, float] = field(
        default_factory=lambda: {"Al": TYPICAL_CT_FILTRATION_MM_AL})
    bowtie_names: tuple[str, ...] = ("head", "medium", "body", "flat")
    default_bowtie: str = "body"
    overbeaming_mm: float = 0.0
    source: str = ""
    custom_bowties: Mapping[str, BowtieFilter] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for attr in ("source_to_isocentre_mm", "source_to_detector_mm", "fan_angle_deg",
                     "max_collimation_mm"):
            v = getattr(self, attr)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"scanner {self.name!r}: {attr} must be a positive number, got {v!r}")
        if self.source_to_detector_mm <= self.source_to_isocentre_mm:
            raise InputError(f"scanner {self.name!r}: source-to-detector distance must exceed "
                             "the source-to-isocentre distance")
        if not 0 < self.fan_angle_deg < 180:
            raise InputError(f"scanner {self.name!r}: fan angle must be within (0, 180) degrees")
        if not (math.isfinite(self.overbeaming_mm) and self.overbeaming_mm >= 0):
            raise InputError(f"scanner {self.name!r}: overbeaming must be >= 0 mm")

    @property
    def fan_half_angle_rad(self) -> float:
        """Half the full fan angle, rad."""
        return math.radians(0.5 * self.fan_angle_deg)

    def bowtie(self, name: str | None = None) -> BowtieFilter:
        """The bowtie filter ``name`` (default :attr:`default_bowtie`) for this geometry."""
        name = self.default_bowtie if name is None else str(name)
        if name in self.custom_bowties:
            return self.custom_bowties[name]
        return _generic_bowtie_cached(normalise_bowtie_name(name), float(self.source_to_isocentre_mm))

    def spectrum(self, kvp: float, bin_kev: float = 1.0) -> Spectrum:
        """Tube spectrum at ``kvp`` with this scanner's anode angle and flat filtration."""
        return tube_spectrum(kvp, self.anode_angle_deg, dict(self.inherent_filtration_mm), bin_kev)

    def with_filtration(self, filtration_mm: Mapping[str, float] | float) -> "Scanner":
        """A copy with another flat filtration (a dict, or mm of Al)."""
        if not isinstance(filtration_mm, Mapping):
            filtration_mm = {"Al": float(filtration_mm)}
        return replace(self, inherent_filtration_mm=dict(filtration_mm))

    def with_bowtie(self, name: str, bowtie: BowtieFilter) -> "Scanner":
        """A copy that uses ``bowtie`` under ``name`` (e.g. a measured profile)."""
        custom = dict(self.custom_bowties)
        custom[str(name)] = bowtie
        names = tuple(dict.fromkeys(self.bowtie_names + (str(name),)))
        return replace(self, custom_bowties=custom, bowtie_names=names)


@functools.lru_cache(maxsize=32)
def _generic_bowtie_cached(name: str, sid_mm: float) -> BowtieFilter:
    return generic_bowtie(name, sid_mm)


def _preset(name: str, sid: float, sdd: float, coll: float, source: str) -> Scanner:
    return Scanner(name=name, source_to_isocentre_mm=sid, source_to_detector_mm=sdd,
                   fan_angle_deg=round(fan_angle_for_fov_deg(sid), 2), max_collimation_mm=coll,
                   source=source)


#: Named presets (module docstring: where each number comes from).
SCANNERS: Mapping[str, Scanner] = {
    s.name: s for s in (
        _preset("generic64", 541.0, 949.0, 40.0,
                "generic 64-slice scanner with the GE LightSpeed geometry (SID 541 mm, SDD 949 mm, "
                "64 x 0.625 mm); typical values"),
        _preset("ge_lightspeed_vct", 541.0, 949.0, 40.0,
                "GE LightSpeed VCT: SID 541 mm, SDD 949 mm, 64 x 0.625 mm; typical values"),
        _preset("siemens_definition_as", 595.0, 1085.6, 19.2,
                "Siemens SOMATOM Definition AS (64): SID 595 mm, SDD 1085.6 mm, 32 x 0.6 mm with "
                "z flying focal spot; typical values"),
        _preset("philips_brilliance64", 570.0, 1040.0, 40.0,
                "Philips Brilliance 64: SID 570 mm, SDD 1040 mm, 64 x 0.625 mm; typical values"),
        _preset("toshiba_aquilion64", 600.0, 1072.0, 32.0,
                "Toshiba (Canon) Aquilion 64: SID 600 mm, SDD 1072 mm, 64 x 0.5 mm; typical values"),
    )
}


def scanner_names() -> list[str]:
    """Names of the presets."""
    return list(SCANNERS)


def get_scanner(name: str) -> Scanner:
    """A preset by name (case-insensitive); :class:`InputError` if unknown."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in SCANNERS:
        raise InputError(f"unknown CT scanner {name!r}; known: {', '.join(SCANNERS)}")
    return SCANNERS[key]


def guess_scanner(manufacturer: str | None, model: str | None) -> Scanner:
    """The preset matching DICOM Manufacturer / Manufacturer's Model Name, else ``generic64``."""
    text = f"{manufacturer or ''} {model or ''}".lower()
    if "siemens" in text and "definition" in text:
        return SCANNERS["siemens_definition_as"]
    if ("ge " in text + " " or "general electric" in text or "ge medical" in text) and "lightspeed" in text:
        return SCANNERS["ge_lightspeed_vct"]
    if "philips" in text and "brilliance" in text:
        return SCANNERS["philips_brilliance64"]
    if ("toshiba" in text or "canon" in text) and "aquilion" in text:
        return SCANNERS["toshiba_aquilion64"]
    return SCANNERS["generic64"]


def filtration_for_hvl(kvp: float, hvl_mm_al: float, anode_angle_deg: float = 7.0,
                       tolerance_mm: float = 0.01) -> float:
    """Total Al filtration (mm) that gives a measured first HVL at ``kvp`` (bisection).

    Raises:
        InputError: HVL not reachable with 0-30 mm Al.
    """
    def hvl(t: float) -> float:
        return tube_spectrum(kvp, anode_angle_deg, {"Al": round(t, 4)}).hvl_mm_al

    lo, hi = 0.0, 30.0
    if not (hvl(lo) <= hvl_mm_al <= hvl(hi)):
        raise InputError(f"HVL {hvl_mm_al:g} mm Al at {kvp:g} kV is not reachable with 0-30 mm Al")
    while hi - lo > tolerance_mm:
        mid = 0.5 * (lo + hi)
        if hvl(mid) < hvl_mm_al:
            lo = mid
        else:
            hi = mid
    return round(0.5 * (lo + hi), 4)
