"""CT numbers to mass density and tissue materials (stoichiometric calibration).

The conversion follows the stoichiometric calibration of

    W. Schneider, T. Bortfeld, W. Schlegel, "Correlation between CT numbers and tissue
    parameters needed for Monte Carlo simulations of clinical dose distributions",
    Phys. Med. Biol. 45 (2000) 459-478  ("Schneider 2000" below).

Two tables shipped in ``persodose/data`` carry the published numbers, each with a header
comment citing its source:

* ``schneider2000_density.csv``: the knots of the piecewise-linear HU -> density curve
  (air/lung, adipose, soft tissue and bone segments; the same knots are distributed with
  GATE as ``Schneider2000DensitiesTable.txt``).
* ``schneider2000_materials.csv``: the elemental weight fractions (H C N O Na Mg P S Cl Ar
  K Ca) of the paper's 24 HU bins (Table 6; GATE's ``Schneider2000MaterialsTable.txt``).

For dose calculation the CT is binned into 13 material classes (the SINFONIA scheme: air,
lung, adipose, soft tissue, eight bone classes above 100 HU, plus one class chosen here):

======  ============================  ===============  ==========================================
index   name                          HU range         Schneider 2000 bins it covers
======  ============================  ===============  ==========================================
0       ct_air                        [-1024, -950)    air (everything below -1024 HU clamps here)
1       ct_lung                       [-950, -120)     lung
2       ct_adipose                    [-120, -22)      adipose 1-3
3       ct_adipose_soft_tissue        [-22, 19)        the two adipose/soft-tissue mixture bins
4       ct_soft_tissue                [19, 100)        soft tissue, connective tissue 80-99 HU
5-11    ct_bone_1 ... ct_bone_7       200-HU classes   bone bins, 100-1500 HU
12      ct_bone_8                     [1500, 3072)     cortical bone bin 1500-1600 HU (and above)
======  ============================  ===============  ==========================================

The 13th class (index 3) separates the adipose/soft-tissue mixtures (-22 to 18 HU, carbon
fraction 28-36 %) from soft tissue proper (13 % carbon) because that is the largest change of
composition within the soft-tissue range of Schneider's table. The bone classes start at 100 HU,
where Schneider's density curve switches to its bone segment. Values of 3072 HU and above
(metal, extended-scale CT) fall in the last class.

A class that spans several Schneider bins gets their *mass-weighted* mean composition:
each integer HU of the class (inside the calibrated range -1000..1599 HU) contributes the
composition of its Schneider bin with weight equal to its density from the calibration curve,
i.e. the composition of a region in which all CT numbers of the class are equally frequent.
The nominal density of a class is the mean of the curve over the same integer CT numbers.

Elemental data:

* atomic weights: CIAAW standard atomic weights (abridged/conventional values),
  T. Prohaska et al., Pure Appl. Chem. 94 (2022) 573-600;
* Avogadro constant: 6.02214076e23 /mol (exact, SI 2019, CODATA);
* mean excitation energies: ICRU Report 37 (1984), Stopping Powers for Electrons and
  Positrons, elemental values (Table 2.8) and, for H C N O F Cl bound in condensed
  compounds, the values of its Table 2.11 (H 19.2, C 81, N 82, O 106, F 112, Cl 180 eV).
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

import numpy as np

from persodose.errors import InputError, MaterialError, require_finite
from persodose.grid import Grid, Kind
from persodose.physics.constants import AVOGADRO_PER_MOL  # noqa: F401


#: Lowest CT number of a 12-bit scanner, HU; lower values clamp to the first (air) class.
HU_FLOOR = -1024.0
#: One above the highest 12-bit CT number (3071 HU); the last class is open above.
HU_CEIL = 3072.0

#: Range of CT numbers covered by Schneider 2000's calibration and composition table, HU.
SCHNEIDER_HU_RANGE = (-1000, 1600)

# symbol: (Z, standard atomic weight [g/mol] (CIAAW, Prohaska et al. 2022),
#          ICRU 37 elemental mean excitation energy I [eV])
_ELEMENTS: dict[str, tuple[int, float, float]] = {
    "H": (1, 1.008, 19.2),
    "C": (6, 12.011, 78.0),
    "N": (7, 14.007, 82.0),
    "O": (8, 15.999, 95.0),
    "F": (9, 18.998403163, 115.0),
    "Na": (11, 22.98976928, 149.0),
    "Mg": (12, 24.305, 156.0),
    "Al": (13, 26.9815384, 166.0),
    "Si": (14, 28.085, 173.0),
    "P": (15, 30.973761998, 173.0),
    "S": (16, 32.06, 180.0),
    "Cl": (17, 35.45, 174.0),
    "Ar": (18, 39.948, 188.0),
    "K": (19, 39.0983, 190.0),
    "Ca": (20, 40.078, 191.0),
    "Ti": (22, 47.867, 233.0),
    "Fe": (26, 55.845, 286.0),
    "Cu": (29, 63.546, 322.0),
    "Zn": (30, 65.38, 330.0),
    "Ag": (47, 107.8682, 470.0),
    "Sn": (50, 118.71, 488.0),
    "I": (53, 126.90447, 491.0),
}

#: ICRU 37, Table 2.11: I values of atoms bound in condensed compounds, eV (for Bragg additivity).
_I_CONDENSED_EV = {"H": 19.2, "C": 81.0, "N": 82.0, "O": 106.0, "F": 112.0, "Cl": 180.0}

#: Media lighter than this (g/cm3) are treated as gases in :meth:`Material.mean_excitation_energy_ev`.
GAS_DENSITY_LIMIT_G_CM3 = 0.1

#: Elements of the Schneider 2000 composition table, in the paper's column order.
SCHNEIDER_ELEMENTS = ("H", "C", "N", "O", "Na", "Mg", "P", "S", "Cl", "Ar", "K", "Ca")


def element_z_a(symbol: str) -> tuple[int, float]:
    """Atomic number and standard atomic weight (g/mol, CIAAW 2022) of an element.

    Raises:
        MaterialError: for an element persodose has no data for.
    """
    if symbol not in _ELEMENTS:
        raise MaterialError(f"unknown element {symbol!r}; known: {', '.join(_ELEMENTS)}")
    z, a, _ = _ELEMENTS[symbol]
    return z, a


def known_elements() -> tuple[str, ...]:
    """Element symbols for which Z, atomic weight and I value are tabulated here."""
    return tuple(_ELEMENTS)


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Material:
    """A homogeneous medium: a CT class or a named reference medium.

    Attributes:
        index: material index written in MATERIAL grids (0..255); -1 for reference media
            that are not CT classes.
        name: unique name (lower case).
        hu_min: lower CT-number bound of the class, HU (inclusive); NaN for reference media.
        hu_max: upper bound, HU (exclusive); NaN for reference media.
        density_g_cm3: nominal mass density, g/cm3.
        mass_fractions: element symbol -> weight fraction; the fractions sum to 1.
        source: where the composition and density come from.
    """

    index: int
    name: str
    hu_min: float
    hu_max: float
    density_g_cm3: float
    mass_fractions: Mapping[str, float] = field(hash=False)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        fractions = dict(self.mass_fractions)
        unknown = sorted(set(fractions) - set(_ELEMENTS))
        if unknown:
            raise MaterialError(f"material {self.name!r}: unknown element(s) {unknown}; "
                                f"known: {', '.join(_ELEMENTS)}")
        values = np.array(list(fractions.values()), dtype=float)
        if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise MaterialError(f"material {self.name!r}: mass fractions must be finite and >= 0")
        if abs(values.sum() - 1.0) > 1e-6:
            raise MaterialError(f"material {self.name!r}: mass fractions sum to {values.sum():.6f}, not 1")
        if not (math.isfinite(self.density_g_cm3) and self.density_g_cm3 > 0):
            raise MaterialError(f"material {self.name!r}: density {self.density_g_cm3} g/cm3 is not positive")
        if not -1 <= self.index <= 255:
            raise MaterialError(f"material {self.name!r}: index {self.index} outside -1..255")
        object.__setattr__(self, "mass_fractions", fractions)

    def electrons_per_gram(self) -> float:
        """Electron density per unit mass, 1/g: ``N_A * sum_i w_i Z_i / A_i``.

        Atomic weights: CIAAW standard atomic weights (Prohaska et al. 2022); N_A exact (SI 2019).
        """
        return AVOGADRO_PER_MOL * sum(w * _ELEMENTS[el][0] / _ELEMENTS[el][1]
                                      for el, w in self.mass_fractions.items())

    def electrons_per_cm3(self) -> float:
        """Electron density, 1/cm3 (electrons per gram times the nominal density)."""
        return self.electrons_per_gram() * self.density_g_cm3

    def mean_excitation_energy_ev(self) -> float:
        """Mean excitation energy I, eV, by Bragg additivity.

        ``ln I = sum_i w_i (Z_i/A_i) ln I_i / sum_i w_i (Z_i/A_i)`` with the ICRU Report 37
        values: Table 2.11 for H, C, N, O, F, Cl in condensed compounds, elemental values
        (Table 2.8) for the other elements. Gives 75.3 eV for water (ICRU 37: 75.0 eV).
        Gases (nominal density below :data:`GAS_DENSITY_LIMIT_G_CM3`, e.g. air, 85.7 eV) use
        the elemental values of all their elements.
        """
        gas = self.density_g_cm3 < GAS_DENSITY_LIMIT_G_CM3
        num = den = 0.0
        for el, w in self.mass_fractions.items():
            z, a, i_elem = _ELEMENTS[el]
            i_ev = i_elem if gas else _I_CONDENSED_EV.get(el, i_elem)
            num += w * z / a * math.log(i_ev)
            den += w * z / a
        return math.exp(num / den)


@dataclass(frozen=True, eq=False)
class Calibration:
    """A piecewise-linear HU -> mass density curve.

    Attributes:
        hu: knots, HU, strictly increasing, shape (n,), n >= 2.
        density_g_cm3: density at the knots, g/cm3, >= 0, shape (n,). Between knots the
            density is interpolated linearly, outside it is held at the end values.
        source: citation or file the knots come from.
    """

    hu: np.ndarray
    density_g_cm3: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, dtype=np.float64).reshape(-1)
        rho = np.asarray(self.density_g_cm3, dtype=np.float64).reshape(-1)
        what = f"calibration {self.source!r}"
        if hu.size != rho.size:
            raise InputError(f"{what}: {hu.size} HU knots but {rho.size} densities")
        if hu.size < 2:
            raise InputError(f"{what}: needs at least 2 knots, got {hu.size}")
        require_finite(hu, f"{what} HU knots")
        require_finite(rho, f"{what} densities")
        if np.any(np.diff(hu) <= 0):
            raise InputError(f"{what}: HU knots are not strictly increasing")
        if np.any(rho < 0):
            raise InputError(f"{what}: negative density")
        hu.setflags(write=False)
        rho.setflags(write=False)
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "density_g_cm3", rho)


# --------------------------------------------------------------------------- calibration
def _data_file(name: str):
    return resources.files("persodose") / "data" / name


@functools.lru_cache(maxsize=1)
def schneider_calibration() -> Calibration:
    """The HU -> density curve of Schneider et al., Phys. Med. Biol. 45 (2000) 459-478.

    Knots (HU, g/cm3): (-1000, 0.00121), (-98, 0.93), (-97, 0.930486), (14, 1.03),
    (23, 1.031), (100, 1.1199), (101, 1.0762), (1600, 1.9642) as distributed with GATE
    (``Schneider2000DensitiesTable.txt``), plus (3071, 2.835613), the bone segment extended
    linearly to the top of the 12-bit range. Note the published curve is not monotone: the
    soft-tissue line ends at 1.1199 g/cm3 at 100 HU and the bone line starts at 1.0762 g/cm3.
    """
    with resources.as_file(_data_file("schneider2000_density.csv")) as path:
        cal = load_calibration_csv(path)
    return Calibration(cal.hu, cal.density_g_cm3,
                       "Schneider, Bortfeld, Schlegel, Phys. Med. Biol. 45 (2000) 459-478 "
                       "(GATE Schneider2000DensitiesTable), bone line extrapolated to 3071 HU")


#: Density of the densest element at room temperature, osmium: 22.587 g/cm3, here 22.59
#: (W. M. Haynes (ed.), CRC Handbook of Chemistry and Physics, 97th ed., CRC Press 2016,
#: section 4, densities of the elements). No tissue, implant or contrast agent in a CT is
#: denser, so a calibration density above it is a typing or unit error (kg/m3 for g/cm3).
MAX_CALIBRATION_DENSITY_G_CM3 = 22.59


def _split_row(line: str) -> list[str]:
    for sep in (",", ";", "\t"):
        if sep in line:
            return [c.strip() for c in line.split(sep)]
    return line.split()


def load_calibration_csv(path: str | Path) -> Calibration:
    """Read a HU -> density calibration from a two-column text file.

    Format: one ``HU,density_g_cm3`` pair per line (comma, semicolon, tab or blanks);
    lines starting with ``#`` and blank lines are ignored; the first non-comment line may
    be a header. HU must be strictly increasing; densities must lie in
    ``[0, 22.59]`` g/cm3 (:data:`MAX_CALIBRATION_DENSITY_G_CM3`, osmium, the densest element).

    Args:
        path: the file.

    Returns:
        A :class:`Calibration` whose ``source`` is the path.

    Raises:
        InputError: missing/unreadable file, a row that is not two numbers, NaN or infinite
            values, HU not strictly increasing, fewer than 2 rows. The message names the file
            and line.
        MaterialError: (an InputError) a negative density, or one above osmium's
            22.59 g/cm3; the message names the file and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"calibration file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read calibration file {p}: {exc}") from None
    hu: list[float] = []
    rho: list[float] = []
    seen_data_line = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cells = _split_row(line)
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not seen_data_line and not hu:
                seen_data_line = True  # header line
                continue
            raise InputError(f"{p}:{lineno}: expected two numbers 'HU,density', got {line!r}") from None
        seen_data_line = True
        if len(values) != 2:
            raise InputError(f"{p}:{lineno}: expected 2 columns 'HU,density', got {len(values)}")
        h, d = values
        if not (math.isfinite(h) and math.isfinite(d)):
            raise InputError(f"{p}:{lineno}: NaN or infinite value in {line!r}")
        if d < 0:
            raise MaterialError(f"{p}:{lineno}: negative density {d:g} g/cm3")
        if d > MAX_CALIBRATION_DENSITY_G_CM3:
            raise MaterialError(
                f"{p}:{lineno}: density {d:g} g/cm3 is above {MAX_CALIBRATION_DENSITY_G_CM3} "
                "g/cm3, the density of osmium, the densest element (kg/m3 given for g/cm3?)")
        if hu and h <= hu[-1]:
            raise InputError(f"{p}:{lineno}: HU {h} not greater than the previous {hu[-1]} "
                             "(knots must be strictly increasing)")
        hu.append(h)
        rho.append(d)
    if len(hu) < 2:
        raise InputError(f"{p}: a calibration needs at least 2 rows of 'HU,density' (knots), "
                         f"found {len(hu)}")
    return Calibration(np.array(hu), np.array(rho), str(p))


