"""Resources of the CUDA Monte Carlo kernels on Hopper (sm_90), without a GPU.

Compiles the three kernels (decays, point particles, x-ray beam) for compute capability 9.0
with the argument types the engine really launches them with (captured from
``run_batch`` of small problems), assembles the PTX with ``ptxas -v`` and prints the
registers per thread, spills and stack, and the occupancy this gives on an H100/H200
(132 SMs; per SM 65536 registers, 2048 threads, 32 blocks; registers allocated per warp
in units of 256: NVIDIA CUDA C++ Programming Guide, "Compute Capabilities", and the CUDA
Occupancy Calculator). Needs numba with its CUDA target and NVVM, and ptxas on PATH.

    python benchmarks/gpu_resources.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path

import numpy as np

#: Hopper (sm_90) limits per SM, and the SM count of the H100 SXM / H200.
REGS_PER_SM, THREADS_PER_SM, BLOCKS_PER_SM, REG_UNIT, WARP, N_SM = 65536, 2048, 32, 256, 32, 132


def captured_launches() -> dict:
    """{kernel name: the argument tuple the engine passes to gpu._run} for small problems."""
    from persodose.grid import Kind
    from persodose.mc import MCSettings, VoxelPhantom, beam_problem, decay_problem, point_source_problem, run_batch
    from persodose.mc import gpu
    from persodose.physics.materials import get_material

    seen: dict = {}
    gpu.cuda_available = lambda: True  # only the arguments are captured: nothing is launched

    def capture(name, n_chunks, args, edep, ctr, stacks, stack_depth, threads_per_block):
        seen[name] = (args, edep.shape[-1], stack_depth)

    gpu._run = capture
    ph = VoxelPhantom.homogeneous((6, 6, 6), 4.0, get_material("soft_tissue"))
    s = MCSettings(n_batches=2, chunks_per_batch=2, backend="cuda")
    src = ph.density.with_array(np.ones((6, 6, 6)), Kind.TIA)

    class Fan:
        def sample(self, n, rng):
            d = np.column_stack([rng.uniform(-0.1, 0.1, n), np.ones(n), np.zeros(n)])
            return np.tile([0.0, -80.0, 0.0], (n, 1)), d / np.linalg.norm(d, axis=1)[:, None], np.full(n, 0.07)

    for problem in (decay_problem(ph, src, "Lu-177", 4, s), point_source_problem(ph, "electron", 1.0, 4, settings=s),
                    beam_problem(ph, Fan(), 4, s)):
        run_batch(problem, 0)
    return seen


def ptx_of(seen: dict) -> dict:
    import numba
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    from persodose.mc import gpu
    from persodose.mc import transport as tr

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    built = gpu._retarget(gpu.RNG_FUNCTIONS + list(tr.PHYSICS_FUNCTIONS), {tr.deposit: gpu._atomic_deposit},
                          kernels=tuple(gpu._KERNEL_SOURCES.values()))
    out = {}
    for name, (args, n_vox, depth) in seen.items():
        tallies = (np.zeros(n_vox), np.zeros(tr.C_N), np.zeros((2, depth, 8)))
        sig = tuple(numba.typeof(a) for a in tuple(args) + tallies)
        out[name], _ = cuda.compile_ptx(built[gpu._KERNEL_SOURCES[name]].py_func, sig, cc=(9, 0))
    return out


def occupancy(regs: int, block: int) -> tuple[int, int]:
    """(resident threads per SM, limiting warps per SM) for ``regs`` registers per thread."""
    warps_per_block = -(-block // WARP)
    regs_per_warp = -(-regs * WARP // REG_UNIT) * REG_UNIT
    blocks = min(BLOCKS_PER_SM, THREADS_PER_SM // block, REGS_PER_SM // (regs_per_warp * warps_per_block))
    return blocks * block, blocks * warps_per_block


def main() -> None:
    from persodose.mc.gpu import THREADS_PER_BLOCK

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        raise SystemExit("ptxas (CUDA toolkit) is not on PATH")
    ptx = ptx_of(captured_launches())
    with tempfile.TemporaryDirectory() as d:
        for name, text in ptx.items():
            p = Path(d) / f"{name}.ptx"
            p.write_text(text)
            log = subprocess.run([ptxas, "-arch=sm_90", "-v", str(p), "-o", str(p.with_suffix(".cubin"))],
                                 capture_output=True, text=True, check=True).stderr
            entry = log[log.index("Compiling entry function"):]
            regs = int(re.search(r"Used (\d+) registers", entry).group(1))
            spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", entry)
            print(f"{name:9s} {regs} registers/thread, stack frame {spill.group(1)} B, spill stores {spill.group(2)} B, "
                  f"spill loads {spill.group(3)} B")
            for block in (32, 64, 128, 256):
                per_sm, warps = occupancy(regs, block)
                mark = "  (default block)" if block == THREADS_PER_BLOCK else ""
                print(f"    block {block:3d}: {per_sm:4d} threads/SM ({100 * warps * WARP / THREADS_PER_SM:4.1f} % "
                      f"occupancy), {per_sm * N_SM} resident on {N_SM} SMs{mark}")


if __name__ == "__main__":
    main()
