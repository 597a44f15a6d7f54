"""Voxel phantoms: the density and material of every voxel a transport runs through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from persodose.errors import InputError, MaterialError
from persodose.grid import Grid, Kind
from persodose.physics.materials import Material

#: Densities accepted in a phantom, g/cm3 (below: vacuum is not supported; above: no tissue or implant of interest).
DENSITY_RANGE_G_CM3 = (1e-4, 25.0)


@dataclass(frozen=True, eq=False)
class VoxelPhantom:
    """Geometry of a transport: density and material index per voxel.

    Attributes:
        density: Kind.DENSITY grid, g/cm3.
        materials: Kind.MATERIAL grid of indices into ``material_list``.
        material_list: the materials (elemental mass fractions).
    """

    density: Grid
    materials: Grid
    material_list: tuple[Material, ...]

    def __post_init__(self) -> None:
        self.density.require_same_geometry(self.materials, "density and material maps")
        d = np.asarray(self.density.array)
        if not np.all(np.isfinite(d)):
            raise InputError("the density map contains NaN or infinity")
        lo, hi = DENSITY_RANGE_G_CM3
        if d.min() < lo or d.max() > hi:
            raise MaterialError(f"densities must lie within {lo}-{hi} g/cm3; the map spans "
                                f"{float(d.min()):.4g}-{float(d.max()):.4g} g/cm3")
        m = np.asarray(self.materials.array)
        if m.dtype.kind not in "iu":
            raise MaterialError("the material map must hold integer indices")
        if m.min() < 0 or m.max() >= len(self.material_list):
            raise MaterialError(f"material index {int(m.max())} has no material (only {len(self.material_list)} given)")

    @classmethod
    def from_ct(cls, ct: Grid, calibration=None) -> "VoxelPhantom":
        """Phantom from a CT in HU with the default Schneider calibration and classes."""
        from persodose.physics.materials import ct_to_density_and_materials

        density, materials, mats = ct_to_density_and_materials(ct, calibration=calibration)
        return cls(density, materials, tuple(mats))

    @classmethod
    def homogeneous(cls, shape_zyx: Sequence[int], spacing_mm: float | Sequence[float], material: Material,
                    density_g_cm3: float | None = None) -> "VoxelPhantom":
        """A box of one material (centred on the origin)."""
        from persodose.grid import make_grid

        sp = (spacing_mm,) * 3 if np.isscalar(spacing_mm) else tuple(spacing_mm)
        rho = material.density_g_cm3 if density_g_cm3 is None else density_g_cm3
        dens = make_grid(shape_zyx, sp, kind=Kind.DENSITY, fill=rho)
        mats = dens.with_array(np.zeros(dens.shape, np.uint8), Kind.MATERIAL)
        return cls(dens, mats, (material,))

    @property
    def mass_kg(self) -> np.ndarray:
        """Mass of each voxel, kg (z, y, x)."""
        return self.density.array.astype(np.float64) * self.density.voxel_volume_ml * 1e-3

    def max_density_per_material(self) -> np.ndarray:
        m = self.materials.array.ravel().astype(np.int64)
        d = self.density.array.ravel().astype(np.float64)
        out = np.zeros(len(self.material_list))
        np.maximum.at(out, m, d)
        return out
