"""Check of the kernels' far field (:mod:`persodose.dose.far_field`) on a whole patient.

The 4 mm kernels are wide enough to need no far field, so they make the reference: each
method (SSV, DSV, MSV) runs with the 4 mm kernels cropped to 99 voxels (box 198 mm, the
reference), cropped to 75 voxels (150 mm, what 3 mm voxels give under the 101-voxel cap) and
cropped to 75 voxels plus the far field from 150 to 198 mm (12 mm coarse voxels). Organ means
(mass-weighted) are compared with the reference's, and with the Monte Carlo dose of the same
run when the folder has one. ``--beyond MM`` adds a fourth set, the reference plus a far field
from 198 mm out to ``MM`` (an infinite medium beyond the intended reach), against the Monte
Carlo dose.

Input: an internal-dosimetry output folder at 4 mm (``tia.nii.gz``, ``density.nii.gz``,
``dose_mc.nii.gz`` if there), for example the demo's ``fdg/internal_true_tia``, and the
patient's label map with its names (``labels.nii.gz`` and ``labels.nii.gz.json``)::

    persodose demo --out DEMO
    python validation/far_field_check.py --internal DEMO/fdg/internal_true_tia \\
        --labels DEMO/patient_fdg/nifti/labels.nii.gz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

MEDIA = ("lung", "soft_tissue", "bone_low", "bone")


def _crop(kernel, half: int, far_field=None):
    c = kernel.shape[0] // 2
    s = kernel.s_mgy_per_mbq_s[c - half:c + half + 1, c - half:c + half + 1, c - half:c + half + 1]
    return dataclasses.replace(kernel, s_mgy_per_mbq_s=s, far_field=far_field)


def main(argv=None) -> int:
    from persodose.dose.far_field import FarField, coarse_factor, coarse_size
    from persodose.dose.kernels import KernelSet
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.grid import Kind
    from persodose.io.image import read_image
    from persodose.mc.kernels import cached_kernel
    from persodose.metrics.organ import mass_weighted_means

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--internal", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--nuclide", default="F-18")
    ap.add_argument("--beyond", type=float, default=None, help="also the reference plus a far field to MM")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    a = ap.parse_args(argv)
    tia = read_image(a.internal / "tia.nii.gz")
    rho = read_image(a.internal / "density.nii.gz")
    v = float(tia.spacing_zyx_mm[0])
    if abs(v - 4.0) > 1e-6:
        raise SystemExit(f"far_field_check: the folder's grid must be 4 mm (its kernels need no far field), got {v:g}")
    names = {int(k): n for k, n in json.loads(Path(f"{a.labels}.json").read_text()).items()}
    lab = read_image(a.labels, kind=Kind.LABELS).resample_to(tia, "nearest")
    f = coarse_factor(v)
    near_h, far_h = 37, 49  # both boxes on the faces of the 12 mm voxels (h = 3 k + 1)
    coarse = cached_kernel(a.nuclide, f * v, "soft_tissue", coarse_size(v, (far_h + 0.5) * v))
    sets = {"reference": [], "cropped": [], "cropped+far": []}
    if a.beyond:
        from persodose.dose.far_field import aligned_half

        out_h = aligned_half(int(np.ceil(a.beyond / v)), f, up=True)
        sets["reference+beyond"] = []
    for m in MEDIA:
        full = cached_kernel(a.nuclide, v, m)
        cm = cached_kernel(a.nuclide, f * v, m, coarse.shape[0])
        ff = FarField.from_coarse_kernel(cm.gy_per_bq_s, f, v, (near_h + 0.5) * v, (far_h + 0.5) * v)
        sets["reference"].append(_crop(full, far_h))
        sets["cropped"].append(_crop(full, near_h))
        sets["cropped+far"].append(_crop(full, near_h, ff))
        if a.beyond:
            cb = cached_kernel(a.nuclide, f * v, m, coarse_size(v, (out_h + 0.5) * v))
            fb = FarField.from_coarse_kernel(cb.gy_per_bq_s, f, v, (far_h + 0.5) * v, (out_h + 0.5) * v)
            sets["reference+beyond"].append(_crop(full, far_h, fb))
    mc = mass_weighted_means(read_image(a.internal / "dose_mc.nii.gz"), lab, names, rho) \
        if (a.internal / "dose_mc.nii.gz").exists() else {}
    out = {}
    for method in ("ssv", "dsv", "msv"):
        doses, secs = {}, {}
        for key, ks in sets.items():
            t = time.perf_counter()
            doses[key] = get_spec(method).run(DoseInputs(tia=tia, nuclide=a.nuclide, density=rho,
                                                         kernels=KernelSet.of(ks)), None).dose
            secs[key] = round(time.perf_counter() - t, 2)
        means = {k: mass_weighted_means(d, lab, names, rho) for k, d in doses.items()}
        ref = means["reference"]
        organs = [o for o in ref if ref[o] > 0]
        rows = {o: {k: 100.0 * (means[k][o] / ref[o] - 1.0) for k in ("cropped", "cropped+far")} for o in organs}
        if mc:
            for o in organs:
                for k in [k for k in means if k.startswith("reference")]:
                    rows[o][f"{k}_vs_mc"] = 100.0 * (means[k][o] / mc[o] - 1.0) if mc.get(o) else None
        r = np.asarray(doses["reference"].array, np.float64)
        e = np.asarray(doses["cropped+far"].array, np.float64)
        out[method] = {"organs": rows, "seconds": secs,
                       "mean_abs_percent": {k: float(np.mean([abs(rows[o][k]) for o in organs]))
                                            for k in ("cropped", "cropped+far")},
                       "voxel_max_abs_diff_of_max": float(np.abs(e - r).max() / r.max())}
        if mc:
            soft = [o for o in organs if rows[o].get("reference_vs_mc") is not None and not any(
                t in o for t in ("lung", "bone", "skull", "spine", "pelvis", "rib", "femoral", "marrow", "shoulder",
                                 "arm", "body"))]
            out[method]["soft_tissue_vs_mc_signed_mean"] = {
                k: float(np.mean([rows[o][f"{k}_vs_mc"] for o in soft])) for k in means if k.startswith("reference")}
            print(f"{method}: soft-tissue structures ({len(soft)}) against Monte Carlo, signed mean: " + ", ".join(
                f"{k} {x:+.2f} %" for k, x in out[method]["soft_tissue_vs_mc_signed_mean"].items()))
        print(f"{method}: organ means against the 198 mm kernels, mean |diff| over {len(organs)} structures: "
              f"cropped to 150 mm {out[method]['mean_abs_percent']['cropped']:.2f} %, with the far field "
              f"{out[method]['mean_abs_percent']['cropped+far']:.2f} %; largest voxel difference "
              f"{100 * out[method]['voxel_max_abs_diff_of_max']:.3f} % of the maximum; seconds {secs}")
        for o in organs:
            extra = f"  (198 mm vs MC {rows[o]['reference_vs_mc']:+.2f} %)" if mc and rows[o].get("reference_vs_mc") \
                is not None else ""
            if a.beyond and mc and rows[o].get("reference+beyond_vs_mc") is not None:
                extra += f"  (to {a.beyond:g} mm vs MC {rows[o]['reference+beyond_vs_mc']:+.2f} %)"
            print(f"  {o:22s} cropped {rows[o]['cropped']:+6.2f} %  cropped+far {rows[o]['cropped+far']:+6.2f} %{extra}")
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