def hu_to_density(hu: np.ndarray, calibration: Calibration | None = None) -> np.ndarray:
    """Mass density from CT numbers by linear interpolation of the calibration.

    Args:
        hu: CT numbers, HU, any shape.
        calibration: the curve; default :func:`schneider_calibration`.

    Returns:
        float32 array of the same shape, g/cm3; values outside the knots take the end
        densities (so anything below -1000 HU is air at 0.00121 g/cm3 with the default).

    Raises:
        InputError: NaN or infinite CT numbers.
    """
    cal = calibration or schneider_calibration()
    arr = np.asarray(hu)
    require_finite(arr, "CT numbers")
    out = np.interp(arr.astype(np.float64, copy=False), cal.hu, cal.density_g_cm3)
    return np.asarray(out, dtype=np.float32).reshape(arr.shape)


# --------------------------------------------------------------------------- Schneider bins
@dataclass(frozen=True)
class _Bin:
    hu_min: int
    hu_max: int
    name: str
    fractions: tuple[float, ...]  # in SCHNEIDER_ELEMENTS order, normalised to sum 1


@functools.lru_cache(maxsize=1)
def _schneider_bins() -> tuple[_Bin, ...]:
    """The 24 composition bins of Schneider 2000, Table 6, from the shipped CSV."""
    text = _data_file("schneider2000_materials.csv").read_text(encoding="utf-8")
    rows = [r for r in csv.reader(line for line in text.splitlines()
                                  if line.strip() and not line.startswith("#"))]
    header, body = rows[0], rows[1:]
    if tuple(header[3:]) != SCHNEIDER_ELEMENTS:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"unexpected columns in schneider2000_materials.csv: {header}")
    bins = []
    for r in body:
        pct = np.array([float(v) for v in r[3:]])
        bins.append(_Bin(int(r[0]), int(r[1]), r[2], tuple(pct / pct.sum())))
    for a, b in zip(bins, bins[1:]):
        if a.hu_max != b.hu_min:  # pragma: no cover - guards the shipped file
            raise RuntimeError(f"schneider2000_materials.csv: gap between {a.name} and {b.name}")
    return tuple(bins)


