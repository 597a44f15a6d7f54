"""Voxel S-value kernels: type, octant tables, kernel sets, analytic test kernels.

A voxel S value ``S(i, j, k)`` is the mean absorbed dose in the target voxel at offset
``(i, j, k)`` voxels from a source voxel per decay in the source voxel, in an infinite
homogeneous medium (MIRD Pamphlet No. 17: W. E. Bolch et al., J. Nucl. Med. 40 (1999)
11S-36S). Published tables (e.g. MIRD 17; A. Dieudonne et al., J. Nucl. Med. 51 (2010)
1600-1607; N. Lanconelli et al., Phys. Med. Biol. 57 (2012) 517-545) give one octant,
``i, j, k >= 0``, in mGy/(MBq s), for cubic voxels of one size; the full kernel follows by the
mirror symmetry of a point source in a homogeneous medium, ``S(+-i, +-j, +-k) = S(i, j, k)``.

Unit conversion: 1 mGy/(MBq s) = 1e-3 Gy / (1e6 Bq s) = 1e-9 Gy/(Bq s).

Octant text format read and written here: one entry per line ``i j k S`` (integers
``i, j, k >= 0`` counting voxels along x, y and z; ``S`` in mGy/(MBq s)); blank lines and text
after ``#`` ignored. Header comments may declare ``# voxel_mm: 4.42`` (or ``voxel size 4.42 mm``),
``# units: mGy/(MBq s)``, ``# medium: soft_tissue``, ``# density_g_cm3: 1.04``,
``# nuclide: Lu-177``; declared values are checked against the caller's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

import numpy as np

from persodose.errors import GeometryError, InputError, UnitsError
from persodose.physics.radionuclides import normalise_nuclide_name
from persodose.physics.constants import MEV_TO_J  # noqa: F401

__all__ = [
    "MGY_PER_MBQ_S_TO_GY_PER_BQ_S",
    "MEV_TO_J",
    "ICRU_SOFT_TISSUE_DENSITY_G_CM3",
    "MSV_REFERENCE_DENSITIES_G_CM3",
    "VoxelKernel",
    "KernelSet",
    "read_octant_table",
    "write_octant_table",
    "full_from_octant",
    "local_deposition_kernel",
    "exponential_kernel",
]

#: 1 mGy/(MBq s) in Gy/(Bq s).
MGY_PER_MBQ_S_TO_GY_PER_BQ_S = 1e-9
#: Density of the soft tissue of soft-tissue voxel S-value kernels, g/cm3: the ICRU soft-tissue
#: density named in the persodose issue (DSV scales from it). Check the density stated with any
#: published table you load and pass it as ``density_g_cm3`` (or a ``# density_g_cm3:`` header).
ICRU_SOFT_TISSUE_DENSITY_G_CM3 = 1.04
#: Reference densities of the four MSV media (g/cm3): ICRU Report 44 lung (inflated) 0.26,
#: ICRU-44 soft tissue 1.04, and two bone densities: 1.4 (a trabecular/spongiosa-like mix, an
#: illustrative choice of persodose, not a published value) and ICRU-44 cortical bone 1.92.
MSV_REFERENCE_DENSITIES_G_CM3: Mapping[str, float] = MappingProxyType({
    "lung": 0.26,
    "soft_tissue": ICRU_SOFT_TISSUE_DENSITY_G_CM3,
    "bone_1": 1.4,
    "bone_2": 1.92,
})

_SPACING_TOL_MM = 0.01


def _spacing3(voxel_mm) -> tuple[float, float, float]:
    arr = np.asarray(voxel_mm, dtype=float).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"kernel voxel size must be one or three positive numbers (mm), got {voxel_mm!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _fmt_mm(sp: Sequence[float]) -> str:
    if max(sp) - min(sp) < 1e-9:
        return f"{sp[0]:g} mm"
    return "x".join(f"{s:g}" for s in sp) + " mm (z, y, x)"


@dataclass(frozen=True, eq=False)
class VoxelKernel:
    """A voxel S-value kernel centred on its source voxel.

    Attributes:
        s_mgy_per_mbq_s: S values, mGy/(MBq s), float32, shape ``(2nz+1, 2ny+1, 2nx+1)``
            (odd), indexed ``(z, y, x)``; the source voxel is the centre.
        voxel_mm: voxel size ``(z, y, x)``, mm.
        medium: name of the homogeneous medium the kernel was computed in.
        density_g_cm3: density of that medium, g/cm3.
        nuclide: canonical ICRP-107 name of the radionuclide ("" if unspecified).
        source: provenance (publication, file, generator).
        far_field: the kernel's dose beyond its own box, on a coarse grid
            (:class:`persodose.dose.far_field.FarField`), which the convolution methods add;
            ``None``: the kernel ends at its box. Its inner half-width must be the box's.
    """

    s_mgy_per_mbq_s: np.ndarray
    voxel_mm: tuple[float, float, float]
    medium: str = "soft_tissue"
    density_g_cm3: float = ICRU_SOFT_TISSUE_DENSITY_G_CM3
    nuclide: str = ""
    source: str = ""
    far_field: object | None = None

    def __post_init__(self) -> None:
        s = np.array(self.s_mgy_per_mbq_s, dtype=np.float32, copy=True)
        if s.ndim != 3 or any(n % 2 == 0 for n in s.shape):
            raise InputError(f"a voxel kernel must be a 3-D array of odd sizes, got shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise InputError(f"kernel ({self.source or self.medium}) holds NaN or infinite S values")
        if np.any(s < 0):
            raise InputError(f"kernel ({self.source or self.medium}) holds negative S values")
        s.setflags(write=False)
        object.__setattr__(self, "s_mgy_per_mbq_s", s)
        object.__setattr__(self, "voxel_mm", _spacing3(self.voxel_mm))
        rho = float(self.density_g_cm3)
        if not math.isfinite(rho) or rho <= 0:
            raise InputError(f"kernel medium density must be positive, got {self.density_g_cm3!r}")
        object.__setattr__(self, "density_g_cm3", rho)
        if self.nuclide:
            object.__setattr__(self, "nuclide", normalise_nuclide_name(self.nuclide))
        ff = self.far_field
        if ff is not None:
            box = [(n // 2 + 0.5) * v for n, v in zip(s.shape, self.voxel_mm)]
            if len(set(s.shape)) != 1 or any(abs(b - ff.near_half_mm) > 1e-6 * b for b in box):
                raise InputError(f"a far field from {ff.near_half_mm:g} mm does not fit a kernel whose box ends at "
                                 f"{_fmt_mm(box)} (a cropped kernel needs its far field rebuilt)")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.s_mgy_per_mbq_s.shape)  # type: ignore[return-value]

    @property
    def half_width(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``: voxels on each side of the centre."""
        return tuple(n // 2 for n in self.shape)  # type: ignore[return-value]

    @property
    def gy_per_bq_s(self) -> np.ndarray:
        """S values in Gy/(Bq s) (float32, a new array)."""
        return (self.s_mgy_per_mbq_s.astype(np.float64) * MGY_PER_MBQ_S_TO_GY_PER_BQ_S).astype(np.float32)

    @property
    def voxel_mass_g(self) -> float:
        """Mass of one voxel of the kernel's medium, g."""
        return float(np.prod(self.voxel_mm)) / 1000.0 * self.density_g_cm3

    def energy_per_decay_mev(self) -> float:
        """Energy absorbed in the kernel's volume per decay, MeV: ``sum(S) * voxel mass``.

        For a kernel that extends beyond the particles' range this is the emitted energy that
        is absorbed (electrons and the photon energy absorbed within the kernel).
        """
        total_gy_per_decay = float(np.sum(self.s_mgy_per_mbq_s, dtype=np.float64)) * MGY_PER_MBQ_S_TO_GY_PER_BQ_S
        return total_gy_per_decay * self.voxel_mass_g * 1e-3 / MEV_TO_J

    def octant(self) -> np.ndarray:
        """The ``i, j, k >= 0`` octant, shape ``(nz+1, ny+1, nx+1)``, mGy/(MBq s)."""
        nz, ny, nx = self.half_width
        return np.array(self.s_mgy_per_mbq_s[nz:, ny:, nx:])

    def check_voxel_size(self, spacing_zyx_mm: Sequence[float], what: str = "the dose grid") -> None:
        """Refuse a kernel computed for another voxel size.

        Raises:
            GeometryError: (an :class:`InputError`) naming both voxel sizes.
        """
        sp = _spacing3(spacing_zyx_mm)
        if not np.allclose(sp, self.voxel_mm, atol=_SPACING_TOL_MM, rtol=0):
            raise GeometryError(
                f"the {self.medium} kernel ({self.source or 'no source'}) is for voxels of "
                f"{_fmt_mm(self.voxel_mm)} but {what} has voxels of {_fmt_mm(sp)}; "
                f"resample the images or use a kernel for {_fmt_mm(sp)}")

    def check_nuclide(self, nuclide: str) -> None:
        """Refuse a kernel computed for another radionuclide (no check when unspecified)."""
        if self.nuclide and normalise_nuclide_name(nuclide) != self.nuclide:
            raise InputError(f"the {self.medium} kernel is for {self.nuclide}, not {normalise_nuclide_name(nuclide)}")


def full_from_octant(octant: np.ndarray) -> np.ndarray:
    """Mirror one octant ``(nz+1, ny+1, nx+1)`` into the full kernel ``(2nz+1, 2ny+1, 2nx+1)``.

    ``full[nz + k, ny + j, nx + i] = octant[|k|, |j|, |i|]``.
    """
    o = np.asarray(octant)
    if o.ndim != 3:
        raise InputError(f"an octant must be 3-D, got shape {o.shape}")
    out = o
    for axis in range(3):
        mirrored = np.flip(np.take(out, np.arange(1, out.shape[axis]), axis=axis), axis=axis)
        out = np.concatenate([mirrored, out], axis=axis)
    return out


# --------------------------------------------------------------------------- text tables
_VOXEL_RE = re.compile(r"voxel[\s_-]*(?:size|mm|side)?[^0-9]*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(mm|cm)?",
                       re.IGNORECASE)
_KEY_RE = re.compile(r"^\s*([A-Za-z_ ]+?)\s*[:=]\s*(.+?)\s*$")
_UNIT_OK = {"mgy/(mbq s)", "mgy/(mbq*s)", "mgy/mbq/s", "mgy/(mbq.s)", "mgy mbq-1 s-1", "mgy/mbqs"}


def _parse_header(comments: list[str], path: Path) -> dict:
    info: dict = {}
    for text in comments:
        m = _KEY_RE.match(text)
        key = m.group(1).strip().lower().replace(" ", "_") if m else ""
        val = m.group(2) if m else ""
        if key in ("units", "unit"):
            info["units"] = val
        elif key == "medium":
            info["medium"] = val
        elif key in ("nuclide", "radionuclide"):
            info["nuclide"] = val
        elif key in ("density_g_cm3", "density"):
            try:
                info["density_g_cm3"] = float(val.split()[0])
            except (ValueError, IndexError):
                raise InputError(f"{path}: cannot read the density in header line '# {text}'") from None
        elif "voxel" in text.lower():
            vm = _VOXEL_RE.search(text)
            if vm:
                size = float(vm.group(1)) * (10.0 if (vm.group(2) or "").lower() == "cm" else 1.0)
                info["voxel_mm"] = size
    return info


def read_octant_table(path: str | Path, voxel_mm: float | Sequence[float], *, medium: str | None = None,
                      density_g_cm3: float | None = None, nuclide: str | None = None,
                      source: str | None = None) -> VoxelKernel:
    """Read a published one-octant voxel S-value table (``i j k S`` per line, mGy/(MBq s)).

    Args:
        path: text file (see the module docstring for the format).
        voxel_mm: voxel size the kernel must have (the dose grid's), mm, one number or
            ``(z, y, x)``. A table that declares another voxel size is refused.
        medium: medium name (default: the table's ``# medium:`` or ``"soft_tissue"``).
        density_g_cm3: medium density (default: the table's, or 1.04 for soft tissue).
        nuclide: radionuclide (checked against the table's ``# nuclide:`` when both are given).
        source: provenance text (default: the file name).

    Returns:
        The full kernel (mirrored octant).

    Raises:
        InputError: missing/unreadable file, malformed lines, negative indices, duplicate or
            missing entries, negative or non-finite S; a declared voxel size that differs
            from ``voxel_mm`` (naming both); a declared nuclide that differs.
        UnitsError: a declared unit other than mGy/(MBq s).
    """
    p = Path(path)
    want = _spacing3(voxel_mm)
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise InputError(f"kernel table not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read kernel table {p}: {exc.__class__.__name__}") from None
    comments: list[str] = []
    rows: list[tuple[int, int, int, float]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        body, _, comment = raw.partition("#")
        if comment.strip():
            comments.append(comment.strip())
        parts = body.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 4:
            raise InputError(f"{p}:{lineno}: expected 'i j k S', got {raw.strip()!r}")
        try:
            i, j, k = (int(x) for x in parts[:3])
            s = float(parts[3])
        except ValueError:
            raise InputError(f"{p}:{lineno}: expected integers i j k and a number S, got {raw.strip()!r}") from None
        if min(i, j, k) < 0:
            raise InputError(f"{p}:{lineno}: octant indices must be >= 0, got {i} {j} {k}")
        if not math.isfinite(s) or s < 0:
            raise InputError(f"{p}:{lineno}: S value must be finite and >= 0, got {parts[3]}")
        rows.append((i, j, k, s))
    if not rows:
        raise InputError(f"kernel table {p} holds no 'i j k S' entries")
    info = _parse_header(comments, p)
    units = info.get("units")
    if units is not None and " ".join(units.lower().split()) not in _UNIT_OK:
        raise UnitsError(f"kernel table {p} is in {units!r}; persodose reads mGy/(MBq s)")
    if "voxel_mm" in info:
        declared = (info["voxel_mm"],) * 3
        if not np.allclose(declared, want, atol=_SPACING_TOL_MM, rtol=0):
            raise GeometryError(f"kernel table {p} is for voxels of {_fmt_mm(declared)}, "
                                f"but the dose grid has voxels of {_fmt_mm(want)}")
    arr = np.asarray(rows, dtype=np.float64)
    idx = arr[:, :3].astype(np.int64)
    ni, nj, nk = (int(idx[:, a].max()) + 1 for a in range(3))
    octant = np.full((nk, nj, ni), np.nan)
    flat = (idx[:, 2] * nj + idx[:, 1]) * ni + idx[:, 0]
    if np.unique(flat).size != flat.size:
        raise InputError(f"kernel table {p} lists some (i, j, k) more than once")
    octant.reshape(-1)[flat] = arr[:, 3]
    missing = int(np.isnan(octant).sum())
    if missing:
        raise InputError(f"kernel table {p} misses {missing} of the {octant.size} octant entries "
                         f"(i < {ni}, j < {nj}, k < {nk})")
    table_nuclide = info.get("nuclide", "")
    if nuclide and table_nuclide and normalise_nuclide_name(nuclide) != normalise_nuclide_name(table_nuclide):
        raise InputError(f"kernel table {p} is for {table_nuclide}, not {nuclide}")
    med = medium or info.get("medium") or "soft_tissue"
    if density_g_cm3 is None:
        density_g_cm3 = info.get("density_g_cm3",
                                 MSV_REFERENCE_DENSITIES_G_CM3.get(med, ICRU_SOFT_TISSUE_DENSITY_G_CM3))
    return VoxelKernel(full_from_octant(octant), want, medium=med, density_g_cm3=float(density_g_cm3),
                       nuclide=nuclide or table_nuclide, source=source or f"octant table {p.name}")


def write_octant_table(kernel: VoxelKernel, path: str | Path) -> Path:
    """Write a kernel's octant in the text format :func:`read_octant_table` reads.

    Only cubic voxels are written (the published format has one voxel size). The file is
    written atomically.

    Raises:
        InputError: non-cubic voxels or an asymmetric kernel (the octant would lose data).
    """
    from persodose.outputs import atomic_file

    sp = kernel.voxel_mm
    if max(sp) - min(sp) > 1e-9:
        raise InputError(f"octant tables need cubic voxels, the kernel has {_fmt_mm(sp)}")
    octant = kernel.octant()
    if not np.array_equal(full_from_octant(octant), kernel.s_mgy_per_mbq_s):
        raise InputError("the kernel is not mirror-symmetric; it cannot be written as one octant")
    nk, nj, ni = octant.shape
    lines = [
        "# persodose voxel S-value octant table",
        f"# voxel_mm: {sp[0]:.6g}",
        "# units: mGy/(MBq s)",
        f"# medium: {kernel.medium}",
        f"# density_g_cm3: {kernel.density_g_cm3:.6g}",
    ]
    if kernel.nuclide:
        lines.append(f"# nuclide: {kernel.nuclide}")
    if kernel.source:
        lines.append(f"# source: {kernel.source}")
    lines.append("# i j k S   (i along x, j along y, k along z)")
    for k in range(nk):
        for j in range(nj):
            for i in range(ni):
                lines.append(f"{i} {j} {k} {float(octant[k, j, i]):.9e}")
    out = Path(path)
    with atomic_file(out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- kernel sets
@dataclass(frozen=True, eq=False)
class KernelSet:
    """Kernels by medium name (``"soft_tissue"`` for SSV/DSV; ``"lung"``, ``"soft_tissue"``,
    ``"bone_1"``, ``"bone_2"`` for MSV), all for one voxel size and radionuclide.

    Attributes:
        kernels: medium name -> kernel.
    """

    kernels: Mapping[str, VoxelKernel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ks = dict(self.kernels)
        if not ks:
            raise InputError("a kernel set needs at least one kernel")
        for name, k in ks.items():
            if not isinstance(k, VoxelKernel):
                raise InputError(f"kernel set entry {name!r} is not a VoxelKernel")
        sizes = {k.voxel_mm for k in ks.values()}
        if len(sizes) > 1:
            raise GeometryError("the kernels of a set are for different voxel sizes: "
                                + ", ".join(f"{n} {_fmt_mm(k.voxel_mm)}" for n, k in ks.items()))
        nucl = {k.nuclide for k in ks.values() if k.nuclide}
        if len(nucl) > 1:
            raise InputError(f"the kernels of a set are for different nuclides: {sorted(nucl)}")
        object.__setattr__(self, "kernels", MappingProxyType(ks))

    @classmethod
    def of(cls, kernels: Iterable[VoxelKernel]) -> "KernelSet":
        """A set keyed by each kernel's ``medium``."""
        return cls({k.medium: k for k in kernels})

    def __getitem__(self, medium: str) -> VoxelKernel:
        try:
            return self.kernels[medium]
        except KeyError:
            raise InputError(f"no {medium!r} kernel in the kernel set (it has: {', '.join(self.kernels)})") from None

    def __contains__(self, medium: object) -> bool:
        return medium in self.kernels

    def __len__(self) -> int:
        return len(self.kernels)

    def media(self) -> list[str]:
        return list(self.kernels)

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        return next(iter(self.kernels.values())).voxel_mm


# --------------------------------------------------------------------------- analytic kernels
def local_deposition_kernel(energy_per_decay_mev: float, voxel_mm, density_g_cm3: float = ICRU_SOFT_TISSUE_DENSITY_G_CM3,
                            *, medium: str = "soft_tissue", nuclide: str = "", half_width: int = 0) -> VoxelKernel:
    """A kernel that deposits all energy in the source voxel (convolution = local deposition).

    ``S(0,0,0) = E / m_voxel`` (MIRD schema, Bolch et al. 2009, J. Nucl. Med. 50:477-484),
    converted to mGy/(MBq s); every other entry 0.

    Args:
        energy_per_decay_mev: energy deposited per decay, MeV.
        voxel_mm: voxel size, mm.
        density_g_cm3: medium density, g/cm3.
        half_width: zero padding on each side (for tests with larger kernels).
    """
    sp = _spacing3(voxel_mm)
    mass_kg = float(np.prod(sp)) / 1000.0 * density_g_cm3 * 1e-3
    s = np.zeros((2 * half_width + 1,) * 3, dtype=np.float64)
    s[(half_width,) * 3] = energy_per_decay_mev * MEV_TO_J / mass_kg / MGY_PER_MBQ_S_TO_GY_PER_BQ_S
    return VoxelKernel(s, sp, medium=medium, density_g_cm3=density_g_cm3, nuclide=nuclide,
                       source="analytic local-deposition kernel")


def exponential_kernel(energy_per_decay_mev: float, voxel_mm, density_g_cm3: float = ICRU_SOFT_TISSUE_DENSITY_G_CM3,
                       *, scale_mm: float = 1.0, half_width: int = 5, medium: str = "soft_tissue",
                       nuclide: str = "", subsamples: int = 3) -> VoxelKernel:
    """An isotropic analytic kernel for tests and demonstrations (NOT a physical kernel).

    Point-source energy deposition per unit volume ``~ exp(-r / scale) / r^2`` (the shape of a
    simple exponential point kernel), averaged over each voxel with ``subsamples^3`` points and
    normalised so that the whole kernel absorbs ``energy_per_decay_mev`` per decay:
    ``sum(S) * m_voxel = E``.

    Args:
        energy_per_decay_mev: energy absorbed in the kernel per decay, MeV.
        voxel_mm: voxel size, mm.
        density_g_cm3: medium density, g/cm3.
        scale_mm: decay length of the exponential, mm.
        half_width: kernel size ``2 * half_width + 1`` along each axis.
        subsamples: sub-voxel points per axis for the voxel average.
    """
    sp = np.asarray(_spacing3(voxel_mm))
    n = int(half_width)
    offs = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    ax = [np.add.outer(np.arange(-n, n + 1), offs).reshape(-1) * sp[a] for a in range(3)]
    z, y, x = np.meshgrid(*ax, indexing="ij")
    r = np.sqrt(z * z + y * y + x * x)
    r_min = 0.25 * float(sp.min()) / subsamples
    w = np.exp(-r / float(scale_mm)) / np.maximum(r, r_min) ** 2
    m = subsamples
    w = w.reshape(2 * n + 1, m, 2 * n + 1, m, 2 * n + 1, m).mean(axis=(1, 3, 5))
    w /= w.sum()
    mass_kg = float(np.prod(sp)) / 1000.0 * density_g_cm3 * 1e-3
    s = w * energy_per_decay_mev * MEV_TO_J / mass_kg / MGY_PER_MBQ_S_TO_GY_PER_BQ_S
    return VoxelKernel(s, tuple(sp), medium=medium, density_g_cm3=density_g_cm3, nuclide=nuclide,
                       source=f"analytic exponential kernel (scale {scale_mm:g} mm, test only)")
