"""Validation of persodose's Monte Carlo voxel S-value kernels against a published database.

Reference: Lanconelli N. et al., "A free database of radionuclide voxel S values for the
dosimetry of nonuniform activity distributions", Phys. Med. Biol. 57 (2012) 517-533; the
numbers and where they were read from are in ``tests/data/published_vsv.csv``.

Acceptance criterion (issue 3): central voxel S(0,0,0) within 3 %, nearest neighbours
S(1,0,0), S(1,1,0), S(1,1,1) within 10 %.

* Tier 1 (no marker, a few seconds): Lu-177 and Y-90 at 3 mm with 3e5 decays; the tolerance
  is widened by three Monte Carlo standard errors.
* Tier 2 (``-m validate``): all six published cases (Lu-177, Y-90, I-131 at 3 and 4.8 mm)
  with 2e6-8e6 decays, where the statistical error is far below the tolerance; plus a test that
  pins the *explanation* of the one disagreement (Lu-177 central voxel, about +8 %): see
  ``docs/validation.md``.
* Like for like (tier 2, issue 16): Sm-153 (3, 4, 4.8 mm) and Lu-177 (3, 4.8 mm) simulated with
  betas and photons only (``emissions="beta,gamma,xray"``: no internal-conversion or Auger
  electrons), the emissions that reproduce the reference's central voxel (docs/validation.md);
  same acceptance criterion. With every ICRP-107 emission Sm-153's S(0,0,0) is about 22 % above
  the table, which the full-emission comparison documents without testing it.

The Monte Carlo standard error of every voxel is estimated from independent runs with
different seeds (the kernel API reports only the central voxel's uncertainty).
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest

from persodose.mc import MCSettings
from persodose.mc.kernels import generate_kernel
from persodose.physics.radionuclides import get_nuclide
from tests import DATA_DIR

DATA = DATA_DIR / "published_vsv.csv"

#: Tolerances of the acceptance criterion (relative).
CENTRE_TOL = 0.03
NEIGHBOUR_TOL = 0.10
OFFSETS = ((0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1))

#: 1 MeV in J (CODATA 2018, exact).
MEV_J = 1.602176634e-13

#: Cases where persodose disagrees with Lanconelli et al. beyond tolerance, with the reason
#: (documented and analysed in docs/validation.md). Marked xfail(strict=True): if they start to
#: agree, the test fails and the documentation must be revisited.
KNOWN_DISAGREEMENTS = {
    ("Lu-177", 3.0, (0, 0, 0)): "Lu-177 S(0,0,0) is ~8.6 % above Lanconelli 2012: ~10 keV/decay more "
                                "locally absorbed electron energy (ICRP-107 IC/Auger electrons), "
                                "see docs/validation.md",
    ("Lu-177", 4.8, (0, 0, 0)): "Lu-177 S(0,0,0) is ~8.1 % above Lanconelli 2012: ~10 keV/decay more "
                                "locally absorbed electron energy (ICRP-107 IC/Auger electrons), "
                                "see docs/validation.md",
}


def load_published(path: Path = DATA) -> dict[tuple[str, float], dict]:
    """Read the published table: ``{(nuclide, voxel_mm): {"density": g/cm3, (i,j,k): S}}``."""
    out: dict[tuple[str, float], dict] = {}
    with open(path, newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        for r in rows:
            key = (r["nuclide"], float(r["voxel_mm"]))
            case = out.setdefault(key, {"density": float(r["density_g_cm3"]), "medium": r["medium"],
                                        "source": r["source"]})
            case[(int(r["i"]), int(r["j"]), int(r["k"]))] = float(r["s_mgy_per_mbq_s"])
    return out


PUBLISHED = load_published()


@functools.lru_cache(maxsize=None)
def mc_kernel(nuclide: str, voxel_mm: float, n_decays: int, n_seeds: int, density_g_cm3: float,
              emissions: str | None = None):
    """Mean kernel and per-voxel standard error from ``n_seeds`` independent runs.

    ``emissions``: the emission selection (None: every ICRP-107 emission).

    Returns:
        ``(mean, sem)``, both (11, 11, 11) arrays in mGy/(MBq s), centre at [5, 5, 5].
    """
    runs = []
    for s in range(n_seeds):
        kernel, _ = generate_kernel(nuclide, voxel_mm, medium="soft_tissue", size=11,
                                    n_decays=n_decays // n_seeds, density_g_cm3=density_g_cm3,
                                    settings=MCSettings(seed=20240 + s, emissions=emissions))
        runs.append(np.asarray(kernel.s_mgy_per_mbq_s, dtype=np.float64))
    runs = np.array(runs)
    return runs.mean(axis=0), runs.std(axis=0, ddof=1) / np.sqrt(n_seeds)


def at(kernel: np.ndarray, ijk: tuple[int, int, int]) -> float:
    c = kernel.shape[0] // 2
    i, j, k = ijk
    return float(kernel[c + i, c + j, c + k])


def tolerance(ijk) -> float:
    return CENTRE_TOL if ijk == (0, 0, 0) else NEIGHBOUR_TOL


def cases(nuclides_voxels, known=KNOWN_DISAGREEMENTS):
    """pytest params over (nuclide, voxel, offset), known disagreements marked xfail(strict)."""
    params = []
    for nuc, vox in nuclides_voxels:
        for ijk in OFFSETS:
            marks = []
            reason = known.get((nuc, vox, ijk))
            if reason:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            params.append(pytest.param(nuc, vox, ijk, marks=marks, id=f"{nuc}-{vox}mm-S{''.join(map(str, ijk))}"))
    return params


# ---------------------------------------------------------------------------------------
# The reference data file itself
# ---------------------------------------------------------------------------------------

def test_published_table_complete_and_consistent():
    expected = {(n, v) for n in ("Lu-177", "Y-90", "I-131") for v in (3.0, 4.8)}
    expected |= {("Sm-153", v) for v in (3.0, 4.0, 4.8)}
    assert set(PUBLISHED) == expected
    for (nuc, vox), case in PUBLISHED.items():
        assert case["medium"] == "soft_tissue" and case["density"] == pytest.approx(1.04)
        assert case["source"] == "Lanconelli2012"
        vals = [case[ijk] for ijk in OFFSETS]
        assert all(v > 0 for v in vals)
        # S must fall with distance from the source voxel.
        assert vals == sorted(vals, reverse=True), (nuc, vox, vals)
        get_nuclide(nuc)  # the nuclide must be known to persodose


# ---------------------------------------------------------------------------------------
# Tier 1: reduced subset, fast
# ---------------------------------------------------------------------------------------

TIER1_DECAYS = 300_000
TIER1_SEEDS = 3


@pytest.mark.parametrize("nuclide,voxel_mm,ijk", cases([("Lu-177", 3.0), ("Y-90", 3.0)]))
def test_vsv_matches_published_tier1(nuclide, voxel_mm, ijk):
    pub = PUBLISHED[(nuclide, voxel_mm)]
    mean, sem = mc_kernel(nuclide, voxel_mm, TIER1_DECAYS, TIER1_SEEDS, pub["density"])
    ours, sigma = at(mean, ijk), at(sem, ijk)
    ref = pub[ijk]
    allowed = tolerance(ijk) + 3.0 * sigma / ours
    assert abs(ours / ref - 1.0) <= allowed, (
        f"{nuclide} {voxel_mm} mm S{ijk}: persodose {ours:.4g} vs published {ref:.4g} "
        f"({100 * (ours / ref - 1):+.1f} %, allowed {100 * allowed:.1f} %)")


# ---------------------------------------------------------------------------------------
# Tier 2: every published case, statistics far below tolerance
# ---------------------------------------------------------------------------------------

#: Decays per case: Lu-177's neighbours are photon-dominated and need more histories.
TIER2_DECAYS = {"Lu-177": 8_000_000, "Y-90": 2_000_000, "I-131": 2_000_000}
TIER2_SEEDS = 4
ALL_CASES = [(n, v) for n in ("Lu-177", "Y-90", "I-131") for v in (3.0, 4.8)]


def _assert_matches(pub, nuclide, voxel_mm, ijk, mean, sem, what=""):
    """Our S value at ``ijk`` matches the table within :func:`tolerance`, and the statistical
    error is negligible next to the tolerance (<= 1/3 of it at 3 sigma)."""
    ours, sigma = at(mean, ijk), at(sem, ijk)
    ref = pub[ijk]
    assert 3.0 * sigma / ours <= tolerance(ijk) / 3.0, f"MC error too large: {sigma / ours:.2%}"
    assert abs(ours / ref - 1.0) <= tolerance(ijk), (
        f"{nuclide} {voxel_mm} mm S{ijk}{what}: persodose {ours:.4g} vs published {ref:.4g} "
        f"({100 * (ours / ref - 1):+.1f} %, allowed {100 * tolerance(ijk):.0f} %)")


@pytest.mark.validate
@pytest.mark.parametrize("nuclide,voxel_mm,ijk", cases(ALL_CASES))
def test_vsv_matches_published_tier2(nuclide, voxel_mm, ijk):
    pub = PUBLISHED[(nuclide, voxel_mm)]
    mean, sem = mc_kernel(nuclide, voxel_mm, TIER2_DECAYS[nuclide], TIER2_SEEDS, pub["density"])
    _assert_matches(pub, nuclide, voxel_mm, ijk, mean, sem)


def _excess_local_energy_mev(nuclide: str, voxel_mm: float, n_decays: int) -> float:
    """(S_persodose - S_published)(0,0,0) converted to energy absorbed in the voxel per decay, MeV."""
    pub = PUBLISHED[(nuclide, voxel_mm)]
    mean, _ = mc_kernel(nuclide, voxel_mm, n_decays, TIER2_SEEDS, pub["density"])
    mass_kg = (voxel_mm * 0.1) ** 3 * pub["density"] * 1e-3
    # 1 mGy/(MBq s) = 1e-9 Gy per decay.
    return (at(mean, (0, 0, 0)) - pub[(0, 0, 0)]) * 1e-9 * mass_kg / MEV_J


@pytest.mark.validate
def test_lu177_centre_gap_is_emission_data_not_transport():
    """Pin the explanation of the Lu-177 S(0,0,0) disagreement.

    A difference in electron *transport* (escape from the voxel) scales with the voxel's
    surface/volume, so in absorbed energy it would shrink by 3/4.8 = 0.625 from 3 mm to
    4.8 mm. A difference in the *emitted short-range electron energy* is the same at both sizes.
    The gap is the same energy per decay at both sizes (within the 3-digit rounding of the
    published values) and smaller than the IC + Auger electron energy of ICRP 107.
    """
    de3 = _excess_local_energy_mev("Lu-177", 3.0, TIER2_DECAYS["Lu-177"])
    de48 = _excess_local_energy_mev("Lu-177", 4.8, TIER2_DECAYS["Lu-177"])
    nuc = get_nuclide("Lu-177")
    ic_auger_mev = nuc.lines["ic"].energy_per_decay_mev + nuc.lines["auger"].energy_per_decay_mev
    assert 0.0 < de3 < ic_auger_mev and 0.0 < de48 < ic_auger_mev, (de3, de48, ic_auger_mev)
    assert de48 / de3 == pytest.approx(1.0, abs=0.15), (de3, de48)


# ---------------------------------------------------------------------------------------
# Like for like: betas and photons only (issue 16)
# ---------------------------------------------------------------------------------------

#: The emissions the reference is compared with: β- spectrum, gamma and X-rays; no conversion or
#: Auger electrons (see docs/validation.md for why, and what the paper could not confirm).
LIKE_EMISSIONS = "beta,gamma,xray"
LIKE_CASES = [("Sm-153", 3.0), ("Sm-153", 4.0), ("Sm-153", 4.8), ("Lu-177", 3.0), ("Lu-177", 4.8)]
#: Decays per case (4 seeds): enough that 3 MC sigma stay below a third of the tolerance.
LIKE_DECAYS = {"Sm-153": 8_000_000, "Lu-177": 8_000_000}


@pytest.mark.validate
@pytest.mark.parametrize("nuclide,voxel_mm,ijk", cases(LIKE_CASES, known={}))
def test_vsv_like_for_like_betas_and_photons_matches_published(nuclide, voxel_mm, ijk):
    pub = PUBLISHED[(nuclide, voxel_mm)]
    mean, sem = mc_kernel(nuclide, voxel_mm, LIKE_DECAYS[nuclide], TIER2_SEEDS, pub["density"], LIKE_EMISSIONS)
    _assert_matches(pub, nuclide, voxel_mm, ijk, mean, sem, f" ({LIKE_EMISSIONS})")


@pytest.mark.validate
@pytest.mark.parametrize("voxel_mm", [3.0, 4.0, 4.8])
def test_sm153_centre_gap_is_its_conversion_and_auger_electrons(voxel_mm):
    """With every emission Sm-153's S(0,0,0) is far above the table (more than 3 x its 3 % tolerance);
    removing only the IC and Auger electrons (46 keV of 334 keV per decay) brings it within 3 %."""
    pub = PUBLISHED[("Sm-153", voxel_mm)]
    full, _ = mc_kernel("Sm-153", voxel_mm, LIKE_DECAYS["Sm-153"], TIER2_SEEDS, pub["density"])
    like, _ = mc_kernel("Sm-153", voxel_mm, LIKE_DECAYS["Sm-153"], TIER2_SEEDS, pub["density"], LIKE_EMISSIONS)
    ref = pub[(0, 0, 0)]
    assert at(full, (0, 0, 0)) / ref - 1.0 > 3 * CENTRE_TOL
    assert abs(at(like, (0, 0, 0)) / ref - 1.0) <= CENTRE_TOL


def like_for_like_table() -> str:
    """The like-for-like comparison as a markdown table (docs/validation.md): all vs betas+photons."""
    lines = ["| nuclide | voxel (mm) | (i,j,k) | published | all emissions | diff | beta+gamma+xray | diff | "
             "MC sigma (all / selected) |", "|---|---|---|---|---|---|---|---|---|"]
    for nuc, vox in LIKE_CASES:
        pub = PUBLISHED[(nuc, vox)]
        n = LIKE_DECAYS[nuc]
        full, sf = mc_kernel(nuc, vox, n, TIER2_SEEDS, pub["density"])
        like, sl = mc_kernel(nuc, vox, n, TIER2_SEEDS, pub["density"], LIKE_EMISSIONS)
        for ijk in OFFSETS:
            ref, a, b = pub[ijk], at(full, ijk), at(like, ijk)
            lines.append(f"| {nuc} | {vox} | ({','.join(map(str, ijk))}) | {ref:.3g} | {a:.4g} | "
                         f"{100 * (a / ref - 1):+.1f} % | {b:.4g} | {100 * (b / ref - 1):+.1f} % | "
                         f"{100 * at(sf, ijk) / a:.2f} % / {100 * at(sl, ijk) / b:.2f} % |")
    return "\n".join(lines)


def comparison_table() -> str:
    """The tier-2 comparison as a markdown table (used for docs/validation.md)."""
    lines = ["| nuclide | voxel (mm) | (i,j,k) | published | persodose | difference | MC sigma | tolerance | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for nuc, vox in ALL_CASES:
        pub = PUBLISHED[(nuc, vox)]
        mean, sem = mc_kernel(nuc, vox, TIER2_DECAYS[nuc], TIER2_SEEDS, pub["density"])
        for ijk in OFFSETS:
            ours, sigma, ref = at(mean, ijk), at(sem, ijk), pub[ijk]
            diff = ours / ref - 1.0
            verdict = "pass" if abs(diff) <= tolerance(ijk) else "**FAIL**"
            lines.append(f"| {nuc} | {vox} | ({','.join(map(str, ijk))}) | {ref:.3g} | {ours:.4g} | "
                         f"{100 * diff:+.1f} % | {100 * sigma / ours:.2f} % | {100 * tolerance(ijk):.0f} % | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    import sys

    print(like_for_like_table() if "--like-for-like" in sys.argv else comparison_table())
