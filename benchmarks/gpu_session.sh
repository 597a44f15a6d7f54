#!/usr/bin/env bash
# The GPU checks of the Monte Carlo engine, in one command, for a machine with an NVIDIA GPU
# (numba with its CUDA target, numpy, scipy, pyyaml, psutil and pytest already installed).
#
#   bash benchmarks/gpu_session.sh [OUTDIR]
#
# persodose itself is used from src/ (no install). The two dependencies of the engine that
# GPU images seldom hold, xraylib and icrp107-database, are taken from wheels in .whl/ when
# there are some (made on a machine with an index:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl xraylib==4.3.0 icrp107-database==0.0.3
# ). Writes, under OUTDIR (default $OUT, else ./gpu_out):
#   device.txt          nvidia-smi and numba's view of the device
#   gpu_resources.log   registers, spills and occupancy of the kernels (ptxas, sm_90)
#   gpu_tests.log       pytest -m gpu tests/mc/test_mc_gpu.py (CPU and GPU agree within statistics)
#   bench_mc_cuda.log   decays/s for Lu-177, Y-90, F-18 at several launch sizes
#   bench_mc_cpu.log    the same on this machine's CPU cores (the same-run baseline)
#   bench_dblurdosenet_{cuda,cpu}.log  DblurDoseNet inference with its DSV, 512x512x130
# and exits non-zero when the GPU tests fail.
set -uo pipefail
out=${1:-${OUT:-gpu_out}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/persodose_site \
    .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/persodose_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi 2>&1 | tee "$out/device.txt"
python3 -c "from persodose.mc.gpu import device_info; print(device_info())" 2>&1 | tee -a "$out/device.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "no CUDA device for the Monte Carlo kernels: nothing to check here" >&2; exit 2; }
python3 benchmarks/gpu_resources.py 2>&1 | tee "$out/gpu_resources.log"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/mc/test_mc_gpu.py 2>&1 | tee "$out/gpu_tests.log"
status=${PIPESTATUS[0]}
python3 benchmarks/bench_mc.py --backend cuda 2>&1 | tee "$out/bench_mc_cuda.log"
python3 benchmarks/bench_mc.py --backend cpu 2>&1 | tee "$out/bench_mc_cpu.log"
# DblurDoseNet inference (with its DSV) on a 512x512x130 grid, GPU then CPU (issue 12's GPU time)
python3 benchmarks/bench_dblurdosenet.py --device cuda 2>&1 | tee "$out/bench_dblurdosenet_cuda.log"
python3 benchmarks/bench_dblurdosenet.py --device cpu --repeats 1 2>&1 | tee "$out/bench_dblurdosenet_cpu.log"
exit "$status"
