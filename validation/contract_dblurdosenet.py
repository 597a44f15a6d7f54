"""The registry contract's homogeneous case (tests/dose/test_contract.py) for DblurDoseNet weights files: the
mean dose in the source cube against Monte Carlo, as the test measures it, for each weights file or name given.

Usage: python validation/contract_dblurdosenet.py WEIGHTS [WEIGHTS ...]   (run from the repository root)
"""
import sys, numpy as np
sys.path.insert(0, "tests/dose")
import test_contract as tc
from persodose.dose.registry import get_spec

class F:  # a tmp_path_factory stand-in
    def mktemp(self, n):
        import tempfile, pathlib
        return pathlib.Path(tempfile.mkdtemp())
world = tc.world.__wrapped__(F())
ref = world["reference"]
src = np.zeros(tc.SHAPE, bool); src[tc.SOURCE] = True
ref_mean = float(ref.dose.array[src].astype(np.float64).mean())
for w in sys.argv[1:]:
    out = get_spec("dblurdosenet").run(tc.inputs(world, world["tia"], "spect"), {"weights": w})
    print(w, f"{100 * (float(out.dose.array[src].mean(dtype=np.float64)) / ref_mean - 1):+.1f} %")
