/* linear_impl.h - fused dense layer forward and backward, for T (template: instantiate.h). */
#include "vmath_impl.h"

void FN(fastnn_linear_forward)(T *out, const T *x, const T *w, const T *b, int64_t n, int64_t k,
                               int64_t m, int activation, double alpha) {
    fastnn_epilogue epilogue = {b, activation, alpha};
    FN(fastnn_gemm)(n, m, k, x, k, 0, w, m, 0, out, m, &epilogue);
}

/* Columns [j0, j0 + width) (width <= DZ_BLOCK_VECTORS vectors) of dz = dy * act'(y) over all n
 * rows, with their sums in db: the block's db stays in registers across the rows. dz is
 * not written when it is NULL (identity: dz is dy itself). */
#define DZ_BLOCK_VECTORS 4
static void FN(dz_and_db_block)(T *dz, T *db, const T *y, const T *dy, int64_t n, int64_t m,
                                int64_t j0, int64_t width, int activation, T alpha) {
    VEC sum[DZ_BLOCK_VECTORS];
#pragma GCC unroll 4
    for (int v = 0; v < DZ_BLOCK_VECTORS; v++) sum[v] = V(zero)();
    for (int64_t i = 0; i < n; i++) {
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
            sum[v] = V(add)(sum[v], g);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < DZ_BLOCK_VECTORS; v++) {
        int64_t cols = width - v * VLEN;
        if (cols <= 0) break;
        V(store_part)(db + j0 + v * VLEN, sum[v], cols);
    }
}

void FN(fastnn_linear_backward)(T *dx, T *dw, T *db, const T *x, const T *w, const T *y,
                                const T *dy, int64_t n, int64_t k, int64_t m, int activation,
                                double alpha) {
    /* dz (N, M) in one pass over y and dy, fused with db; identity needs no dz of its own. */
    T *dz = activation == ACT_IDENTITY
                ? NULL
                : fastnn_scratch(SCRATCH_LINEAR_DZ, (size_t)n * m * sizeof(T));
    const int64_t block = DZ_BLOCK_VECTORS * VLEN;
    int64_t blocks = fastnn_ceil_div(m, block);
    int threads = fastnn_threads_for((double)n * m, 32768.0);
    if (threads > blocks) threads = (int)blocks;
    FASTNN_FOR(threads, bj, blocks,
               FN(dz_and_db_block)(dz, db, y, dy, n, m, bj * block,
                                   fastnn_min(block, m - bj * block), activation, (T)alpha););
    const T *grad_z = dz ? dz : dy;
    /* dw (K, M) = x^T @ dz and dx (N, K) = dz @ w^T, the transposes read in place. */
    FN(fastnn_gemm)(k, m, n, x, k, 1, grad_z, m, 0, dw, m, NULL);
    if (dx) FN(fastnn_gemm)(n, k, m, grad_z, m, 0, w, m, 1, dx, k, NULL);
}
#undef DZ_BLOCK_VECTORS
