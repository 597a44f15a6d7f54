"""Evaluation of the ``dnn`` method (predicted patient-specific kernels) on held-out patients.

Three levels, each against our Monte Carlo and beside SSV, DSV and MSV:

1. **Kernels** (``--kernels DATASET``, the test patients' ``kernels`` dataset, original
   orientation only): the 7^3 near field of each held-out MC kernel against the network's and
   against the near field each classical method implies for that source (SSV: the soft-tissue
   kernel; DSV: it times 1.04 / rho of the target voxel; MSV: the kernel of the target voxel's
   medium). Errors: dose-weighted relative error ``sum |K - K_mc| / sum K_mc``, voxel MRAE over
   the central 3^3 (where the MC labels' own noise is below 1 %) and over all 343 voxels, air
   (below 0.1 g/cm3, no dose by any method) left out everywhere. The network's ratios are
   clipped at 0 per voxel here (the method clips the summed dose instead).
2. **Hot spheres in the patients' own anatomy** (``--spheres``): a uniform sphere of activity of
   ``--sphere-mm`` radius centred in the spine, in a lung near its border and in a rib, in each
   held-out patient; MC with ``--sphere-decays`` decays on the patient's CT; voxel MRAE above
   10 % of the maximum (the MC's own median uncertainty there is printed) and the mean dose of
   the sphere.
3. **Whole body** (``--whole-body``): the patient's true FDG TIA (with the weights' nuclide: Lu-177
   weights are evaluated on the same TIA maps with Lu-177 physics), MC with ``--wb-decays``
   decays in two independent halves (their mean the reference, their difference its organ
   uncertainty); organ mean doses (soft tissue, lung and bone reported apart). With
   ``--far-field-compare`` every method also runs with kernels that end at their 101-voxel box
   (``METHOD@box``: no far field, :mod:`persodose.dose.far_field`), on the same reference.

``--make-test-patients`` first writes the test patients of the population (``--population-seed``,
``--population-n``, at the weights' voxel, FDG) to ``WORK/test/patient_NNN`` (CT, labels, true
TIA, manifest), as ``persodose phantom --population`` would, without their emission frames.

Writes ``results.json`` and prints the tables of docs/validation_dl.md.

Usage::

    python validation/kernel_dnn.py --work /work/dnn --weights /work/dnn/kernel-dnn-f18.pt \\
        --kernels /work/dnn/ds_test --spheres --whole-body
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BONE = ("skull", "spine", "pelvis", "femoral_head_left", "femoral_head_right", "red_marrow", "ribs",
        "shoulder_girdle", "arm_bones")
LUNG = ("lung_left", "lung_right")
METHODS = ("dnn", "ssv", "dsv", "msv")
#: settings of the dnn method in the sphere and whole-body runs (``--dnn-option KEY=VALUE``)
DNN_OPTIONS: dict = {}


def _kernels(nuclide: str, voxel_mm: float, far_field: bool = True):
    from persodose.dose.kernels import KernelSet
    from persodose.mc.kernels import cached_kernel

    return KernelSet.of([cached_kernel(nuclide, voxel_mm, m, far_field=far_field)
                         for m in ("soft_tissue", "lung", "bone_low", "bone")])


def _window(k, h=3):
    c = [s // 2 for s in k.shape]
    return k[c[0] - h:c[0] + h + 1, c[1] - h:c[1] + h + 1, c[2] - h:c[2] + h + 1]


def _tissue(rho: float) -> str | None:
    return None if rho < 0.1 else "lung" if rho < 0.65 else "soft" if rho < 1.2 else "bone"


def _pairs(acc: dict, rho_source: float, rho_w: np.ndarray, mc_energy: np.ndarray, dnn_energy: np.ndarray) -> None:
    """Collect (MC, network) energy ratios of the source's 26 nearest neighbours by (source tissue,
    target tissue): where the network's near field is biased, e.g. soft tissue -> bone."""
    src = _tissue(float(rho_source))
    for dz, dy, dx in np.ndindex(3, 3, 3):
        if (dz, dy, dx) == (1, 1, 1):
            continue
        t = (2 + dz, 2 + dy, 2 + dx)
        tgt = _tissue(float(rho_w[t]))
        if src and tgt and mc_energy[t] > 0:
            acc.setdefault(f"{src}->{tgt}", []).append((float(mc_energy[t]), float(dnn_energy[t])))


