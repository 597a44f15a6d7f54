"""Benchmark: persodose FFT convolution vs scipy.signal.fftconvolve ("same" mode, float32).

Times both on the same random volume and kernel in one run (median of ``--repeats``, 3 by
default, after ``--warmup`` untimed runs of each), prints the machine, the speed-up, the agreement, and the peak memory of each
method (numpy allocations traced with :mod:`tracemalloc` in a separate, untimed run; plus the
process's peak resident set size from ``resource.getrusage``). No assertions on time.

The issue's target: a 512x512x130 float32 volume with a 99x99x99 kernel at least 3x faster
than ``scipy.signal.fftconvolve`` on 2 cores, memory under 4 GB.

Usage::

    python benchmarks/bench_convolution.py            # 130x512x512 volume, 99^3 kernel
    python benchmarks/bench_convolution.py --quick    # 64x128x128 volume, 33^3 kernel
    python benchmarks/bench_convolution.py --torch    # also time the torch backend
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc


def machine_info() -> str:
    import numpy as np
    import scipy

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return (f"{platform.platform()} | {cpu} | cores usable {usable} (os.cpu_count {os.cpu_count()}) | "
            f"Python {platform.python_version()} | numpy {np.__version__} | scipy {scipy.__version__}")


def peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


def timed(fn, repeats: int, before=None) -> tuple[float, list[float], object]:
    times = []
    out = None
    for _ in range(repeats):
        if before is not None:
            before()
        out = None
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def traced_peak_mb(fn, before=None) -> float:
    if before is not None:
        before()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        res = fn()
        del res
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2 ** 20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64x128x128 volume, 33^3 kernel")
    ap.add_argument("--shape", type=int, nargs=3, metavar=("NZ", "NY", "NX"), default=None)
    ap.add_argument("--kernel", type=int, default=None, help="kernel size (odd)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs of each method first (first-touch page faults of a fresh process)")
    ap.add_argument("--workers", type=int, default=-1, help="scipy.fft workers for persodose (-1: all)")
    ap.add_argument("--torch", action="store_true", help="also time the torch backend")
    ap.add_argument("--no-memory", action="store_true", help="skip the traced-memory runs")
    args = ap.parse_args(argv)

    import numpy as np
    import scipy.signal

    from persodose.dose.convolution import clear_kernel_cache, fft_convolve, transform_shape

    shape = tuple(args.shape) if args.shape else ((64, 128, 128) if args.quick else (130, 512, 512))
    ksize = args.kernel or (33 if args.quick else 99)
    rng = np.random.default_rng(0)
    vol = rng.random(shape, dtype=np.float32)
    ker = rng.random((ksize,) * 3, dtype=np.float32)

    print("machine :", machine_info())
    print(f"problem : volume {shape} float32 ({vol.nbytes / 2**20:.0f} MiB), kernel {ker.shape}, "
          f"median of {args.repeats}")
    print(f"transform shape, persodose: {transform_shape(shape, ker.shape)}; scipy pads to "
          f"{tuple(scipy.fft.next_fast_len(n + ksize - 1, True) for n in shape)}")

    for _ in range(args.warmup):
        del_me = scipy.signal.fftconvolve(vol, ker, mode="same")
        del_me = fft_convolve(vol, ker, workers=args.workers, cache=False)
        del del_me
    t_scipy, all_scipy, ref = timed(lambda: scipy.signal.fftconvolve(vol, ker, mode="same"), args.repeats)
    t_cold, all_cold, ours = timed(lambda: fft_convolve(vol, ker, workers=args.workers, cache=True),
                                   args.repeats, before=clear_kernel_cache)
    t_warm, all_warm, _ = timed(lambda: fft_convolve(vol, ker, workers=args.workers, cache=True), args.repeats)
    err = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))

    rows = [("scipy.signal.fftconvolve", t_scipy, all_scipy),
            ("persodose fft_convolve (kernel FFT computed)", t_cold, all_cold),
            ("persodose fft_convolve (kernel FFT cached)", t_warm, all_warm)]
    if args.torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch   : not installed, skipped")
        else:
            t_torch, all_torch, out_t = timed(lambda: fft_convolve(vol, ker, backend="torch"), args.repeats)
            rows.append((f"persodose fft_convolve (torch, {'cuda' if torch.cuda.is_available() else 'cpu'})",
                         t_torch, all_torch))
            print(f"torch agreement: max |diff| / max = "
                  f"{float(np.max(np.abs(out_t - ref)) / np.max(np.abs(ref))):.2e}")
    print()
    for name, t, ts in rows:
        print(f"{name:48s} {t:8.3f} s   runs: {', '.join(f'{x:.3f}' for x in ts)}")
    print()
    print(f"speed-up vs scipy: {t_scipy / t_cold:.2f}x (kernel FFT computed each call), "
          f"{t_scipy / t_warm:.2f}x (kernel FFT cached)")
    print(f"agreement: max |persodose - scipy| / max |scipy| = {err:.2e} (requirement <= 1e-5)")
    del ours, ref
    if not args.no_memory:
        m_scipy = traced_peak_mb(lambda: scipy.signal.fftconvolve(vol, ker, mode="same"))
        m_ours = traced_peak_mb(lambda: fft_convolve(vol, ker, workers=args.workers, cache=False))
        print(f"peak traced numpy memory: scipy {m_scipy:.0f} MiB, persodose {m_ours:.0f} MiB "
              f"(inputs {(vol.nbytes + ker.nbytes) / 2**20:.0f} MiB not counted)")
    print(f"peak resident set size of this process (all runs): {peak_rss_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
