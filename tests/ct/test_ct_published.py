"""CTDIvol-normalised doses of the CT workflow against published, independent values (issue 19).

The published ranges and their sources are in ``tests/data/ct_published_coefficients.csv``
(header comments): organ dose / CTDIvol for chest CT (lung, heart; PMC2826387, ImPACT for a
70 kg patient), eyelid (lens) dose / CTDIvol for whole-brain CT (Suzuki et al., AJNR 31 (2010)
822), and the central dose of the scanned range / SSDE (AAPM Report 204 fits with Dw, AAPM
Report 220) for an adult and a child (16 cm phantom) abdomen.

The patients are the project's virtual patients (8 mm voxels): the canonical adult (ICRP 89
reference male, 176 cm) and a small one (height and width x 0.6, subcutaneous fat 6 mm;
trunk Dw about 13-16 cm, the size of a child of about 5 years in AAPM Report 204's Table 3).
Fixed tube current, 120 kV, pitch 1, 40 mm collimation, the generic64 scanner; the head scan
with the head bowtie and the 16 cm phantom, the child's abdomen with the body bowtie and the
16 cm phantom (as scanners report small patients). Scan ranges come from the labels: the
whole lungs (chest), 200 mm (adult) / 120 mm (child) below the lungs (abdomen), the skull
(head).

Each comparison passes when the computed value lies in the published range widened by two
standard uncertainties of the Monte Carlo; the ranges are the spread the sources give
(across scanners, vendors and kV for [H] and [S]); the AAPM 204 band of +-20 % is this
project's choice (the CSV says so). Tier 2 (``-m validate``): about 2-3 minutes on 2 cores.
Tier 1 runs one reduced case (the adult chest at fewer photons, lung and heart only).

Figures: ``nice -n 10 .venv/bin/python -m tests.ct.test_ct_published`` prints the table of
docs/validation_ct.md.
"""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest

from tests import DATA_DIR

pytest.importorskip("spekpy")
pytest.importorskip("xraylib")
pytest.importorskip("scipy")

CSV = DATA_DIR / "ct_published_coefficients.csv"
#: Acquisition of every case (fixed tube current).
BASE = {"kvp": 120.0, "pitch": 1.0, "total_collimation_mm": 40.0, "rotation_time_s": 0.5, "ctdivol_mgy": 10.0}
#: Photons of the scan and of the CTDI run, full and reduced (tier 1).
PHOTONS, REDUCED_PHOTONS = 400_000, 120_000
#: Half thickness of the central slab, mm; soft tissue of the slab: density range, g/cm3.
SLAB_HALF_MM = 12.0
SOFT_TISSUE_G_CM3 = (0.9, 1.2)


