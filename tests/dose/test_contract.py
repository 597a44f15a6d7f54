"""The contract every registered dose method keeps, run over all of them.

The list is the registry's at collection time, the example plug-in included, so a method
added later (a new file, or a user's plug-in) is tested without touching this file:

* zero activity gives zero dose;
* the dose is linear in the activity;
* in a homogeneous soft-tissue phantom the mean dose over a uniform source agrees with the
  Monte Carlo reference within the accuracy the method claims (``MethodSpec.accuracy``); a
  method made for SPECT images (``MethodSpec.images == "spect"``) is given the SPECT model's
  image of the source, the total kept (the reference stays the true source's dose);
* energy is conserved: the energy deposited lies between the non-penetrating (electron and
  alpha) energy released and all the energy released.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from persodose.dose.registry import DoseInputs, available_methods, get_spec
from persodose.grid import Grid, Kind
from persodose.plugins import load_plugin

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "photon_fraction_led.py"
load_plugin(EXAMPLE_PLUGIN)
METHODS = available_methods()

NUCLIDE = "Lu-177"
VOXEL_MM = 4.0
SHAPE = (22, 22, 22)
SOURCE = (slice(8, 14),) * 3  # a 24 mm cube of uniform activity in a 88 mm cube of soft tissue
TIA_PER_VOXEL_BQ_S = 1e9
REFERENCE_DECAYS = 400_000
MEV_TO_J = 1.602176634e-13


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from persodose.mc.kernels import cached_kernel
    from persodose.dose.kernels import KernelSet
    from persodose.physics.materials import ct_to_density_and_materials

    ct = Grid(np.full(SHAPE, 40.0, np.float32), (VOXEL_MM,) * 3, kind=Kind.CT, unit="HU")
    density, materials, mats = ct_to_density_and_materials(ct)
    a = np.zeros(SHAPE, np.float32)
    a[SOURCE] = TIA_PER_VOXEL_BQ_S
    tia = density.with_array(a, Kind.TIA, "Bq s")
    cache = tmp_path_factory.mktemp("kernels")
    media = sorted({m for name in METHODS for m in get_spec(name).media(get_spec(name).make_settings())})
    kernels = KernelSet.of([cached_kernel(NUCLIDE, VOXEL_MM, m, 15, 200_000, cache, 7) for m in media])
    base = dict(nuclide=NUCLIDE, density=density, materials=materials, material_list=tuple(mats), kernels=kernels,
                seed=11, backend="cpu")
    ref = get_spec("mc").run(DoseInputs(tia, **base), {"decays": REFERENCE_DECAYS, "batches": 8})
    return {"tia": tia, "base": base, "reference": ref}


def inputs(world, tia: Grid, images: str = "activity") -> DoseInputs:
    act = tia.with_array(tia.array / 3600.0, Kind.ACTIVITY, "Bq")  # for methods that work on images
    if images == "spect":  # what such a method is made for: the SPECT's image of the source
        act = spect_image(act, world["base"]["density"])
    return DoseInputs(tia, activities=(act,), times_s=(3600.0,), **world["base"])


def spect_image(act: Grid, density: Grid) -> Grid:
    """The source as the blur-and-noise SPECT model images it (1e9 counts: nearly noise-free),
    brought back to the dose grid with its total kept."""
    from persodose.phantoms.spect_camera import SPECTCamera, simulate_spect, spect_to_ct_grid

    if not np.any(act.array):
        return act
    img = spect_to_ct_grid(simulate_spect(act, density, SPECTCamera(model="blur"), total_counts=1e9,
                                          rng=np.random.default_rng(3)), act)
    return act.with_array(np.asarray(img.array, np.float32) * (act.total() / img.total()), Kind.ACTIVITY)


def run(world, name, tia):
    spec = get_spec(name)
    options = {"decays": 100_000, "batches": 4} if name == "mc" else None
    out = spec.run(inputs(world, tia, spec.images), options)
    assert out.dose.kind is Kind.DOSE and out.dose.unit == "Gy" and out.dose.same_geometry(tia)
    return out


@pytest.mark.parametrize("name", METHODS)
def test_zero_activity_gives_zero_dose(world, name):
    tia = world["tia"]
    out = run(world, name, tia.with_array(np.zeros(tia.shape, np.float32)))
    assert not np.any(out.dose.array)


@pytest.mark.parametrize("name", METHODS)
def test_dose_is_linear_in_activity(world, name):
    tia = world["tia"]
    d1 = run(world, name, tia).dose.array.astype(np.float64)
    d3 = run(world, name, tia.with_array(tia.array * 3.0)).dose.array.astype(np.float64)
    assert d1.max() > 0
    np.testing.assert_allclose(d3, 3.0 * d1, rtol=1e-5, atol=1e-6 * d1.max())


@pytest.mark.parametrize("name", METHODS)
def test_homogeneous_phantom_agrees_with_monte_carlo(world, name):
    ref = world["reference"]
    src = np.zeros(SHAPE, bool)
    src[SOURCE] = True
    d = ref.dose.array[src].astype(np.float64)
    ref_mean = float(d.mean())
    # the reference's own uncertainty of the region mean: voxel errors taken as independent,
    # doubled for the correlation photons bring
    ref_sigma = 2.0 * float(np.sqrt(np.sum((ref.uncertainty.array[src] * d) ** 2)) / np.sum(d))
    mean = float(run(world, name, world["tia"]).dose.array[src].mean(dtype=np.float64))
    allowed = get_spec(name).accuracy + 3 * ref_sigma
    assert ref_sigma < 0.01
    assert abs(mean / ref_mean - 1) <= allowed, (name, mean / ref_mean - 1, allowed)


@pytest.mark.parametrize("name", METHODS)
def test_energy_is_conserved(world, name):
    from persodose.physics.radionuclides import get_nuclide

    tia = world["tia"]
    out = run(world, name, tia)
    mass_kg = world["base"]["density"].array.astype(np.float64) * tia.voxel_volume_ml * 1e-3
    deposited_j = float(np.sum(out.dose.array * mass_kg, dtype=np.float64))
    nuc = get_nuclide(NUCLIDE)
    decays = tia.total()
    electrons_j = decays * (nuc.electron_energy_per_decay_mev() + nuc.alpha_energy_per_decay_mev()) * MEV_TO_J
    all_j = electrons_j + decays * nuc.photon_energy_per_decay_mev() * MEV_TO_J
    noise = 0.01 if get_spec(name).stochastic else 1e-4
    assert electrons_j * (1 - 0.02 - noise) <= deposited_j <= all_j * (1 + noise), (name, deposited_j / all_j)


def test_the_reference_records_where_the_control_variate_applied(world):
    """The ``mc`` method's info carries the control variate's rule (density and activity-share
    thresholds, and the decays the share was judged on: those done) and the count of voxels set to 0."""
    from persodose.mc.problem import CONTROL_MIN_DECAYS

    info = world["reference"].info
    rule = info["control_variate_rule"]
    assert info["control_variate"] is True and info["negative_voxels_set_to_zero"] >= 0
    assert rule["decays_of_the_rule"] == REFERENCE_DECAYS
    assert rule["activity_share_min"] == pytest.approx(CONTROL_MIN_DECAYS / REFERENCE_DECAYS)
    assert 0 < rule["density_min_g_cm3"] < 1.0
