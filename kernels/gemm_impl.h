/* gemm_impl.h - C = op(A) @ op(B) (+ bias, activation), for T (template: see instantiate.h).
 *
 * The BLIS/GotoBLAS layering, block sizes from instantiate.h (NR = GEMM_NV vectors):
 *   jc over n in GEMM_NC       a panel of columns of B and C
 *    pc over k in GEMM_KC      pack op(B)[pc:+KC, jc:+NC] into KC x NR micro-panels (shared
 *                              by all threads; lives in L3; two buffers, alternately, so
 *                              one barrier per block suffices: see gemm_thread)
 *     ic over m in mc          threads split this loop; pack op(A)[ic:+mc, pc:+KC] into
 *                              MR x KC micro-panels (private to the thread; lives in L2)
 *                              - or, when m is one small block (batch 128 of an MLP) and
 *                              rows cannot be split evenly in whole panels, the threads pack
 *                              all of A together and split the jr loop instead
 *      jr over NC in NR        one B micro-panel, reused from L1 by every ir
 *       ir over mc in MR       micro-kernel: an MR x NR tile of C, in registers
 * Packing reads op(A) and op(B) through their strides, so a transposed operand is never
 * copied as a whole; it pads edge panels with zeros, so the micro-kernel always computes a
 * full tile and only its loads and stores of C are cut to the edge. The last K block
 * applies the epilogue (bias, activation) to the tile while it is still in registers.
 */

#include "vmath_impl.h"

#define GEMM_NR (GEMM_NV * VLEN)

/* A panel of `width` columns and kc rows: dst[p * width + i] = M[p][i] for i < count, p < kc,
 * and 0 for count <= i < width, where M[p][i] is src[i * ld + p] when `transposed` (one
 * strided gather per vector of dst) and src[p * ld + i] otherwise (contiguous runs). */
static void FN(pack_panel)(T *restrict dst, int64_t width, const T *restrict src, int64_t ld,
                           int64_t count, int64_t kc, int transposed) {
    for (int64_t p = 0; p < kc; p++)
        for (int64_t i = 0; i < width; i += VLEN) {
            VEC v = transposed ? V(gather)(src + i * ld + p, ld, count - i)
                               : V(load_part)(src + p * ld + i, count - i, 0);
            V(store_part)(dst + p * width + i, v, width - i);
        }
}

/* Pack the mr (<= MR) rows x kc columns of op(A) starting at `a` into an MR x kc micro-panel:
 * dst[p * MR + i] = op(A)[i][p], zeros for rows mr..MR-1. */
static void FN(pack_a_panel)(T *restrict dst, const T *restrict a, int64_t lda, int trans,
                             int64_t mr, int64_t kc) {
    /* op(A)[i][p] is a[p*lda + i] when trans, else a[i*lda + p] */
    FN(pack_panel)(dst, GEMM_MR, a, lda, mr, kc, !trans);
}

/* Pack the kc rows x nr (<= NR) columns of op(B) starting at `b` into a kc x NR micro-panel:
 * dst[p * NR + j] = op(B)[p][j], zeros for columns nr..NR-1. */
static void FN(pack_b_panel)(T *restrict dst, const T *restrict b, int64_t ldb, int trans,
                             int64_t nr, int64_t kc) {
    /* op(B)[p][j] is b[j*ldb + p] when trans, else b[p*ldb + j] */
    FN(pack_panel)(dst, GEMM_NR, b, ldb, nr, kc, trans);
}

/* The MR x NR tile c (row stride ldc; only its first mr rows and nr columns exist) gets
 * ap (KC x MR panel) @ bp (KC x NR panel), added to its old value when `accumulate`; then
 * when `epilogue` is given, bias (the tile's first column's bias) and the activation. */
static inline __attribute__((always_inline)) void FN(gemm_micro_kernel_rows)(
    const int rows, int64_t kc, const T *restrict ap, const T *restrict bp, T *restrict c,
    int64_t ldc, int64_t mr, int64_t nr, int accumulate, const fastnn_epilogue *epilogue,
    const T *bias) {
    /* rows (a constant where this is inlined) <= GEMM_MR: the rows computed; the A panel
     * keeps its stride of GEMM_MR. */
    VEC acc[GEMM_MR][GEMM_NV];
    /* C's lines are needed after the loop; fetch them while it runs. */
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
        if (i < mr)
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++) __builtin_prefetch(c + i * ldc + v * VLEN, 1, 3);
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) acc[i][v] = V(zero)();

    for (int64_t p = 0; p < kc; p++) {
        VEC bv[GEMM_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) bv[v] = V(load)(bp + v * VLEN);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            VEC av = V(set1)(ap[i]);
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++) acc[i][v] = V(fma)(av, bv[v], acc[i][v]);
        }
        ap += GEMM_MR;
        bp += GEMM_NR;
    }

    VEC bias_v[GEMM_NV] = {0};
    if (epilogue) {
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++)
            bias_v[v] = V(load_part)(bias + v * VLEN, nr - v * VLEN, 0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) {
        if (i >= mr) break;
        T *row = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) {
            int64_t cols = nr - v * VLEN;
            if (cols <= 0) break;
            VEC r = acc[i][v];
            if (cols >= VLEN) {
                if (accumulate) r = V(add)(r, V(load)(row + v * VLEN));
                if (epilogue)
                    r = FN(activate)(V(add)(r, bias_v[v]), epilogue->activation,
                                     (T)epilogue->alpha);
                V(store)(row + v * VLEN, r);
            } else {
                if (accumulate) r = V(add)(r, V(load_part)(row + v * VLEN, cols, 0));
                if (epilogue)
                    r = FN(activate)(V(add)(r, bias_v[v]), epilogue->activation,
                                     (T)epilogue->alpha);
                V(store_part)(row + v * VLEN, r, cols);
            }
        }
    }
}