def kernel_level(model, ds_path: Path, nuclide: str, voxel_mm: float, split: str = "test") -> dict:
    """Level 1: per-kernel errors of each method's near field against the MC kernels."""
    import torch

    from persodose.dl.datasets import open_dataset
    from persodose.dl.kernel_dnn import window_reference
    from persodose.dose.msv import msv_bins

    ds = open_dataset(ds_path)
    ks = _kernels(nuclide, voxel_mm)
    media, edges = msv_bins(ks)
    soft_big = _window(ks["soft_tissue"].s_mgy_per_mbq_s).astype(np.float64)
    med_ratio = [_window(ks[m].s_mgy_per_mbq_s) / soft_big for m in media]  # medium kernel / soft, near field
    ref = window_reference(nuclide, voxel_mm, int(ds.manifest["settings"].get("reference_decays", 20_000_000)))
    rows, pairs = [], {}
    for x, y, m in ds.iter_examples(split):
        if m.get("symmetry", 0) != 0:
            continue
        rho_w = x[0, 2:9, 2:9, 2:9]
        to_dose = 1.04 / np.maximum(rho_w, 1e-3)  # energy ratio -> dose ratio
        with torch.no_grad():
            pred = np.clip(model(torch.from_numpy(x[None]))[0, :, 0, 0, 0].numpy(), 0, None).reshape(7, 7, 7) * to_dose
        idx = np.digitize(rho_w, np.asarray(edges, np.float32))
        ratios = {"dnn": pred, "ssv": np.ones_like(pred), "dsv": 1.04 / np.maximum(rho_w, 1e-3),
                  "msv": np.choose(idx, med_ratio)}
        ratios["dsv"][rho_w < 0.1] = 0
        mc = y.reshape(7, 7, 7) * to_dose * ref
        body = rho_w >= 0.1  # every method gives air no dose: its voxels are left out
        row = {"class": m["class"], "density": m["density_g_cm3"], "unc_centre": m["unc_centre"],
               "unc_dose_weighted": m["unc_dose_weighted"]}
        for name, r in ratios.items():
            k = r * ref
            core = np.zeros((7, 7, 7), bool)
            core[2:5, 2:5, 2:5] = True
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(k - mc) / mc
            ok = body & np.isfinite(rel)
            row[name] = {"weighted": float(np.sum(np.abs(k - mc)[body]) / np.sum(mc[body])),
                         "mrae_core": float(np.mean(rel[ok & core])),
                         "mrae_all": float(np.mean(rel[ok])),
                         "rmse_rel": float(np.sqrt(np.mean((k - mc)[body] ** 2)) / np.mean(mc[body]))}
        rows.append(row)
        _pairs(pairs, x[0, 5, 5, 5], rho_w, y.reshape(7, 7, 7), pred / to_dose)
    out = {"n": len(rows), "mc_unc_centre_median": float(np.median([r["unc_centre"] for r in rows])),
           "neighbour_pairs": {k: {"n": len(v), "mc_energy_ratio": float(np.mean([t for t, _ in v])),
                                   "predicted": float(np.mean([p for _, p in v])),
                                   "mean_relative_error": float(np.mean([(p - t) / t for t, p in v]))}
                               for k, v in pairs.items() if v},
           "mc_unc_dose_weighted_median": float(np.median([r["unc_dose_weighted"] for r in rows]))}
    for cls in ("all", "bone", "lung", "interface", "soft", "homogeneous"):
        sel = [r for r in rows if cls == "all" or r["class"] == cls]
        if sel:
            out[cls] = {"n": len(sel), **{n: {k: [float(np.mean([r[n][k] for r in sel])),
                                                  float(np.std([r[n][k] for r in sel]))]
                                              for k in ("weighted", "mrae_core", "mrae_all", "rmse_rel")}
                                          for n in METHODS}}
    return out


