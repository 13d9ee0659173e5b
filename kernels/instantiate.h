/* instantiate.h - compile a type-generic template once per float type.
 *
 * A .c file defines FASTNN_TEMPLATE as the name of its *_impl.h and includes this header;
 * the template is then included twice (instance.h), once per float type with its parameters. A
 * template writes each algorithm once, in terms of:
 *   T            the float type (float / double);
 *   VEC, VLEN    the vector type of simd.h and its lane count;
 *   V(op)        the simd.h operation op for T, e.g. V(fma)(a, b, c);
 *   FN(name)     name with the type suffix and the instruction set's suffix appended, e.g.
 *                FN(fastnn_softmax) is fastnn_softmax_f32_avx2 in isa_avx2.c (which defines
 *                FASTNN_ISA_SUFFIX as _avx2; empty when not defined) - so each instantiation
 *                defines distinct functions;
 *   T_MAX        the largest finite T; EXP_LO / EXP_HI the range exp is evaluated on;
 *   EXP_DEGREE   the degree of the Taylor polynomial of exp on [-ln2/2, ln2/2], enough
 *                for the type's precision;
 *   GEMM_MR, GEMM_NV, GEMM_KC: the GEMM register and K blocking, and
 *   GEMM_FEW_ROWS: the most rows of the few-rows paths (see gemm_impl.h).
 */
#include "simd.h"

#define FASTNN_CAT_(a, b) a##b
#define FASTNN_CAT(a, b) FASTNN_CAT_(a, b)
#define V(op) FASTNN_CAT(FASTNN_CAT(v, TNAME), FASTNN_CAT(_, op))
#ifndef FASTNN_ISA_SUFFIX
#define FASTNN_ISA_SUFFIX
#endif
#define FN(name) FASTNN_CAT(name, FASTNN_CAT(_, FASTNN_CAT(TNAME, FASTNN_ISA_SUFFIX)))
#define VEC FASTNN_CAT(v, TNAME)

#define FASTNN_INSTANCE_F32
#include "instance.h"
#undef FASTNN_INSTANCE_F32

#define FASTNN_INSTANCE_F64
#include "instance.h"
#undef FASTNN_INSTANCE_F64
