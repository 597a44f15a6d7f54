"""One geometry-carrying image type and resampling between grids.

A :class:`Grid` is a 3-D numpy array indexed ``(z, y, x)`` together with its geometry in
the DICOM patient coordinate system (LPS, millimetres) and a semantic :class:`Kind` that
says what the values are and therefore how they may be resampled:

* intensities (CT in HU, density, activity concentration, dose, dose rate) are resampled
  with linear interpolation;
* label maps and material indices with nearest neighbour;
* extensive quantities (activity per voxel, time-integrated activity, counts) with a
  sum-preserving scheme, so that the total inside the target field of view is kept exactly.

Geometry names carry their axis order: ``spacing_zyx_mm`` follows the array axes,
``origin_xyz_mm`` is the physical LPS position of the centre of voxel ``[0, 0, 0]`` and
``direction_xyz`` is the 3x3 matrix whose columns are the physical unit vectors of the
x, y and z index axes (the ITK/SimpleITK convention).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from persodose.errors import GeometryError, InputError, require_finite


class Kind(str, enum.Enum):
    """What a grid's values are; chooses the unit and the interpolation."""

    CT = "ct"  #: CT numbers, HU
    DENSITY = "density"  #: mass density, g/cm3
    MATERIAL = "material"  #: material index (integer), no unit
    ACTIVITY_CONCENTRATION = "activity_concentration"  #: Bq/mL
    ACTIVITY = "activity"  #: Bq in each voxel
    TIA = "tia"  #: time-integrated activity in each voxel, Bq s
    COUNTS = "counts"  #: detected counts in each voxel
    DOSE_RATE = "dose_rate"  #: Gy/s
    DOSE = "dose"  #: absorbed dose, Gy
    LABELS = "labels"  #: integer label map, no unit
    SCALAR = "scalar"  #: anything else, unit given by the user

    @property
    def default_unit(self) -> str:
        return _DEFAULT_UNIT[self]

    @property
    def interpolation(self) -> str:
        """``"linear"``, ``"nearest"`` or ``"sum"`` (sum-preserving)."""
        if self in (Kind.LABELS, Kind.MATERIAL):
            return "nearest"
        if self in (Kind.ACTIVITY, Kind.TIA, Kind.COUNTS):
            return "sum"
        return "linear"

    @property
    def outside_value(self) -> float:
        """Value used for target voxels outside the source field of view."""
        if self is Kind.CT:
            return -1000.0
        if self is Kind.DENSITY:
            return AIR_DENSITY_G_CM3
        return 0.0


#: Density of dry air at 20 C and 101.325 kPa (NIST ESTAR/PSTAR material "Air, dry"), g/cm3.
AIR_DENSITY_G_CM3 = 1.20479e-3

_DEFAULT_UNIT = {
    Kind.CT: "HU",
    Kind.DENSITY: "g/cm3",
    Kind.MATERIAL: "",
    Kind.ACTIVITY_CONCENTRATION: "Bq/mL",
    Kind.ACTIVITY: "Bq",
    Kind.TIA: "Bq s",
    Kind.COUNTS: "counts",
    Kind.DOSE_RATE: "Gy/s",
    Kind.DOSE: "Gy",
    Kind.LABELS: "",
    Kind.SCALAR: "",
}


