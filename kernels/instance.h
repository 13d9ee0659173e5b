/* instance.h - one instantiation of FASTNN_TEMPLATE; see instantiate.h, which includes this
 * file once with FASTNN_INSTANCE_F32 defined and once with FASTNN_INSTANCE_F64. */
#if defined(FASTNN_INSTANCE_F32)
/* ---- float32 ---- */
#define TNAME f32
#define T float
#define VLEN VLEN_F32
#define T_MAX 3.402823466e+38f
#define EXP_LO (-87.3f)
#define EXP_HI 88.3f
#define EXP_DEGREE 7
/* Register block: MR rows x NV vectors; MR * NV accumulators + NV B vectors + a broadcast
 * must fit the vector registers (32 with AVX-512, 16 otherwise). Each may be overridden with
 * -DFASTNN_GEMM_MR_F32=... etc. when tuning. */
#ifndef FASTNN_GEMM_MR_F32
#if defined(__AVX512F__)
#define FASTNN_GEMM_MR_F32 14
#else
#define FASTNN_GEMM_MR_F32 6
#endif
#endif
#ifndef FASTNN_GEMM_NV_F32
#define FASTNN_GEMM_NV_F32 2
#endif
#ifndef FASTNN_GEMM_KC_F32
#define FASTNN_GEMM_KC_F32 384
#endif
/* The most rows of a product on the few-rows paths of gemm_impl.h. */
#ifndef FASTNN_GEMM_FEW_ROWS_F32
#define FASTNN_GEMM_FEW_ROWS_F32 504
#endif
/* bfloat16 precision: GEMMs of float32 operands only (linear_impl.h). */
#define T_BFLOAT16_GEMM 1
#define GEMM_MR FASTNN_GEMM_MR_F32
#define GEMM_NV FASTNN_GEMM_NV_F32
#define GEMM_KC FASTNN_GEMM_KC_F32
#define GEMM_FEW_ROWS FASTNN_GEMM_FEW_ROWS_F32
#elif defined(FASTNN_INSTANCE_F64)
/* ---- float64 ---- */
#define TNAME f64
#define T double
#define VLEN VLEN_F64
#define T_MAX 1.7976931348623157e+308
#define EXP_LO (-708.0)
#define EXP_HI 709.0
#define EXP_DEGREE 13
#ifndef FASTNN_GEMM_MR_F64
#if defined(__AVX512F__)
#define FASTNN_GEMM_MR_F64 14
#else
#define FASTNN_GEMM_MR_F64 6
#endif
#endif
#ifndef FASTNN_GEMM_NV_F64
#define FASTNN_GEMM_NV_F64 2
#endif
#ifndef FASTNN_GEMM_KC_F64
#define FASTNN_GEMM_KC_F64 256
#endif
#ifndef FASTNN_GEMM_FEW_ROWS_F64
#define FASTNN_GEMM_FEW_ROWS_F64 280
#endif
#define T_BFLOAT16_GEMM 0
#define GEMM_MR FASTNN_GEMM_MR_F64
#define GEMM_NV FASTNN_GEMM_NV_F64
#define GEMM_KC FASTNN_GEMM_KC_F64
#define GEMM_FEW_ROWS FASTNN_GEMM_FEW_ROWS_F64
#else
#error "include instantiate.h, not instance.h"
#endif

#include FASTNN_TEMPLATE

#undef TNAME
#undef T
#undef VLEN
#undef T_MAX
#undef EXP_LO
#undef EXP_HI
#undef EXP_DEGREE
#undef GEMM_MR
#undef GEMM_NV
#undef GEMM_KC
#undef GEMM_FEW_ROWS
#undef T_BFLOAT16_GEMM