def schneider_bin_materials() -> list[Material]:
    """The 24 bins of Schneider 2000 Table 6 as materials (nominal density: curve mean).

    Useful for a fine (24-class) segmentation; :func:`default_materials` is the 13-class one.
    """
    return [_class_material(i, b.name, b.hu_min, b.hu_max) for i, b in enumerate(_schneider_bins())]


#: The 13 CT classes: (name, hu_min, hu_max). See the module docstring.
_CLASSES: tuple[tuple[str, float, float], ...] = (
    ("ct_air", HU_FLOOR, -950.0),
    ("ct_lung", -950.0, -120.0),
    ("ct_adipose", -120.0, -22.0),
    ("ct_adipose_soft_tissue", -22.0, 19.0),
    ("ct_soft_tissue", 19.0, 100.0),
    ("ct_bone_1", 100.0, 300.0),
    ("ct_bone_2", 300.0, 500.0),
    ("ct_bone_3", 500.0, 700.0),
    ("ct_bone_4", 700.0, 900.0),
    ("ct_bone_5", 900.0, 1100.0),
    ("ct_bone_6", 1100.0, 1300.0),
    ("ct_bone_7", 1300.0, 1500.0),
    ("ct_bone_8", 1500.0, HU_CEIL),
)


def _class_material(index: int, name: str, hu_min: float, hu_max: float,
                    calibration: Calibration | None = None) -> Material:
    """Mass-weighted Schneider composition and mean density over the integer HU of a class."""
    lo = max(math.ceil(hu_min), SCHNEIDER_HU_RANGE[0])
    hi = min(math.ceil(hu_max), SCHNEIDER_HU_RANGE[1])
    if hi <= lo:  # class entirely outside the calibrated range: use its nearest end
        lo = min(max(lo, SCHNEIDER_HU_RANGE[0]), SCHNEIDER_HU_RANGE[1] - 1)
        hi = lo + 1
    hus = np.arange(lo, hi, dtype=np.float64)
    rho = hu_to_density(hus, calibration).astype(np.float64)
    bins = _schneider_bins()
    edges = np.array([b.hu_min for b in bins[1:]], dtype=np.float64)
    which = np.searchsorted(edges, hus, side="right")
    comp = np.array([b.fractions for b in bins])[which]  # (n, 12)
    weights = rho / rho.sum()
    frac = weights @ comp
    frac = frac / frac.sum()
    fractions = {el: float(f) for el, f in zip(SCHNEIDER_ELEMENTS, frac) if f > 0}
    covered = sorted({bins[k].name for k in which})
    return Material(index, name, float(hu_min), float(hu_max), float(rho.mean()), fractions,
                    source="Schneider et al. 2000 Table 6 bins " + "+".join(covered)
                    + "; density-weighted over integer HU")


