"""How many voxels of the built-in patient's hot region the control variate's decay-count rule leaves out.

For each tracer's true TIA at 4 mm (the demo's references): the voxels with at least 10 % of the
maximum TIA, and how many of them expect fewer than N decays (share x decays < N) for a run of
D decays, for the rules and run sizes given (docs/benchmarks.md, the control variate).

Usage: python validation/control_rule_coverage.py [--decays 1.2e7 1.2e6] [--rules 4 8]
"""
import argparse

import numpy as np

from persodose.phantoms import make_virtual_patient

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--tracers", nargs="+", default=["fdg", "lu177-dotatate"])
ap.add_argument("--decays", type=float, nargs="+", default=[1.2e7, 1.2e6])
ap.add_argument("--rules", type=float, nargs="+", default=[4.0, 8.0])
args = ap.parse_args()
for tracer in args.tracers:
    a = np.asarray(make_virtual_patient(tracer=tracer, voxel_mm=4.0).truth_tia.array, float).ravel()
    share, hot = a / a.sum(), a >= 0.1 * a.max()
    for n in args.decays:
        cells = ", ".join(f"below {r:g}: {int((share[hot] * n < r).sum())}" for r in args.rules)
        print(f"{tracer}: {n:.3g} decays, {int(hot.sum())} voxels >= 10 % of the maximum TIA; {cells}")
