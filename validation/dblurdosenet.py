"""Validation of DblurDoseNet on held-out virtual patients, as the paper evaluates it.

Li et al., Med. Phys. 2022 (``seeds/dblurdosenet-residual-cnn-spect-dosimetry.txt``), Methods
"Evaluation": per VOI (healthy liver, each lesion, each kidney, spleen, a lumbar vertebra) the
mean dose-rate error and the NRMSE against the dose rate of the true activity, the dose-rate
volume histogram statistics DR10, DR30, DR70 and DR90, and the ensemble noise over Poisson
realisations in spheres of non-tumoral liver and spleen; for DSV on the SPECT, Monte Carlo on
the SPECT, recovery-corrected DSV (organ means) and the CNN (and its ablations). Then the
absorbed dose of the whole chain (four time points, voxel-wise integration) in the kidneys
against the dose of the true time-integrated activity.

Run (the figures of ``docs/validation_dl.md``)::

    python validation/dblurdosenet.py --phantoms /work/dl/test6 --weights dblurdosenet-lu177 \
        --out /work/dl/eval --realisations 3

Every patient folder given must be a held-out one (its population split ``test``); the script
refuses others. The reference is the ``mc`` dose method on the true activity with
``--ref-decays`` decays; its own uncertainty of each VOI mean is reported beside the errors.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from persodose.dl.dataset_kinds.spect_doserate import (SpectDoseRateSettings, crop_z, dsv_dose_rate, field_of_view,
                                                       mc_dose_rate)
from persodose.dl.datasets import find_patients, get_kind, load_patient, read_patient_source
from persodose.grid import Kind

DR_LEVELS = (10, 30, 70, 90)
NOISE_SPHERE_MM = 20.0


def vois(lab: np.ndarray, names: dict[int, str]) -> dict[str, np.ndarray]:
    """The paper's VOIs from the truth labels: healthy liver (liver without lesions), each lesion
    (with its necrotic core), each kidney, spleen, and a lumbar vertebra (the spine within the
    kidneys' axial extent, L1-L3 level)."""
    by = {n: k for k, n in names.items()}
    out = {}
    if "liver" in by:
        out["healthy_liver"] = lab == by["liver"]
    for n, k in sorted(by.items()):
        if n.startswith("lesion_") and not n.endswith("_necrosis"):
            m = lab == k
            if f"{n}_necrosis" in by:
                m |= lab == by[f"{n}_necrosis"]
            out[n] = m
    for n in ("kidney_left", "kidney_right", "spleen"):
        if n in by:
            out[n] = lab == by[n]
    if "spine" in by and "kidney_left" in by:
        kz = np.nonzero(np.isin(lab, [by["kidney_left"], by.get("kidney_right", -1)]).any(axis=(1, 2)))[0]
        m = np.zeros(lab.shape, bool)
        m[kz.min():kz.max() + 1] = lab[kz.min():kz.max() + 1] == by["spine"]
        out["lumbar_vertebra"] = m
    return {k: v for k, v in out.items() if v.sum() >= 8}


def drvh(values: np.ndarray, levels=DR_LEVELS) -> dict[str, float]:
    """DRx: the least dose rate received by x % of the VOI (the (100 - x)th percentile)."""
    return {f"DR{x}": float(np.percentile(values, 100 - x)) for x in levels}


def voi_scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean dose-rate error (%), NRMSE (%, the paper's definition) and DRVH errors (%) in one VOI."""
    p, t = pred[mask].astype(np.float64), truth[mask].astype(np.float64)
    out = {"mean_error_pct": 100.0 * (p.mean() - t.mean()) / t.mean(),
           "nrmse_pct": 100.0 * math.sqrt(np.mean((p - t) ** 2)) / math.sqrt(np.mean(t ** 2))}
    dp, dt = drvh(p), drvh(t)
    for k in dp:
        out[f"{k}_error_pct"] = 100.0 * (dp[k] - dt[k]) / dt[k] if dt[k] > 0 else math.nan
    return out


def noise_spheres(lab: np.ndarray, names: dict[int, str], spacing_mm: float) -> dict[str, np.ndarray]:
    """A sphere of NOISE_SPHERE_MM radius deep in healthy liver and in spleen (the paper's background VOIs)."""
    from scipy import ndimage

    by = {n: k for k, n in names.items()}
    out = {}
    for organ in ("liver", "spleen"):
        if organ not in by:
            continue
        m = lab == by[organ]
        depth = ndimage.distance_transform_edt(m) * spacing_mm
        if depth.max() <= 0:
            continue
        c = np.unravel_index(int(np.argmax(depth)), m.shape)
        r = min(NOISE_SPHERE_MM, float(depth.max()) - spacing_mm)
        zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in m.shape)]
        d2 = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) * spacing_mm ** 2
        s = (d2 <= max(r, spacing_mm) ** 2) & m
        if s.sum() >= 4:
            out[organ] = s
    return out


