/* gemm.c - the packed, cache-blocked GEMM (gemm_impl.h) in float32 and float64, and matmul. */
#include "internal.h"

#define FASTNN_TEMPLATE "gemm_impl.h"
#include "instantiate.h"

int fastnn_matmul_f32(float *out, const float *a, const float *b, int64_t n, int64_t k,
                      int64_t m, int trans_a, int trans_b) {
    return fastnn_gemm_f32(n, m, k, a, trans_a ? n : k, trans_a, b, trans_b ? k : m, trans_b,
                           out, m, NULL);
}

int fastnn_matmul_f64(double *out, const double *a, const double *b, int64_t n, int64_t k,
                      int64_t m, int trans_a, int trans_b) {
    return fastnn_gemm_f64(n, m, k, a, trans_a ? n : k, trans_a, b, trans_b ? k : m, trans_b,
                           out, m, NULL);
}
