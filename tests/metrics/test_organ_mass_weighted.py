"""mass_weighted_means: energy over mass per structure, the organ table's figure alone."""

import numpy as np

from persodose.grid import Grid, Kind
from persodose.metrics.organ import mass_weighted_means


def test_mass_weighted_means_weights_by_density_and_skips_absent_structures():
    dose = Grid(np.array([[[1.0, 3.0, 5.0]]]), kind=Kind.DOSE)
    rho = Grid(np.array([[[1.0, 3.0, 2.0]]]), kind=Kind.DENSITY)
    lab = Grid(np.array([[[1, 1, 2]]], np.uint8), kind=Kind.LABELS)
    out = mass_weighted_means(dose, lab, {1: "a", 2: "b", 3: "absent"}, rho)
    assert out == {"a": (1 * 1 + 3 * 3) / 4.0, "b": 5.0}