@functools.lru_cache(maxsize=1)
def _default_materials() -> tuple[Material, ...]:
    return tuple(_class_material(i, n, lo, hi) for i, (n, lo, hi) in enumerate(_CLASSES))


def default_materials() -> list[Material]:
    """The 13 CT material classes, index 0..12 (see the module docstring for the table).

    Returns:
        A new list (the :class:`Material` objects are immutable and shared).
    """
    return list(_default_materials())


def _check_classes(materials: Sequence[Material]) -> tuple[np.ndarray, np.ndarray]:
    if not materials:
        raise MaterialError("no materials given")
    mats = sorted(materials, key=lambda m: m.hu_min)
    lows = np.array([m.hu_min for m in mats], dtype=np.float64)
    highs = np.array([m.hu_max for m in mats], dtype=np.float64)
    if not (np.all(np.isfinite(lows)) and np.all(np.isfinite(highs))):
        raise MaterialError("every material used for CT segmentation needs a finite HU range")
    if np.any(highs <= lows):
        raise MaterialError("a material has hu_max <= hu_min")
    if np.any(highs[:-1] != lows[1:]):
        raise MaterialError("material HU ranges must be contiguous (each hu_max = next hu_min)")
    idx = np.array([m.index for m in mats])
    if np.any(idx < 0) or np.any(idx > 255) or len(set(idx.tolist())) != len(idx):
        raise MaterialError("material indices must be distinct and within 0..255")
    return lows, idx.astype(np.uint8)