def _patient(folder: Path):
    from persodose.io.image import read_image as read_nifti
    from persodose.physics.materials import ct_to_density_and_materials

    man = json.loads((folder / "manifest.json").read_text())
    ct = read_nifti(folder / "nifti" / "ct.nii.gz", kind="ct")
    density, materials, mats = ct_to_density_and_materials(ct)
    labels = read_nifti(folder / "nifti" / "labels.nii.gz", kind="labels")
    tia = read_nifti(folder / "nifti" / "truth_tia.nii.gz", kind="tia")
    names = {int(k): v for k, v in man["label_names"].items()}
    return man, ct, density, materials, mats, labels, tia, names


def _methods(tia, density, nuclide, kernels, weights) -> dict:
    from persodose.dose.registry import DoseInputs, get_spec

    out, secs = {}, {}
    for name in METHODS:
        spec = get_spec(name)
        settings = {"weights": str(weights), **DNN_OPTIONS} if name == "dnn" else None
        t = time.perf_counter()
        out[name] = np.asarray(spec.run(DoseInputs(tia=tia, nuclide=nuclide, density=density, kernels=kernels),
                                        settings).dose.array, np.float64)
        secs[name] = round(time.perf_counter() - t, 2)
    return out, secs


def _mc(density, materials, mats, tia, nuclide, n, seed):
    from persodose.mc.phantom import VoxelPhantom
    from persodose.mc.run import simulate_decays
    from persodose.mc.settings import MCSettings

    ph = VoxelPhantom(density, materials, tuple(mats))
    t = time.perf_counter()
    res = simulate_decays(ph, tia, nuclide, int(n), MCSettings(seed=int(seed)))
    return (np.asarray(res.dose_gy.array, np.float64), np.asarray(res.relative_uncertainty.array, np.float64),
            round(time.perf_counter() - t, 1))


def _sphere_centres(density: np.ndarray, labels: np.ndarray, names: dict, rng) -> dict:
    """Centres (z, y, x) of the three spheres: spine, lung near its border, ribs."""
    from scipy.ndimage import distance_transform_edt

    inv = {v: k for k, v in names.items()}
    out = {}
    lung = np.isin(labels, [inv[n] for n in LUNG if n in inv])
    spine = np.argwhere(labels == inv.get("spine", -1))
    if len(spine) and lung.any():
        zc = int(np.median(np.argwhere(lung)[:, 0]))
        s = spine[np.abs(spine[:, 0] - zc) < 3]
        out["spine"] = tuple(int(v) for v in (s if len(s) else spine).mean(0).round())
    cand = np.argwhere((lambda d: (d >= 3) & (d <= 4))(distance_transform_edt(lung))) if lung.any() else []
    if len(cand):
        out["lung"] = tuple(int(v) for v in cand[rng.integers(len(cand))])
    ribs = np.argwhere(labels == inv.get("ribs", -1))
    if len(ribs):
        out["ribs"] = tuple(int(v) for v in ribs[rng.integers(len(ribs))])
    return out


def _cut(g, sl):
    """The sub-grid ``g[sl]`` (the origin is not needed: every map of a sphere lies on the crop)."""
    from persodose.grid import Grid

    return Grid(np.ascontiguousarray(np.asarray(g.array)[sl]), g.spacing_zyx_mm, kind=g.kind, unit=g.unit)