def _load_models(specs: list[str]):
    from persodose.dose.dblurdosenet import _load

    return {name: _load(w, "cpu") for name, w in (s.split("=", 1) if "=" in s else ("cnn", s) for s in specs)}


def _cnn_rate(model, spect: np.ndarray, rho: np.ndarray, dsv: np.ndarray) -> np.ndarray:
    from persodose.dose.dblurdosenet import dose_rate_map

    return dose_rate_map(model, spect, rho, dsv)


def _recovery(args):
    """The recovery curve: read from ``--recovery``, or, with ``--calibrate-recovery``, calibrated
    on hot spheres through this run's SPECT model (``persodose.dose.recovery.calibrate_recovery``,
    its defaults) and written to ``OUT/recovery.json``."""
    from persodose.dose.recovery import RecoveryCurve, calibrate_recovery

    if args.recovery:
        return RecoveryCurve.from_json(args.recovery)
    if not args.calibrate_recovery:
        return None
    camera = SpectDoseRateSettings(camera=args.camera, views=args.views, iterations=args.iterations,
                                   subsets=args.subsets).spect_camera()
    curve = calibrate_recovery(camera)
    curve.to_json(Path(args.out) / "recovery.json")
    return curve


def evaluate_patient(folder: Path, args, models: dict, recovery) -> dict:
    """Every figure of one held-out patient (see the module doc)."""
    from persodose.phantoms.spect_camera import simulate_spect, spect_to_ct_grid
    from persodose.physics.materials import ct_to_density_and_materials

    src = read_patient_source(folder)
    if src.split not in ("test",):
        raise SystemExit(f"{folder}: split {src.split!r}; only held-out (test) patients may be evaluated")
    kind = get_kind("spect-doserate")
    patient = load_patient(src, (*kind.needs, "truth_tia"))
    names = {int(k): str(v) for k, v in src.manifest["label_names"].items()}
    ct, labels = patient["ct_nifti"], patient["labels"]
    sz = float(ct.spacing_zyx_mm[0])
    ks = SpectDoseRateSettings(camera=args.camera, views=args.views, iterations=args.iterations, subsets=args.subsets)
    f0, f1 = field_of_view(np.asarray(labels.array), names, sz, ks.fov_mm)
    m = int(round(ks.margin_mm / sz))
    z0, z1 = max(f0 - m, 0), min(f1 + m, ct.shape[0])
    ct_c = crop_z(ct, z0, z1)
    density, materials, mats = ct_to_density_and_materials(ct_c)
    rho = np.asarray(density.array, np.float32)
    lab = np.asarray(labels.array)[z0:z1]
    fov = (f0 - z0, f1 - z0)
    fov_mask = np.zeros(lab.shape, bool)
    fov_mask[fov[0]:fov[1]] = True
    v = {k: mm & fov_mask for k, mm in vois(lab, names).items()}
    v = {k: mm for k, mm in v.items() if mm.sum() >= 8}
    spheres = noise_spheres(np.where(fov_mask, lab, 0), names, sz)
    frames = src.manifest["frames"]
    camera = ks.spect_camera()
    axial = tuple(float(ct_c.index_to_physical(np.array([z, 0, 0], float))[2]) for z in (fov[0], fov[1] - 1))
    rng = np.random.default_rng(int(args.seed) + int(src.seed or 0) % 100000)
    out: dict = {"patient": src.id, "seed": src.seed, "fov_slices": [f0, f1], "frames": {}, "voi_ml": {
        k: float(mm.sum() * sz ** 3 / 1000.0) for k, mm in v.items()}}
    dose_rates: dict[str, list] = {k: [] for k in ("truth_mc", "dsv", *models)}
    for fi in args.frames:
        truth = crop_z(patient["truth_frames"][fi - 1], z0, z1).to_activity()
        truth = truth.with_array(np.asarray(truth.array, np.float32), Kind.ACTIVITY)
        t0 = time.perf_counter()
        ref, ref_unc = mc_dose_rate(truth, density, materials, mats, "Lu-177", args.ref_decays, 10,
                                    int(rng.integers(2**31)))
        ref = np.where(rho >= 0.1, ref, 0.0)
        fr: dict = {"mid_time_s": frames[fi - 1]["mid_time_s"], "ref_decays": args.ref_decays,
                    "ref_voi_mean_rel_unc_pct": {k: _mean_unc(ref, ref_unc, mm) for k, mm in v.items()},
                    "methods": {}, "noise": {}, "seconds": {}}
        fr["seconds"]["reference_mc"] = round(time.perf_counter() - t0, 1)
        reals: dict[str, list] = {}
        for r in range(args.realisations):
            counts = _counts(truth, frames[fi - 1], camera)
            t0 = time.perf_counter()
            spect = spect_to_ct_grid(simulate_spect(truth, density, camera, total_counts=counts, rng=rng,
                                                    axial_range_mm=(min(axial), max(axial))), ct_c)
            s = np.asarray(spect.array, np.float32)
            s[: fov[0]] = 0.0
            s[fov[1]:] = 0.0
            fr["seconds"].setdefault("spect", []).append(round(time.perf_counter() - t0, 1))
            spect = spect.with_array(s, Kind.ACTIVITY)
            t0 = time.perf_counter()
            dsv = np.asarray(dsv_dose_rate(spect, density, "Lu-177").array, np.float32)
            fr["seconds"].setdefault("dsv", []).append(round(time.perf_counter() - t0, 1))
            maps = {"dsv": dsv}
            for i, (name, (model, _, _)) in enumerate(models.items()):
                if i and r:  # the other networks (learning curve, ablations): the first realisation only
                    continue
                t0 = time.perf_counter()
                maps[name] = _cnn_rate(model, s, rho, dsv)
                fr["seconds"].setdefault(name, []).append(round(time.perf_counter() - t0, 1))
            if r < (args.mc_spect_realisations if fi == args.noise_frame else 1):
                t0 = time.perf_counter()
                mcs, _ = mc_dose_rate(spect, density, materials, mats, "Lu-177", args.mc_spect_decays, 8,
                                      int(rng.integers(2**31)))
                maps["mc_on_spect"] = np.where(rho >= 0.1, mcs, 0.0)
                fr["seconds"].setdefault("mc_on_spect", []).append(round(time.perf_counter() - t0, 1))
            for name, arr in maps.items():
                reals.setdefault(name, []).append(arr)
            if r == 0:
                fr["spect_counts"] = counts
                dose_rates["dsv"].append(dsv)
                for name in models:
                    dose_rates[name].append(maps[name])
        for name, arrs in reals.items():
            fr["methods"][name] = {k: _mean_scores([voi_scores(a, ref, mm) for a in arrs]) for k, mm in v.items()}
            if len(arrs) >= 3:
                fr["noise"][name] = {k: _ensemble_noise(arrs, sp) for k, sp in spheres.items()}
        if recovery is not None:
            fr["methods"]["dsv_recovery"] = {k: _recovered(reals["dsv"], ref, mm, recovery, sz) for k, mm in v.items()}
        dose_rates["truth_mc"].append(ref)
        out["frames"][str(fi)] = fr
        print(f"  {src.id} frame {fi}: done", flush=True)
    if len(args.frames) >= 2:
        out["dose"] = _dose_section(patient, args, z0, z1, density, materials, mats, rho, v, dose_rates, frames, rng)
    return out


