"""Validation of ``ct-deepdose`` (``persodose ct --method dl``) on held-out virtual patients, as
SINFONIA D2.2 section 2.3 evaluates it (its Tables 3-5).

Two steps:

``reference``: for every held-out patient and kVp, the Monte Carlo map of **every** focal-spot
position of the ``dl`` method's trajectory (8 per rotation, start angle 0; the DICOM CT, its
pitch and collimation), simulated one position at a time (``--photons`` each, 4 batches, the
CT workflow's transport) and summed twice: with the DICOM tube current modulation (TCM) and with
a fixed current (FTC). The variance of each sum is kept, so the reference's own noise is
reported beside the errors.

``evaluate``: the network's map of the same positions (shipped or given weights of the kVp),
summed with the same two current profiles, against the reference: voxel SSIM, PSNR, global
gamma 1 %/1 mm (10 % cut-off), ME and MAE (% of the reference maximum), RE and RAE (%) over
body voxels above 10 % of the maximum; organ RE and RAE for liver, heart, bones, kidneys,
spleen, bladder, lungs and brain (mass-weighted means); and, beside them, the cylinder map x
CF alone (the network's input; what an untrained network gives). Both maps are per source
photon at the mean current: the CTDIvol calibration is a common factor and cancels.

Run (the figures of docs/validation_dl.md)::

    python validation/ct_deepdose.py reference --phantoms /work/ctdl/test --out /work/ctdl/ref
    python validation/ct_deepdose.py evaluate --phantoms /work/ctdl/test --ref /work/ctdl/ref \
        --out /work/ctdl/eval

Every patient folder given must be a held-out one (population split ``test``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: The deliverable's organs (Tables 4-5) and the labels of the virtual patient they are made of.
ORGANS = {"liver": ("liver",), "heart": ("heart",),
          "bones": ("skull", "spine", "pelvis", "femoral_head_left", "femoral_head_right", "ribs", "shoulder_girdle",
                    "arm_bones"),
          "kidneys": ("kidney_left", "kidney_right"), "spleen": ("spleen",), "bladder": ("bladder",),
          "lungs": ("lung_left", "lung_right"), "brain": ("brain",)}
KVPS = (120.0, 90.0)


def test_patients(folder: Path) -> list[Path]:
    """The patient folders of ``folder``; refuses any that is not in the population's test split."""
    doc = json.loads((folder / "population.json").read_text())
    split = {p["folder"]: p["split"] for p in doc["patients"]}
    out = sorted(p for p in folder.iterdir() if (p / "manifest.json").exists())
    bad = [p.name for p in out if split.get(p.name) != "test"]
    if bad:
        raise SystemExit(f"not held-out (split != test): {', '.join(bad)}")
    return out


