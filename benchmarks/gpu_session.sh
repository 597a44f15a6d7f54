#!/usr/bin/env bash
# Everything with a GPU path, checked and timed on one NVIDIA GPU in one command (issue 15), for a
# machine whose image holds numba with its CUDA target, PyTorch, numpy, scipy, pyyaml, psutil
# and pytest. Device time is short: each step has its own time limit and writes its own log, so
# a step that hangs or fails costs only itself and what ran before it still comes back.
#
#   bash benchmarks/gpu_session.sh [OUTDIR]
#
# persodose itself is used from src/ (no install). Packages GPU images seldom hold are taken
# from wheels in .whl/ when there are some (made here with `pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl xraylib==4.3.0
# icrp107-database==0.0.3 monai pydicom nibabel`). SimpleITK (52 MB) and SpekPy (164 MB) do not
# fit the 64 MB a call may carry: the steps that resample grids (DblurDoseNet) are left out, and
# the CT beam reads its 120 kVp SpekPy spectrum from .gpu/spectrum120.npz (written here by
# `python benchmarks/bench_ct.py --write-spectrum .gpu/spectrum120.npz`). .gpu/kernels.tar.gz,
# when there, is a persodose kernel cache (the F-18 dose kernels computed here), so that the
# GPU's minutes are not spent on the CPU computing them again: after `python
# benchmarks/bench_dnn.py` has filled the cache here, `tar -czf .gpu/kernels.tar.gz -C
# ~/.cache/persodose kernels/F-18_*_3mm_* kernels/F-18_*_9mm_*` (4 MB).
#
# Writes, under OUTDIR (default $OUT, else ./gpu_out):
#   device.txt            nvidia-smi, numba's and torch's view of the device
#   gpu_tests.log         pytest -m gpu tests/mc/test_mc_gpu.py (CPU and GPU agree within statistics)
#   bench_mc_cuda.log     decays/s for Lu-177, Y-90, F-18 at several launch sizes (GPU)
#   bench_dnn_cuda.log    the dnn dose method (predicted kernels) on the whole-body 3 mm FDG patient, MSV beside it
#   bench_segment_cuda.log  the builtin segmenter, 25 organs at 3 mm
#   bench_conv_cuda.log   FFT convolution of a 130x512x512 volume with a 101^3 kernel, torch on the GPU vs scipy
#   bench_train_step.log  training steps/s of the four networks, CPU (this machine's cores) against GPU
#   bench_ct_cuda.log     whole-body helical CT photons/s on the GPU
#   bench_mc_cpu.log      decays/s on this machine's CPU cores (the same-run CPU baseline)
#   bench_ct_cpu.log      CT photons/s on the CPU cores (same-run baseline)
#   gpu_resources.log     registers, spills and occupancy of the Monte Carlo kernels (ptxas, sm_90)
#   steps.txt             each step's exit status and seconds
# and, with $OUT set (the device tool brings back at most 8 files), all of them in gpu_logs.tar.gz
# as well, remade after every step. GPU_STEPS="gpu_tests bench_mc_cuda ..." runs only the steps
# named (default: all). Exits non-zero when the GPU tests fail.
set -uo pipefail
out=${1:-${OUT:-gpu_out}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/persodose_site \
    .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/persodose_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -f .gpu/kernels.tar.gz ]; then
  mkdir -p /tmp/persodose_cache && tar -xzf .gpu/kernels.tar.gz -C /tmp/persodose_cache || exit 2
  export PERSODOSE_CACHE=/tmp/persodose_cache
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
: >"$out/steps.txt"

bundle() {  # the logs in one file for the device tool's 8-file limit
  [ -n "${OUT:-}" ] && [ "$out" = "$OUT" ] && tar -czf /tmp/gpu_logs.tar.gz -C "$out" --exclude gpu_logs.tar.gz . \
    && mv /tmp/gpu_logs.tar.gz "$out/gpu_logs.tar.gz"
  return 0
}

step() {  # step NAME SECONDS LOG COMMAND...: run with a time limit, log, record status and time
  local name=$1 limit=$2 log=$3; shift 3
  case " ${GPU_STEPS:-all} " in *" all "*|*" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*" | tee "$out/$log"
  timeout -k 5 "$limit" "$@" >>"$out/$log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0))" | tee -a "$out/steps.txt"
  tail -n 25 "$out/$log"
  bundle
  return $rc
}

nvidia-smi 2>&1 | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$out/device.txt"
python3 -c "from persodose.mc.gpu import device_info; print(device_info())" 2>&1 | tee -a "$out/device.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "no CUDA device for the Monte Carlo kernels: nothing to check here" >&2; exit 2; }

# the CPU-only resource report runs beside the GPU steps (ptxas on this machine's cores)
case " ${GPU_STEPS:-all} " in *" all "*|*" gpu_resources "*)
  (timeout 240 python3 benchmarks/gpu_resources.py >"$out/gpu_resources.log" 2>&1; echo "gpu_resources rc=$?" >>"$out/steps.txt") &
esac

# correctness first: a wrong answer fast is worth nothing
status=0
step gpu_tests 240 gpu_tests.log python3 -m pytest -q -m gpu -p no:cacheprovider tests/mc/test_mc_gpu.py || status=1
step bench_mc_cuda 180 bench_mc_cuda.log python3 benchmarks/bench_mc.py --backend cuda --decays 20000000 \
  --repeats 2 --chunks 65536 131072 --run-sizes 2000000 20000000 60000000
step bench_dnn_cuda 150 bench_dnn_cuda.log python3 benchmarks/bench_dnn.py --device cuda --repeat 3
step bench_segment_cuda 90 bench_segment_cuda.log python3 benchmarks/bench_segment.py --device cuda --repeats 3
step bench_conv_cuda 90 bench_conv_cuda.log python3 benchmarks/bench_convolution.py --torch --shape 130 512 512 \
  --kernel 101 --repeats 5 --no-memory
step bench_train_step 150 bench_train_step.log python3 benchmarks/bench_train_step.py --devices cpu cuda --steps 5
step bench_ct_cuda 120 bench_ct_cuda.log python3 benchmarks/bench_ct.py --backend cuda --photons 20000000 \
  --repeats 2 --spectrum .gpu/spectrum120.npz
step bench_mc_cpu 120 bench_mc_cpu.log python3 benchmarks/bench_mc.py --backend cpu --decays 4000000 --repeats 1
step bench_ct_cpu 90 bench_ct_cpu.log python3 benchmarks/bench_ct.py --backend cpu --photons 2000000 \
  --repeats 2 --spectrum .gpu/spectrum120.npz
wait
bundle
exit "$status"
