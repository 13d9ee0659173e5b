/* isa_avx2.c - the hot kernels for x86-64 CPUs with AVX2 and FMA (Haswell, Zen and later),
 * compiled for them by GCC's target pragma whatever the build's flags. See isa.h. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FASTNN_NO_AVX2_COPY)
#pragma GCC target("avx,avx2,fma,bmi,bmi2,f16c,popcnt")
#define FASTNN_ISA_SUFFIX _avx2
#define FASTNN_ISA_TABLE fastnn_isa_avx2
#include "isa_kernels.h"
#else
/* Another architecture or compiler, or a build that leaves it out (FASTNN_NO_AVX2_COPY: the
 * sanitizer build, whose suite runs the best copy only): no such copy (cpu.c reports it as not
 * compiled in). */
typedef int fastnn_isa_avx2_absent;
#endif
