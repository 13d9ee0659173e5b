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

/* dz (N, M) = dy * act'(y) in one pass over y and dy, fused with db = its column sums; *grad_z
 * is dz (a scratch buffer), or dy itself for the identity. */
static int FN(linear_dz)(const T **grad_z, T *db, const T *y, const T *dy, int64_t n, int64_t m,
                         int activation, double alpha) {
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
            int team_cpu = fastnn_team_cpu();
#pragma omp parallel num_threads(threads)
            {
                fastnn_team_join(team_cpu);
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
    *grad_z = dz ? dz : dy;
    return FASTNN_OK;
}

static int FN(linear_backward)(T *dx, T *dw, T *db, const T *x, const T *w, const T *y,
                              const T *dy, int64_t n, int64_t k, int64_t m, int activation,
                              double alpha, int precision) {
    const T *grad_z;
    int status = FN(linear_dz)(&grad_z, db, y, dy, n, m, activation, alpha);
    if (status != FASTNN_OK) return status;
    /* dw (K, M) = x^T @ dz and dx (N, K) = dz @ w^T, the transposes read in place. */
    status = FN(linear_gemm)(precision, k, m, n, x, k, 1, grad_z, m, 0, dw, m, NULL);
    if (dx && status == FASTNN_OK)
        status = FN(linear_gemm)(precision, n, k, m, grad_z, m, 0, w, m, 1, dx, k, NULL);
    return status;
}

/* The optimizer's step of a Dense layer's weights fused with their gradient: w (K, M) stepped
 * by the gradient x^T dz, x (N, K), dz (N, M), without writing the gradient out. The weight
 * gradient of a batch of 32 to a few hundred is a product of few multiply-adds per element
 * (N of them), so writing it and then reading it back beside w for the step (plain SGD's
 * 2.8 MB for the 235 K weights of 784-256-128-10, from L3 at ~115 GB/s here: ~25 us; Adam's
 * m and v add 3.8 MB more) costs about as much as the product.
 * Here each thread takes whole tiles of GEMM_MR rows of w: a tile's rows of the gradient are
 * computed panel by panel into a scratch of GEMM_MR x M (L1), by the GEMM's own
 * micro-kernel, from zero over all of N in order, then the tile's rows of w (and of the
 * optimizer's state) are stepped from it (weight_update_run: vmath_impl.h's loops, the
 * ones fastnn_sgd_step and fastnn_adam_step run). That is the arithmetic of fastnn_gemm when
 * its plan takes the PACKED or the IN_PLACE path and N is one K block
 * (linear_update_fusable), followed by the optimizer's step: the same bits as
 * linear_backward and then sgd_step or adam_step. */
#define LINEAR_NR (GEMM_NV * VLEN) /* gemm_impl.h's GEMM_NR: the micro-kernel's columns */
static int FN(linear_update_fusable)(int64_t n, int64_t k, int64_t m, int precision) {
    if (precision != FASTNN_PRECISION_FLOAT32 || n > GEMM_KC ||
        fastnn_ceil_div(k, GEMM_MR) > (int64_t)0xFFFFFFFF) /* fastnn_share's 32-bit bounds */
        return 0;
    fastnn_gemm_kernel kernel = FN(gemm_kernel)();
    fastnn_gemm_plan plan = fastnn_gemm_plan_for(k, m, n, 1, 0, &kernel);
    return plan.path == FASTNN_GEMM_PATH_PACKED ||
           (plan.path == FASTNN_GEMM_PATH_IN_PLACE && !plan.transposed);
}

/* One thread's scratch in linear_weight_update, in elements from its start, each part on a
 * cache line: an A panel (GEMM_MR x N) at 0, an edge B panel (N x LINEAR_NR) at b_edge, a
 * tile's rows of the gradient (GEMM_MR x M) at rows; `end` elements in all. */
typedef struct { int64_t b_edge, rows, end; } FN(weight_update_layout);
static FN(weight_update_layout) FN(weight_update_parts)(int64_t n, int64_t m) {
    int64_t line = 64 / (int64_t)sizeof(T);
    FN(weight_update_layout) at;
    at.b_edge = fastnn_ceil_div(GEMM_MR * n, line) * line;
    at.rows = at.b_edge + fastnn_ceil_div(n * LINEAR_NR, line) * line;
    at.end = at.rows + fastnn_ceil_div(GEMM_MR * m, line) * line;
    return at;
}
static size_t FN(weight_update_bytes)(int64_t n, int64_t m) {
    return (size_t)FN(weight_update_parts)(n, m).end * sizeof(T);
}

/* Elements [at, at + size) of w (and of the optimizer's state) stepped by gradient g. */
static void FN(weight_update_run)(const fastnn_weight_update *u, T m_scale, T v_scale, T *w,
                                  const T *g, int64_t at, int64_t size) {
    T *s1 = (T *)u->state1, *s2 = (T *)u->state2;
    if (u->adam)
        FN(adam_run)(w + at, s1 + at, s2 + at, g, size, (T)u->lr, (T)u->beta1, (T)u->beta2,
                     (T)u->eps, (T)u->weight_decay, m_scale, v_scale);
    else if (s1)
        FN(sgd_momentum_run)(w + at, s1 + at, g, size, (T)u->lr, (T)u->momentum, u->nesterov,
                             (T)u->weight_decay);
    else
        FN(sgd_plain_run)(w + at, g, size, (T)u->lr, (T)u->weight_decay);
}

/* Share `part` of the fused step (see above) with one thread's scratch: the row tiles of its
 * range from the front, then those left in the other ranges from their backs (a thread slowed
 * by the machine's other load then does fewer; its core reads the rows it stepped in the
 * next forward pass, split along K, as long as nobody had to help it). Each tile is computed
 * alone, so the bits do not depend on which thread steps it. */
static void FN(weight_update_tiles)(T *w, const T *x, const T *dz, int64_t n, int64_t k,
                                    int64_t m, fastnn_share *shares, int parts, int part,
                                    const fastnn_weight_update *u, T *scratch) {
    T m_scale = 0, v_scale = 0;
    if (u->adam) FN(adam_scales)(u->beta1, u->beta2, u->step, &m_scale, &v_scale);
    FN(weight_update_layout) at = FN(weight_update_parts)(n, m);
    T *a_pack = scratch, *b_edge = scratch + at.b_edge, *rows = scratch + at.rows;
    /* the last panel, when it is neither whole nor one vector, is packed (as the GEMM's
     * in-place path does): the micro-kernel reads whole vectors of B */
    int64_t edge = m % LINEAR_NR, edge_j = m - edge;
    int pack_edge = edge != 0 && edge != VLEN;
    if (pack_edge) FN(pack_b_panel)(b_edge, dz + edge_j, m, 0, edge, n);
    int q = 0;
    for (int64_t t; (t = fastnn_shares_next(shares, parts, part, &q)) >= 0;) {
        int64_t i = t * GEMM_MR, mr = fastnn_min(GEMM_MR, k - i);
        FN(pack_a_panel)(a_pack, x + i, k, 1, mr, n); /* op(A)[i][p] = x[p][i] */
        for (int64_t j = 0; j < m; j += LINEAR_NR) {
            int64_t nr = fastnn_min(LINEAR_NR, m - j);
            int packed = pack_edge && j == edge_j;
            FN(gemm_tile)(n, a_pack, 1, GEMM_MR, packed ? b_edge : dz + j,
                          packed ? LINEAR_NR : m, rows + j, m, mr, nr, 0, NULL, NULL);
        }
        FN(weight_update_run)(u, m_scale, v_scale, w, rows, i * m, mr * m); /* its rows */
    }
}

/* The fused step's threads: the GEMM's rule (fastnn_threads_for over its flops), or, when the
 * forward product x @ w splits the rows of w between threads (the SMALL path's K split, a few rows
 * of x: threads by the bytes of w), its threads; each a contiguous run of row tiles
 * (weight_update_tiles: and then what is left of the others'), so each steps the rows of w that its
 * core reads in the next forward pass. (With the forward pass on two threads and the step on one,
 * half of w likely went from core to core twice a step, not measured apart: this VM has no hardware
 * counters. 784-256-10 trained at batch 4, c, Sapphire Rapids, 1500 steps, 75 -> 130-135 ms an
 * epoch when the forward pass took two threads by the bytes; 66 ms with the step's threads
 * following it; batch 1 twice as fast: the README's forty-fourth session.) scratch: `scratch_bytes`
 * of all threads' scratch, from the caller; no more threads than it holds scratches for (another
 * Python thread may raise the thread count since the caller sized it). */
static void FN(linear_weight_update)(T *w, const T *x, const T *dz, int64_t n, int64_t k,
                                     int64_t m, const fastnn_weight_update *update,
                                     char *scratch, int64_t scratch_bytes) {
    int64_t tiles = fastnn_ceil_div(k, GEMM_MR);
    size_t each = FN(weight_update_bytes)(n, m);
    int threads = fastnn_threads_for(2.0 * (double)n * (double)k * (double)m *
                                     (double)sizeof(T) / 4.0, FASTNN_GEMM_FLOPS_PER_THREAD);
    fastnn_gemm_kernel kernel = FN(gemm_kernel)();
    fastnn_gemm_plan forward = fastnn_gemm_plan_for(n, m, k, 0, 0, &kernel);
    if (forward.path == FASTNN_GEMM_PATH_SPLIT_K && forward.row_kernels)
        threads = forward.threads;
    threads = (int)fastnn_max(1, fastnn_min(fastnn_min(threads, tiles),
                                            scratch_bytes / (int64_t)each));
    fastnn_share shares[threads];
    fastnn_shares_set(shares, threads, tiles);
    FASTNN_FOR(threads, part, threads,
               FN(weight_update_tiles)(w, x, dz, n, k, m, shares, threads, (int)part, update,
                                       (T *)(scratch + (size_t)part * each)););
}

/* Whether fastnn_linear_backward_update fuses the step for this layer and batch, and the
 * scratch it then needs (bytes; 0 when not fused). */
int64_t FN(fastnn_linear_update_scratch)(int64_t n, int64_t k, int64_t m, int precision) {
    if (!FN(linear_update_fusable)(n, k, m, precision)) return 0;
    return (int64_t)FN(weight_update_bytes)(n, m) * fastnn_get_num_threads();
}

/* linear_backward, then the optimizer's step of w (`update`: SGD, with or without momentum,
 * or Adam; its state parallel to w), without writing dw: dx is computed first, from w as it
 * was. Only for a layer and batch that fastnn_linear_update_scratch accepts; `scratch` holds
 * scratch_bytes, at least what it returned for one thread (the threads are as many as it
 * holds scratches for, at most). */
int FN(fastnn_linear_backward_update)(T *dx, T *db, const T *x, T *w, const T *y, const T *dy,
                                      int64_t n, int64_t k, int64_t m, int activation,
                                      double alpha, const fastnn_weight_update *update,
                                      void *scratch, int64_t scratch_bytes) {
    unsigned fp = fastnn_fp_enter();
    const T *grad_z;
    int status = FN(linear_dz)(&grad_z, db, y, dy, n, m, activation, alpha);
    if (dx && status == FASTNN_OK)
        status = FN(fastnn_gemm)(n, k, m, grad_z, m, 0, w, m, 1, dx, k, NULL);
    if (status == FASTNN_OK)
        FN(linear_weight_update)(w, x, grad_z, n, k, m, update, scratch, scratch_bytes);
    fastnn_fp_leave(fp);
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
#undef LINEAR_NR