def published_rows() -> list[dict]:
    """The rows of ``ct_published_coefficients.csv`` (comment lines skipped)."""
    with open(CSV, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    for r in rows:
        r["low"], r["high"], r["ctdi_phantom_cm"] = float(r["low"]), float(r["high"]), float(r["ctdi_phantom_cm"])
    return rows


# ----------------------------------------------------------------------------- patients and ranges
def _patient(kind: str):
    from persodose.phantoms import make_virtual_patient

    if kind == "adult":
        return make_virtual_patient(voxel_mm=8)
    from persodose.phantoms.anatomy import AnatomyParams
    from persodose.phantoms.kinetics import KineticParams
    from persodose.phantoms.virtual_patient import PatientVariation

    var = PatientVariation(anatomy=AnatomyParams(height_scale=0.6, width_scale=0.6, fat_extra_mm=-9.0),
                           kinetics=KineticParams(),
                           patient={"sex": "M", "age_y": 5.0, "weight_kg": 19.0, "height_m": 1.06})
    return make_virtual_patient(voxel_mm=8, variation=var)


def _z_extent(vp, names) -> tuple[float, float]:
    """z range (mm) of the labels called ``names``."""
    values = [k for k, n in vp.label_names.items() if n in names]
    k = np.nonzero(np.isin(np.asarray(vp.labels.array), values).any(axis=(1, 2)))[0]
    z = vp.labels.index_to_physical(np.array([[k.min(), 0, 0], [k.max(), 0, 0]], float))[:, 2]
    return float(z.min()), float(z.max())


def scan_range(vp, case: str) -> tuple[float, float]:
    """The scanned z range of a case, mm."""
    lo, hi = _z_extent(vp, ("lung_left", "lung_right"))
    if case == "chest":
        return lo - 10.0, hi + 10.0
    if case == "abdomen":
        length = 200.0 if vp.ct.shape[0] > 100 else 120.0
        return lo - 10.0 - length, lo - 10.0
    s_lo, s_hi = _z_extent(vp, ("skull",))
    return s_lo - 5.0, s_hi + 5.0


# ----------------------------------------------------------------------------- the runs
def run_case(case: str, photons: int = PHOTONS) -> dict:
    """Run one case (``chest_adult``, ``abdomen_adult``, ``abdomen_child``, ``head_adult``) and
    return its CTDIvol-normalised figures with their relative standard uncertainties."""
    from persodose.mc.engine import MCSettings
    from persodose.workflows.ct import CT_TRANSPORT, ct_dose

    region, who = case.split("_")
    vp = _patient(who)
    ov = dict(BASE, scan_range_mm=scan_range(vp, region), bowtie="head" if region == "head" else "body")
    phantom = 160.0 if (region == "head" or who == "child") else 320.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ct_dose(vp.ct, None, vp.labels, vp.label_names, overrides=ov, n_photons=photons,
                      ctdi_photons=photons, dose_voxel_mm=8.0, ctdi_diameter_mm=phantom,
                      settings=MCSettings(n_batches=4, seed=19, transport=CT_TRANSPORT))
    ctdivol = res.calibration.ctdivol_target_mgy
    out = {"case": case, "scan_range_mm": ov["scan_range_mm"], "ctdi_phantom_mm": res.ctdi.diameter_mm,
           "bowtie": res.acquisition.bowtie, "dw_mean_cm": res.size_dose.dw_mean_mm / 10,
           "ssde_mgy": res.size_dose.ssde_mgy, "ctdivol_mgy": ctdivol, "values": {}}
    for r in res.organs:
        out["values"][r.name] = (1e3 * r.mass_weighted_mean_gy / ctdivol, (r.uncertainty_percent or 0.0) / 100)
    lungs = [r for r in res.organs if r.name in ("lung_left", "lung_right")]
    if lungs:  # both lungs: mass-weighted, the larger uncertainty
        m = sum(r.mass_g for r in lungs)
        out["values"]["lung"] = (sum(1e3 * r.mass_weighted_mean_gy * r.mass_g for r in lungs) / m / ctdivol,
                                 max((r.uncertainty_percent or 0.0) / 100 for r in lungs))
    zc = 0.5 * sum(ov["scan_range_mm"])
    slab, slab_u = _slab_mean(res, zc)
    if res.size_dose.ssde_mgy:
        out["values"]["central_slab_over_ssde"] = (slab / res.size_dose.ssde_mgy, slab_u)
    if region == "head":
        z_brain = 0.5 * sum(_z_extent(vp, ("brain",)))
        out["values"]["eyelid_surface"] = tuple(np.array(_anterior_surface(res, z_brain)) / np.array([ctdivol, 1.0]))
    return out


def _zyx_mm(grid):
    """Physical z of each slice and y, x of each row/column (axis-aligned grids only)."""
    assert np.allclose(grid.direction_xyz, np.eye(3)), "axis-aligned grid expected"
    nz, ny, nx = grid.shape
    z = grid.index_to_physical(np.array([[k, 0, 0] for k in range(nz)], float))[:, 2]
    y = grid.index_to_physical(np.array([[0, j, 0] for j in range(ny)], float))[:, 1]
    x = grid.index_to_physical(np.array([[0, 0, i] for i in range(nx)], float))[:, 0]
    return z, y, x


def _slab_mean(res, zc: float) -> tuple[float, float]:
    """Mass-weighted mean dose (mGy) of the soft tissue within SLAB_HALF_MM of ``zc``, and a
    conservative relative uncertainty (the mass-weighted mean voxel uncertainty)."""
    z, _, _ = _zyx_mm(res.dose_mgy)
    rho = np.asarray(res.density.array)
    sel = (np.abs(z - zc) <= SLAB_HALF_MM)[:, None, None] & (rho > SOFT_TISSUE_G_CM3[0]) & (rho < SOFT_TISSUE_G_CM3[1])
    m = rho[sel]
    d = np.asarray(res.dose_mgy.array)[sel]
    u = np.asarray(res.uncertainty.array)[sel]
    return float((d * m).sum() / m.sum()), float((u * m).sum() / m.sum())


def _anterior_surface(res, zc: float) -> tuple[float, float]:
    """Mean dose (mGy) of the most anterior tissue voxel of each column within 24 mm of the
    midline, in the slices within SLAB_HALF_MM of ``zc`` (LPS: anterior is -y); and the mean
    voxel uncertainty there (conservative)."""
    z, _, x = _zyx_mm(res.dose_mgy)
    rho = np.asarray(res.density.array)
    dose, unc = np.asarray(res.dose_mgy.array), np.asarray(res.uncertainty.array)
    vals, uncs = [], []
    for k in np.nonzero(np.abs(z - zc) <= SLAB_HALF_MM)[0]:
        for i in np.nonzero(np.abs(x) <= 24.0)[0]:
            col = np.nonzero(rho[k, :, i] > 0.5)[0]
            if col.size:
                vals.append(dose[k, col[0], i])
                uncs.append(unc[k, col[0], i])
    return float(np.mean(vals)), float(np.mean(uncs))


# ----------------------------------------------------------------------------- tests
_CACHE: dict = {}


def _cached(case: str, photons: int = PHOTONS) -> dict:
    if (case, photons) not in _CACHE:
        _CACHE[(case, photons)] = run_case(case, photons)
    return _CACHE[(case, photons)]


def _check(row: dict, result: dict) -> tuple[float, float]:
    value, u = result["values"][row["quantity"]]
    lo, hi = row["low"] * (1 - 2 * u), row["high"] * (1 + 2 * u)
    assert result["ctdi_phantom_mm"] == 10 * row["ctdi_phantom_cm"]
    assert lo <= value <= hi, (f"{row['case']} {row['quantity']}: {value:.3f} outside the published "
                               f"{row['low']:g}-{row['high']:g} (+-2 SD: {lo:.3f}-{hi:.3f}; source {row['source']})")
    return value, u


def test_published_table_reads_with_its_sources():
    rows = published_rows()
    assert {r["source"] for r in rows} == {"H", "S", "A"}
    assert all(0 < r["low"] < r["high"] for r in rows)
    text = CSV.read_text()
    for cite in ("PMC2826387", "AJNR Am J Neuroradiol 31 (2010) 822-826", "AAPM Report 204", "Turner"):
        assert cite in text


@pytest.mark.slow
def test_chest_lung_and_heart_per_ctdivol_reduced():
    """Tier 1: the adult chest at fewer photons, against [H]."""
    result = _cached("chest_adult", REDUCED_PHOTONS)
    for row in published_rows():
        if row["case"] == "chest_adult" and row["source"] == "H":
            _check(row, result)


#: Known miss (docs/validation_ct.md): the anterior head surface of the virtual patient gets
#: 0.67-0.70 x CTDIvol16 (8 and 4 mm voxels) against 0.81-1.03 measured on eyelids. The virtual
#: head has no orbits or eyelids (the proxy is the forehead at mid-brain height, over the skull),
#: and the generic head bowtie is not a vendor's; kept as a strict xfail so that a change of
#: either shows.
EYELID_MISS = ("the virtual head's anterior surface gets ~0.7 x CTDIvol16, Suzuki et al. measured 0.81-1.03 "
               "on eyelids (no orbits in the virtual head; generic head bowtie)")


def _param(row):
    marks = [pytest.mark.xfail(strict=True, reason=EYELID_MISS)] if row["source"] == "S" else []
    return pytest.param(row, marks=marks, id=f"{row['case']}-{row['quantity']}")


@pytest.mark.validate
@pytest.mark.parametrize("row", [_param(r) for r in published_rows()])
def test_published_ctdivol_normalised_doses(row):
    value, u = _check(row, _cached(row["case"]))
    print(f"{row['case']} {row['quantity']}: {value:.3f} +- {u * value:.3f} (published {row['low']:g}-{row['high']:g})")


def figures() -> list[str]:
    """The comparison as Markdown table rows (docs/validation_ct.md)."""
    lines = ["| case | quantity | CTDI phantom | Dw (cm) | computed | published | source | within |",
             "|---|---|---|---|---|---|---|---|"]
    for row in published_rows():
        res = _cached(row["case"])
        value, u = res["values"][row["quantity"]]
        lo, hi = row["low"] * (1 - 2 * u), row["high"] * (1 + 2 * u)
        ok = "yes" if lo <= value <= hi else "NO"
        lines.append(f"| {row['case']} | {row['quantity']} | {row['ctdi_phantom_cm']:g} cm | {res['dw_mean_cm']:.1f} | "
                     f"{value:.3f} ± {u * value:.3f} | {row['low']:g}–{row['high']:g} | {row['source']} | {ok} |")
    return lines


if __name__ == "__main__":  # pragma: no cover - prints the figures of the docs
    import platform
    import time

    t0 = time.perf_counter()
    rows = figures()
    print("\n".join(rows))
    for (case, _), res in _CACHE.items():
        organs = {k: round(v[0], 3) for k, v in res["values"].items()}
        print(case, "range", [round(v) for v in res["scan_range_mm"]], "bowtie", res["bowtie"],
              "SSDE/CTDIvol", None if not res["ssde_mgy"] else round(res["ssde_mgy"] / res["ctdivol_mgy"], 3), organs)
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{time.perf_counter() - t0:.0f} s, {math.ceil(len(_CACHE))} runs of {PHOTONS} photons")
