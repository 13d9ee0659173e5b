/* bf16.c - bfloat16 matmul precision: the rounding, the GEMM (AMX tiles, or the float32
 * kernels on rounded copies), and the exported bfloat16 kernels (fastnn.h).
 *
 * The rounding is round to nearest, ties to even, on the float32 bits (as PyTorch's
 * c10::BFloat16 and oneDNN's bfloat16_t do it): add 0x7FFF plus the lowest kept bit, keep the
 * high 16 bits. Subnormals round like any number, the largest floats round up to infinity;
 * NaN is kept a quiet NaN separately, since the addition could carry it into infinity.
 * Every backend rounds exactly so (fastnn/backends/numpy_backend.py is the reference).
 */
#include "isa.h"

/* Branch-free, so the loop below vectorizes: the NaN test is a signed compare of the
 * magnitude bits (at most 0x7FFFFFFF). */
static inline uint32_t bf16_round_bits(uint32_t u) {
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    uint32_t quiet_nan = (u | 0x00400000u) & 0xFFFF0000u;
    return (int32_t)(u & 0x7FFFFFFFu) > 0x7F800000 ? quiet_nan : rounded;
}

/* The float32 bits, read and written in place (may_alias: a float's memory through an
 * integer type, allowed). out may be x. */
typedef uint32_t float_bits __attribute__((may_alias));

void fastnn_round_bf16(float *out, const float *x, int64_t size) {
    const float_bits *in_bits = (const float_bits *)x;
    float_bits *out_bits = (float_bits *)out;
    for (int64_t i = 0; i < size; i++) out_bits[i] = bf16_round_bits(in_bits[i]);
}

/* rows x cols of src (row stride ld) rounded into dst (row stride cols). */
static void round_rows(float *dst, const float *src, int64_t rows, int64_t cols, int64_t ld) {
    int threads = fastnn_threads_for((double)rows * cols, 1 << 16);
    FASTNN_FOR(threads, i, rows, fastnn_round_bf16(dst + i * cols, src + i * ld, cols););
}

/* rows x cols of bfloat16 numbers src (row stride ld) as float32 numbers into dst (row stride
 * cols): exact, the bits followed by 16 zero bits. */
static void widen_rows(float *dst, const uint16_t *src, int64_t rows, int64_t cols, int64_t ld) {
    int threads = fastnn_threads_for((double)rows * cols, 1 << 16);
    FASTNN_FOR(threads, i, rows, {
        float_bits *out = (float_bits *)(dst + i * cols);
        for (int64_t j = 0; j < cols; j++) out[j] = (uint32_t)src[i * ld + j] << 16;
    });
}

/* rows x cols of float32 numbers src (row stride cols) rounded to bfloat16 (their uint16_t
 * bits) into dst (row stride ld). */
static void narrow_rows(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld) {
    int threads = fastnn_threads_for((double)rows * cols, 1 << 16);
    FASTNN_FOR(threads, i, rows, {
        const float_bits *in = (const float_bits *)(src + i * cols);
        for (int64_t j = 0; j < cols; j++)
            dst[i * ld + j] = (uint16_t)(bf16_round_bits(in[j]) >> 16);
    });
}

/* The bfloat16 GEMM of float32 operands (rounded) or, when bf16_operands, of bfloat16 ones
 * (uint16_t bits), into a float32 C or, when bf16_c, a bfloat16 one (rounded): on AMX tiles,
 * AVX512-BF16 dot products, or the float32 kernels on rounded (widened) copies; each product
 * of two bfloat16 numbers is exact in float32, so the last is the same arithmetic, summed in
 * another order. */
