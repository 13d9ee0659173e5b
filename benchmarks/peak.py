"""Measure this machine's peak float32 FMA throughput and memory bandwidth.

    python benchmarks/peak.py [--threads 2]

The FMA loop keeps 12 independent accumulators per thread busy with
fused multiply-adds at the widest vector the compiler targets
(-march=native), which is the ceiling any GEMM can approach; bandwidth is a
STREAM-style triad (a = b + s*c) over arrays far larger than the caches.
Both are compiled with cffi into a temporary directory, so they measure the
same compiler and flags as the C backend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import cffi

SOURCE = r"""
#include <omp.h>
#include <stddef.h>

/* 12 independent accumulator vectors hide the FMA latency (4 cycles x 2 ports
   plus slack); vector_size lets gcc use zmm registers under -march=native. */
typedef float vec __attribute__((vector_size(64)));

double fma_gflops(long iterations, int threads) {
    double start = omp_get_wtime();
    float sink = 0;
    #pragma omp parallel num_threads(threads) reduction(+:sink)
    {
        vec acc[12], x, y;
        for (int i = 0; i < 16; i++) { x[i] = 0.999f; y[i] = 1e-7f; }
        for (int j = 0; j < 12; j++) acc[j] = y * (float)j;
        for (long it = 0; it < iterations; it++) {
            #pragma GCC unroll 12
            for (int j = 0; j < 12; j++) acc[j] = acc[j] * x + y;
        }
        for (int j = 0; j < 12; j++) for (int i = 0; i < 16; i++) sink += acc[j][i];
    }
    double seconds = omp_get_wtime() - start;
    volatile float keep = sink; (void)keep;
    return 2.0 * 16 * 12 * (double)iterations * threads / seconds / 1e9;
}

double triad_gbs(float *a, const float *b, const float *c, size_t n, int repeats, int threads) {
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double start = omp_get_wtime();
        #pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
        double seconds = omp_get_wtime() - start;
        if (seconds < best) best = seconds;
    }
    return 3.0 * sizeof(float) * (double)n / best / 1e9;
}
"""

CDEF = """
double fma_gflops(long iterations, int threads);
double triad_gbs(float *a, const float *b, const float *c, size_t n, int repeats, int threads);
"""


def build():
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("_fastnn_peak", SOURCE, extra_compile_args=[
        "-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"],
        extra_link_args=["-fopenmp"])
    directory = tempfile.mkdtemp(prefix="fastnn-peak-")
    library_path = ffi.compile(tmpdir=directory, verbose=False)
    sys.path.insert(0, os.path.dirname(library_path))
    import _fastnn_peak
    return _fastnn_peak


def measure(threads: int) -> dict:
    import numpy as np

    module = build()
    lib, ffi = module.lib, module.ffi
    lib.fma_gflops(10_000_000, threads)  # warm up clocks and threads
    flops = max(lib.fma_gflops(100_000_000, threads) for _ in range(3))
    n = 64 * 1024 * 1024  # 256 MiB per array
    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    pointer = lambda array: ffi.cast("float *", array.ctypes.data)  # noqa: E731
    bandwidth = lib.triad_gbs(pointer(a), pointer(b), pointer(c), n, 5, threads)
    return {"threads": threads, "peak_fma_gflops_f32": flops, "triad_gb_per_s": bandwidth,
            "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = measure(args.threads)
    print(f"peak float32 FMA: {result['peak_fma_gflops_f32']:.1f} GFLOP/s on {args.threads} "
          f"thread(s); memory bandwidth (triad): {result['triad_gb_per_s']:.1f} GB/s")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(result, stream, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