def hu_to_material(hu: np.ndarray, materials: list[Material] | None = None) -> np.ndarray:
    """Material class index of every CT number.

    A value ``h`` gets the class with ``hu_min <= h < hu_max``; values below the first class
    clamp to it (air) and values at or above the last ``hu_max`` clamp to the last class.

    Args:
        hu: CT numbers, HU, any shape.
        materials: contiguous classes; default :func:`default_materials`.

    Returns:
        uint8 array of the same shape holding :attr:`Material.index`.

    Raises:
        InputError: NaN or infinite CT numbers. MaterialError: classes not contiguous.
    """
    mats = materials if materials is not None else list(_default_materials())
    lows, idx = _check_classes(mats)
    arr = np.asarray(hu)
    require_finite(arr, "CT numbers")
    pos = np.searchsorted(lows[1:], arr, side="right")
    return idx[pos].reshape(arr.shape)


def ct_to_density_and_materials(ct: Grid, calibration: Calibration | None = None,
                                materials: list[Material] | None = None
                                ) -> tuple[Grid, Grid, list[Material]]:
    """Density and material-index grids from a CT grid.

    Args:
        ct: CT grid in HU (kind CT, or SCALAR holding HU).
        calibration: HU -> density curve; default :func:`schneider_calibration`.
        materials: contiguous classes; default :func:`default_materials`.

    Returns:
        ``(density, material, materials)``: a ``Kind.DENSITY`` float32 grid (g/cm3), a
        ``Kind.MATERIAL`` uint8 grid on the same geometry, and the class list used.
        CT numbers below -1024 HU are air. The per-voxel density comes from
        ``calibration``; the classes' nominal densities (default classes: means of the
        Schneider curve) are not changed by a custom calibration.

    Raises:
        InputError: a grid of another kind, or NaN/infinite CT numbers.
    """
    if ct.kind not in (Kind.CT, Kind.SCALAR):
        raise InputError(f"expected a CT grid in HU, got a {ct.kind.value} grid")
    if str(ct.unit or "").strip().upper() not in ("HU", ""):
        raise InputError(f"expected CT numbers in HU, got unit {ct.unit!r}")
    require_finite(ct.array, "CT image")
    mats = materials if materials is not None else default_materials()
    hu = np.maximum(np.asarray(ct.array, dtype=np.float64), HU_FLOOR)
    density = ct.with_array(hu_to_density(hu, calibration), Kind.DENSITY, "g/cm3")
    material = ct.with_array(hu_to_material(hu, mats), Kind.MATERIAL, "")
    return density, material, list(mats)


