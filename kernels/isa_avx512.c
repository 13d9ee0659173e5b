/* isa_avx512.c - the hot kernels for x86-64 CPUs with AVX-512 F, DQ, BW and VL (Skylake-SP,
 * Ice Lake, Sapphire Rapids, Zen 4 and later), compiled for them by GCC's target pragma
 * whatever the build's flags. See isa.h. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx,avx2,fma,bmi,bmi2,f16c,popcnt,avx512f,avx512dq,avx512bw,avx512vl")
#define FASTNN_ISA_SUFFIX _avx512
#define FASTNN_ISA_TABLE fastnn_isa_avx512
#include "isa_kernels.h"
#else
typedef int fastnn_isa_avx512_absent;
#endif