/* An edge tile of few rows runs a kernel of few rows: 128 = 9 x 14 + 2 rows then costs nine
 * full tiles and a small one, not ten full ones. */
static void FN(gemm_micro_kernel)(int64_t kc, const T *restrict ap, const T *restrict bp,
                                  T *restrict c, int64_t ldc, int64_t mr, int64_t nr,
                                  int accumulate, const fastnn_epilogue *epilogue,
                                  const T *bias) {
    if (mr > GEMM_MR / 2)
        FN(gemm_micro_kernel_rows)(GEMM_MR, kc, ap, bp, c, ldc, mr, nr, accumulate, epilogue,
                                   bias);
    else if (mr > GEMM_MR / 4)
        FN(gemm_micro_kernel_rows)(GEMM_MR / 2, kc, ap, bp, c, ldc, mr, nr, accumulate,
                                   epilogue, bias);
    else
        FN(gemm_micro_kernel_rows)(GEMM_MR / 4, kc, ap, bp, c, ldc, mr, nr, accumulate,
                                   epilogue, bias);
}

/* The K block: at most GEMM_KC, and the blocks as equal as possible, so no block is a thin
 * remainder that pays a full pass over C for little work (784 = 4 x 196, not 3 x 256 + 16). */
static inline int64_t FN(gemm_kc)(int64_t k) {
    return fastnn_ceil_div(k, fastnn_ceil_div(k, GEMM_KC));
}

/* Everything one thread does; called inside the parallel region, or directly with one
 * thread. The `omp for` loops share the work among the team (a team of one runs all).
 * a_shared_packs: NULL to split rows among the threads; else two buffers for all of A (m
 * rows, mc = m rounded up to panels), packed by all threads, and the columns are split. */