def _dose_section(patient, args, z0, z1, density, materials, mats, rho, v, dose_rates, frames, rng) -> dict:
    """Absorbed dose (Gy) per VOI: the truth (MC on the true TIA) against the dose rates of each
    method integrated voxel-wise over the frames (the ``dblurdosenet`` method's integration)."""
    from persodose.kinetics.tia import tia_map
    from persodose.physics.radionuclides import get_nuclide

    tia = crop_z(patient["truth_tia"], z0, z1)
    truth, unc = mc_dose_rate(tia.with_array(np.asarray(tia.array, np.float32), Kind.ACTIVITY), density, materials,
                              mats, "Lu-177", args.ref_decays, 10, int(rng.integers(2**31)))
    truth = np.where(rho >= 0.1, truth, 0.0)
    times = [float(frames[f - 1]["mid_time_s"]) for f in args.frames]
    half = get_nuclide("Lu-177").half_life_s
    out = {"truth_voi_gy": {k: float(truth[mm].mean()) for k, mm in v.items()},
           "truth_voi_mean_rel_unc_pct": {k: _mean_unc(truth, unc, mm) for k, mm in v.items()}, "error_pct": {}}
    for name, rates in dose_rates.items():
        grids = [density.with_array(np.asarray(r, np.float32), Kind.ACTIVITY) for r in rates]
        dose = np.asarray(tia_map(grids, times, half, method="auto")[0].array)
        out["error_pct"][name] = {k: 100.0 * (float(dose[mm].mean()) - out["truth_voi_gy"][k]) / out["truth_voi_gy"][k]
                                  for k, mm in v.items()}
    return out


