"""Output of a DblurDoseNet weights file with its weights stored as float16 (tensors > 1024 elements) against float32,
on every validation slab of a dataset: what storing the shipped weights in half precision changes.

Usage: python validation/check_half_weights.py WEIGHTS DATASET   (run by the lead on 2026-12-02 with
the float32 weights /work/dl/dblurdosenet-lu177-n31.pt and ds_train31_grown: 36 slabs, voxels above 10 %
of the maximum at most 0.52 % apart, median 0.21 %, hot-region sums at most 0.011 %; on 2026-12-03 with the
continued weights /work/dl12/dblurdosenet-lu177-continued-n31.pt and /work/dl12/ds_train31_grown: 0.31 %,
0.16 %, 0.0093 %)."""
import sys, numpy as np, torch
from persodose.dl.evaluate import _load_model
from persodose.dl.train import open_data
torch.set_num_threads(2)
_, m32, _, _ = _load_model("dblurdosenet", sys.argv[1], None, "cpu")
_, m16, _, _ = _load_model("dblurdosenet", sys.argv[1], None, "cpu")
from train_dblurdosenet import half_precision  # noqa: E402  (the rule register() ships)

sd = {k: v.float() if v.is_floating_point() else v for k, v in half_precision(m32.state_dict()).items()}
m16.load_state_dict(sd); m32.eval(); m16.eval()
x, y, ids = open_data(sys.argv[2]).load_split("val")
rel_vox, rel_mean = [], []
with torch.no_grad():
    for i in range(0, len(x), 4):
        xb = torch.from_numpy(x[i:i + 4])
        a, b = m32(xb).numpy(), m16(xb).numpy()
        for p, q in zip(a, b):
            hot = p > 0.1 * p.max()
            rel_vox.append(float(np.max(np.abs(q[hot] - p[hot]) / np.abs(p[hot]))))
            rel_mean.append(float(abs(q[hot].sum() - p[hot].sum()) / abs(p[hot].sum())))
print(f"{len(rel_vox)} slabs: max voxel |rel diff| above 10 % of max {100*max(rel_vox):.3f} %, "
      f"median {100*np.median(rel_vox):.3f} %; max |rel diff| of the hot-region sum {100*max(rel_mean):.4f} %")