def _vec3(values: Sequence[float], name: str) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} must be three finite numbers, got {values!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3-D image with its geometry, kind and unit.

    Attributes:
        array: values, shape ``(nz, ny, nx)``.
        spacing_zyx_mm: voxel size along the array axes, mm.
        origin_xyz_mm: LPS position of the centre of voxel ``[0, 0, 0]``, mm.
        direction_xyz: 3x3 direction cosines; column ``j`` is the physical direction of
            index axis ``j`` in (x, y, z) order.
        kind: what the values are.
        unit: unit of the values (defaults to the kind's unit).
    """

    array: np.ndarray
    spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_xyz: np.ndarray = field(default_factory=lambda: np.eye(3))
    kind: Kind = Kind.SCALAR
    unit: str | None = None

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise GeometryError(f"a grid needs a 3-D array (z, y, x), got shape {arr.shape}")
        object.__setattr__(self, "array", arr)
        sp = _vec3(self.spacing_zyx_mm, "spacing_zyx_mm")
        if min(sp) <= 0:
            raise GeometryError(f"spacing must be positive, got {sp}")
        object.__setattr__(self, "spacing_zyx_mm", sp)
        object.__setattr__(self, "origin_xyz_mm", _vec3(self.origin_xyz_mm, "origin_xyz_mm"))
        d = np.asarray(self.direction_xyz, dtype=float).reshape(3, 3)
        if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
            raise GeometryError("direction_xyz must be an orthonormal 3x3 matrix")
        object.__setattr__(self, "direction_xyz", d)
        kind = Kind(self.kind)
        object.__setattr__(self, "kind", kind)
        if self.unit is None:
            object.__setattr__(self, "unit", kind.default_unit)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        z, y, x = self.spacing_zyx_mm
        return (x, y, z)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel, mL (= cm3)."""
        return float(np.prod(self.spacing_zyx_mm)) / 1000.0

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous index ``(i_x, i_y, i_z, 1)`` to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_xyz * np.asarray(self.spacing_xyz_mm)[None, :]
        a[:3, 3] = self.origin_xyz_mm
        return a

    @property
    def affine_ras(self) -> np.ndarray:
        """The same mapping into RAS (NIfTI/nibabel convention)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Continuous indices ``(..., 3)`` in (z, y, x) order to LPS points ``(..., 3)``."""
        idx = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return idx @ (self.direction_xyz * np.asarray(self.spacing_xyz_mm)[None, :]).T + np.asarray(
            self.origin_xyz_mm
        )

    def physical_to_index(self, points_xyz: np.ndarray) -> np.ndarray:
        """LPS points ``(..., 3)`` to continuous indices ``(..., 3)`` in (z, y, x) order."""
        m = self.direction_xyz * np.asarray(self.spacing_xyz_mm)[None, :]
        rel = np.asarray(points_xyz, dtype=float) - np.asarray(self.origin_xyz_mm)
        return (rel @ np.linalg.inv(m).T)[..., ::-1]

    def same_geometry(self, other: "Grid", tol_mm: float = 1e-3) -> bool:
        """True when shape, spacing, origin and direction agree within ``tol_mm``."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_zyx_mm, other.spacing_zyx_mm, atol=tol_mm)
            and np.allclose(self.origin_xyz_mm, other.origin_xyz_mm, atol=tol_mm)
            and np.allclose(self.direction_xyz, other.direction_xyz, atol=1e-4)
        )

    def require_same_geometry(self, other: "Grid", what: str = "grids") -> None:
        if not self.same_geometry(other):
            raise GeometryError(
                f"{what} do not share a geometry: shape {self.shape} vs {other.shape}, "
                f"spacing {self.spacing_zyx_mm} vs {other.spacing_zyx_mm}, "
                f"origin {self.origin_xyz_mm} vs {other.origin_xyz_mm}"
            )

    # ------------------------------------------------------------------ values
    def with_array(self, array: np.ndarray, kind: Kind | str | None = None,
                   unit: str | None = None) -> "Grid":
        """A grid on the same geometry holding ``array``."""
        arr = np.asarray(array)
        if arr.shape != self.array.shape:
            raise GeometryError(f"array shape {arr.shape} does not match grid {self.shape}")
        new_kind = Kind(kind) if kind is not None else self.kind
        if unit is None:
            unit = self.unit if new_kind == self.kind else new_kind.default_unit
        return Grid(arr, self.spacing_zyx_mm, self.origin_xyz_mm, self.direction_xyz, new_kind, unit)

    def total(self) -> float:
        """Sum of the values (meaningful for extensive kinds: Bq, Bq s, counts)."""
        return float(np.sum(self.array, dtype=np.float64))

    def to_activity(self) -> "Grid":
        """Activity per voxel (Bq) from an activity-concentration grid (Bq/mL)."""
        if self.kind is Kind.ACTIVITY:
            return self
        if self.kind is not Kind.ACTIVITY_CONCENTRATION:
            raise InputError(f"cannot turn a {self.kind.value} grid into activity")
        return self.with_array(self.array.astype(np.float64) * self.voxel_volume_ml, Kind.ACTIVITY)

    def to_concentration(self) -> "Grid":
        """Activity concentration (Bq/mL) from an activity grid (Bq per voxel)."""
        if self.kind is Kind.ACTIVITY_CONCENTRATION:
            return self
        if self.kind is not Kind.ACTIVITY:
            raise InputError(f"cannot turn a {self.kind.value} grid into a concentration")
        return self.with_array(self.array.astype(np.float64) / self.voxel_volume_ml,
                               Kind.ACTIVITY_CONCENTRATION)

    def check_finite(self, what: str = "image") -> "Grid":
        require_finite(self.array, what)
        return self

    # ------------------------------------------------------------------ SimpleITK
    def to_sitk(self):
        """Convert to a ``SimpleITK.Image`` (values copied, geometry kept)."""
        import SimpleITK as sitk

        arr = self.array
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(self.spacing_xyz_mm)
        img.SetOrigin(self.origin_xyz_mm)
        img.SetDirection(tuple(float(v) for v in self.direction_xyz.reshape(-1)))
        return img

    @classmethod
    def from_sitk(cls, image, kind: Kind | str = Kind.SCALAR, unit: str | None = None) -> "Grid":
        """Build a grid from a 3-D ``SimpleITK.Image``."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise GeometryError(f"expected a 3-D image, got {image.GetDimension()}-D")
        arr = sitk.GetArrayFromImage(image)
        sx, sy, sz = image.GetSpacing()
        return cls(arr, (sz, sy, sx), image.GetOrigin(), np.asarray(image.GetDirection()).reshape(3, 3),
                   Kind(kind), unit)

    # ------------------------------------------------------------------ resampling
    def resample_to(self, reference: "Grid", method: str | None = None) -> "Grid":
        """Resample onto ``reference``'s geometry.

        Args:
            reference: grid whose geometry (shape, spacing, origin, direction) is taken.
            method: ``"linear"``, ``"nearest"`` or ``"sum"``; default from the kind.

        Returns:
            A grid of this grid's kind and unit on the reference geometry.
        """
        method = method or self.kind.interpolation
        if self.same_geometry(reference):
            return self.with_array(self.array.copy())
        if method == "sum":
            return self.with_array_on(reference, resample_sum(self, reference))
        if method not in ("linear", "nearest"):
            raise InputError(f"unknown resampling method {method!r}")
        import SimpleITK as sitk

        src = self.to_sitk()
        if method == "linear" and src.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
            src = sitk.Cast(src, sitk.sitkFloat32)
        interp = sitk.sitkLinear if method == "linear" else sitk.sitkNearestNeighbor
        ref = sitk.Image(reference.shape[2], reference.shape[1], reference.shape[0], src.GetPixelID())
        ref.SetSpacing(reference.spacing_xyz_mm)
        ref.SetOrigin(reference.origin_xyz_mm)
        ref.SetDirection(tuple(float(v) for v in reference.direction_xyz.reshape(-1)))
        out = sitk.Resample(src, ref, sitk.Transform(), interp, float(self.kind.outside_value),
                            src.GetPixelID())
        return self.with_array_on(reference, sitk.GetArrayFromImage(out))

    def with_array_on(self, reference: "Grid", array: np.ndarray) -> "Grid":
        """This grid's kind and unit, ``reference``'s geometry, ``array``'s values."""
        return Grid(array, reference.spacing_zyx_mm, reference.origin_xyz_mm, reference.direction_xyz,
                    self.kind, self.unit)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Grid(kind={self.kind.value}, unit={self.unit!r}, shape={self.shape}, "
                f"spacing_zyx_mm={self.spacing_zyx_mm}, origin_xyz_mm={self.origin_xyz_mm})")


def _overlap_matrix(n_src: int, sp_src: float, n_ref: int, sp_ref: float, offset: float) -> np.ndarray:
    """Fraction of each source voxel inside each target voxel along one axis.

    Args:
        offset: position of source voxel 0's centre in the target's axis coordinate
            (target voxel 0's centre at 0), mm.

    Returns:
        ``(n_ref, n_src)`` matrix ``W`` with ``W[j, i]`` = overlap length / source spacing.
    """
    src_lo = offset + (np.arange(n_src) - 0.5) * sp_src
    src_hi = src_lo + sp_src
    ref_lo = (np.arange(n_ref) - 0.5) * sp_ref
    ref_hi = ref_lo + sp_ref
    overlap = np.minimum(ref_hi[:, None], src_hi[None, :]) - np.maximum(ref_lo[:, None], src_lo[None, :])
    return np.clip(overlap, 0.0, None) / sp_src


def resample_sum(source: Grid, reference: Grid, max_subdivisions: int = 8,
                 chunk_voxels: int = 4_000_000) -> np.ndarray:
    """Sum-preserving resampling of an extensive quantity.

    When both grids have the same direction cosines (the usual case: emission and CT of one
    scanner), the content of each source voxel is shared among the target voxels in
    proportion to their overlap volume, computed exactly and separably along the three axes
    (the integral of the piecewise-constant source over each target voxel). This keeps the
    total of everything inside the target field of view and creates no aliasing.

    Otherwise each source voxel is split into ``k_z * k_y * k_x`` sub-voxels carrying equal shares of
    its content (``k`` per axis chosen so that sub-voxels are at most half a target voxel,
    capped at ``max_subdivisions``); every share is added to the target voxel that contains
    its centre. Content that falls outside the target field of view is dropped, so the total
    is kept exactly for everything inside it.

    Args:
        source: grid of an extensive quantity (Bq, Bq s, counts per voxel).
        reference: target geometry.

    Returns:
        float64 array of the reference's shape.
    """
    src_sp = np.asarray(source.spacing_zyx_mm)
    ref_sp = np.asarray(reference.spacing_zyx_mm)
    if np.allclose(source.direction_xyz, reference.direction_xyz, atol=1e-6):
        # offset of source voxel 0 in the reference's index-axis frame, mm, (x, y, z)
        off_xyz = reference.direction_xyz.T @ (np.asarray(source.origin_xyz_mm) - np.asarray(reference.origin_xyz_mm))
        off_zyx = off_xyz[::-1]
        out = np.asarray(source.array, dtype=np.float64)
        for axis in range(3):
            w = _overlap_matrix(source.shape[axis], src_sp[axis], reference.shape[axis], ref_sp[axis],
                                float(off_zyx[axis]))
            out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
        return np.ascontiguousarray(out)
    k = np.clip(np.ceil(2.0 * src_sp / ref_sp), 1, max_subdivisions).astype(int)
    n_sub = int(np.prod(k))
    offsets = np.stack(
        np.meshgrid(*[(np.arange(kk) + 0.5) / kk - 0.5 for kk in k], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    out = np.zeros(int(np.prod(reference.shape)), dtype=np.float64)
    values = np.asarray(source.array, dtype=np.float64)
    nz, ny, nx = source.shape
    slices_per_chunk = max(1, chunk_voxels // max(1, ny * nx * n_sub))
    # Combined affine from source index (z,y,x) to reference continuous index (z,y,x).
    m_src = source.direction_xyz * np.asarray(source.spacing_xyz_mm)[None, :]
    m_ref_inv = np.linalg.inv(reference.direction_xyz * np.asarray(reference.spacing_xyz_mm)[None, :])
    lin = m_ref_inv @ m_src  # acts on (ix, iy, iz)
    shift = m_ref_inv @ (np.asarray(source.origin_xyz_mm) - np.asarray(reference.origin_xyz_mm))
    rz, ry, rx = reference.shape
    for z0 in range(0, nz, slices_per_chunk):
        block = values[z0:z0 + slices_per_chunk]
        nzb = block.shape[0]
        mask = block != 0
        if not mask.any():
            continue
        idx = np.argwhere(mask).astype(np.float64)
        idx[:, 0] += z0
        share = block[mask] / n_sub
        pts = (idx[:, None, :] + offsets[None, :, :]).reshape(-1, 3)  # (z, y, x)
        tgt_xyz = pts[:, ::-1] @ lin.T + shift
        ti = np.rint(tgt_xyz).astype(np.int64)
        ok = (
            (ti[:, 0] >= 0) & (ti[:, 0] < rx) & (ti[:, 1] >= 0) & (ti[:, 1] < ry)
            & (ti[:, 2] >= 0) & (ti[:, 2] < rz)
        )
        flat = (ti[ok, 2] * ry + ti[ok, 1]) * rx + ti[ok, 0]
        w = np.repeat(share, n_sub)[ok]
        out += np.bincount(flat, weights=w, minlength=out.size)
        del nzb
    return out.reshape(reference.shape)


def make_grid(shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float],
              origin_xyz_mm: Sequence[float] | None = None, kind: Kind | str = Kind.SCALAR,
              fill: float = 0.0, dtype=np.float32) -> Grid:
    """A grid of constant value; by default centred on the LPS origin."""
    shape = tuple(int(n) for n in shape_zyx)
    sp = np.asarray(spacing_zyx_mm, dtype=float)
    if origin_xyz_mm is None:
        half = -(np.asarray(shape[::-1]) - 1) * sp[::-1] / 2.0
        origin_xyz_mm = tuple(half)
    return Grid(np.full(shape, fill, dtype=dtype), tuple(sp), origin_xyz_mm, np.eye(3), Kind(kind))


def cubic_grid_over(ct: Grid, voxel_mm: float) -> Grid:
    """A cubic grid of ``voxel_mm`` covering ``ct``'s field of view, same orientation (the dose
    grid of the internal and CT workflows); its values are zeros, kind SCALAR."""
    sp_ct = np.asarray(ct.spacing_zyx_mm)
    extent = np.asarray(ct.shape) * sp_ct
    shape = np.maximum(1, np.ceil(extent / voxel_mm - 1e-6)).astype(int)
    # corner of the CT field of view in index coordinates, then the new first voxel centre
    shift_zyx = -0.5 * sp_ct + 0.5 * voxel_mm
    origin = np.asarray(ct.origin_xyz_mm) + ct.direction_xyz @ shift_zyx[::-1]
    return Grid(np.zeros(tuple(shape), np.float32), (voxel_mm,) * 3, tuple(origin), ct.direction_xyz, Kind.SCALAR)