def sphere_level(folder: Path, weights: Path, radius_mm: float, decays: int, seed: int, nuclide: str = "") -> dict:
    """Level 2 for one patient: each sphere's dose by MC and by each method, on a crop of the CT."""
    from persodose.grid import Kind

    man, ct, density, materials, mats, labels, tia, names = _patient(folder)
    nuc = nuclide or man["nuclide"]
    vox = float(ct.spacing_zyx_mm[0])
    kernels = _kernels(nuc, vox)
    rng = np.random.default_rng(seed)
    out = {}
    for where, c in _sphere_centres(np.asarray(density.array), np.asarray(labels.array), names, rng).items():
        h = 20  # crop half-width, voxels (60 mm at 3 mm)
        sl = tuple(slice(max(ci - h, 0), ci + h + 1) for ci in c)
        d_c, m_c = _cut(density, sl), _cut(materials, sl)
        zz, yy, xx = np.indices(d_c.shape)
        cc = [ci - s.start for ci, s in zip(c, sl)]
        r2 = ((zz - cc[0]) ** 2 + (yy - cc[1]) ** 2 + (xx - cc[2]) ** 2) * vox ** 2
        a = (r2 <= radius_mm ** 2).astype(np.float64) * 1e6  # 1 MBq s per voxel
        t = d_c.with_array(a, Kind.TIA)
        mc, unc, secs = _mc(d_c, m_c, mats, t, nuc, decays, seed)
        doses, msecs = _methods(t, d_c, nuc, kernels, weights)
        body = np.asarray(d_c.array) >= 0.1  # every method gives air no dose; MC gives it a large, noisy one
        hot = body & (mc >= 0.1 * mc[body].max())
        inside = (a > 0) & body
        row = {"centre_zyx": list(c), "density_at_centre": round(float(np.asarray(density.array)[c]), 3),
               "voxels_above_10pct": int(hot.sum()), "mc_unc_median_above_10pct": float(np.median(unc[hot])),
               "mc_seconds": secs, "method_seconds": msecs}
        for n, d in doses.items():
            row[n] = {"voxel_mrae_above_10pct": float(np.mean(np.abs(d[hot] - mc[hot]) / mc[hot])),
                      "sphere_mean_error": float(d[inside].mean() / mc[inside].mean() - 1)}
        out[where] = row
        print(f"  {folder.name} {where}: " + ", ".join(f"{n} {row[n]['voxel_mrae_above_10pct']:.1%}/"
                                                       f"{row[n]['sphere_mean_error']:+.1%}" for n in METHODS)
              + f" (MC unc {row['mc_unc_median_above_10pct']:.2%})", flush=True)
    return out


