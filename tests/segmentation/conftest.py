"""A small synthetic chest CT whose truth is known by construction (built in code, < 0.1 s)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from persodose.grid import Grid, Kind

SPACING_MM = 2.5
SHAPE = (16, 96, 96)


@dataclass
class SyntheticChest:
    ct: Grid
    body: np.ndarray
    lung_left: np.ndarray    # at +x (LPS: the patient's left) with an identity direction
    lung_right: np.ndarray
    bone: np.ndarray         # vertebra: cortical ring, cancellous interior
    canal: np.ndarray        # spinal canal (soft tissue, enclosed by bone in-plane)
    gas: np.ndarray          # a small gas pocket
    trachea: np.ndarray      # pure-air tube above the lungs (joined to the left lung at z=11)
    couch: np.ndarray        # a thin plate joined to the back by a thin bridge


def make_chest(direction_xyz=np.eye(3)) -> SyntheticChest:
    nz, ny, nx = SHAPE
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    xm = (x - (nx - 1) / 2) * SPACING_MM  # + towards index x = patient's left (identity direction)
    ym = (y - (ny - 1) / 2) * SPACING_MM  # + posterior
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    body = (xm / 100.0) ** 2 + (ym / 75.0) ** 2 <= 1.0
    hu[body] = 40.0
    lungs_z = (z >= 2) & (z <= 11)
    lung_left = body & lungs_z & (((xm - 45) / 30.0) ** 2 + ((ym + 5) / 45.0) ** 2 <= 1.0)
    lung_right = body & lungs_z & (((xm + 45) / 30.0) ** 2 + ((ym + 5) / 45.0) ** 2 <= 1.0)
    hu[lung_left | lung_right] = -800.0
    r_vert = np.hypot(xm, ym - 40)          # vertebral body: cortical ring, cancellous inside
    r_arch = np.hypot(xm, ym - 62)          # neural arch around the spinal canal
    vertebra = body & (r_vert <= 15.0)
    hu[vertebra] = 180.0                    # cancellous: below 200 HU but above 120 HU
    hu[vertebra & (r_vert >= 11.0)] = 1000.0
    arch = body & (r_arch >= 7.0) & (r_arch <= 10.0)
    hu[arch] = 1000.0
    canal = body & (r_arch < 7.0) & (r_vert > 15.0)
    hu[canal] = 30.0                        # spinal canal: soft tissue enclosed by bone
    bone = vertebra | arch
    gas = body & (z >= 13) & (z <= 14) & (np.abs(xm + 20) <= 4) & (np.abs(ym + 20) <= 4)
    hu[gas] = -1000.0
    trachea = body & (z >= 12) & (np.hypot(xm, ym + 20) <= 6.0)
    hu[trachea] = -1000.0
    trachea_link = body & (z == 11) & (np.abs(ym + 20) <= 2.5) & (xm >= 0) & (xm <= 20)
    hu[trachea_link] = -1000.0              # joins the trachea to the left lung
    couch = (ym >= 80) & (ym < 82.5) & (np.abs(xm) <= 100)
    bridge = (ym > 70) & (ym < 80) & (np.abs(xm) <= 1.25)
    hu[couch] = 200.0
    hu[bridge & ~body] = 40.0
    ct = Grid(hu, (SPACING_MM,) * 3, (-(nx - 1) / 2 * SPACING_MM, -(ny - 1) / 2 * SPACING_MM, 0.0),
              np.eye(3), Kind.CT)
    if not np.allclose(direction_xyz, np.eye(3)):
        d = np.asarray(direction_xyz, dtype=float)
        # same voxels, the index x axis now pointing to -x: the mirror image of the patient
        ct = Grid(hu, ct.spacing_zyx_mm, ((nx - 1) / 2 * SPACING_MM, ct.origin_xyz_mm[1], 0.0), d, Kind.CT)
    return SyntheticChest(ct, body, lung_left, lung_right, bone, canal, gas, trachea, couch)


@pytest.fixture(scope="session")
def chest() -> SyntheticChest:
    return make_chest()