# --------------------------------------------------------------------------- reference media
def _water_fractions() -> dict[str, float]:
    mh, mo = 2 * _ELEMENTS["H"][1], _ELEMENTS["O"][1]
    return {"H": mh / (mh + mo), "O": mo / (mh + mo)}


def _pct(**kw: float) -> dict[str, float]:
    total = sum(kw.values())
    return {k: v / total for k, v in kw.items()}


@functools.lru_cache(maxsize=1)
def reference_media() -> Mapping[str, Material]:
    """Named reference media for dose kernels and phantoms.

    * ``water``: H2O, stoichiometric, 1.000 g/cm3.
    * ``soft_tissue``: ICRU four-component soft tissue (ICRU Report 33, 1980; NIST
      "Tissue, Soft (ICRU four-component)"): H 10.1172, C 11.1, N 2.6, O 76.1828 % by mass,
      1.000 g/cm3.
    * ``lung``: ICRU Report 44 (1989) lung, healthy, inflated: composition of Schneider's
      lung bin (H 10.3 C 10.5 N 3.1 O 74.9 Na 0.2 P 0.2 S 0.3 Cl 0.3 K 0.2 %), 0.26 g/cm3.
    * ``bone``: ICRU Report 44 cortical bone (adult), 1.92 g/cm3 (H 3.4 C 15.5 N 4.2 O 43.5
      Na 0.1 Mg 0.2 P 10.3 S 0.3 Ca 22.5 %), the same as Schneider's 1500-1600 HU bin.
    * ``adipose``: ICRU Report 44 adipose tissue, 0.95 g/cm3 (H 11.4 C 59.8 N 0.7 O 27.8
      Na 0.1 S 0.1 Cl 0.1 %).
    * ``air``: dry air near sea level (NIST ESTAR/PSTAR), C 0.0124 N 75.5268 O 23.1781
      Ar 1.2827 %, 1.20479e-3 g/cm3.
    """
    media = (
        Material(-1, "water", math.nan, math.nan, 1.0, _water_fractions(), "H2O"),
        Material(-1, "soft_tissue", math.nan, math.nan, 1.0,
                 _pct(H=10.1172, C=11.1, N=2.6, O=76.1828),
                 "ICRU Report 33 four-component soft tissue"),
        Material(-1, "lung", math.nan, math.nan, 0.26,
                 _pct(H=10.3, C=10.5, N=3.1, O=74.9, Na=0.2, P=0.2, S=0.3, Cl=0.3, K=0.2),
                 "ICRU Report 44 lung (healthy, inflated), 0.26 g/cm3"),
        Material(-1, "bone", math.nan, math.nan, 1.92,
                 _pct(H=3.4, C=15.5, N=4.2, O=43.5, Na=0.1, Mg=0.2, P=10.3, S=0.3, Ca=22.5),
                 "ICRU Report 44 cortical bone, 1.92 g/cm3"),
        Material(-1, "adipose", math.nan, math.nan, 0.95,
                 _pct(H=11.4, C=59.8, N=0.7, O=27.8, Na=0.1, S=0.1, Cl=0.1),
                 "ICRU Report 44 adipose tissue, 0.95 g/cm3"),
        Material(-1, "air", math.nan, math.nan, 1.20479e-3,
                 _pct(C=0.0124, N=75.5268, O=23.1781, Ar=1.2827),
                 "NIST dry air near sea level"),
    )
    return MappingProxyType({m.name: m for m in media})


