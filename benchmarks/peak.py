"""Measure this machine's peak float32 FMA and bfloat16 throughput and memory bandwidth.

    python benchmarks/peak.py [--threads 2]

The bfloat16 peaks are what bfloat16 matmul precision can approach: a loop of AMX
``TDPBF16PS`` on four independent accumulator tiles (16 x 16 x 32 each, after the OS's
permission, ``arch_prctl(ARCH_REQ_XCOMP_PERM)``; reported as unavailable without AMX) and a
loop of AVX512-BF16 ``VDPBF16PS`` on 24 accumulators (when the CPU has it; 12 were too few
on Zen 5, whose VDPBF16PS needs 13 or more in flight: measured 970 GFLOP/s on 2 threads with
12, 1060-1068 with 16 or 24, a GEMM reaching 976).

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
   plus slack). The vector is the widest register -march=native gives: zmm with AVX-512,
   ymm otherwise (a 64-byte vector on AVX2 is split in pairs of ymm, and 24 accumulators
   spill out of the 16 registers: measured 11.4 GFLOP/s on a 2-core Zen 3 instead of 180). */
#if defined(__AVX512F__)
#define VEC_BYTES 64
#else
#define VEC_BYTES 32
#endif
#define LANES (VEC_BYTES / 4)
typedef float vec __attribute__((vector_size(VEC_BYTES)));

double fma_gflops(long iterations, int threads) {
    double start = omp_get_wtime();
    float sink = 0;
    #pragma omp parallel num_threads(threads) reduction(+:sink)
    {
        vec acc[12], x, y;
        for (int i = 0; i < LANES; i++) { x[i] = 0.999f; y[i] = 1e-7f; }
        for (int j = 0; j < 12; j++) acc[j] = y * (float)j;
        for (long it = 0; it < iterations; it++) {
            #pragma GCC unroll 12
            for (int j = 0; j < 12; j++) acc[j] = acc[j] * x + y;
        }
        for (int j = 0; j < 12; j++) for (int i = 0; i < LANES; i++) sink += acc[j][i];
    }
    double seconds = omp_get_wtime() - start;
    volatile float keep = sink; (void)keep;
    return 2.0 * LANES * 12 * (double)iterations * threads / seconds / 1e9;
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

/* bfloat16 peaks: -1 when the CPU (or the OS, for AMX) does not allow the instructions. */
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

static int cpu_bit(unsigned leaf, unsigned sub, int reg, int bit) {
    unsigned r[4] = {0, 0, 0, 0};
    if (__get_cpuid_max(0, 0) < leaf) return 0;
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    return (r[reg] >> bit) & 1;
}

typedef struct __attribute__((aligned(64))) {
    unsigned char palette, start_row, reserved[14];
    unsigned short colsb[16];
    unsigned char rows[16];
} tile_config;
static const tile_config CONFIG = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64},
                                   {16, 16, 16, 16, 16, 16, 16, 16}};
static unsigned short TILE_DATA[512] __attribute__((aligned(64)));

__attribute__((target("amx-tile,amx-bf16")))
double amx_bf16_gflops(long iterations, int threads) {
    if (!cpu_bit(7, 0, 3, 24) || !cpu_bit(7, 0, 3, 22)) return -1;  /* AMX-TILE, AMX-BF16 */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return -1;         /* XTILEDATA permission */
    double start = omp_get_wtime();
    #pragma omp parallel num_threads(threads)
    {
        _tile_loadconfig(&CONFIG);
        _tile_loadd(4, TILE_DATA, 64); _tile_loadd(5, TILE_DATA, 64);
        _tile_loadd(6, TILE_DATA, 64); _tile_loadd(7, TILE_DATA, 64);
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (long it = 0; it < iterations; it++) {
            _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
        _tile_release();
    }
    double seconds = omp_get_wtime() - start;
    return 4.0 * 2 * 16 * 16 * 32 * (double)iterations * threads / seconds / 1e9;
}

/* Independent VDPBF16PS chains: latency x throughput (about 6.5 cycles x 2 on Zen 5) and
 * slack, within the 32 vector registers. */
#define DOT_ACCUMULATORS 24
__attribute__((target("avx512f,avx512bf16")))
double dot_bf16_gflops(long iterations, int threads) {
    if (!cpu_bit(7, 1, 0, 5)) return -1;  /* AVX512-BF16 */
    double start = omp_get_wtime();
    float sink = 0;
    #pragma omp parallel num_threads(threads) reduction(+:sink)
    {
        __m512 acc[DOT_ACCUMULATORS];
        __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);
        for (int j = 0; j < DOT_ACCUMULATORS; j++) acc[j] = _mm512_setzero_ps();
        for (long it = 0; it < iterations; it++) {
            #pragma GCC unroll 24
            for (int j = 0; j < DOT_ACCUMULATORS; j++) acc[j] = _mm512_dpbf16_ps(acc[j], x, x);
            __asm__ volatile("" : "+v"(x));
        }
        for (int j = 0; j < DOT_ACCUMULATORS; j++) sink += _mm512_reduce_add_ps(acc[j]);
    }
    double seconds = omp_get_wtime() - start;
    volatile float keep = sink; (void)keep;
    return 2.0 * 32 * DOT_ACCUMULATORS * (double)iterations * threads / seconds / 1e9;
}
"""

CDEF = """
double amx_bf16_gflops(long iterations, int threads);
double dot_bf16_gflops(long iterations, int threads);
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
    amx = max(lib.amx_bf16_gflops(2_000_000, threads) for _ in range(3))
    lib.dot_bf16_gflops(2_000_000, threads)  # warm up clocks and threads
    dot = max(lib.dot_bf16_gflops(10_000_000, threads) for _ in range(3))
    return {"threads": threads, "peak_fma_gflops_f32": flops, "triad_gb_per_s": bandwidth,
            "peak_amx_bf16_gflops": amx if amx > 0 else None,
            "peak_avx512_bf16_gflops": dot if dot > 0 else None,
            "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = measure(args.threads)
    print(f"peak float32 FMA: {result['peak_fma_gflops_f32']:.1f} GFLOP/s on {args.threads} "
          f"thread(s); memory bandwidth (triad): {result['triad_gb_per_s']:.1f} GB/s")
    for key, name in (("peak_amx_bf16_gflops", "AMX TDPBF16PS"),
                      ("peak_avx512_bf16_gflops", "AVX512-BF16 VDPBF16PS")):
        value = result[key]
        print(f"peak bfloat16 {name}: " + (f"{value:.1f} GFLOP/s" if value else
                                          "not available on this CPU / OS"))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(result, stream, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