static void FN(gemm_thread)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda,
                            int trans_a, const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                            const fastnn_epilogue *epilogue, T *b_packs, int64_t mc,
                            T *a_shared_packs) {
    int64_t kc_max = FN(gemm_kc)(k);
    T *a_pack = a_shared_packs
                    ? NULL
                    : fastnn_scratch(SCRATCH_GEMM_A, (size_t)mc * kc_max * sizeof(T));
    int64_t m_blocks = fastnn_ceil_div(m, mc);
    const T *bias = epilogue ? (const T *)epilogue->bias : NULL;
    int64_t b_pack_size = kc_max * fastnn_ceil_div(fastnn_min(n, GEMM_NC), GEMM_NR) * GEMM_NR;
    int64_t block_index = 0;

    for (int64_t jc = 0; jc < n; jc += GEMM_NC) {
        int64_t nc = fastnn_min(GEMM_NC, n - jc);
        int64_t n_panels = fastnn_ceil_div(nc, GEMM_NR);
        for (int64_t pc = 0; pc < k; pc += kc_max) {
            int64_t kc = fastnn_min(kc_max, k - pc);
            int accumulate = pc > 0;
            const fastnn_epilogue *tile_epilogue = pc + kc == k ? epilogue : NULL;
            /* Packing into the buffer not used by the previous block needs no barrier before
             * it: everyone finished reading this buffer before the barrier that ended the
             * packing of the previous block. */
            T *b_pack = b_packs + (block_index % 2) * b_pack_size;
            if (a_shared_packs) {
                /* Same argument for the two A buffers. */
                T *a_shared = a_shared_packs + (block_index++ % 2) * mc * kc_max;
                int64_t m_panels = fastnn_ceil_div(m, GEMM_MR);
#pragma omp for schedule(static)
                for (int64_t ip = 0; ip < m_panels; ip++) {
                    int64_t i = ip * GEMM_MR;
                    const T *src = trans_a ? a + pc * lda + i : a + i * lda + pc;
                    FN(pack_a_panel)(a_shared + i * kc, src, lda, trans_a,
                                     fastnn_min(GEMM_MR, m - i), kc);
                } /* implicit barrier: A is packed before anyone reads it */
                /* Each thread packs and reads only its own B panels; schedule(static) keeps
                 * a column panel, and so its tiles of C, with one thread in every K block. */
#pragma omp for schedule(static) nowait
                for (int64_t jp = 0; jp < n_panels; jp++) {
                    int64_t jr = jp * GEMM_NR, j = jc + jr;
                    const T *src = trans_b ? b + j * ldb + pc : b + pc * ldb + j;
                    T *bp = b_pack + jr * kc;
                    FN(pack_b_panel)(bp, src, ldb, trans_b, fastnn_min(GEMM_NR, n - j), kc);
                    for (int64_t ir = 0; ir < m; ir += GEMM_MR)
                        FN(gemm_micro_kernel)(kc, a_shared + ir * kc, bp, c + ir * ldc + j, ldc,
                                              fastnn_min(GEMM_MR, m - ir),
                                              fastnn_min(GEMM_NR, nc - jr), accumulate,
                                              tile_epilogue, bias ? bias + j : NULL);
                }
                continue;
            }
            block_index++;

#pragma omp for schedule(static)
            for (int64_t jp = 0; jp < n_panels; jp++) {
                int64_t j = jc + jp * GEMM_NR;
                const T *src = trans_b ? b + j * ldb + pc : b + pc * ldb + j;
                FN(pack_b_panel)(b_pack + jp * GEMM_NR * kc, src, ldb, trans_b,
                                 fastnn_min(GEMM_NR, n - j), kc);
            } /* implicit barrier: B is packed before anyone reads it */

            /* nowait: the next block's packing barrier is the only synchronisation needed.
             * schedule(static) with the same trip count gives each thread the same rows in
             * every K block, so each tile of C is accumulated by one thread only. */
#pragma omp for schedule(static) nowait
            for (int64_t block = 0; block < m_blocks; block++) {
                int64_t ic = block * mc;
                int64_t mcur = fastnn_min(mc, m - ic);
                for (int64_t ir = 0; ir < mcur; ir += GEMM_MR) {
                    int64_t i = ic + ir;
                    const T *src = trans_a ? a + pc * lda + i : a + i * lda + pc;
                    FN(pack_a_panel)(a_pack + ir * kc, src, lda, trans_a,
                                     fastnn_min(GEMM_MR, m - i), kc);
                }
                for (int64_t jr = 0; jr < nc; jr += GEMM_NR) {
                    const T *bp = b_pack + jr * kc;
                    for (int64_t ir = 0; ir < mcur; ir += GEMM_MR) {
                        FN(gemm_micro_kernel)(kc, a_pack + ir * kc, bp,
                                              c + (ic + ir) * ldc + jc + jr, ldc,
                                              fastnn_min(GEMM_MR, mcur - ir),
                                              fastnn_min(GEMM_NR, nc - jr), accumulate,
                                              tile_epilogue, bias ? bias + jc + jr : NULL);
                    }
                }
            }
        }
    }
}

/* Smallest job (in flops) worth a thread of its own; below it team start-up and the
 * barriers cost more than the thread saves. */
#define GEMM_FLOPS_PER_THREAD 4.0e6

void FN(fastnn_gemm)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int trans_a,
                     const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                     const fastnn_epilogue *epilogue) {
    int threads = fastnn_threads_for(2.0 * m * n * k, GEMM_FLOPS_PER_THREAD);
    /* Rows go to threads in blocks of whole micro-panels: a multiple of `threads` blocks of
     * at most GEMM_MC rows, as equal as the panels allow. */
    int64_t m_panels = fastnn_ceil_div(m, GEMM_MR);
    if (threads > m_panels) threads = (int)m_panels;
    int64_t blocks = threads * fastnn_ceil_div(m_panels, threads * (GEMM_MC / GEMM_MR));
    int64_t mc = fastnn_ceil_div(m_panels, blocks) * GEMM_MR;

    int64_t kc_max = FN(gemm_kc)(k);
    int64_t nc_max = fastnn_ceil_div(fastnn_min(n, GEMM_NC), GEMM_NR) * GEMM_NR;
    T *b_packs = fastnn_scratch(SCRATCH_GEMM_B, 2 * (size_t)kc_max * nc_max * sizeof(T));
    if (threads == 1) {
        FN(gemm_thread)(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue, b_packs, mc,
                        NULL);
        return;
    }
    /* Split the columns when all rows fit one block but whole panels cannot give each
     * thread the same rows (128 = 9 x 14 + 2 over 2 threads: 5 and 4.2 panels), and there
     * are columns enough to share. */
    T *a_shared_packs = NULL;
    if (m <= GEMM_MC && (m_panels % threads != 0 || m % GEMM_MR != 0) &&
        fastnn_ceil_div(n, GEMM_NR) >= 2 * threads) {
        mc = m_panels * GEMM_MR;
        a_shared_packs = fastnn_scratch(SCRATCH_GEMM_A_SHARED,
                                        2 * (size_t)mc * kc_max * sizeof(T));
    }
#pragma omp parallel num_threads(threads)
    FN(gemm_thread)(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue, b_packs, mc,
                    a_shared_packs);
}

#undef GEMM_NR
#undef GEMM_FLOPS_PER_THREAD
