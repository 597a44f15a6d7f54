"""One held-out patient: the ``dnn`` method's lung doses with ``lung_far=lung`` and with
``lung_far=soft_tissue``, against Monte Carlo (the quick check behind the 2026-12-04 change; the
5-patient figures come from ``validation/kernel_dnn.py --whole-body``).

    python validation/dnn_lung_far_check.py --work WORK --patient patient_009 --nuclide F-18 [--decays 4000000]

WORK holds the test patients that ``validation/kernel_dnn.py --make-test-patients`` wrote
(``WORK/test/PATIENT``). Prints each lung's and the other structures' mean relative error, for
both settings and MSV; the Monte Carlo's organ uncertainty is printed beside the lungs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_dnn as kv  # noqa: E402

WEIGHTS = {"F-18": "kernel-dnn-f18", "Lu-177": "kernel-dnn-lu177"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--patient", default="patient_009")
    ap.add_argument("--nuclide", default="F-18", choices=sorted(WEIGHTS))
    ap.add_argument("--decays", type=int, default=4_000_000)
    ap.add_argument("--seed", type=int, default=77)
    a = ap.parse_args(argv)
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.grid import Kind

    man, ct, density, materials, mats, labels, tia, names = kv._patient(a.work / "test" / a.patient)
    tia = density.with_array(np.asarray(tia.array, np.float64), Kind.TIA)
    mc, unc, secs = kv._mc(density, materials, mats, tia, a.nuclide, a.decays, a.seed)
    inputs = DoseInputs(tia=tia, nuclide=a.nuclide, density=density, kernels=kv._kernels(a.nuclide, 3.0))
    doses = {f"dnn lung_far={lf}": np.asarray(get_spec("dnn").run(inputs, {"weights": WEIGHTS[a.nuclide],
                                                                           "lung_far": lf}).dose.array)
             for lf in ("lung", "soft_tissue")}
    doses["msv"] = np.asarray(get_spec("msv").run(inputs, None).dose.array)
    lab = np.asarray(labels.array)
    err = {}
    for v, name in names.items():
        sel = lab == v
        if name == "body" or not sel.any() or not mc[sel].mean() > 0:
            continue
        err[name] = {k: 100 * (d[sel].mean() / mc[sel].mean() - 1) for k, d in doses.items()}
        if name.startswith("lung_"):
            u = 100 * np.sqrt(np.sum((unc[sel] * mc[sel]) ** 2)) / mc[sel].sum()  # voxels taken as independent
            print(f"{a.patient} {a.nuclide} {name}: " + ", ".join(f"{k} {e:+.1f} %" for k, e in err[name].items())
                  + f" (MC {a.decays:.0e} decays, organ uncertainty {u:.2f} % if voxels were independent)")
    rest = [e for n, e in err.items() if not n.startswith("lung_")]
    print("other structures, mean |error|: " + ", ".join(f"{k} {np.mean([abs(e[k]) for e in rest]):.2f} %"
                                                        for k in doses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
