"""Whole-body CT dose by the ``ct-deepdose`` network (``persodose ct --method dl``) against the Monte
Carlo path at equal organ-dose accuracy, in the same run.

Problem: the built-in virtual patient at 5 mm (its DICOM CT with tube current modulation, 120 kV
by default), its organ labels; the full CT workflow each time (protocol, CTDI calibration with
2e6 photons, organ and effective doses).

* ``dl``: the shipped weights of the kVp (none yet: give ``--weights``); the cylinder map comes from the cache after a first
  (cold) call, which simulates it (printed apart: once per machine and beam).
* ``mc``: the workflow's Monte Carlo (64 positions per rotation, 4 start angles, track-length
  estimator) run until the mean dose of ``--organ`` reaches a standard uncertainty equal to
  ``--accuracy`` (default: the network's organ RAE measured on the held-out patients,
  docs/validation_dl.md), i.e. the photons the MC needs to be as accurate as the network.

Prints the machine, the seconds of each (the network's part and the rest), the photons the MC
needed and the ratio. No assertion on time.

    python benchmarks/bench_ct_dl.py --weights W.pt [--kvp 120] [--accuracy 0.03] [--organ liver] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvp", type=float, default=120.0)
    ap.add_argument("--accuracy", type=float, default=0.03, help="organ-dose accuracy to match (relative)")
    ap.add_argument("--organ", default="liver")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", default=None, help="ct-deepdose weights (default: the shipped ones of the kVp)")
    ap.add_argument("--max-photons", type=int, default=200_000_000)
    args = ap.parse_args()

    import torch

    from persodose.dl.ct_deepdose import shipped_weights

    if args.weights is None and not any(abs(k - args.kvp) < 0.5 for k in shipped_weights()):
        print(f"skipped: no shipped ct-deepdose weights for {args.kvp:g} kV; give --weights W.pt")
        return 0
    from persodose.cli._common import read_labels
    from persodose.io.load import load_ct
    from persodose.mc.engine import MCSettings
    from persodose.phantoms import make_virtual_patient, write_virtual_patient
    from persodose.workflows.ct import CT_TRANSPORT, ct_dose

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PERSODOSE_CACHE", str(Path(tmp) / "cache"))
        p = Path(tmp) / "vp"
        write_virtual_patient(make_virtual_patient(voxel_mm=5), p)
        ct, info = load_ct(p / "ct")
        names = json.loads((p / "manifest.json").read_text())["label_names"]
        (Path(tmp) / "names.json").write_text(json.dumps(names))
        lab, nm = read_labels(p / "nifti" / "labels.nii.gz", ct, Path(tmp) / "names.json")
        over = {"kvp": args.kvp}
        runs = {}
        for name in ("dl (cold: cylinder map simulated)", "dl (warm)"):
            t0 = time.perf_counter()
            r = ct_dose(ct, info, lab, nm, overrides=over, method="dl", device=args.device, dl_weights=args.weights)
            runs[name] = (time.perf_counter() - t0, r)
        t0 = time.perf_counter()
        mc = ct_dose(ct, info, lab, nm, overrides=over, n_photons=args.max_photons,
                     settings=MCSettings(n_batches=50, transport=CT_TRANSPORT), target_uncertainty=args.accuracy,
                     target_region=args.organ)
        t_mc = time.perf_counter() - t0
    for name, (sec, r) in runs.items():
        tm = r.statistics["timings_s"]
        print(f"{name}: {sec:.1f} s in all; network {tm['network']:.1f} s over {r.statistics['n_positions']} positions, "
              f"cylinder map {tm['cylinder map']:.1f} s, CTDI calibration {tm['ctdi calibration']:.1f} s")
    organ = {o.name: o for o in mc.organs}[args.organ]
    print(f"mc to {100 * args.accuracy:g} % on {args.organ}: {t_mc:.1f} s, {mc.statistics['n_photons']:.3g} photons "
          f"(reached {organ.uncertainty_percent:.2f} %), transport {mc.statistics['timings_s']['transport']:.1f} s")
    warm = runs["dl (warm)"][0]
    dl = runs["dl (warm)"][1]
    print(f"speed-up of dl (warm) over mc at equal {args.organ} accuracy: {t_mc / warm:.1f}x")
    d_dl = {o.name: o.mass_weighted_mean_gy for o in dl.organs}
    print("organ doses dl / mc: " + ", ".join(f"{o.name} {d_dl[o.name] / o.mass_weighted_mean_gy:.3f}"
                                               for o in mc.organs if o.name in ("liver", "lung_left", "heart", "kidney_left",
                                                                                "spleen", "bladder", "brain", "spine")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
