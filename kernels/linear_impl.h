/* linear_impl.h - fused dense layer forward and backward, for T (template: instantiate.h).
 * `precision` (FASTNN_PRECISION_*) is the precision of the layer's GEMMs: bfloat16 rounds
 * their operands (fastnn_gemm_bf16, float32 only); bias, activation, dz and db stay in T. */
#include "vmath_impl.h"

/* fastnn_gemm's arguments, in `precision`. */
static int FN(linear_gemm)(int precision, int64_t m, int64_t n, int64_t k, const T *a,
                           int64_t lda, int trans_a, const T *b, int64_t ldb, int trans_b,
                           T *c, int64_t ldc, const fastnn_epilogue *epilogue) {
#if T_BFLOAT16_GEMM
    if (precision == FASTNN_PRECISION_BFLOAT16)
        return fastnn_gemm_bf16(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue);
#endif
    (void)precision;
    return FN(fastnn_gemm)(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue);
}

int FN(fastnn_linear_forward)(T *out, const T *x, const T *w, const T *b, int64_t n, int64_t k,
                              int64_t m, int activation, double alpha, int precision) {
    fastnn_epilogue epilogue = {b, activation, alpha};
    return FN(linear_gemm)(precision, n, m, k, x, k, 0, w, m, 0, out, m, &epilogue);
}

/* Columns [j0, j0 + width) (width <= DZ_BLOCK_VECTORS vectors) of dz = dy * act'(y) over rows
 * [i0, i1), their column sums stored in sum[j0:j0 + width]: the sums stay in registers across
 * the rows. dz is not written when it is NULL (identity: dz is dy itself). */
#define DZ_BLOCK_VECTORS 4
static void FN(dz_and_db_block)(T *dz, T *sum, const T *y, const T *dy, int64_t i0, int64_t i1,
                                int64_t m, int64_t j0, int64_t width, int activation, T alpha) {
    VEC acc[DZ_BLOCK_VECTORS];
#pragma GCC unroll 4
    for (int v = 0; v < DZ_BLOCK_VECTORS; v++) acc[v] = V(zero)();
    for (int64_t i = i0; i < i1; i++) {
        int64_t row = i * m + j0;
#pragma GCC unroll 4
        for (int v = 0; v < DZ_BLOCK_VECTORS; v++) {
            int64_t cols = width - v * VLEN;
            if (cols <= 0) break;
            int64_t at = row + v * VLEN;
            VEC g = cols >= VLEN ? V(load)(dy + at) : V(load_part)(dy + at, cols, 0);
            if (dz) {
                VEC yv = cols >= VLEN ? V(load)(y + at) : V(load_part)(y + at, cols, 0);
                g = V(mul)(g, FN(activation_grad)(yv, activation, alpha));
                if (cols >= VLEN)
                    V(store)(dz + at, g);
                else
                    V(store_part)(dz + at, g, cols);
            }
            acc[v] = V(add)(acc[v], g);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < DZ_BLOCK_VECTORS; v++) {
        int64_t cols = width - v * VLEN;
        if (cols <= 0) break;
        V(store_part)(sum + j0 + v * VLEN, acc[v], cols);
    }
}

/* dz (n, m) = dy * act'(y) and db = its column sums, by rows [i0, i1) of a thread, sums into
 * sum (m numbers). */
static void FN(dz_and_db_rows)(T *dz, T *sum, const T *y, const T *dy, int64_t i0, int64_t i1,
                               int64_t m, int activation, T alpha) {
    const int64_t block = DZ_BLOCK_VECTORS * VLEN;
    for (int64_t j0 = 0; j0 < m; j0 += block)
        FN(dz_and_db_block)(dz, sum, y, dy, i0, i1, m, j0, fastnn_min(block, m - j0),
                            activation, alpha);
}

static int FN(linear_backward)(T *dx, T *dw, T *db, const T *x, const T *w, const T *y,
                              const T *dy, int64_t n, int64_t k, int64_t m, int activation,
                              double alpha, int precision) {
    /* dz (N, M) in one pass over y and dy, fused with db; identity needs no dz of its own. */
    T *dz = NULL;
    if (activation != ACT_IDENTITY) {
        dz = fastnn_scratch(SCRATCH_LINEAR_DZ, (size_t)n * m * sizeof(T));
        if (!dz) return FASTNN_OUT_OF_MEMORY;
    }
    int threads = fastnn_threads_for((double)n * m, 32768.0);
    if (threads > n) threads = (int)n;
    if (threads == 1) {
        FN(dz_and_db_rows)(dz, db, y, dy, 0, n, m, activation, (T)alpha);
    } else {
        /* The threads split the rows, each streaming through whole rows of y, dy and dz, and
         * each keeps the column sums of its rows; then each adds up a share of the columns.
         * Splitting the columns instead, each thread reading pieces of rows a row apart, took
         * 39 us more for 1024 x 256. */
        T *sums = fastnn_scratch(SCRATCH_LINEAR_DB, (size_t)threads * m * sizeof(T));
        if (!sums) return FASTNN_OUT_OF_MEMORY;
        if (fastnn_contended()) { /* a busy machine: the same shares and sums on this thread */
            for (int t = 0; t < threads; t++)
                FN(dz_and_db_rows)(dz, sums + t * m, y, dy, n * t / threads,
                                   n * (t + 1) / threads, m, activation, (T)alpha);
            for (int64_t j = 0; j < m; j++) {
                T total = 0;
                for (int q = 0; q < threads; q++) total += sums[q * m + j];
                db[j] = total;
            }
        } else {
            int64_t start = fastnn_now_ns(), done = 0;
#pragma omp parallel num_threads(threads)
            {
                unsigned fp = fastnn_fp_enter();
                int t = fastnn_team_index(), team = fastnn_team_size();
                FN(dz_and_db_rows)(dz, sums + t * m, y, dy, n * t / team, n * (t + 1) / team, m,
                                   activation, (T)alpha);
#pragma omp barrier
                for (int64_t j = m * t / team; j < m * (t + 1) / team; j++) {
                    T total = 0;
                    for (int q = 0; q < team; q++) total += sums[q * m + j];
                    db[j] = total;
                }
                fastnn_fp_leave(fp);
                if (t == 0) done = fastnn_now_ns();
            }
            fastnn_team_report(start, done, fastnn_now_ns());
        }
    }
    const T *grad_z = dz ? dz : dy;
    /* dw (K, M) = x^T @ dz and dx (N, K) = dz @ w^T, the transposes read in place. */
    int status = FN(linear_gemm)(precision, k, m, n, x, k, 1, grad_z, m, 0, dw, m, NULL);
    if (dx && status == FASTNN_OK)
        status = FN(linear_gemm)(precision, n, k, m, grad_z, m, 0, w, m, 1, dx, k, NULL);
    return status;
}

int FN(fastnn_linear_backward)(T *dx, T *dw, T *db, const T *x, const T *w, const T *y,
                               const T *dy, int64_t n, int64_t k, int64_t m, int activation,
                               double alpha, int precision) {
    unsigned fp = fastnn_fp_enter(); /* the dz pass on this thread; fastnn_gemm enters too */
    int status = FN(linear_backward)(dx, dw, db, x, w, y, dy, n, k, m, activation, alpha,
                                     precision);
    fastnn_fp_leave(fp);
    return status;
}
#undef DZ_BLOCK_VECTORS