def setup(patient: Path, kvp: float, voxel_mm: float = 5.0) -> dict:
    """The ``dl`` method's geometry of one patient's DICOM CT at ``kvp`` (as ``ct_dose`` builds it)."""
    import warnings

    from persodose.cli._common import read_labels
    from persodose.io.load import load_ct
    from persodose.workflows.ct import _acquisition_step, _phantom_step, _protocol_step

    ct, info = load_ct(patient / "ct")
    lab, names = read_labels(patient / "nifti" / "labels.nii.gz", ct)
    overrides = {"kvp": float(kvp)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        protocol, _ = _protocol_step(ct, info, overrides, None, lambda *_: None)
        acq, _, scanner, pos = _acquisition_step(ct, info, overrides, None, lambda *_: None, protocol, dl=True)
    phantom, _, lab_d, label_names = _phantom_step(ct, lab, names, voxel_mm)
    rel = np.asarray(acq.relative_current_at(pos.table_z_mm), dtype=np.float64)
    return {"acq": acq, "positions": pos, "phantom": phantom, "labels": lab_d, "names": label_names,
            "weights": np.stack([rel, np.ones_like(rel)])}


def reference(args) -> int:
    from dataclasses import replace

    from persodose.ct.dose import ScanSampler, run_beam_batches
    from persodose.mc.engine import MCSettings
    from persodose.workflows.ct import CT_TRANSPORT

    args.out.mkdir(parents=True, exist_ok=True)
    for patient in test_patients(args.phantoms):
        for kvp in args.kvp:
            path = args.out / f"{patient.name}_{kvp:g}kv.npz"
            if path.exists():
                continue
            s = setup(patient, kvp)
            pos, ph, w = s["positions"], s["phantom"], s["weights"]
            t = pos.mean_bowtie_transmission()
            total = np.zeros((2,) + ph.density.shape)
            var = np.zeros_like(total)
            mc = MCSettings(n_batches=4, seed=args.seed, transport=CT_TRANSPORT)
            t0 = time.perf_counter()
            for i in range(len(pos)):
                run = run_beam_batches(ph, ScanSampler(pos, i), int(args.photons), replace(mc, seed=args.seed + 7919 * i))
                d = run.dose_per_primary_gy * t
                v = np.nan_to_num(run.relative_uncertainty * d) ** 2
                total += w[:, i, None, None, None] * d[None]
                var += (w[:, i] ** 2)[:, None, None, None] * v[None]
            sec = time.perf_counter() - t0
            np.savez_compressed(path, total=total.astype(np.float32), var=var.astype(np.float32), weights=w,
                                photons=int(args.photons), seconds=sec, n_positions=len(pos), kvp=kvp)
            print(f"{patient.name} {kvp:g} kV: {len(pos)} positions x {args.photons:.3g} photons in {sec:.0f} s",
                  flush=True)
    return 0


def organ_means(dose: np.ndarray, lab: np.ndarray, names: dict, mass: np.ndarray) -> dict:
    by = {n: k for k, n in names.items()}
    out = {}
    for organ, parts in ORGANS.items():
        m = np.isin(lab, [by[p] for p in parts if p in by])
        if m.any():
            out[organ] = float((dose[m] * mass[m]).sum() / mass[m].sum())
    return out


def compare_maps(ref: np.ndarray, test: np.ndarray, body: np.ndarray, grid, gamma_points: int) -> dict:
    """The deliverable's voxel metrics of ``test`` against ``ref`` (module doc)."""
    from persodose.grid import Kind
    from persodose.metrics.gamma import gamma_pass_rate
    from persodose.metrics.voxel import psnr, ssim

    peak = float(ref.max())
    high = body & (ref >= 0.1 * peak)
    rel = (test[high] - ref[high]) / ref[high]
    diff = (test - ref)[body]
    g_ref = grid.with_array(ref.astype(np.float32), Kind.DOSE, "Gy")
    g_test = grid.with_array(test.astype(np.float32), Kind.DOSE, "Gy")
    return {"ssim": float(ssim(ref, test)), "psnr_db": float(psnr(ref, test)),
            "gamma_1pct_1mm": float(gamma_pass_rate(g_ref, g_test, 1.0, 1.0, 10.0, random_subset=gamma_points)),
            "gamma_2pct_2mm": float(gamma_pass_rate(g_ref, g_test, 2.0, 2.0, 10.0, random_subset=gamma_points)),
            "me_pct_of_max": float(100 * diff.mean() / peak), "mae_pct_of_max": float(100 * np.abs(diff).mean() / peak),
            "re_pct": float(100 * rel.mean()), "rae_pct": float(100 * np.abs(rel).mean()), "n_voxels_above_10pct": int(high.sum())}


def evaluate(args) -> int:
    from persodose.ct.deepdose import uniform_map
    from persodose.dl.ct_deepdose import select_weights, whole_body_dose

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    given = dict(zip(KVPS, (args.weights_120, args.weights_90)))
    for patient in test_patients(args.phantoms):
        if args.patients and patient.name not in args.patients:
            continue
        for kvp in args.kvp:
            ref_path = args.ref / f"{patient.name}_{kvp:g}kv.npz"
            if not ref_path.exists():
                print(f"no reference {ref_path}; skipped", flush=True)
                continue
            z = np.load(ref_path)
            s = setup(patient, kvp)
            pos, ph, w = s["positions"], s["phantom"], s["weights"]
            net = select_weights(s["acq"], 5.0, given.get(kvp), args.device)
            umap = uniform_map(pos, net.voxel_mm, net.uniform_depth, net.uniform_photons)
            t0 = time.perf_counter()
            dl = whole_body_dose(net.model, ph.density, pos, umap, w, net.depth, net.uniform_depth, batch=net.batch,
                                 device=net.device)
            sec = time.perf_counter() - t0
            uni = whole_body_dose(_Identity(), ph.density, pos, umap, w, net.depth, net.uniform_depth, batch=8)
            body = np.asarray(ph.density.array) >= 0.05
            lab = np.asarray(s["labels"].array)
            mass = ph.mass_kg
            for k, mode in enumerate(("TCM", "FTC")):
                ref = np.where(body, z["total"][k], 0.0)
                noise = np.sqrt(z["var"][k])
                high = body & (ref >= 0.1 * ref.max())
                ref_org = organ_means(ref, lab, s["names"], mass)
                org_noise = {}
                for o in ref_org:
                    m = np.isin(lab, [kk for kk, n in s["names"].items() if n in ORGANS[o]])
                    org_noise[o] = 100 * float(np.sqrt((z["var"][k][m] * mass[m] ** 2).sum())
                                               / (ref_org[o] * mass[m].sum()))
                row = {"patient": patient.name, "kvp": kvp, "mode": mode, "weights": net.name,
                       "n_positions": len(pos), "network_seconds": sec, "ref_photons_per_position": int(z["photons"]),
                       "ref_voxel_noise_median_pct": float(100 * np.median(noise[high] / ref[high])),
                       "ref_organ_noise_pct": org_noise}
                for name, m in (("dl", np.where(body, dl[k], 0.0)), ("uniform_cf", np.where(body, uni[k], 0.0))):
                    row[name] = compare_maps(ref, m, body, ph.density, args.gamma_points)
                    org = organ_means(m, lab, s["names"], mass)
                    row[name]["organ_re_pct"] = {o: 100 * (org[o] - ref_org[o]) / ref_org[o] for o in ref_org}
                rows.append(row)
                print(json.dumps({"patient": patient.name, "kvp": kvp, "mode": mode, "s": round(sec, 1),
                                  "ref_noise": round(row["ref_voxel_noise_median_pct"], 2),
                                  **{f"{n}_{m}": round(row[n][m], 4) for n in ("dl", "uniform_cf")
                                     for m in ("ssim", "gamma_1pct_1mm", "rae_pct")},
                                  "organ_re_dl": {o: round(v, 2) for o, v in row["dl"]["organ_re_pct"].items()}}),
                      flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    summary(rows, args.out / "summary.md")
    print((args.out / "summary.md").read_text())
    return 0


class _Identity:
    """Stands in for the network: the cylinder map x CF in the body (an untrained ``ct-deepdose``)."""

    def __call__(self, x):
        return x[:, 1:2] * (x[:, 0:1] >= 0.05).to(x.dtype)


def summary(rows: list, path: Path) -> None:
    """Mean +- SD over patients per kVp and mode: Table 3 (voxel) and Tables 4-5 (organ RE, RAE)."""
    lines = ["| kVp | mode | method | SSIM | PSNR (dB) | gamma 1%/1mm (%) | gamma 2%/2mm (%) | ME (% max) | MAE (% max) | RE (%) | RAE (%) | organ RAE (%) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = sorted({(r["kvp"], r["mode"]) for r in rows}, key=lambda g: (-g[0], g[1]))
    for kvp, mode in groups:
        sel = [r for r in rows if r["kvp"] == kvp and r["mode"] == mode]
        for m in ("dl", "uniform_cf"):
            def ms(key):
                v = np.array([r[m][key] for r in sel])
                return f"{v.mean():.3g} ± {v.std():.2g}"
            org = np.array([abs(x) for r in sel for x in r[m]["organ_re_pct"].values()])
            lines.append(f"| {kvp:g} | {mode} | {'ct-deepdose' if m == 'dl' else 'SP_uniform x CF'} | {ms('ssim')} | "
                         f"{ms('psnr_db')} | {ms('gamma_1pct_1mm')} | {ms('gamma_2pct_2mm')} | {ms('me_pct_of_max')} | "
                         f"{ms('mae_pct_of_max')} | {ms('re_pct')} | {ms('rae_pct')} | {org.mean():.2f} ± {org.std():.2g} |")
    lines += ["", "| kVp | mode | organ | ct-deepdose RE (%) | RAE (%) | SP_uniform x CF RAE (%) | reference noise (%) |",
              "|---|---|---|---|---|---|---|"]
    for kvp, mode in groups:
        sel = [r for r in rows if r["kvp"] == kvp and r["mode"] == mode]
        for organ in ORGANS:
            re = np.array([r["dl"]["organ_re_pct"][organ] for r in sel if organ in r["dl"]["organ_re_pct"]])
            un = np.array([abs(r["uniform_cf"]["organ_re_pct"][organ]) for r in sel if organ in r["dl"]["organ_re_pct"]])
            nz = np.array([r["ref_organ_noise_pct"][organ] for r in sel if organ in r["ref_organ_noise_pct"]])
            if re.size:
                lines.append(f"| {kvp:g} | {mode} | {organ} | {re.mean():+.2f} ± {re.std():.2g} | {np.abs(re).mean():.2f} | "
                             f"{un.mean():.2f} | {nz.mean():.2f} |")
    noise = np.array([r["ref_voxel_noise_median_pct"] for r in rows])
    sec = np.array([r["network_seconds"] for r in rows])
    lines += ["", f"Reference voxel noise (median above 10 % of max): {noise.mean():.2f} % "
                  f"({noise.min():.2f}-{noise.max():.2f}); network over all positions: {sec.mean():.1f} s "
                  f"(both current modes at once) on {len({r['patient'] for r in rows})} patients."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--phantoms", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--photons", type=int, default=300_000, help="MC photons per position")
    r.add_argument("--seed", type=int, default=5151)
    r.add_argument("--kvp", type=float, nargs="*", default=list(KVPS))
    e = sub.add_parser("evaluate")
    e.add_argument("--phantoms", type=Path, required=True)
    e.add_argument("--ref", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--weights-120", default=None, help="ct-deepdose weights for 120 kV (default: shipped)")
    e.add_argument("--weights-90", default=None, help="ct-deepdose weights for 90 kV (default: shipped)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--gamma-points", type=int, default=3000, help="reference points of the gamma (random subset)")
    e.add_argument("--kvp", type=float, nargs="*", default=list(KVPS))
    e.add_argument("--patients", nargs="*", default=None, help="only these patient folders (names)")
    m = sub.add_parser("summarise", help="one summary of several evaluate runs' results.json")
    m.add_argument("results", type=Path, nargs="+")
    m.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.step == "summarise":
        rows = [r for f in args.results for r in json.loads(f.read_text())]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary(rows, args.out)
        print(args.out.read_text())
        return 0
    return reference(args) if args.step == "reference" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