static int gemm_bf16(int64_t m, int64_t n, int64_t k, const void *a, int64_t lda, int trans_a,
                     const void *b, int64_t ldb, int trans_b, void *c, int64_t ldc,
                     const fastnn_epilogue *epilogue, int bf16_operands, int bf16_c) {
    int isa = fastnn_isa_current();
    if (isa == FASTNN_ISA_AMX)
        return fastnn_amx_gemm(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue,
                               bf16_operands, bf16_c);
    if (isa == FASTNN_ISA_AVX512 && fastnn_cpu_has_dot_bf16())
        return fastnn_dot_bf16_gemm(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc,
                                    epilogue, bf16_operands, bf16_c);
    int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    float *a16 = fastnn_scratch(SCRATCH_BF16_A, (size_t)a_rows * a_cols * sizeof(float));
    float *b16 = fastnn_scratch(SCRATCH_BF16_B, (size_t)b_rows * b_cols * sizeof(float));
    if (!a16 || !b16) return FASTNN_OUT_OF_MEMORY;
    if (bf16_operands) {
        widen_rows(a16, a, a_rows, a_cols, lda);
        widen_rows(b16, b, b_rows, b_cols, ldb);
    } else {
        round_rows(a16, a, a_rows, a_cols, lda);
        round_rows(b16, b, b_rows, b_cols, ldb);
    }
    if (!bf16_c)
        return fastnn_gemm_f32(m, n, k, a16, a_cols, trans_a, b16, b_cols, trans_b, c, ldc,
                               epilogue);
    float *c32 = fastnn_scratch(SCRATCH_BF16_C, (size_t)m * n * sizeof(float));
    if (!c32) return FASTNN_OUT_OF_MEMORY;
    int status = fastnn_gemm_f32(m, n, k, a16, a_cols, trans_a, b16, b_cols, trans_b, c32, n,
                                 epilogue);
    if (status == FASTNN_OK) narrow_rows(c, c32, m, n, ldc);
    return status;
}

int fastnn_gemm_bf16(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, int trans_a,
                     const float *b, int64_t ldb, int trans_b, float *c, int64_t ldc,
                     const fastnn_epilogue *epilogue) {
    return gemm_bf16(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue, 0, 0);
}

const char *fastnn_bf16_gemm_name(void) {
    int isa = fastnn_isa_current();
    return isa == FASTNN_ISA_AMX                                   ? "amx"
           : isa == FASTNN_ISA_AVX512 && fastnn_cpu_has_dot_bf16() ? "avx512_bf16"
                                                                   : "float32";
}

int fastnn_matmul_bf16(float *out, const float *a, const float *b, int64_t n, int64_t k,
                       int64_t m, int trans_a, int trans_b) {
    return fastnn_gemm_bf16(n, m, k, a, trans_a ? n : k, trans_a, b, trans_b ? k : m, trans_b,
                            out, m, NULL);
}

int fastnn_matmul_bf16_operands(void *out, int out_bf16, const uint16_t *a, const uint16_t *b,
                                int64_t n, int64_t k, int64_t m, int trans_a, int trans_b) {
    return gemm_bf16(n, m, k, a, trans_a ? n : k, trans_a, b, trans_b ? k : m, trans_b, out, m,
                     NULL, 1, out_bf16 != 0);
}

int fastnn_matmul_bf16_rounded(uint16_t *out, const float *a, const float *b, int64_t n,
                               int64_t k, int64_t m, int trans_a, int trans_b) {
    return gemm_bf16(n, m, k, a, trans_a ? n : k, trans_a, b, trans_b ? k : m, trans_b, out, m,
                     NULL, 0, 1);
}

int fastnn_linear_forward_bf16(float *out, const float *x, const float *w, const float *b,
                               int64_t n, int64_t k, int64_t m, int activation, double alpha) {
    return fastnn_active_kernels()->f32->linear_forward(out, x, w, b, n, k, m, activation,
                                                        alpha, FASTNN_PRECISION_BFLOAT16);
}

int fastnn_linear_backward_bf16(float *dx, float *dw, float *db, const float *x, const float *w,
                                const float *y, const float *dy, int64_t n, int64_t k,
                                int64_t m, int activation, double alpha) {
    return fastnn_active_kernels()->f32->linear_backward(dx, dw, db, x, w, y, dy, n, k, m,
                                                         activation, alpha,
                                                         FASTNN_PRECISION_BFLOAT16);
}
