"""The demo's Lu-177 reference run, with the voxels the control variate's activity rule leaves out.

The built-in virtual patient (Lu-177 DOTATATE, 4 mm, its true TIA; the phantom from its CT by
the Schneider calibration, as ``persodose mc`` builds it), the demo's reference settings: at most
1.2e7 decays in 50 batches, stopping once the median voxel uncertainty above 10 % of the maximum
dose is 5 %, analog photons, seed 12345. Prints the decays done, the voxels set to 0 (a negative
mean), the voxels that report their plain estimate and the target reached. Run it from another
checkout (``PYTHONPATH=OTHER/src``) to compare versions (docs/benchmarks.md).

With ``--fixed`` the run does all ``--limit`` decays (no target) on one thread and ``--save``
writes the energy map, so that two checkouts can be compared bit for bit (``--compare`` a map
saved by the other): how "a fixed-count run is unchanged by the second tally" was checked.

Usage: python validation/control_plain_fallback.py [--limit 1.2e7] [--target 0.05]
       python validation/control_plain_fallback.py --fixed --limit 2e5 --save A.npy [--compare B.npy]
"""
import argparse
import time

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--tracer", default="lu177-dotatate")
ap.add_argument("--limit", type=float, default=1.2e7)
ap.add_argument("--target", type=float, default=0.05)
ap.add_argument("--seed", type=int, default=12345)
ap.add_argument("--fixed", action="store_true", help="all --limit decays, no target, one thread")
ap.add_argument("--save", default=None, help="write the energy per decay map (.npy)")
ap.add_argument("--compare", default=None, help="a map saved by another checkout: say how far this one is")
args = ap.parse_args()
if args.fixed:
    import numba

    numba.set_num_threads(1)

import persodose  # noqa: E402
from persodose.mc import MCSettings, TransportSettings, VoxelPhantom, simulate_decays  # noqa: E402
from persodose.mc.tally import UncertaintyTarget  # noqa: E402
from persodose.mc.version import PHYSICS_VERSION  # noqa: E402
from persodose.phantoms import make_virtual_patient  # noqa: E402

vp = make_virtual_patient(tracer=args.tracer, voxel_mm=4.0)
ph = VoxelPhantom.from_ct(vp.ct)
settings = MCSettings(n_batches=50, seed=args.seed, transport=TransportSettings(photon_estimator="analog"))
t = time.time()
res = simulate_decays(ph, vp.truth_tia, vp.nuclide, int(args.limit), settings,
                      target=None if args.fixed else UncertaintyTarget(relative=args.target, min_batches=5))
cv = res.info.get("control_variate", {})
dose = res.dose_per_primary_gy.array
print(f"{persodose.__file__} physics {PHYSICS_VERSION}: {res.tally.n_primaries:.3g} of {args.limit:.3g} decays "
      f"in {time.time() - t:.0f} s, "
      + (f"target {res.info['target']['achieved']:.4f}; " if "target" in res.info else "")
      + f"voxels set to 0: {res.info.get('negative_voxels_set_to_zero', 0)}; "
      f"voxels with the plain estimate: {cv.get('plain_voxels', 'n/a')}; "
      f"active voxels: {int(np.count_nonzero(vp.truth_tia.array))}; "
      f"dose sum {float(dose.sum(dtype=np.float64)):.6e} Gy per decay")
e = np.asarray(res.energy_per_primary_mev.array)
if args.save:
    np.save(args.save, e)
if args.compare:
    other = np.load(args.compare)
    diff = np.abs(e.astype(np.float64) - other)
    print(f"against {args.compare}: {int(np.count_nonzero(diff))} of {e.size} voxels differ, largest "
          f"difference {float(diff.max()):.3g} MeV per decay")