def material_names() -> list[str]:
    """Every name :func:`get_material` accepts."""
    return list(reference_media()) + [m.name for m in _default_materials()] + [
        "schneider_" + b.name for b in _schneider_bins()]


def get_material(name: str) -> Material:
    """A material by name (case-insensitive; blanks and hyphens read as underscores).

    Accepts the reference media of :func:`reference_media` (``water``, ``soft_tissue``,
    ``lung``, ``bone``, ``adipose``, ``air``), the 13 CT classes (``ct_air`` ...
    ``ct_bone_8``) and the 24 Schneider bins as ``schneider_<bin>`` (e.g. ``schneider_bone_15``).

    Raises:
        MaterialError: unknown name; the message lists the accepted names.
    """
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    media = reference_media()
    if key in media:
        return media[key]
    for m in _default_materials():
        if m.name == key:
            return m
    if key.startswith("schneider_"):
        for m in schneider_bin_materials():
            if "schneider_" + m.name == key:
                return m
    raise MaterialError(f"unknown material {name!r}; known: {', '.join(material_names())}")


def materials_table(materials: Iterable[Material] | None = None) -> list[dict]:
    """JSON-ready description of materials.

    Returns:
        One dict per material: ``index``, ``name``, ``hu_min``, ``hu_max`` (None where not a
        CT class), ``density_g_cm3``, ``mass_fractions`` (element -> fraction),
        ``electrons_per_gram``, ``mean_excitation_energy_ev``, ``source``.
    """
    mats = list(materials) if materials is not None else default_materials()

    def num(x: float):
        return None if not math.isfinite(x) else float(x)

    return [
        {
            "index": m.index,
            "name": m.name,
            "hu_min": num(m.hu_min),
            "hu_max": num(m.hu_max),
            "density_g_cm3": round(float(m.density_g_cm3), 6),
            "mass_fractions": {el: round(float(w), 6) for el, w in m.mass_fractions.items()},
            "electrons_per_gram": float(f"{m.electrons_per_gram():.6e}"),
            "mean_excitation_energy_ev": round(m.mean_excitation_energy_ev(), 2),
            "source": m.source,
        }
        for m in mats
    ]