def _counts(truth, frame: dict, camera) -> float:
    """The frame's expected counts: sensitivity x activity in the field x duration (clinical count level)."""
    return float(camera.sensitivity_cps_per_mbq) * truth.total() / 1e6 * float(frame["duration_s"])


def _mean_unc(dose: np.ndarray, unc: np.ndarray | None, mask: np.ndarray) -> float:
    """Relative uncertainty of the VOI mean, %, from the batch uncertainties of its voxels taken as
    independent (photons correlate neighbours: the contract tests double this estimate)."""
    if unc is None:
        return math.nan
    d, u = dose[mask].astype(np.float64), unc[mask].astype(np.float64)
    return 100.0 * float(np.sqrt(np.sum((d * u) ** 2)) / np.sum(d))


def _mean_scores(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _ensemble_noise(arrs: list[np.ndarray], mask: np.ndarray) -> float:
    """The paper's ensemble noise, %: voxel sd over realisations / voxel mean, averaged over the sphere."""
    a = np.stack([x[mask] for x in arrs]).astype(np.float64)
    mu = a.mean(axis=0)
    ok = mu > 0
    return 100.0 * float(np.mean(a.std(axis=0, ddof=1)[ok] / mu[ok]))


def _recovered(arrs: list[np.ndarray], ref: np.ndarray, mask: np.ndarray, recovery, sz: float) -> dict:
    vol = float(mask.sum() * sz ** 3 / 1000.0)
    rc = float(recovery(vol))
    errs = [100.0 * (a[mask].mean() / rc - ref[mask].mean()) / ref[mask].mean() for a in arrs]
    return {"mean_error_pct": float(np.mean(errs)), "recovery_coefficient": rc}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phantoms", required=True, help="folder of held-out patient folders (split test)")
    ap.add_argument("--weights", nargs="+", default=["cnn=dblurdosenet-lu177"],
                    help="NAME=WEIGHTS of each network to evaluate (the first is the main one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, nargs="+", default=[2], help="1-based frames of the dose-rate evaluation")
    ap.add_argument("--realisations", type=int, default=3)
    ap.add_argument("--mc-spect-realisations", type=int, default=3,
                    help="realisations Monte Carlo on the SPECT runs on at --noise-frame (1 at the others)")
    ap.add_argument("--noise-frame", type=int, default=2, help="the frame of the MC ensemble noise")
    ap.add_argument("--ref-decays", type=int, default=10_000_000)
    ap.add_argument("--mc-spect-decays", type=int, default=2_000_000)
    ap.add_argument("--camera", default="blur")
    ap.add_argument("--views", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=0)
    ap.add_argument("--subsets", type=int, default=0)
    ap.add_argument("--recovery", default=None, help="recovery curve JSON (persodose.dose.recovery)")
    ap.add_argument("--calibrate-recovery", action="store_true",
                    help="without --recovery: calibrate the curve through this run's SPECT model (OUT/recovery.json)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--limit", type=int, default=0, help="first N patients only")
    args = ap.parse_args(argv)
    models = _load_models(args.weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recovery = _recovery(args)
    patients = find_patients(args.phantoms)[: args.limit or None]
    results = []
    for folder in patients:
        t0 = time.perf_counter()
        res = evaluate_patient(folder, args, models, recovery)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(res)
        (out / "patients.json").write_text(json.dumps(results, indent=1))
    doc = {"args": vars(args),
           "weights": {n: {"path": str(w.path), "sha256": w.sha256} for n, (_, _, w) in models.items()},
           "patients": results}
    (out / "patients.json").write_text(json.dumps(doc, indent=1))
    (out / "summary.md").write_text(summarise(doc))
    print(f"wrote {out / 'patients.json'} and {out / 'summary.md'}")
    return 0



# --------------------------------------------------------------------------- summary tables
VOI_CLASSES = (("healthy liver", lambda k: k == "healthy_liver"), ("lesions", lambda k: k.startswith("lesion_")),
               ("kidneys", lambda k: k.startswith("kidney_")), ("spleen", lambda k: k == "spleen"),
               ("lumbar vertebra", lambda k: k == "lumbar_vertebra"))


def _pool(doc: dict, method: str, metric: str, test) -> list[float]:
    vals = []
    for p in doc["patients"]:
        for fr in p["frames"].values():
            for k, row in fr["methods"].get(method, {}).items():
                if test(k) and metric in row and math.isfinite(row[metric]):
                    signed = metric == "mean_error_pct" or metric.startswith("DR")
                    vals.append(abs(row[metric]) if signed else row[metric])
    return vals


def summarise(doc: dict) -> str:
    """Markdown tables of a validation run: VOI errors per method, improvement, noise, kidney dose."""
    methods = [m for m in ("dsv", "mc_on_spect", "dsv_recovery", *doc["weights"]) if any(
        m in fr["methods"] for p in doc["patients"] for fr in p["frames"].values())]
    lines = ["| VOI | metric | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for cls, test in VOI_CLASSES:
        for metric, label in (("mean_error_pct", "mean |error| %"), ("nrmse_pct", "NRMSE %"),
                              ("DR10_error_pct", "DR10 |err| %"), ("DR90_error_pct", "DR90 |err| %")):
            cells = []
            for m in methods:
                v = _pool(doc, m, metric, test)
                cells.append(f"{np.mean(v):.1f} (max {np.max(v):.1f}, n={len(v)})" if v else "-")
            lines.append(f"| {cls} | {label} | " + " | ".join(cells) + " |")
    main = next(iter(doc["weights"]))
    imp = ["", f"Improvement of `{main}` in mean |error| (1 - CNN/other, pooled means):", "",
           "| VOI | vs DSV | vs MC on SPECT |", "|---|---|---|"]
    for cls, test in VOI_CLASSES:
        c = np.mean(_pool(doc, main, "mean_error_pct", test) or [math.nan])
        d = np.mean(_pool(doc, "dsv", "mean_error_pct", test) or [math.nan])
        mc = np.mean(_pool(doc, "mc_on_spect", "mean_error_pct", test) or [math.nan])
        imp.append(f"| {cls} | {100 * (1 - c / d):.0f} % | {100 * (1 - c / mc):.0f} % |")
    noise = ["", "Ensemble noise (%, sd over realisations / mean, spheres in liver and spleen):", "",
             "| method | liver | spleen |", "|---|---|---|"]
    for m in methods:
        vals = {o: [fr["noise"][m][o] for p in doc["patients"] for fr in p["frames"].values()
                    if m in fr.get("noise", {}) and o in fr["noise"][m]] for o in ("liver", "spleen")}
        if any(vals.values()):
            noise.append(f"| {m} | " + " | ".join(f"{np.mean(v):.2f}" if v else "-" for v in vals.values()) + " |")
    dose = ["", "Kidney mean absorbed dose, error % against MC on the true TIA (all frames, voxel-wise integration):",
            "", "| patient | " + " | ".join(["truth_mc", "dsv", *doc["weights"]]) + " |",
            "|---|" + "---|" * (2 + len(doc["weights"]))]
    for p in doc["patients"]:
        if "dose" not in p:
            continue
        cells = []
        for m in ["truth_mc", "dsv", *doc["weights"]]:
            e = p["dose"]["error_pct"].get(m, {})
            cells.append(" / ".join(f"{e[k]:+.1f}" for k in ("kidney_left", "kidney_right") if k in e))
        dose.append(f"| {p['patient']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + imp + noise + dose) + "\n"


if __name__ == "__main__":
    sys.exit(main())