def whole_body(folder: Path, weights: Path, decays: int, seed: int, nuclide: str = "",
               far_field_compare: bool = False) -> dict:
    """Level 3 for one patient: organ means of the true TIA's dose, MC and each method."""
    man, ct, density, materials, mats, labels, tia, names = _patient(folder)
    nuc = nuclide or man["nuclide"]
    from persodose.grid import Kind

    tia = density.with_array(np.asarray(tia.array, np.float64), Kind.TIA)
    # two independent halves: their mean is the reference, their difference its organ uncertainty
    mc1, _, s1 = _mc(density, materials, mats, tia, nuc, decays // 2, seed)
    mc2, _, s2 = _mc(density, materials, mats, tia, nuc, decays // 2, seed + 1000)
    mc, secs = 0.5 * (mc1 + mc2), s1 + s2
    doses, msecs = _methods(tia, density, nuc, _kernels(nuc, float(ct.spacing_zyx_mm[0])), weights)
    if far_field_compare:
        box, bsecs = _methods(tia, density, nuc, _kernels(nuc, float(ct.spacing_zyx_mm[0]), False), weights)
        doses.update({f"{k}@box": v for k, v in box.items()})
        msecs.update({f"{k}@box": v for k, v in bsecs.items()})
    lab = np.asarray(labels.array)
    organs = {}
    for v, name in names.items():
        if name in ("body",) or not np.any(lab == v):
            continue
        sel = lab == v
        ref = mc[sel].mean()
        if not ref > 0:
            continue
        # relative standard uncertainty of the mean of the two halves, estimated from their difference
        m1, m2 = mc1[sel].mean(), mc2[sel].mean()
        u = float(abs(m1 - m2) / (m1 + m2))
        organs[name] = {"group": "bone" if name in BONE else "lung" if name in LUNG else "soft",
                        "mc_gy": float(ref), "mc_unc": u,
                        **{n: float(d[sel].mean() / ref - 1) for n, d in doses.items()}}
    return {"mc_seconds": secs, "method_seconds": msecs, "organs": organs}


def make_test_patients(work: Path, population_seed: int, n: int, voxel_mm: float) -> None:
    """The population's test patients (FDG, ``voxel_mm``) as ``work/test/patient_NNN``: the NIfTI
    files and manifest fields :func:`_patient` reads."""
    from persodose.io.image import write_image
    from persodose.phantoms.population import draw_population, make_population_patient, split_of

    for spec in draw_population(n, population_seed):
        if split_of(spec.seed) != "test":
            continue
        folder = work / "test" / f"patient_{spec.index:03d}"
        if (folder / "manifest.json").exists():
            continue
        t = time.perf_counter()
        vp = make_population_patient(spec, tracer="fdg", voxel_mm=voxel_mm)
        (folder / "nifti").mkdir(parents=True, exist_ok=True)
        write_image(vp.ct, folder / "nifti" / "ct.nii.gz")
        write_image(vp.labels, folder / "nifti" / "labels.nii.gz")
        write_image(vp.truth_tia, folder / "nifti" / "truth_tia.nii.gz")
        (folder / "manifest.json").write_text(json.dumps(
            {"nuclide": vp.nuclide, "label_names": {str(k): v for k, v in sorted(vp.label_names.items())},
             "population_seed": population_seed, "patient_seed": int(spec.seed), "voxel_mm": voxel_mm}, indent=1))
        print(f"{folder.name}: {vp.ct.shape} in {time.perf_counter() - t:.0f} s", flush=True)


def summarise_whole_body(wb: dict) -> str:
    """Markdown: mean and largest absolute organ error per group and method, over the patients."""
    rows = [o for p in wb.values() for o in p["organs"].values()]
    methods = [k for k in rows[0] if k not in ("group", "mc_gy", "mc_unc")]
    lines = ["| group (organs) | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for g in ("soft", "lung", "bone"):
        sel = [r for r in rows if r["group"] == g]
        cells = []
        for m in methods:
            e = np.abs([r[m] for r in sel]) * 100
            cells.append(f"{e.mean():.1f} / {e.max():.1f} % (signed {np.mean([r[m] for r in sel]) * 100:+.1f})")
        unc = np.median([r["mc_unc"] for r in sel]) * 100
        lines.append(f"| {g} ({len(sel)}; MC {unc:.2f} %) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--kernels", type=Path, help="test kernels dataset")
    ap.add_argument("--spheres", action="store_true")
    ap.add_argument("--sphere-mm", type=float, default=10.0)
    ap.add_argument("--sphere-decays", type=int, default=4_000_000)
    ap.add_argument("--whole-body", action="store_true")
    ap.add_argument("--wb-decays", type=int, default=10_000_000)
    ap.add_argument("--patients", type=int, default=5)
    ap.add_argument("--far-field-compare", action="store_true",
                    help="whole body: also every method with kernels that end at their box (METHOD@box)")
    ap.add_argument("--make-test-patients", action="store_true")
    ap.add_argument("--population-seed", type=int, default=4242)
    ap.add_argument("--population-n", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--dnn-option", action="append", default=[], help="dnn method setting KEY=VALUE "
                    "(e.g. far_weights=none) for the sphere and whole-body runs")
    args = ap.parse_args(argv)
    DNN_OPTIONS.update(o.split("=", 1) for o in args.dnn_option)
    from persodose.dose.dnn import _load

    model, side, _ = _load(str(args.weights), "cpu")
    nuc = (side.get("dataset_settings") or {}).get("nuclide") or "F-18"
    vox = float(side.get("voxel_mm") or 3.0)
    if args.make_test_patients:
        make_test_patients(args.work, args.population_seed, args.population_n, vox)
    out_path = args.out or args.work / f"eval_{args.weights.stem}.json"
    res = json.loads(out_path.read_text()) if out_path.exists() else {}
    res["weights"] = str(args.weights)
    if args.kernels:
        res["kernels"] = kernel_level(model, args.kernels, nuc, vox)
        print(json.dumps(res["kernels"].get("all"), indent=1))
    test = sorted(p for p in (args.work / "test").iterdir() if p.is_dir())[: args.patients]
    if args.spheres:
        res["spheres"] = {p.name: sphere_level(p, args.weights, args.sphere_mm, args.sphere_decays, 11 + i, nuc)
                          for i, p in enumerate(test)}
    if args.whole_body:
        res["whole_body"] = {}
        for i, p in enumerate(test):
            res["whole_body"][p.name] = whole_body(p, args.weights, args.wb_decays, 21 + i, nuc,
                                                   args.far_field_compare)
            out_path.write_text(json.dumps(res, indent=1))
        print(summarise_whole_body(res["whole_body"]))
    out_path.write_text(json.dumps(res, indent=1))
    print(f"-> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