def materials_from_table(rows: Iterable[Mapping], where: str = "materials table") -> list[Material]:
    """Materials back from :func:`materials_table` rows (e.g. a ``--materials-out`` JSON).

    Mass fractions are renormalised (the table rounds them to 6 digits).

    Raises:
        MaterialError: a row without a name or composition, or indices that are not 0..n-1.
    """
    mats: list[Material] = []
    for k, row in enumerate(rows):
        try:
            fractions = {str(el): float(w) for el, w in dict(row["mass_fractions"]).items()}
            total = sum(fractions.values())
            fractions = {el: w / total for el, w in fractions.items()}
            hu_min = row.get("hu_min")
            hu_max = row.get("hu_max")
            mats.append(Material(
                index=int(row.get("index", k)), name=str(row["name"]),
                hu_min=-math.inf if hu_min is None else float(hu_min),
                hu_max=math.inf if hu_max is None else float(hu_max),
                density_g_cm3=float(row["density_g_cm3"]), mass_fractions=fractions,
                source=str(row.get("source", "")),
            ))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise MaterialError(f"{where}: row {k} is not a material ({exc})") from None
    if [m.index for m in mats] != list(range(len(mats))):
        raise MaterialError(f"{where}: material indices must be 0..{len(mats) - 1} in order")
    return mats
