/* gemm_impl.h - C = op(A) @ op(B) (+ bias, activation), for T (template: see instantiate.h).
 *
 * Three ways to share the work, chosen by fastnn_gemm from the shape:
 *
 * Many rows (m > GEMM_FEW_ROWS): the GotoBLAS layering, gemm_rows_thread; block sizes from
 * instantiate.h (NR = GEMM_NV vectors):
 *   jc over n in NC            a panel of columns of B and C
 *    pc over k in GEMM_KC      pack op(B)[pc:+KC, jc:+NC] into KC x NR micro-panels, a block
 *                              that lives in L2 (NC: as many columns as GEMM_B_BLOCK_BYTES
 *                              holds; each thread its own copy, so the threads never wait for
 *                              each other)
 *     ir over m in MR          each thread its own equal share of the rows; pack
 *                              op(A)[ir:+MR, pc:+KC] into one MR x KC micro-panel (L1)
 *      jr over NC in NR        micro-kernel: an MR x NR tile of C, in registers, from the
 *                              A micro-panel in L1 and a B micro-panel streamed from L2
 *   With two B blocks or more a thread (a small L2), pc is outermost and A's micro-panels are
 *   kept for the other B blocks (an L3-sized block of them: gemm_plan.h's
 *   FASTNN_GEMM_A_REUSE_BLOCKS), instead of being packed again for each.
 *
 * Few rows (a batch of an MLP), gemm_columns_thread: A not transposed and B not transposed
 * are read in place, the rest is packed per thread, and nothing is shared:
 *   - split K (gemm_split_k) when neither is transposed and C is small: each thread
 *     multiplies its share of K, then the partial products are added up with the epilogue;
 *   - A transposed with no more columns than rows (a weight gradient x^T dz): the rows,
 *     as for many rows;
 *   - otherwise the threads split the columns.
 *
 * Packing reads op(A) and op(B) through their strides, so a transposed operand is never
 * copied as a whole; it pads edge panels with zeros, so the micro-kernel always computes a
 * full tile and only its loads and stores of C are cut to the edge. The last K block
 * applies the epilogue (bias, activation) to the tile while it is still in registers.
 */

#include <string.h>

#include "gemm_plan.h"
#include "vmath_impl.h"

#define GEMM_NR (GEMM_NV * VLEN)

/* The bytes of a packed B block of the PACKED path: it stays in L2 beside the rows of C and A
 * streaming past. On a Sapphire Rapids core (2 MB of L2), 2048^3 took 56-57 ms with blocks of
 * 1.0-1.4 MB (342 x 768 or 1024 floats), 67 ms with blocks of 2.8 MB (all 2048 columns): 60% of
 * L2 (fastnn_gemm_b_block_bytes in gemm_plan.c). Override it with
 * -DFASTNN_GEMM_B_BLOCK_BYTES=... (FASTNN_EXTRA_CFLAGS). */
#define GEMM_B_BLOCK_BYTES fastnn_gemm_b_block_bytes()

/* A run of n (0 < n <= VLEN) numbers of a packed panel at dst, from x's first lanes. When
 * `spill` (the caller has checked that the next numbers of dst are written after this run, by
 * a later store of the same packing), a whole vector is stored where partial stores are slow
 * (FASTNN_PARTIAL_STORES_SLOW, simd.h): its lanes past n land on numbers still to be written.
 * AMD's VMASKMOVPS store is microcoded: on a Zen 3, the 6-number runs of the AVX2 copy's A
 * micro-panels took 40% of a float32 1024 x 2048 x 2048 product with A transposed. */
static inline void FN(pack_store)(T *dst, VEC x, int64_t n, int spill) {
#if FASTNN_PARTIAL_STORES_SLOW
    if (spill) {
        V(store)(dst, x);
        return;
    }
#else
    (void)spill;
#endif
    V(store_part)(dst, x, n);
}

/* A panel of `width` columns and kc rows: dst[p * width + i] = M[p][i] for i < count, p < kc,
 * and 0 for count <= i < width, where M[p][i] is src[i * ld + p] when `transposed` and
 * src[p * ld + i] otherwise (contiguous runs). A transposed source is read in square blocks
 * of VLEN runs of VLEN numbers, transposed in registers. */
static void FN(pack_panel)(T *restrict dst, int64_t width, const T *restrict src, int64_t ld,
                           int64_t count, int64_t kc, int transposed) {
    if (!transposed) {
        /* row by row, so a run's spill lands on the next row's first numbers, written next */
        for (int64_t p = 0; p < kc; p++)
            for (int64_t i = 0; i < width; i += VLEN)
                FN(pack_store)(dst + p * width + i, V(load_part)(src + p * ld + i, count - i, 0),
                               width - i, p + 1 < kc);
        return;
    }
    for (int64_t i = 0; i < width; i += VLEN)
        for (int64_t p = 0; p < kc; p += VLEN) {
            if (i >= count) { /* padding only (16 columns in a panel of 32): no transpose */
                for (int q = 0; q < VLEN && p + q < kc; q++)
                    V(store_part)(dst + (p + q) * width + i, V(zero)(), width - i);
                continue;
            }
            VEC block[VLEN];
            for (int q = 0; q < VLEN; q++)
                block[q] = i + q >= count ? V(zero)()
                           : kc - p >= VLEN ? V(load)(src + (i + q) * ld + p)
                                            : V(load_part)(src + (i + q) * ld + p, kc - p, 0);
            V(transpose)(block);
            /* a run may spill onto the next row when it is the row's only one */
            for (int q = 0; q < VLEN && p + q < kc; q++)
                FN(pack_store)(dst + (p + q) * width + i, block[q], width - i,
                               width <= VLEN && p + q + 1 < kc);
        }
}

/* Pack the mr (<= MR) rows x kc columns of op(A) starting at `a` into an MR x kc micro-panel:
 * dst[p * MR + i] = op(A)[i][p], zeros for rows mr..MR-1. */
static void FN(pack_a_panel)(T *restrict dst, const T *restrict a, int64_t lda, int trans,
                             int64_t mr, int64_t kc) {
    /* op(A)[i][p] is a[p*lda + i] when trans, else a[i*lda + p] */
    FN(pack_panel)(dst, GEMM_MR, a, lda, mr, kc, !trans);
}

/* pack_a_group_t asks for the run of the stored row of A this many rows ahead: each row is
 * a row stride away (4 KB and more: a page of its own, where the hardware's prefetchers do not
 * follow). Zen 3, 2 threads, alternating processes against no prefetch (noisy host, ranges of
 * 2-4 runs): float32 A^T B 1024 x 2048 x 16 1.9-2.3 -> 1.5-1.8 ms (NumPy 0.75x -> 0.83-0.94x),
 * 16 x 2048 x 1024 1.6-2.4 -> 1.4-1.7 ms, 256 x 2048 x 2048 0.82-0.85x -> 0.89-1.05x. Eight rows
 * ahead measured as sixteen within the noise. */
#define GEMM_A_T_AHEAD 16
/* The `rows` rows x kc columns of a transposed op(A) starting at `a` (op(A)[i][p] =
 * a[p * lda + i]) into micro-panels of MR rows side by side (dst + g * MR * kc for rows g * MR
 * on), each as pack_a_panel packs it: one run of `rows` numbers of each stored row of A read
 * at once, where pack_a_panel reads MR numbers (56 bytes of float32 on AVX-512, across two
 * lines most of the time) of each of kc rows a row stride apart. */
static void FN(pack_a_group_t)(T *restrict dst, const T *restrict a, int64_t lda, int64_t rows,
                               int64_t kc, int64_t avail) {
    /* a panel's runs spill onto its next row (written at p + 1) when a row is one run; a full
     * panel's run is one whole load where `avail` (the rows of op(A) from `a` on, so the numbers
     * of each stored row that may be read) has VLEN numbers: AVX2's masked load of the last
     * panel of a group took a third of the packing (Zen 3) */
    for (int64_t p = 0; p < kc; p++) {
        if (p + GEMM_A_T_AHEAD < kc)
            fastnn_prefetch_lines(a + (p + GEMM_A_T_AHEAD) * lda, rows * (int64_t)sizeof(T));
        for (int64_t g = 0; g * GEMM_MR < rows; g++)
            for (int64_t i = 0; i < GEMM_MR; i += VLEN) {
                const T *src = a + p * lda + g * GEMM_MR + i;
                int64_t here = rows - g * GEMM_MR - i;
                VEC x = here >= fastnn_min(GEMM_MR - i, VLEN) && avail - g * GEMM_MR - i >= VLEN
                            ? V(load)(src)
                            : V(load_part)(src, here, 0);
                FN(pack_store)(dst + g * GEMM_MR * kc + p * GEMM_MR + i, x, GEMM_MR - i,
                               GEMM_MR <= VLEN && p + 1 < kc);
            }
    }
}

/* Pack the kc rows x nr (<= NR) columns of op(B) starting at `b` into a kc x NR micro-panel:
 * dst[p * NR + j] = op(B)[p][j], zeros for columns nr..NR-1. */
static void FN(pack_b_panel)(T *restrict dst, const T *restrict b, int64_t ldb, int trans,
                             int64_t nr, int64_t kc) {
    /* op(B)[p][j] is b[j*ldb + p] when trans, else b[p*ldb + j] */
    FN(pack_panel)(dst, GEMM_NR, b, ldb, nr, kc, trans);
}

/* pack_b_block asks for the run of the row of B this many rows ahead when B is read from
 * memory (`ahead`): each row's run (832 bytes of a block of 208 float32 columns) lies in a page
 * of its own, where the hardware prefetchers do not follow far enough. Zen 3, float32, 2
 * threads, the two builds' C entries alternating call by call in one process after 0.2 s
 * pauses, medians of 11 rounds, 4-6 runs, against none: `nn` 256 x 2048 x 2048 1.03-1.16x,
 * 128 x 4096 x 4096 1.03-1.11x, 1024 x 2048 x 2048 1.03-1.07x, 512 x 1024 x 1024 1.01-1.10x;
 * 1024 x 4096 x 1024 (each thread packs all of B) 0.98-0.99x (the same build on both sides:
 * 0.98-1.04x). 128 rows ahead measured as 64 (0.96-1.00x against it), 32 rows 0.97-1.07x. A B
 * in L2 has its lines there already: 4096 x 256 x 256 (B 256 KB) lost 5-6% (0.94-0.95x), so a
 * thread whose columns of B fit in L2 asks for none (0.97-1.01x). Not measured on AVX-512. */
#define GEMM_B_AHEAD 64

/* The kc rows x `cols` columns of B (not transposed) starting at `b` into kc x NR micro-panels
 * side by side, as pack_b_panel packs each: dst[jp * NR * kc + p * NR + j] = b[p * ldb + jp * NR
 * + j], zeros past `cols`. Row by row, each row of B read once from left to right: packed panel
 * by panel, each panel's kc rows are read a row stride apart, a few cache lines each, which
 * the hardware prefetch does not follow (32 x 1024 x 1024 float64 on one thread, 1024 columns
 * 8 KB apart: 32% of its time went to packing B; row by row 25%, and the product took 892 us
 * instead of 1088, fastest calls). `ahead`: ask for row p + GEMM_B_AHEAD's run at row p. */
static void FN(pack_b_block)(T *restrict dst, const T *restrict b, int64_t ldb, int64_t cols,
                             int64_t kc, int ahead) {
    for (int64_t p = 0; p < kc; p++) {
        const T *row = b + p * ldb;
        if (ahead && p + GEMM_B_AHEAD < kc)
            fastnn_prefetch_lines(row + GEMM_B_AHEAD * ldb, cols * (int64_t)sizeof(T));
        for (int64_t j = 0; j < cols; j += GEMM_NR) {
            T *panel = dst + j * kc + p * GEMM_NR;
#pragma GCC unroll 4
            for (int64_t i = 0; i < GEMM_NR; i += VLEN)
                V(store)(panel + i, V(load_part)(row + j + i, cols - j - i, 0));
        }
    }
}

/* The activations of the micro-kernels' epilogue: identity, relu and leaky relu inline, sigmoid
 * and tanh (an exp polynomial each) in one out-of-line copy of the same function
 * (FN(activate)), so the same bits. Inlined into every row and vector of every kernel (one
 * per row count on the few-rows path), the polynomials made the AVX-512 copy's compile take
 * 43 s instead of 27; a sigmoid or tanh layer's last K block pays a call per vector. */
static __attribute__((noinline)) VEC FN(activate_out_of_line)(VEC z, int activation, T alpha) {
    return FN(activate)(z, activation, alpha);
}

static inline __attribute__((always_inline)) VEC FN(activate_tile)(VEC z, int activation,
                                                                   T alpha) {
    if (activation == ACT_RELU) return V(max)(V(zero)(), z); /* as FN(activate) */
    if (activation == ACT_LEAKY_RELU)
        return V(select_gt)(z, V(zero)(), z, V(mul)(z, V(set1)(alpha)));
    if (activation == ACT_SIGMOID || activation == ACT_TANH)
        return FN(activate_out_of_line)(z, activation, alpha);
    return z;
}

/* The MR x NR tile c (row stride ldc; only its first mr rows and nr columns exist) gets
 * op(A) (rows x kc) @ op(B) (kc x NR), added to its old value when `accumulate`; then when
 * `epilogue` is given, bias (the tile's first column's bias) and the activation.
 * op(A)[i][p] is a[i * a_row + p * a_step]: a packed panel has a_row = 1, a_step = MR; A read
 * in place has (1, lda) when transposed, (lda, 1) otherwise. op(B)[p][j] is b[p * b_step + j]:
 * b_step is NR for a packed panel, ldb for B read in place. */
static inline __attribute__((always_inline)) void FN(gemm_micro_kernel_rows)(
    const int rows, const int nv, int64_t kc, const T *restrict a, const int64_t a_row,
    const int64_t a_step,
    const T *restrict b, int64_t b_step, T *restrict c, int64_t ldc, int64_t mr, int64_t nr,
    int accumulate, const fastnn_epilogue *epilogue, const T *bias) {
    /* rows <= GEMM_MR and nv <= GEMM_NV (constants where this is inlined): the rows and
     * vectors of columns computed. */
    VEC acc[GEMM_MR][GEMM_NV];
    /* C's lines are needed after the loop; fetch them while it runs. */
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
        if (i < mr)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) __builtin_prefetch(c + i * ldc + v * VLEN, 1, 3);
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[i][v] = V(zero)();

    /* Row i of A is read from group i / 3's pointer plus (i % 3) * a_row: for rows a_row apart
     * (A read in place) a base, an index register and a scale of 1 or 2 in one address, so
     * the rows' offsets need no registers of their own (14 of them did not fit in the general
     * registers, and were reloaded from the stack at every K step); for a packed panel
     * (a_row = 1) constant offsets. */
    const T *group[(GEMM_MR + 2) / 3];
#pragma GCC unroll 8
    for (int g = 0; g < (rows + 2) / 3; g++) group[g] = a + 3 * g * a_row;
    /* K four steps an iteration: the loop's counter, pointer steps and branch (4 scalar
     * operations, issued on the FMA ports' side too) once per 4 steps. Sapphire Rapids, 2
     * threads, alternating in one process against one step, same bits: AVX2 float32 1024 x
     * 2048 x 2048 1.06x, 256 x 2048 x 2048 1.09x, B transposed 1024 x 2048 x 256 1.08x, 128 x
     * 784 x 256 1.05x; AVX-512 1.01-1.09x (256 x 2048 x 2048 1.03-1.04x, 32 x 2048 x 2048
     * 1.02-1.09x, 128 x 784 x 256 1.05x); portable 0.97-1.00x; two steps 0.99-1.06x (AVX2). */
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        VEC bv[GEMM_NV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) bv[v] = V(load)(b + v * VLEN);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            VEC av = V(set1)(group[i / 3][(i % 3) * a_row]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[i][v] = V(fma)(av, bv[v], acc[i][v]);
        }
#pragma GCC unroll 8
        for (int g = 0; g < (rows + 2) / 3; g++) group[g] += a_step;
        b += b_step;
    }

    VEC bias_v[GEMM_NV] = {0};
    if (epilogue) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bias_v[v] = V(load_part)(bias + v * VLEN, nr - v * VLEN, 0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) {
        if (i >= mr) break;
        T *row = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            int64_t cols = nr - v * VLEN;
            if (cols <= 0) break;
            VEC r = acc[i][v];
            if (cols >= VLEN) {
                if (accumulate) r = V(add)(r, V(load)(row + v * VLEN));
                if (epilogue)
                    r = FN(activate_tile)(V(add)(r, bias_v[v]), epilogue->activation,
                                     (T)epilogue->alpha);
                V(store)(row + v * VLEN, r);
            } else {
                if (accumulate) r = V(add)(r, V(load_part)(row + v * VLEN, cols, 0));
                if (epilogue)
                    r = FN(activate_tile)(V(add)(r, bias_v[v]), epilogue->activation,
                                     (T)epilogue->alpha);
                V(store_part)(row + v * VLEN, r, cols);
            }
        }
    }
}

/* One tile; see gemm_micro_kernel_rows for the operands. Rows of A read in place
 * (a_row != 1) must be a full tile: a kernel of MR rows reads all of them. Otherwise an edge
 * tile of few rows runs a kernel of few rows: 128 = 9 x 14 + 2 rows then costs nine full
 * tiles and a small one, not ten full ones. */
static inline __attribute__((always_inline)) void FN(gemm_tile_nv)(
    const int nv, int64_t kc, const T *restrict a, int64_t a_row, int64_t a_step,
    const T *restrict b, int64_t b_step, T *restrict c, int64_t ldc, int64_t mr, int64_t nr,
    int accumulate, const fastnn_epilogue *epilogue, const T *bias) {
    if (a_row != 1)
        FN(gemm_micro_kernel_rows)(GEMM_MR, nv, kc, a, a_row, 1, b, b_step, c, ldc, mr, nr,
                                   accumulate, epilogue, bias);
    else if (mr > GEMM_MR / 2)
        FN(gemm_micro_kernel_rows)(GEMM_MR, nv, kc, a, 1, a_step, b, b_step, c, ldc, mr, nr,
                                   accumulate, epilogue, bias);
    else if (mr > GEMM_MR / 4)
        FN(gemm_micro_kernel_rows)(GEMM_MR / 2, nv, kc, a, 1, a_step, b, b_step, c, ldc, mr,
                                   nr, accumulate, epilogue, bias);
    else
        FN(gemm_micro_kernel_rows)(GEMM_MR / 4, nv, kc, a, 1, a_step, b, b_step, c, ldc, mr,
                                   nr, accumulate, epilogue, bias);
}

/* A panel narrower than one vector (the 10 classes of an output layer) runs a kernel one
 * vector wide: a full-width one would do NR / VLEN times the arithmetic. */
static void FN(gemm_tile)(int64_t kc, const T *restrict a, int64_t a_row, int64_t a_step,
                          const T *restrict b, int64_t b_step, T *restrict c, int64_t ldc,
                          int64_t mr, int64_t nr, int accumulate,
                          const fastnn_epilogue *epilogue, const T *bias) {
    if (nr <= VLEN)
        FN(gemm_tile_nv)(1, kc, a, a_row, a_step, b, b_step, c, ldc, mr, nr, accumulate,
                         epilogue, bias);
    else
        FN(gemm_tile_nv)(GEMM_NV, kc, a, a_row, a_step, b, b_step, c, ldc, mr, nr, accumulate,
                         epilogue, bias);
}

/* A tile of exactly `rows` rows (GEMM_MR - GEMM_ROWS_SPAN <= rows <= GEMM_MR) of op(A) read in
 * place, not transposed (a_row = lda) or transposed (a_row = 1, a_step = lda): the few-rows
 * path splits M into tiles of equal rows (gemm_row_tiles), whose kernels must read no row past
 * the tile's last. One kernel per row count, each with its rows' accumulators in registers. */
#ifndef GEMM_ROWS_SPAN
#define GEMM_ROWS_SPAN 7
#endif
/* One function per row count, vector count and addressing (each a kernel of its own: in one
 * function with a switch, GCC took 77 s instead of 28 for the AVX-512 copy). */
#define GEMM_ROWS_FN(d, tag, nv_, row_, step_)                                                  \
    static __attribute__((noinline)) void FN(gemm_rows_##d##_##tag)(                           \
        int64_t kc, const T *restrict a, int64_t a_row, int64_t a_step, const T *restrict b,   \
        int64_t b_step, T *restrict c, int64_t ldc, int64_t nr, int accumulate,                \
        const fastnn_epilogue *epilogue, const T *bias) {                                      \
        (void)a_row;                                                                            \
        (void)a_step;                                                                           \
        FN(gemm_micro_kernel_rows)(GEMM_MR - (d) > 0 ? GEMM_MR - (d) : 1, nv_, kc, a, row_,     \
                                   step_, b, b_step, c, ldc, GEMM_MR - (d), nr, accumulate,     \
                                   epilogue, bias);                                             \
    }
#define GEMM_ROWS_FNS(d)                                                                        \
    GEMM_ROWS_FN(d, v1_rows, 1, a_row, 1)                                                       \
    GEMM_ROWS_FN(d, v2_rows, GEMM_NV, a_row, 1)                                                 \
    GEMM_ROWS_FN(d, v1_cols, 1, 1, a_step)                                                      \
    GEMM_ROWS_FN(d, v2_cols, GEMM_NV, 1, a_step)
GEMM_ROWS_FNS(0)
GEMM_ROWS_FNS(1)
GEMM_ROWS_FNS(2)
GEMM_ROWS_FNS(3)
GEMM_ROWS_FNS(4)
GEMM_ROWS_FNS(5)
GEMM_ROWS_FNS(6)
GEMM_ROWS_FNS(7)
#define GEMM_ROWS_CASE(d, tag)                                                                  \
    case d:                                                                                     \
        FN(gemm_rows_##d##_##tag)(kc, a, a_row, a_step, b, b_step, c, ldc, nr, accumulate,      \
                                  epilogue, bias);                                              \
        break;
#define GEMM_ROWS_SWITCH(tag)                                                                   \
    switch (GEMM_MR - rows) {                                                                   \
        GEMM_ROWS_CASE(0, tag) GEMM_ROWS_CASE(1, tag) GEMM_ROWS_CASE(2, tag)                    \
        GEMM_ROWS_CASE(3, tag) GEMM_ROWS_CASE(4, tag) GEMM_ROWS_CASE(5, tag)                    \
        GEMM_ROWS_CASE(6, tag) GEMM_ROWS_CASE(7, tag)                                           \
    }
static void FN(gemm_tile_rows)(int rows, int64_t kc, const T *restrict a, int64_t a_row,
                               int64_t a_step, const T *restrict b, int64_t b_step,
                               T *restrict c, int64_t ldc, int64_t nr, int accumulate,
                               const fastnn_epilogue *epilogue, const T *bias) {
    if (a_row != 1) {
        if (nr <= VLEN) GEMM_ROWS_SWITCH(v1_rows)
        else GEMM_ROWS_SWITCH(v2_rows)
    } else {
        if (nr <= VLEN) GEMM_ROWS_SWITCH(v1_cols)
        else GEMM_ROWS_SWITCH(v2_cols)
    }
}
#undef GEMM_ROWS_SWITCH
#undef GEMM_ROWS_CASE
#undef GEMM_ROWS_FNS
#undef GEMM_ROWS_FN

/* The row tiles of an M of `m` rows read in place: as few tiles as GEMM_MR allows, of equal
 * rows (the first m % tiles one row more). 32 rows are 11 + 11 + 10, not 14 + 14 + 4 with
 * the last computed by a kernel of 7 rows (35 rows' work for 32), 64 are 5 tiles of 13 or 12,
 * not 4 of 14 and 8 by a kernel of 14 (70 rows' work). Each element's sums are the same, in
 * the same order. Returns the tiles, or 0 when a tile would have fewer rows than the kernels
 * of gemm_tile_rows (then the full tiles are read in place and the rest packed). */
static inline int64_t FN(gemm_row_tiles)(int64_t m, int64_t *rows) {
    if (m <= 0) return 0; /* (no caller's: the SMALL path takes M of 8 rows or fewer) */
    int64_t tiles = fastnn_ceil_div(m, GEMM_MR);
    *rows = m / tiles;
    return *rows >= GEMM_MR - GEMM_ROWS_SPAN && *rows >= 1 ? tiles : 0;
}

/* Micro-panels of a transposed A that the PACKED path packs at once (gemm_packed_thread):
 * Sapphire Rapids, 2 threads, alternating in one process against one at a time, medians of 7
 * blocks, same bits: float32 A^T B 4096^3 1.07-1.08x, 2048 x 4096 x 2048 1.09x, 2048^3
 * 1.00-1.08x, 512 x 2048 x 1024 1.00-1.05x; AVX2 2048 x 4096 x 2048 1.07x; float64 2048^3
 * 1.04x. Two panels measured as four (0.98-1.02x), eight 0.97-1.02x. */
#define GEMM_A_T_GROUP 4

/* The columns of a packed B block of the many-rows path for K blocks of kc: at most what
 * GEMM_B_BLOCK_BYTES holds, a whole number of panels, and the blocks as equal as possible
 * (784 columns in one block of 784 for kc = 256, not 768 + 16, which would pack all of A
 * again for 16 columns). */
static inline int64_t FN(gemm_nc)(int64_t n, int64_t kc) {
    int64_t most = fastnn_max(1, GEMM_B_BLOCK_BYTES / ((int64_t)sizeof(T) * kc * GEMM_NR));
    int64_t panels = fastnn_ceil_div(n, GEMM_NR);
    return fastnn_ceil_div(panels, fastnn_ceil_div(panels, most)) * GEMM_NR;
}

/* Longest row stride, in bytes, of a transposed A that gemm_columns_thread reads in place
 * for more than one column panel a thread (each K step of a tile then reads MR numbers side
 * by side in one row of A): the K rows of a tile lie that far apart, and a stride of 1 KB or
 * more maps them to a few L1 sets. Below it
 * the transposing copy costs more than it saves: the weight gradients x^T dz of the tabular
 * MLP (32-64-64-2, batch 32: A rows of 128 and 256 bytes; the epoch's CPU time on one thread,
 * alternating epochs in one process, 14.2 -> 14.0 ms). The bits are the same either way: each
 * element of C sums its K products in the same order. */
#define GEMM_A_T_IN_PLACE_BYTES 512
/* ... and whose K rows span at most 16 KB: a tile's K rows then fall at most 4 to a set of
 * the L1 (4 KB a way), so they stay there while the tile serves every column panel; a longer
 * span at a stride of 512 bytes would alias 8 sets and be read from L2 again per panel. */
#define GEMM_A_T_IN_PLACE_SPAN 16384
/* ... or whatever their span where they are at most 256 bytes apart (a line holds a quarter of
 * a row or more, and the rows spread over all the L1's sets); and whatever their stride
 * where the thread has one column panel (a packed copy would be read once: the copy is all
 * cost; float32 with rows 0.6-1 KB apart 256 x 32 x 16 1.56x, 256 x 64 x 10 1.55x, 150 x
 * 256 x 20 1.40x, float64 (0.8-2 KB) 100 x 256 x 16 1.63x, 256 x 16 x 16 1.46x, 256 x 1024
 * x 16 1.72x; from 0.93x to 1.05x where other paths run it: 128 x 512 x 32 and 256 x 4096 x
 * 10 0.93x then 0.99-1.01x in a second run). The span rule alone until the forty-eighth
 * session; Sapphire Rapids, against it, alternating in one process,
 * medians of 7-11 blocks, the same bits: float32 on one thread 32 x 256 x 96-256 1.16-1.36x,
 * 64 x 256 x 128 1.21-1.25x, 32 x 512 x 128 1.39x; on two 32 x 784 x 128 1.33x, 64 x 4096 x
 * 128 1.29x, 128 x 4096 x 16 1.37x, 100 x 784 x 10 (one panel, rows 400 bytes apart)
 * 1.40-1.47x, 100 x 1024 x 32 1.50x; float64 32 x 256 x 16 1.66-1.86x (NumPy 0.71x ->
 * 1.22-1.31x), 32 x 1024 x 64 1.62x, 32 x 4096 x 16 1.53x; 24 x 2048 x 32 0.88-0.94x (each
 * thread one panel; 42 -> 45 us), 32 x 2048 x 256 0.97-0.99x. */
#define GEMM_A_T_IN_PLACE_DENSE_BYTES 256

/* Most rows of A, read in place a multiple of 4 KB apart, that one tile reads at once: the
 * ways of an L1 set less a few for B and C (12 ways on Zen 5 and on recent Intel cores). */
#define GEMM_SAME_SET_ROWS 8

/* A full tile of MR rows of A read in place (rows a_row apart, not transposed) as two tiles of
 * MR / 2 rows: a tile's rows a multiple of 4 KB apart share one L1 set, which holds 12 lines,
 * not 14. Each half reads the B panel again (from L1 or L2). The bits are those of one tile:
 * each element's K products are summed in the same order. */
static void FN(gemm_tile_halves)(int64_t kc, const T *restrict a, int64_t a_row,
                                 const T *restrict b, int64_t b_step, T *restrict c,
                                 int64_t ldc, int64_t nr, int accumulate,
                                 const fastnn_epilogue *epilogue, const T *bias) {
    for (int h = 0; h < 2; h++) {
        const T *ah = a + h * (GEMM_MR / 2) * a_row;
        T *ch = c + h * (GEMM_MR / 2) * ldc;
        if (nr <= VLEN)
            FN(gemm_micro_kernel_rows)(GEMM_MR / 2, 1, kc, ah, a_row, 1, b, b_step, ch, ldc,
                                       GEMM_MR / 2, nr, accumulate, epilogue, bias);
        else
            FN(gemm_micro_kernel_rows)(GEMM_MR / 2, GEMM_NV, kc, ah, a_row, 1, b, b_step, ch,
                                       ldc, GEMM_MR / 2, nr, accumulate, epilogue, bias);
    }
}

/* The longest K block of gemm_columns_thread. */
#define GEMM_COLUMNS_KC (4 * GEMM_KC)

/* The K block: at most GEMM_KC, and the blocks as equal as possible, so no block is a thin
 * remainder that pays a full pass over C for little work (784 = 4 x 196, not 3 x 256 + 16). */
static inline int64_t FN(gemm_kc)(int64_t k) {
    return fastnn_ceil_div(k, fastnn_ceil_div(k, GEMM_KC));
}

/* C[:, panels first_panel..end_panel-1] (panels of NR columns) for few rows
 * (m <= GEMM_FEW_ROWS, as for the batch of an MLP): the work of one thread when the threads
 * split the columns or K.
 * Nothing is shared, so no thread ever waits for another:
 *  - A not transposed is read in place (each row contiguous: a few rows, reused from L1/L2
 *    by every panel), and so is A transposed with a short row stride and span
 *    (GEMM_A_T_IN_PLACE_BYTES, _SPAN), in tiles of equal rows (gemm_row_tiles); A transposed
 *    otherwise, whose rows p of a tile would be a row stride apart (1 KB for 256 columns: all
 *    in the same few L1 sets), is packed by each thread, and so is the edge tile of rows 4 KB
 *    apart (gemm_tile_halves' full tiles);
 *  - B is read in place when it is not transposed, else each thread packs its own panels;
 *    an edge panel (n not a multiple of NR) is packed unless it is one whole vector (16
 *    float32 columns: 32 x 1024 x 16 took 15% of its time packing it). Packing would cost about as
 *    much as the arithmetic here: every B panel serves only m / MR tiles.
 * With nothing packed per K block to keep in cache, the K blocks are long (up to
 * GEMM_COLUMNS_KC): each pass over C's tiles costs a load and a store of all of them. */
static int FN(gemm_columns_thread)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda,
                                   int trans_a, const T *b, int64_t ldb, int trans_b, T *c,
                                   int64_t ldc, const fastnn_epilogue *epilogue,
                                   int64_t first_panel, int64_t end_panel) {
    int64_t kc_max = fastnn_ceil_div(k, fastnn_ceil_div(k, GEMM_COLUMNS_KC));
    /* rows read in place: all full row tiles, unless A is transposed, the thread has more
     * than one column panel, and A's rows are more than GEMM_A_T_IN_PLACE_BYTES apart or
     * more than GEMM_A_T_IN_PLACE_DENSE_BYTES apart over more than GEMM_A_T_IN_PLACE_SPAN */
    int64_t a_row_bytes = lda * (int64_t)sizeof(T);
    int a_in_place = !trans_a || end_panel - first_panel == 1 ||
                     (a_row_bytes <= GEMM_A_T_IN_PLACE_BYTES &&
                      (k * a_row_bytes <= GEMM_A_T_IN_PLACE_SPAN ||
                       a_row_bytes <= GEMM_A_T_IN_PLACE_DENSE_BYTES));
    /* A not transposed whose row stride is a multiple of 4 KB (K of 1024 or 2048 float32): the
     * MR rows of a tile all map to one set of the L1 (4 KB a way), and more of them than
     * GEMM_SAME_SET_ROWS evict each other at every K step; such a tile runs as two of half
     * the rows (gemm_tile_halves), the same sums in the same order. */
    int a_halves = !trans_a && GEMM_MR > GEMM_SAME_SET_ROWS &&
                   (lda * (int64_t)sizeof(T)) % 4096 == 0;
    /* Rows read in place in tiles of equal rows (gemm_row_tiles), or else in full tiles of
     * GEMM_MR rows and an edge tile packed. */
    int64_t tile_rows = 0;
    int64_t row_tiles = a_in_place && !a_halves ? FN(gemm_row_tiles)(m, &tile_rows) : 0;
    int64_t m_direct = row_tiles ? m : a_in_place ? m / GEMM_MR * GEMM_MR : 0;
    int64_t m_packed = fastnn_ceil_div(m - m_direct, GEMM_MR) * GEMM_MR;
    T *a_pack = m_packed ? fastnn_scratch(SCRATCH_GEMM_A, (size_t)m_packed * kc_max * sizeof(T))
                         : NULL;
    T *b_pack = fastnn_scratch(SCRATCH_GEMM_B_PANEL, (size_t)kc_max * GEMM_NR * sizeof(T));
    if ((m_packed && !a_pack) || !b_pack) return FASTNN_OUT_OF_MEMORY;
    const T *bias = epilogue ? (const T *)epilogue->bias : NULL;

    for (int64_t pc = 0; pc < k; pc += kc_max) {
        int64_t kc = fastnn_min(kc_max, k - pc);
        int accumulate = pc > 0;
        const fastnn_epilogue *tile_epilogue = pc + kc == k ? epilogue : NULL;
        for (int64_t i = m_direct; i < m; i += GEMM_MR) {
            const T *src = trans_a ? a + pc * lda + i : a + i * lda + pc;
            FN(pack_a_panel)(a_pack + (i - m_direct) * kc, src, lda, trans_a,
                             fastnn_min(GEMM_MR, m - i), kc);
        }
        for (int64_t jp = first_panel; jp < end_panel; jp++) {
            int64_t j = jp * GEMM_NR, nr = fastnn_min(GEMM_NR, n - j);
            const T *bp = b_pack;
            int64_t b_step = GEMM_NR;
            if (!trans_b && (nr == GEMM_NR || nr == VLEN)) { /* whole vectors (gemm_tile) */
                bp = b + pc * ldb + j;
                b_step = ldb;
            } else {
                const T *src = trans_b ? b + j * ldb + pc : b + pc * ldb + j;
                FN(pack_b_panel)(b_pack, src, ldb, trans_b, nr, kc);
            }
            const T *tile_bias = bias ? bias + j : NULL;
            for (int64_t t = 0, i = 0; t < row_tiles; t++) {
                int rows = (int)(tile_rows + (t < m % row_tiles));
                if (trans_a) /* op(A)[i][p] = a[p * lda + i] */
                    FN(gemm_tile_rows)(rows, kc, a + pc * lda + i, 1, lda, bp, b_step,
                                       c + i * ldc + j, ldc, nr, accumulate, tile_epilogue,
                                       tile_bias);
                else
                    FN(gemm_tile_rows)(rows, kc, a + i * lda + pc, lda, 1, bp, b_step,
                                       c + i * ldc + j, ldc, nr, accumulate, tile_epilogue,
                                       tile_bias);
                i += rows;
            }
            for (int64_t i = 0; i < (row_tiles ? 0 : m_direct); i += GEMM_MR) {
                if (trans_a) /* op(A)[i][p] = a[p * lda + i]: a tile's rows side by side */
                    FN(gemm_tile)(kc, a + pc * lda + i, 1, lda, bp, b_step, c + i * ldc + j,
                                  ldc, GEMM_MR, nr, accumulate, tile_epilogue, tile_bias);
                else if (a_halves)
                    FN(gemm_tile_halves)(kc, a + i * lda + pc, lda, bp, b_step, c + i * ldc + j,
                                         ldc, nr, accumulate, tile_epilogue, tile_bias);
                else /* op(A)[i][p] = a[i * lda + p] */
                    FN(gemm_tile)(kc, a + i * lda + pc, lda, 1, bp, b_step, c + i * ldc + j,
                                  ldc, GEMM_MR, nr, accumulate, tile_epilogue, tile_bias);
            }
            for (int64_t i = m_direct; i < m; i += GEMM_MR)
                FN(gemm_tile)(kc, a_pack + (i - m_direct) * kc, 1, GEMM_MR, bp, b_step,
                              c + i * ldc + j, ldc, fastnn_min(GEMM_MR, m - i), nr, accumulate,
                              tile_epilogue, tile_bias);
        }
    }
    return FASTNN_OK;
}

/* Rows i0..i1-1 of C += the `count` partial products in `partials` (each m x n, row stride
 * n), then the epilogue: the last step of a GEMM split along K. */
static void FN(gemm_add_partials)(T *c, int64_t ldc, const T *partials, int count, int64_t m,
                                  int64_t n, int64_t i0, int64_t i1,
                                  const fastnn_epilogue *epilogue) {
    const T *bias = epilogue ? (const T *)epilogue->bias : NULL;
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = 0; j < n; j += VLEN) {
            int64_t cols = n - j;
            VEC r = V(load_part)(c + i * ldc + j, cols, 0);
            for (int q = 0; q < count; q++)
                r = V(add)(r, V(load_part)(partials + q * m * n + i * n + j, cols, 0));
            if (epilogue)
                r = FN(activate)(V(add)(r, V(load_part)(bias + j, cols, 0)),
                                 epilogue->activation, (T)epilogue->alpha);
            V(store_part)(c + i * ldc + j, r, cols);
        }
}

/* Rows i0..i1-1 of C (m x n) = the sum of the `count` products C^T (n x m, row stride m) in
 * `parts`, then the epilogue: the last step of a product computed as C^T (the plan's
 * `transposed` IN_PLACE and SPLIT_K, for a C of few columns). */
static void FN(gemm_gather_transposed)(T *c, int64_t ldc, const T *parts, int count, int64_t m,
                                       int64_t n, int64_t i0, int64_t i1,
                                       const fastnn_epilogue *epilogue) {
    const T *bias = epilogue ? (const T *)epilogue->bias : NULL;
    for (int64_t i = i0; i < i1; i++) {
        T *ci = c + i * ldc;
        for (int64_t j = 0; j < n; j++) {
            T s = parts[j * m + i];
            for (int q = 1; q < count; q++) s += parts[(int64_t)q * m * n + j * m + i];
            ci[j] = s;
        }
        if (epilogue)
            for (int64_t j = 0; j < n; j += VLEN) {
                int64_t cols = n - j;
                VEC r = V(add)(V(load_part)(ci + j, cols, 0), V(load_part)(bias + j, cols, 0));
                V(store_part)(ci + j, FN(activate)(r, epilogue->activation, (T)epilogue->alpha),
                              cols);
            }
    }
}

/* The panels first_panel..end_panel-1 (of NR rows of C) of C^T = op(B)^T op(A)^T (n x m) into
 * ct (row stride m), by gemm_columns_thread with the operands' roles and transposes swapped:
 * for a C of at most half a panel of columns, whose tiles would be one vector wide, the
 * tiles of C^T are a whole panel wide. A tile one vector wide loads a broadcast of A for each
 * multiply-add, and ran at about 65% of the speed of one two vectors wide (float32, one
 * thread: 32 x 1024 x 16 with 32 columns instead of 16 took 1.3 times as long, not 2);
 * gemm_plan.c has the figures of the plan's choice. */
static int FN(gemm_columns_transposed)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda,
                                       int trans_a, const T *b, int64_t ldb, int trans_b, T *ct,
                                       int64_t first_panel, int64_t end_panel) {
    return FN(gemm_columns_thread)(n, m, k, b, ldb, !trans_b, a, lda, !trans_a, ct, m, NULL,
                                   first_panel, end_panel);
}

/* The next of the `count` chunks of a parallel region's work (SMALL's column chunks, SPLIT_K's
 * parts) for thread t of a team of `team` (t < team <= owners), shared out by
 * fastnn_shares_set(shares, owners, count), or -1 when none is left for it. A thread takes its
 * own share's chunks first, so on a quiet machine each thread takes the same chunks call after
 * call and its part of the big operand stays in its own L2 between calls where it fits (a
 * shared counter handed each call's first chunk to whichever thread came first: gemm_plan.c
 * has the figures). What is left of the others' shares it takes only with more chunks than
 * owners (an operand read from L3 whatever the split: the plan's rule), so that a thread the
 * machine holds up leaves its chunks to the others, or in a team smaller than the owners (as
 * nested or limited OpenMP gives). With one chunk a thread, taking a late thread's chunk lost
 * on a quiet machine (1 x 256 x 2048 with B transposed, 2 threads, alternating in one process,
 * medians of 11 blocks: 17.4 us against 13.9 without; the likely reason, not measured apart:
 * both parts then pass through one L2, and the next call reads them from L3 again). *q, 0 at
 * the thread's start, is fastnn_shares_next's. */
static inline int64_t FN(gemm_chunk_next)(fastnn_share *shares, int owners, int64_t count,
                                          int team, int t, int *q) {
    if (count > owners || team < owners) return fastnn_shares_next(shares, owners, t, q);
    return fastnn_share_claim(shares + t, 1);
}

/* Few rows and a small C (the plan's SPLIT_K: a layer's forward pass over a batch, neither
 * operand transposed, or a C of one panel of columns with a long K, either transposed; and
 * the SMALL path's C' of a few rows whose B' is read by its rows, row_kernels): each part of
 * K, k0..k1-1 (one a thread, or for row_kernels up to 4 a thread), is computed into C (the
 * first) or a partial buffer (or, for a C of few columns, its C^T into a partial buffer);
 * after one barrier each thread adds up a share of the rows and applies the epilogue.
 * Splitting K rather than columns makes each thread read only the rows of B that it wrote
 * itself in the optimizer step before (which splits the weights by rows too): splitting
 * columns made each read half of its columns from the other core's cache, which cost the
 * batch-32 forward pass of a 784-256 layer 40% of its time. */
static int FN(gemm_small_thread)(int64_t m, int64_t k, const T *a, int64_t a_rs, int64_t a_cs,
                                 const T *b, int64_t b_rs, int64_t b_cs, T *c, int64_t c_rs,
                                 int64_t c_cs, int64_t j0, int64_t j1,
                                 const fastnn_epilogue *epilogue);

/* Part q of the `parts` of a split-K product, its K rows k0..k1-1: into C (q = 0) or partial
 * q - 1; or, `transposed`, its C^T into partial q. row_kernels: by the SMALL path's row
 * kernels (gemm_small_thread over all of C''s columns), else by IN_PLACE's tiles. */
static int FN(split_k_part)(int64_t q, int64_t parts, int64_t m, int64_t n, int64_t k,
                            const T *a, int64_t lda, int trans_a, const T *b, int64_t ldb,
                            int trans_b, T *c, int64_t ldc, T *partials, int transposed,
                            int row_kernels) {
    int64_t k0 = k * q / parts, k1 = k * (q + 1) / parts;
    const T *a0 = trans_a ? a + k0 * lda : a + k0, *b0 = trans_b ? b + k0 : b + k0 * ldb;
    T *dst = transposed ? partials + q * m * n : q == 0 ? c : partials + (q - 1) * m * n;
    int64_t ld = q == 0 && !transposed ? ldc : n;
    if (row_kernels) {
        /* op(A)[i][p] = a0[i * a_rs + p * a_cs], op(B)[p][j] = b0[p * b_rs + j * b_cs] */
        int64_t a_rs = trans_a ? 1 : lda, a_cs = trans_a ? lda : 1;
        int64_t b_rs = trans_b ? 1 : ldb, b_cs = trans_b ? ldb : 1;
        if (!transposed)
            return FN(gemm_small_thread)(m, k1 - k0, a0, a_rs, a_cs, b0, b_rs, b_cs, dst, ld, 1,
                                         0, n, NULL);
        /* C^T (n x m, row stride m) = op(B)^T @ op(A)^T */
        return FN(gemm_small_thread)(n, k1 - k0, b0, b_cs, b_rs, a0, a_cs, a_rs, dst, m, 1, 0,
                                     m, NULL);
    }
    if (transposed)
        return FN(gemm_columns_transposed)(m, n, k1 - k0, a0, lda, trans_a, b0, ldb, trans_b,
                                           dst, 0, fastnn_ceil_div(m, GEMM_NR));
    return FN(gemm_columns_thread)(m, n, k1 - k0, a0, lda, trans_a, b0, ldb, trans_b, dst, ld,
                                   NULL, 0, fastnn_ceil_div(n, GEMM_NR));
}

/* Rows i0..i1-1 of C from the `parts` parts of a split-K product (split_k_part), added in
 * their order. */
static void FN(split_k_sum)(T *c, int64_t ldc, const T *partials, int parts, int64_t m,
                            int64_t n, int64_t i0, int64_t i1, const fastnn_epilogue *epilogue,
                            int transposed) {
    if (transposed)
        FN(gemm_gather_transposed)(c, ldc, partials, parts, m, n, i0, i1, epilogue);
    else
        FN(gemm_add_partials)(c, ldc, partials, parts - 1, m, n, i0, i1, epilogue);
}

/* The plan's SPLIT_K: its k_chunks parts, each thread its own ones first (gemm_chunk_next),
 * then, after one barrier, each thread adds up a share of C's rows. The bits depend on the
 * parts alone, not on which thread computed which. */
static int FN(gemm_split_k)(const fastnn_gemm_plan *plan, int64_t m, int64_t n, int64_t k,
                            const T *a, int64_t lda, int trans_a, const T *b, int64_t ldb,
                            int trans_b, T *c, int64_t ldc, const fastnn_epilogue *epilogue) {
    int threads = plan->threads, parts = plan->k_chunks, transposed = plan->transposed;
    int row_kernels = plan->row_kernels;
    T *partials = fastnn_scratch(SCRATCH_GEMM_PARTIAL,
                                 (size_t)(parts - !transposed) * m * n * sizeof(T));
    if (!partials) return FASTNN_OUT_OF_MEMORY;
    int status = FASTNN_OK;
    if (fastnn_contended()) { /* a busy machine: the same parts and sums on this thread */
        for (int q = 0; q < parts && status == FASTNN_OK; q++)
            status = FN(split_k_part)(q, parts, m, n, k, a, lda, trans_a, b, ldb, trans_b, c,
                                      ldc, partials, transposed, row_kernels);
        if (status == FASTNN_OK)
            FN(split_k_sum)(c, ldc, partials, parts, m, n, 0, m, epilogue, transposed);
        return status;
    }
    fastnn_share shares[threads];
    fastnn_shares_set(shares, threads, parts);
    int64_t start = fastnn_now_ns(), done = 0;
    int team_cpu = fastnn_team_cpu();
#pragma omp parallel num_threads(threads)
    {
        fastnn_team_join(team_cpu);
        unsigned fp = fastnn_fp_enter();
        int t = fastnn_team_index(), team = fastnn_team_size();
        int at = 0;
        for (int64_t q; (q = FN(gemm_chunk_next)(shares, threads, parts, team, t, &at)) >= 0;)
            if (FN(split_k_part)(q, parts, m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc,
                                 partials, transposed, row_kernels) != FASTNN_OK) {
#pragma omp atomic write
                status = FASTNN_OUT_OF_MEMORY;
            }
#pragma omp barrier
        int seen;
#pragma omp atomic read
        seen = status;
        if (seen == FASTNN_OK)
            FN(split_k_sum)(c, ldc, partials, parts, m, n, m * t / team, m * (t + 1) / team,
                            epilogue, transposed);
        fastnn_fp_leave(fp);
        if (t == 0) done = fastnn_now_ns();
    }
    fastnn_team_report(start, done, fastnn_now_ns());
    return status;
}

/* The stored rows of the next B block (not transposed: kc rows of nc numbers from b, ldb apart)
 * that tile t of this block's `tiles` asks for into L2 (PREFETCHT1) while the tiles run: packing
 * it then reads L2 or L3 rather than waiting for memory. gemm_packed_thread does this where its
 * columns of B do not fit in L2 (b_ahead); pack_b_block's own GEMM_B_AHEAD prefetch still runs
 * (the first block is asked for by nothing else). Zen 4 (1 MB L2 a core, B blocks of 576 float32
 * columns), float32, 2 threads, the two builds' C entries alternating call by call in one process
 * after 0.2 s pauses, medians of 9 rounds, against none: `nn` 128 x 4096 x 4096 1.05-1.06x (three
 * runs; float64 1.04x), 256 x 2048 x 2048 1.01-1.04x (float64 1.03x), 1024 x 1024 x 1024
 * 1.00-1.01x; 512 x 2048 x 4096 0.98-0.99x, 1024 x 2048 x 256 0.995x. PREFETCHT0 1.01x, PREFETCHT2
 * 1.03x, PREFETCHNTA 0.99x at 128 x 4096 x 4096; B blocks of 384 KB (so that two fit in L2) or
 * without pack_b_block's prefetch when the block was asked for already: no better. With B
 * transposed (its stored rows of kc numbers are runs the hardware prefetchers follow) `nt` 128 x
 * 4096 x 4096 0.92-1.01x, 256 x 2048 x 2048 0.99-1.02x: not done there. The fifty-sixth session's
 * trial on Zen 3 (~10 lines asked for before each tile) did not lower packing's share; this one is
 * not measured on Zen 3 or Sapphire Rapids. */
static inline void FN(prefetch_b_share)(const T *b, int64_t ldb, int64_t kc, int64_t nc,
                                        int64_t t, int64_t tiles) {
    for (int64_t p = kc * t / tiles; p < kc * (t + 1) / tiles; p++)
        fastnn_prefetch_lines_to(b + p * ldb, nc * (int64_t)sizeof(T), 1);
}

/* The work of one thread of the PACKED path: rows i0..i1-1 and columns j0..j1-1 of C, which
 * has m rows (the loop nest of the header comment; the threads form the grid of gemm_plan.h).
 * The packed B block (KC x NC) stays in L2 and each A micro-panel (MR x KC) in L1 while all
 * the B micro-panels of the block stream past it from L2: the A micro-panel is packed just before
 * its tiles, so its transposes and its reads from L3 interleave with the arithmetic rather
 * than stall it in a packing phase of their own. Against packing an L2 block of A and reusing
 * each B micro-panel over it (as BLIS does), in alternating calls (median ratio of the two
 * times): 1024x784x256 2.4% faster, 784x1024x256 (A transposed) 2.0%, 1024^3 4.8%, 2048^3
 * 7.9%. Reading A's rows in place or copied untransposed, the micro-kernel's broadcasts from
 * 14 rows made it 3-4% slower than the transposes cost.
 * Each thread packs its own copy of its columns of each B block: every panel of B then serves
 * all of the thread's rows, which pays for the copy (reading B in place instead, its rows a
 * row stride apart, was 1% slower for 1024x784x256 and 18% for 1024x1000x1000). Packing B
 * once for all threads would cost a barrier after each block's packing, where a thread slowed
 * by the machine's other load holds up the rest, and half of each packed block read from the
 * other core's cache. Without it, the threads never wait for each other; 784x128x256
 * (A transposed) took 187 us instead of 212, 784x32x256 46 instead of 63. When the threads
 * split the columns (a wide B and few rows), no part of B is packed twice. */
static int FN(gemm_packed_thread)(int64_t m, int64_t k, const T *a, int64_t lda, int trans_a,
                                  const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                                  const fastnn_epilogue *epilogue, int64_t i0, int64_t i1,
                                  int64_t j0, int64_t j1) {
    if (i0 >= i1 || j0 >= j1) return FASTNN_OK;
    int64_t kc_max = FN(gemm_kc)(k);
    int64_t nc_max = FN(gemm_nc)(j1 - j0, kc_max);
    /* A kept packed across the B blocks (FASTNN_GEMM_A_REUSE_BLOCKS, gemm_plan.h): mc_max
     * rows of A a K block, each micro-panel packed before its tiles of the first B block, as
     * below, and read again for the others; else one micro-panel (or group) at a time, packed
     * again for each B block. */
    int64_t mc_max = 0;
    if (fastnn_ceil_div(j1 - j0, nc_max) >= FASTNN_GEMM_A_REUSE_BLOCKS)
        mc_max = fastnn_min(fastnn_ceil_div(i1 - i0, GEMM_MR),
                            fastnn_max(GEMM_A_T_GROUP, fastnn_gemm_a_block_panels(
                                                           (int64_t)sizeof(T), kc_max, GEMM_MR))) *
                 GEMM_MR;
    /* A transposed: GEMM_A_T_GROUP micro-panels packed at once (pack_a_group_t), so that each
     * line of A is read once: packed one at a time, the kc lines of a panel (for M = 4096 all
     * 16 KB apart, in one set of L1) were evicted before the next panel read the rest of them. */
    int64_t a_group = trans_a ? GEMM_A_T_GROUP : 1;
    int64_t a_rows = mc_max ? mc_max : a_group * GEMM_MR;
    T *a_pack = fastnn_scratch(SCRATCH_GEMM_A, (size_t)(a_rows * kc_max) * sizeof(T));
    T *b_pack = fastnn_scratch(SCRATCH_GEMM_B, (size_t)kc_max * nc_max * sizeof(T));
    /* B's rows asked for ahead where this thread's columns of B do not fit in L2 */
    int b_ahead = (double)k * (double)(j1 - j0) * sizeof(T) > (double)fastnn_l2_bytes();
    if (!a_pack || !b_pack) return FASTNN_OUT_OF_MEMORY;
    const T *bias = epilogue ? (const T *)epilogue->bias : NULL;

    /* Without reuse: jc outer, so each K block's C tiles of one B block stay in cache across
     * the K blocks; with it, pc outer, and each B block packed once per block of A rows. */
    int64_t jc_step = mc_max ? j1 - j0 : nc_max, ic_step = mc_max ? mc_max : i1 - i0;
    for (int64_t jc_outer = j0; jc_outer < j1; jc_outer += jc_step)
        for (int64_t pc = 0; pc < k; pc += kc_max) {
            int64_t kc = fastnn_min(kc_max, k - pc);
            int accumulate = pc > 0;
            const fastnn_epilogue *tile_epilogue = pc + kc == k ? epilogue : NULL;
            for (int64_t ic = i0; ic < i1; ic += ic_step) {
                int64_t ie = fastnn_min(i1, ic + ic_step);
                for (int64_t jc = jc_outer; jc < fastnn_min(j1, jc_outer + jc_step);
                     jc += nc_max) {
                    int64_t nc = fastnn_min(nc_max, j1 - jc);
                    int64_t n_panels = fastnn_ceil_div(nc, GEMM_NR);
                    if (trans_b)
                        for (int64_t jp = 0; jp < n_panels; jp++) {
                            int64_t j = jc + jp * GEMM_NR;
                            FN(pack_b_panel)(b_pack + jp * GEMM_NR * kc, b + j * ldb + pc, ldb,
                                             trans_b, fastnn_min(GEMM_NR, j1 - j), kc);
                        }
                    else
                        FN(pack_b_block)(b_pack, b + pc * ldb + jc, ldb, nc, kc, b_ahead);
                    int pack = !mc_max || jc == jc_outer;
                    /* the next B block in this loop nest's order (-1: none asked for) */
                    int64_t next_pc = -1, next_jc = jc_outer;
                    if (b_ahead && !trans_b) {
                        if (jc + nc_max < fastnn_min(j1, jc_outer + jc_step))
                            next_pc = pc, next_jc = jc + nc_max;
                        else if (ic + ic_step < i1)
                            next_pc = pc;
                        else if (pc + kc_max < k)
                            next_pc = pc + kc_max;
                        else if (jc_outer + jc_step < j1)
                            next_pc = 0, next_jc = jc_outer + jc_step;
                    }
                    int64_t tiles = fastnn_ceil_div(ie - ic, GEMM_MR) * n_panels, tile = 0;
                    for (int64_t i = ic; i < ie; i += GEMM_MR) {
                        int64_t mr = fastnn_min(GEMM_MR, ie - i);
                        int64_t slot = mc_max ? (i - ic) / GEMM_MR : (i - ic) / GEMM_MR % a_group;
                        T *ap = a_pack + slot * GEMM_MR * kc;
                        if (pack && !trans_a)
                            FN(pack_a_panel)(ap, a + i * lda + pc, lda, 0, mr, kc);
                        else if (pack && (i - ic) / GEMM_MR % a_group == 0)
                            FN(pack_a_group_t)(ap, a + pc * lda + i, lda,
                                               fastnn_min(a_group * GEMM_MR, ie - i), kc, m - i);
                        for (int64_t jp = 0; jp < n_panels; jp++) {
                            int64_t j = jc + jp * GEMM_NR;
                            FN(gemm_tile)(kc, ap, 1, GEMM_MR, b_pack + jp * GEMM_NR * kc,
                                          GEMM_NR, c + i * ldc + j, ldc, mr,
                                          fastnn_min(GEMM_NR, j1 - j), accumulate,
                                          tile_epilogue, bias ? bias + j : NULL);
                            if (next_pc >= 0)
                                FN(prefetch_b_share)(b + next_pc * ldb + next_jc, ldb,
                                                     fastnn_min(kc_max, k - next_pc),
                                                     fastnn_min(nc_max, j1 - next_jc), tile++,
                                                     tiles);
                        }
                    }
                }
            }
        }
    return FASTNN_OK;
}

/* ---- The SMALL path: at most FASTNN_GEMM_SMALL rows of C' (any rows for the dot products:
 * gemm_plan.c gives it a C of few columns with B transposed) ----
 * C' (m' x n') = A' (m' x k) @ B' (k x n'), each read through a row and a column stride:
 * A'[r][p] = a[r * a_rs + p * a_cs], B'[p][j] = b[p * b_rs + j * b_cs], C'[r][j] =
 * c[r * c_rs + j * c_cs]. C' is C, or C^T when C has few columns (then A' = op(B)^T and
 * B' = op(A)^T), so one kernel serves a single sample (M = 1) and a single output (N = 1).
 * A' is read in place by the row kernels (its elements are broadcast one at a time, so a
 * transposed A' costs nothing: small_a), and copied into a contiguous block (m' x k,
 * zero-padded to whole vectors) for the dot products only; B', the big operand, is read once:
 *  - by its rows when they are contiguous (b_cs = 1): for a chunk of columns, the m' rows of
 *    C' are accumulated in an L1 buffer while the rows of B' stream past, four at a time, each
 *    a long contiguous run (small_axpy); or, from four rows of C' on and with B' in L2, in
 *    registers over all of K, a block of two vectors of columns at a time (small_tile);
 *  - by dot products when its columns are contiguous (b_rs = 1): four columns of B' at a
 *    time against up to four rows of A', in registers, summed across lanes at the end. */

/* Bytes of the accumulators of one chunk of columns (they stay in L1 with the rows of B'),
 * and of a packed chunk of B' (below). */
#define GEMM_SMALL_ACC_BYTES (16 * 1024)
/* Longest K, and fewest rows of C', for which a B' with contiguous columns is packed into rows
 * rather than read by dot products (below). */
#define GEMM_SMALL_PACK_K VLEN
#define GEMM_SMALL_PACK_ROWS 4
/* small_axpy asks for the lines of the rows of B' this far ahead of the four it reads, when
 * B' is larger than half of L2 or its rows are not on cache lines. Each chunk of columns reads
 * a short run of every row of B' (2 KB of an 8 KB row: 1 x 2048 x 2048 on two threads), a new
 * 4 KB page every run, which the hardware prefetch does not follow far enough. Float32, one
 * process per setting, three runs each, medians of 9 blocks, before (no prefetch) -> 8 rows
 * ahead: 1 x 2048 x 2048 180-282 -> 164-178 us (NumPy 149-183), 1 x 2048 x 256 31-36 -> 27-31
 * us (NumPy 23-25); 1 x 784 x 256, 4 x 1024 x 1024 and 8 x 4096 x 512 the same within the
 * noise; 16 rows ahead no better (Zen 5). A B' that stays in L2 gains nothing from it and
 * loses the load slots (Sapphire Rapids, 2 threads, alternating in one process, operands
 * 64-byte aligned, without it there: 1 x 256 x 1024 14 -> 9 us, 1 x 1024 x 256 11 -> 8.5, 1 x
 * 784 x 256 1.29x, 1 x 64 x 1024 1.48x; with rows 16 bytes off a line, where a vector reads
 * two lines, 0.93-0.95x: kept there). A B' from memory is asked for GEMM_SMALL_AHEAD_FAR rows
 * ahead instead (Sapphire Rapids, float32, 2 threads, alternating in one process, same bits,
 * 4 rows against 8: 1 x 4096 x 4096, 1 x 2048 x 4096, 1 x 4096 x 1024, 1 x 1024 x 4096 and
 * 1 x 4096 x 2048 1.06-1.07x in three runs, 2 rows 0.93-0.99x against 4, 16 and 32 rows
 * 0.89-1.01x against 8; a B' in L2 with its rows off lines lost with 4: 0.90-0.95x).
 * Runs of GEMM_SMALL_LONG_RUN_BYTES or more (a chunk of at least 8 KB of each row: one or two
 * rows of C' on one thread) of a B' that stays in half of L3 are not asked for: the hardware
 * follows them, and the prefetches only took load slots (Zen 5, one thread, float64, B' 16
 * bytes off a line, alternating in one process, medians of 11 blocks, without them against
 * with: 1 x 256 x 1024 1.10-1.27x in six runs, 1 x 1024 x 1024 1.12-1.27x; from memory they
 * still pay, 1 x 2048 x 2048 0.91-0.94x without, and for runs of 4 KB, 1 x 512 x 1024 float32
 * 0.91x; a prefetch distance of 1-2 rows instead, or into L2 only, lost 0-25%). */
#define GEMM_SMALL_AHEAD 8
#define GEMM_SMALL_AHEAD_FAR 4
#define GEMM_SMALL_LONG_RUN_BYTES 8192
/* Fewest rows of C' for which small_tile (below) replaces small_axpy. */
#define GEMM_SMALL_TILE_ROWS 4

/* A'[r][p] of the row kernels below, read in place: a[r * ld + p] (its rows contiguous,
 * cm = 0) or a[p * ld + r] (its columns contiguous, cm = 1: A transposed, or op(B)^T of C^T);
 * cm is a constant where this is inlined. Copying a transposed A' into rows first, one element
 * at a time a stride apart, took longer than the product: 8 x 1024 x 16 with A transposed,
 * 3.8 us against NumPy's 2.0 (issue 20). The sums are the same, in the same order. */
static inline __attribute__((always_inline)) T FN(small_a)(const int cm, const T *restrict a,
                                                            int64_t ld, int64_t r, int64_t p) {
    return cm ? a[p * ld + r] : a[r * ld + p];
}

/* Whether B' (k rows b_rs apart) stays in L2 between the passes of the row kernels: at most
 * half of it. */
static inline int FN(small_b_in_l2)(int64_t k, int64_t b_rs) {
    return (double)k * (double)b_rs * sizeof(T) <= 0.5 * (double)fastnn_l2_bytes();
}

/* The columns small_axpy takes first, in a vector of their own: when B''s rows all start as
 * far past a vector boundary (b_rs a whole number of cache lines, b on a whole element), the
 * columns up to the first boundary, at most w; else none. Then every other vector of B' it
 * reads lies on one cache line, not across two (NumPy's large arrays start 16 bytes past a
 * line, as glibc's mmap chunks do). The head's own vector of accumulators keeps the others on
 * lines too (see small_axpy). */
static inline int64_t FN(small_head)(const T *b, int64_t b_rs, int64_t w) {
    uintptr_t past = (uintptr_t)b % (VLEN * sizeof(T));
    if (past == 0 || past % sizeof(T) != 0 || (b_rs * (int64_t)sizeof(T)) % 64 != 0) return 0;
    return fastnn_min(w, VLEN - (int64_t)(past / sizeof(T)));
}

/* acc[r][col(j)] += sum_p A'[r][p] * B'[p][j] for j < w and r < rows (a constant <= 8 where
 * this is inlined; A' as small_a reads it), where col(j) = j below h = small_head(b, b_rs, w)
 * (the head, lanes 0..h-1 of the rows' first vector, whose other lanes take what they take)
 * and VLEN + j - h from h on (j when h = 0); B'[p] starts at b + p * b_rs and is contiguous.
 * acc's rows are acc_ld apart, room for a vector more than w. A column's sums are the same,
 * in the same order, wherever it lies. Zen 5, alternating in one process, B' 16 bytes off a
 * line, before (vectors across lines; where B' stayed in L2, the head as a chunk of its own,
 * a pass over B' of its own) -> after: one thread, float64, 1 x 256 x 1024 32.6 -> 23.5 us
 * (NumPy 25.1; on a line 22.6), 1 x 1024 x 16 2.47 -> 2.12 (NumPy 2.29), 1 x 4096 x 16 9.1
 * -> 7.7 (6.7), 2 x 1024 x 16 2.94 -> 2.40, 2 x 256 x 1024 33.6 -> 29.8; two threads (with
 * the long runs above) 1 x 256 x 1024 1.30x, 1 x 4096 x 16 1.12x, float32 1 x 1024 x 32 1.13x,
 * 2 x 1024 x 256 1.15x, float32 1 x 4096 x 4096 and float64 1 x 2048 x 2048 0.95-1.02x. */
static inline __attribute__((always_inline)) void FN(small_axpy)(
    const int rows, const int cm, int64_t k, const T *restrict arows, int64_t kp,
    const T *restrict b, int64_t b_rs, T *restrict acc, int64_t acc_ld, int64_t w) {
    int64_t h = FN(small_head)(b, b_rs, w);
    /* From here column j >= h is at acc + j, j < h at acc + j + h - VLEN. (One pointer for
     * both: a second one live across the loop made GCC keep a pointer of the loop on the
     * stack, 2 x 1024 x 256 float32 0.65-0.84x.) */
    if (h) acc += VLEN - h;
    int in_l2 = FN(small_b_in_l2)(k, b_rs);
    int long_runs = w * (int64_t)sizeof(T) >= GEMM_SMALL_LONG_RUN_BYTES &&
                    (double)k * (double)b_rs * sizeof(T) <= 0.5 * (double)fastnn_l3_bytes();
    /* B' not staying in L2, or its vectors across lines: its lines are asked for ahead */
    int far = !long_runs && (!in_l2 || (!h && (uintptr_t)b % 64 != 0) ||
                             (b_rs * (int64_t)sizeof(T)) % 64 != 0);
    int64_t distance = in_l2 ? GEMM_SMALL_AHEAD : GEMM_SMALL_AHEAD_FAR;
#define AR(q) V(set1)(FN(small_a)(cm, arows, kp, r, p + (q)))
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
        const T *b0 = b + p * b_rs;
        const T *ahead = far && p + 4 + distance <= k ? b0 + distance * b_rs : NULL;
        if (h) { /* the columns before B's first line boundary */
            VEC bv[4];
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) bv[q] = V(load_part)(b0 + q * b_rs, h, 0);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                VEC s0 = V(fma)(AR(1), bv[1], V(mul)(AR(0), bv[0]));
                VEC t0 = V(fma)(AR(3), bv[3], V(mul)(AR(2), bv[2]));
                T *dst = acc + r * acc_ld + h - VLEN;
                V(store)(dst, V(add)(V(load)(dst), V(add)(s0, t0)));
            }
        }
        for (int64_t j = h; j < w; j += VLEN) {
            int64_t cols = w - j;
            if (ahead) {
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) __builtin_prefetch(ahead + q * b_rs + j, 0, 3);
            }
            VEC bv[4];
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                bv[q] = cols >= VLEN ? V(load)(b0 + q * b_rs + j)
                                     : V(load_part)(b0 + q * b_rs + j, cols, 0);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                VEC s0 = V(fma)(AR(1), bv[1], V(mul)(AR(0), bv[0]));
                VEC t0 = V(fma)(AR(3), bv[3], V(mul)(AR(2), bv[2]));
                T *dst = acc + r * acc_ld + j;
                V(store)(dst, V(add)(V(load)(dst), V(add)(s0, t0)));
            }
        }
    }
    for (; p < k; p++) {
        const T *b0 = b + p * b_rs;
        if (h) {
            VEC bv = V(load_part)(b0, h, 0);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                T *dst = acc + r * acc_ld + h - VLEN;
                V(store)(dst, V(fma)(AR(0), bv, V(load)(dst)));
            }
        }
        for (int64_t j = h; j < w; j += VLEN) {
            int64_t cols = w - j;
            VEC bv = cols >= VLEN ? V(load)(b0 + j) : V(load_part)(b0 + j, cols, 0);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                T *dst = acc + r * acc_ld + j;
                V(store)(dst, V(fma)(AR(0), bv, V(load)(dst)));
            }
        }
    }
}

/* acc[r][0..w) = sum_p A'[r][p] * B'[p][0..w) for r < rows (a constant, 4 to 8, where
 * this is inlined; A' as small_a reads it), for four or more rows of C': each block of nv
 * vectors of columns keeps its rows x nv sums in registers over all of K, reading the block's
 * rows of B' in place (a stride apart, each line once). small_axpy passes its sums through
 * the L1 buffer every four rows of B', a load and a store per four products, which bounds it
 * by the loads once a B' element serves several rows of C'; here each B' vector feeds `rows`
 * FMAs and each broadcast of A' nv. nv is 4 where the rows x 4 sums, 4 vectors of B' and a
 * broadcast fit the vector registers (AVX-512: up to 6 rows), else 2. Four vectors against
 * two, Sapphire Rapids, float32, alternating in one process, medians of 11 blocks, same bits
 * (each column sums its K products in the same order): one thread 4 x 256 x 256 5.0 -> 3.9 us
 * (NumPy 4.3), 4 x 392 x 256 7.4 -> 5.8, 4 x 1024 x 128 1.29x, 4 x 256 x 1024 1.24x, 5 x 256 x
 * 256 1.04-1.25x, 6 x 392 x 256 1.16x; two threads 4 x 784 x 256 1.16x, 6 x 784 x 256 1.08x;
 * the batch-6 epoch of a 784-256-10 network 1.04x (batch 4 even). */
static inline __attribute__((always_inline)) void FN(small_tile)(
    const int rows, const int cm, int64_t k, const T *restrict arows, int64_t kp,
    const T *restrict b, int64_t b_rs, T *restrict acc, int64_t acc_ld, int64_t w) {
    const int nv = rows * 4 + 5 <= FASTNN_VREGS ? 4 : 2;
    for (int64_t j = 0; j < w; j += nv * VLEN) {
        int64_t cols = w - j;
        VEC sum[8][4];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) sum[r][v] = V(zero)();
        const T *bj = b + j;
        if (cols >= nv * VLEN) {
            for (int64_t p = 0; p < k; p++) {
                VEC bv[4];
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++) bv[v] = V(load)(bj + p * b_rs + v * VLEN);
#pragma GCC unroll 8
                for (int r = 0; r < rows; r++) {
                    VEC av = AR(0);
#pragma GCC unroll 4
                    for (int v = 0; v < nv; v++) sum[r][v] = V(fma)(av, bv[v], sum[r][v]);
                }
            }
        } else { /* the last block: lanes past w are neither read nor kept */
            for (int64_t p = 0; p < k; p++) {
                VEC bv[4];
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    bv[v] = cols > v * VLEN ? V(load_part)(bj + p * b_rs + v * VLEN,
                                                           cols - v * VLEN, 0)
                                            : V(zero)();
#pragma GCC unroll 8
                for (int r = 0; r < rows; r++) {
                    VEC av = AR(0);
#pragma GCC unroll 4
                    for (int v = 0; v < nv; v++) sum[r][v] = V(fma)(av, bv[v], sum[r][v]);
                }
            }
        }
        /* columns past w are not written: acc may be C itself (gemm_small_thread) */
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) {
                if (cols >= (v + 1) * VLEN)
                    V(store)(acc + r * acc_ld + j + v * VLEN, sum[r][v]);
                else if (cols > v * VLEN)
                    V(store_part)(acc + r * acc_ld + j + v * VLEN, sum[r][v], cols - v * VLEN);
            }
    }
}

/* small_axpy for a chunk of at most GEMM_SMALL_NARROW (GEMM_SMALL_NARROW_IN_L2) vectors of columns
 * (C' of a few columns): the sums stay in registers over all of K, eight rows of B' per step,
 * instead of passing through the L1 buffer every four rows, a chain of stores and reloads. Measured
 * (one thread, fastest of many calls, ops.matmul): 1 x 4096 x 16 5.0 -> 3.2 us (NumPy 3.4 on one
 * thread), 8 x 4096 x 16 10.0 -> 8.7 us. Two vectors of columns are read in the same pass over B'
 * (small_narrow_block, nv = 2): as two passes, 1 x 2048 x 32 (A transposed) went 3.8 -> 5.8 us; in
 * one pass, against small_axpy's chain through L1 before (Zen 5, 2 threads, B 16 bytes off a line,
 * alternating in one process, medians of 9): float64 1 x 4096 x 16 1.9x, 1 x 1024 x 16 1.5x, 2 x
 * 1024 x 16 1.5x, float32 1 x 2048 x 32 1.5x, 1 x 1024 x 24 2.5x. (One vector: float32 1 x 4096 x
 * 16 0.82-0.98x the previous code in repeats, still 1.2-1.4x NumPy.) */
#define GEMM_SMALL_NARROW 2
/* The same for a B' in half of L2 (small_b_in_l2, or packed): its 3-4 vectors of columns in
 * two passes over B', the second from L2, rather than through small_axpy's L1 buffer.
 * Sapphire Rapids, float32, alternating in one process, medians of 9 blocks, against
 * small_axpy: one thread 1 x 1024 x 64 1.57x (NumPy 0.87 -> 1.37x), 1 x 4096 x 64 1.14x, 2 x
 * 1024 x 64 1.23x; two threads 1 x 1024 x 48 1.21x, 1 x 2048 x 40 1.32x, 3 x 2048 x 64 1.30x,
 * 2 x 4096 x 64 1.36x (A transposed, 1 x 1024 x 64: 1.13x). Where B' is larger (1 x 16384
 * x 64, a thread's part 2 MB), the second pass came from L3: 0.69x. */
#define GEMM_SMALL_NARROW_IN_L2 4
/* With at most this many rows and the 32 vector registers of AVX-512, the 3-4 vectors of
 * columns in one pass over B' (small_narrow_block, nv = 3 or 4: the rows' sums, eight rows of
 * B' and the broadcasts of A' fit the registers), and so too where B' is not in half of L2
 * (which small_axpy took: two passes would read B' twice from L3). Each column's sums are those
 * of the two passes, in the same order: the same bits for a B' in L2. Sapphire Rapids, float32,
 * one thread (the SMALL path's choice here), alternating in one process, medians of 9 blocks,
 * against two passes, B' 16-48 bytes off a line: 1 x 2048 x 40 5.2 -> 3.6 us (NumPy 4.0), 1 x
 * 2048 x 64 6.9 -> 5.0 (NumPy 5.2; B' on lines 3.8 -> 3.5), 1 x 4096 x 64 1.40x, 2 x 2048 x 40
 * 1.19x, 2 x 4096 x 64 1.12x (15.9 -> 14.2 us; NumPy 11.4), 2 x 1024 x 48 1.14x, 1 x 256 x 64
 * 1.24x, 1 x 2048 x 48 1.11-1.42x; with three rows 0.94-1.04x (not taken). B' not in half of
 * L2, against small_axpy (the contract's tolerance: its sums add four rows of B' a step, these
 * eight): 1 x 8192 x 48 1.27-1.32x, 1 x 6000 x 50 1.33x, 2 x 8192 x 40 1.28x, 2 x 8192 x 64
 * 1.09x, 1 x 16384 x 64 and 1 x 16384 x 40 0.98-1.00x. */
#define GEMM_SMALL_NARROW_ONE_PASS(rows) ((rows) <= 2 && FASTNN_VREGS >= 32)
static inline __attribute__((always_inline)) void FN(small_narrow_block)(
    const int rows, const int cm, const int nv, int64_t k, const T *restrict arows, int64_t kp,
    const T *restrict b, int64_t b_rs, T *restrict acc, int64_t acc_ld, int64_t w) {
    /* nv (a constant, 1-4) vectors of columns, w of them in all ((nv - 1) VLEN < w <= nv VLEN) */
    const int64_t cols[4] = {fastnn_min(w, VLEN), fastnn_min(w - VLEN, VLEN),
                             fastnn_min(w - 2 * VLEN, VLEN), w - 3 * VLEN};
    VEC sum[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) sum[r][v] = V(zero)();
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            /* the rows' addresses one from the other: eight offsets q * b_rs held across the
             * loop did not fit the registers beside the second vector's (float32 1 x 4096 x
             * 16 0.8x with them) */
            const T *bq = b + p * b_rs + v * VLEN;
            VEC bv[8];
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++, bq += b_rs)
                bv[q] = cols[v] >= VLEN ? V(load)(bq) : V(load_part)(bq, cols[v], 0);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) {
                VEC s0 = V(fma)(AR(1), bv[1], V(mul)(AR(0), bv[0]));
                VEC s1 = V(fma)(AR(3), bv[3], V(mul)(AR(2), bv[2]));
                VEC s2 = V(fma)(AR(5), bv[5], V(mul)(AR(4), bv[4]));
                VEC s3 = V(fma)(AR(7), bv[7], V(mul)(AR(6), bv[6]));
                sum[r][v] = V(add)(sum[r][v], V(add)(V(add)(s0, s1), V(add)(s2, s3)));
            }
        }
    }
    for (; p < k; p++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const T *b0 = b + p * b_rs + v * VLEN;
            VEC bv = cols[v] >= VLEN ? V(load)(b0) : V(load_part)(b0, cols[v], 0);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++) sum[r][v] = V(fma)(AR(0), bv, sum[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) V(store)(acc + r * acc_ld + v * VLEN, sum[r][v]);
}
static inline __attribute__((always_inline)) void FN(small_axpy_narrow)(
    const int rows, const int cm, int64_t k, const T *restrict arows, int64_t kp,
    const T *restrict b, int64_t b_rs, T *restrict acc, int64_t acc_ld, int64_t w) {
    if (GEMM_SMALL_NARROW_ONE_PASS(rows) && w > 2 * VLEN && w <= 4 * VLEN) {
        if (w > 3 * VLEN)
            FN(small_narrow_block)(rows, cm, 4, k, arows, kp, b, b_rs, acc, acc_ld, w);
        else
            FN(small_narrow_block)(rows, cm, 3, k, arows, kp, b, b_rs, acc, acc_ld, w);
        return;
    }
    for (int64_t j = 0; j < w; j += 2 * VLEN) {
        int64_t wj = fastnn_min(2 * VLEN, w - j);
        if (wj > VLEN)
            FN(small_narrow_block)(rows, cm, 2, k, arows, kp, b + j, b_rs, acc + j, acc_ld, wj);
        else
            FN(small_narrow_block)(rows, cm, 1, k, arows, kp, b + j, b_rs, acc + j, acc_ld, wj);
    }
}
#undef AR

/* small_axpy for each number of rows (1 to 8) and layout of A' (cm), each a function of its
 * own, which SMALL_AXPY calls. Inlined into gemm_small_thread beside the other row kernels,
 * its loop over a run of columns kept its pointers to B''s rows on the stack and added to them
 * there at every vector (GCC 12), a chain through memory. Sapphire Rapids, float32, medians
 * of 9 blocks alternating in one process, same bits: 2 x 64 x 1024 3.9 -> 3.0 us (NumPy 2.7-4.9
 * in two runs), 2 x 256 x 256 4.3 -> 3.2, 1 x 256 x 256 3.3 -> 2.5, 1 x 784 x 256 (two
 * threads) 6.2-6.8 -> 4.9-5.3, 2 x 784 x 256 1.24-1.30x, 3 x 128 x 512 1.20x; the batch-1
 * epoch of a 784-256-10 network 4-6% faster. small_tile and small_axpy_narrow, made functions of
 * their own too, gained at some shapes (8 x 256 x 256 1.16x) and lost at others (4 x 784 x 256
 * 0.94x), and the batch-1 and batch-4 epochs took 3-6% longer: they stay inlined, but for
 * small_tile's 7 and 8 rows (SMALL_TILE below). */
#define SMALL_AXPY_FN(R, CM)                                                                    \
    static __attribute__((noinline)) void FN(small_axpy_##R##_##CM)(                           \
        int64_t k, const T *restrict arows, int64_t kp, const T *restrict b, int64_t b_rs,     \
        T *restrict acc, int64_t acc_ld, int64_t w) {                                           \
        FN(small_axpy)(R, CM, k, arows, kp, b, b_rs, acc, acc_ld, w);                           \
    }
#define SMALL_AXPY_FNS(CM)                                                                      \
    SMALL_AXPY_FN(1, CM) SMALL_AXPY_FN(2, CM) SMALL_AXPY_FN(3, CM) SMALL_AXPY_FN(4, CM)        \
    SMALL_AXPY_FN(5, CM) SMALL_AXPY_FN(6, CM) SMALL_AXPY_FN(7, CM) SMALL_AXPY_FN(8, CM)
SMALL_AXPY_FNS(0)
SMALL_AXPY_FNS(1)
#undef SMALL_AXPY_FNS
#undef SMALL_AXPY_FN
/* small_tile(R rows, A' layout CM, its other arguments) as SMALL_LAYOUTS calls a kernel: for 7
 * and 8 rows a function of its own. Inlined (GCC 12), the loop over K kept some of its eight
 * pointers to A''s rows in vector registers and on the stack (perf: five moves out of them
 * beside the 8 broadcasts and 16 FMAs of a row of B'); on its own it keeps every one in a
 * register. Zen 4, one thread, alternating in one process, medians of 15 blocks, same bits:
 * float32 8 x 256 x 256 13.3 -> 11.3 us (NumPy 12.8), 7 x 256 x 256 1.15x, 8 x 128 x 512 1.14x,
 * 8 x 784 x 256 (two threads, K split) 1.16x; float64 8 x 256 x 256 1.12x, 7 x 128 x 256 1.20x;
 * A transposed 1.01-1.06x; 4-6 rows (inlined either way) 0.99-1.06x. */
#define SMALL_TILE_FN(R, CM)                                                                    \
    static __attribute__((noinline)) void FN(small_tile_##R##_##CM)(                           \
        int64_t k, const T *restrict arows, int64_t kp, const T *restrict b, int64_t b_rs,     \
        T *restrict acc, int64_t acc_ld, int64_t w) {                                           \
        FN(small_tile)(R, CM, k, arows, kp, b, b_rs, acc, acc_ld, w);                           \
    }
SMALL_TILE_FN(7, 0) SMALL_TILE_FN(8, 0) SMALL_TILE_FN(7, 1) SMALL_TILE_FN(8, 1)
#undef SMALL_TILE_FN
#define SMALL_TILE_4(CM, ...) FN(small_tile)(4, CM, __VA_ARGS__)
#define SMALL_TILE_5(CM, ...) FN(small_tile)(5, CM, __VA_ARGS__)
#define SMALL_TILE_6(CM, ...) FN(small_tile)(6, CM, __VA_ARGS__)
#define SMALL_TILE_7(CM, ...) FN(small_tile_7_##CM)(__VA_ARGS__)
#define SMALL_TILE_8(CM, ...) FN(small_tile_8_##CM)(__VA_ARGS__)
#define SMALL_TILE(R, CM, ...) SMALL_TILE_##R(CM, __VA_ARGS__)
/* small_axpy(R rows, A' layout CM, its other arguments) as SMALL_LAYOUTS calls a kernel */
#define SMALL_AXPY(R, CM, ...) FN(small_axpy_##R##_##CM)(__VA_ARGS__)

/* sums[r][q] = sum_p arows[r][p] * B'[p][q] for r < rows (a constant <= 4 where this is
 * inlined), q < 4, where column q of B' is contiguous at cols[q]; row r of A' is contiguous at
 * arows + r * kp. */
static inline __attribute__((always_inline)) void FN(small_dot)(
    const int rows, int64_t k, const T *restrict arows, int64_t kp, const T *const cols[4],
    T sums[4][4]) {
    VEC acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) acc[r][q] = V(zero)();
    for (int64_t p = 0; p < k; p += VLEN) {
        int64_t left = k - p;
        VEC bv[4];
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
            bv[q] = left >= VLEN ? V(load)(cols[q] + p) : V(load_part)(cols[q] + p, left, 0);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            VEC av = left >= VLEN ? V(load)(arows + r * kp + p)
                                  : V(load_part)(arows + r * kp + p, left, 0);
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) acc[r][q] = V(fma)(av, bv[q], acc[r][q]);
        }
    }
    /* the rows x 4 sums across lanes, VLEN at a time (V(hsums): the bits of V(hsum) each),
     * into sums[r][q] = ((T *)sums)[4 r + q]; a group that would need zero vectors to fill
     * it only where V(hsums) shares its adds (FASTNN_HSUMS_SHARED), else one V(hsum) a dot.
     * One V(hsum) a dot before: Sapphire Rapids, float32, alternating in one process, same
     * bits: B transposed 4 x 64 x 256 and 4 x 256 x 256 1.16x, 3 x 128 x 512 1.14x, 8 x 64 x
     * 4096 1.29x, 4 x 1024 x 1024 1.07x, 2 rows even. */
    const int grouped = FASTNN_HSUMS_SHARED ? rows * 4 : rows * 4 / VLEN * VLEN;
#pragma GCC unroll 4
    for (int g = 0; g < grouped; g += VLEN) {
        VEC group[VLEN];
#pragma GCC unroll 16
        for (int i = 0; i < VLEN; i++)
            group[i] = g + i < rows * 4 ? acc[(g + i) / 4][(g + i) % 4] : V(zero)();
        V(store)((T *)sums + g, V(hsums)(group));
    }
#pragma GCC unroll 16
    for (int g = grouped; g < rows * 4; g++) ((T *)sums)[g] = V(hsum)(acc[g / 4][g % 4]);
}

/* Whether the dot products of m rows of C' (row stride c_rs, column stride c_cs) over k take
 * small_dot_lanes, where fma is one instruction: one row; or, float32, up to SMALL_LANES_ROWS
 * rows of C' = C^T whose columns lie one after the other (c_rs 1, c_cs m: C's rows
 * contiguous) over a K of at most SMALL_LANES_MAX_K_VECTORS vectors. Sapphire Rapids, 2
 * threads, alternating in one process, medians of 7-9 blocks, the same bits, against small_dot
 * (4 x 4 dots, their sums across lanes 16 at a time, 8 or 12 of them zeros where C' has 2 or
 * 3 rows, each sum stored alone), two runs: float32 1024 x 32 x 2 1.31-1.46x (NumPy
 * 0.76-0.79x -> 1.00-1.15x), 1024 x 32 x 4 1.26-1.28x (0.88-0.91x -> 1.11-1.16x), 1024 x 32 x
 * 3 1.10-1.22x, 1024 x 64 x 8 1.11-1.13x (0.93-1.01x -> 1.05-1.12x), 4096 x 64 x 2 1.09-1.12x,
 * 1024 x 16 x 2 1.60x, 256 x 32 x 2 1.32x; one row 4096 x 32 x 1 1.16-1.19x (the columns'
 * pointers computed, no longer read from an array).
 * With a longer K, where small_dot's loads (4 rows of A' and 4 columns of B' a step for 16
 * fmas) count more than its sums, it lost: 1024 x 128 x 4 0.99x, 1024 x 256 x 2-8 0.89-0.98x,
 * 1024 x 1024 x 3 0.77x; and float64 (whose sums small_dot does 8 at a time: no lanes of
 * zeros with 2 rows) gained nothing (1024 x 32-64 x 2-4 1.01-1.05x, 1024 x 32 x 3 0.80x). */
#define SMALL_LANES_ROWS 8
#define SMALL_LANES_MAX_K_VECTORS 4
static inline int FN(small_lanes_take)(int64_t m, int64_t k, int64_t c_rs, int64_t c_cs) {
    return FASTNN_SIMD_FUSED_FMA &&
           (m == 1 || (sizeof(T) == 4 && k <= SMALL_LANES_MAX_K_VECTORS * VLEN && c_rs == 1 &&
                       c_cs == m && m <= SMALL_LANES_ROWS));
}
#if FASTNN_SIMD_FUSED_FMA
/* The m VLEN sums of VLEN columns of C' (m <= SMALL_LANES_ROWS, a constant where this is
 * inlined), as m vectors stored at sums (which need not be aligned): lane l of vector v is
 * C'[e % m][e / m], e = v VLEN + l, the dot of row e % m of A' (contiguous at arows + r kp)
 * with column e / m of B' (contiguous at b + j b_cs), so the vectors are the VLEN columns
 * of C' one after the other, rows fastest: C^T's rows of m numbers, where C' is C^T and C's
 * rows are contiguous (a batch through an output layer of m classes, x @ W), or a row of C'
 * when m is 1. small_dot's sums (the same products, in the same order, and sums across lanes
 * of the same bits: V(hsums)), VLEN at a time (7 adds for 8 float64 sums where small_dot's
 * hsums take 24, or 15 for 16 float32 ones where small_dot, with m < 4, summed 16 lanes of
 * which 16 - 4 m were zeros), stored in one vector. Only where fma is one instruction (simd.h's
 * FASTNN_SIMD_FUSED_FMA): elsewhere GCC may contract a * b + c in one kernel and not the
 * other, and a row's bits would depend on how many rows C has.
 * One row against a transposed B, Zen 5, 2 threads, alternating with small_dot's build in
 * one process (medians of 7): K = 16, N = 1024-4096 1.3-1.8x its speed; K = 256-4096,
 * N = 16-4096 0.97-1.55x (the slowest within the host's noise); the same bits in all 50
 * shapes. Two to eight rows (C^T): see SMALL_LANES_ROWS. */
static inline __attribute__((always_inline)) void FN(small_dot_lanes)(
    const int m, int64_t k, const T *restrict arows, int64_t kp, const T *restrict b,
    int64_t b_cs, T *restrict sums) {
    int64_t kv = k - k % VLEN;
    /* eight lanes a pass over K (two passes for float32 on AVX-512; AVX2's four float64 lanes
     * in one): eight accumulators, the rows of A' they take (m <= 8, each loaded once a step)
     * and the loads of B' folded into the fmas fit the registers */
    enum { STEP = VLEN < 8 ? VLEN : 8 };
    _Static_assert(VLEN % STEP == 0, "small_dot_lanes takes lanes eight at a time");
#pragma GCC unroll 8
    for (int v = 0; v < m; v++) {
        VEC acc[VLEN];
#pragma GCC unroll 2
        for (int h = 0; h < VLEN; h += STEP) {
            const T *ar[STEP], *bc[STEP];
            VEC a8[STEP];
#pragma GCC unroll 8
            for (int q = 0; q < STEP; q++) {
                int e = v * VLEN + h + q;
                ar[q] = arows + e % m * kp;
                bc[q] = b + e / m * b_cs;
                a8[q] = V(zero)();
            }
            for (int64_t p = 0; p < kv; p += VLEN)
#pragma GCC unroll 8
                for (int q = 0; q < STEP; q++)
                    a8[q] = V(fma)(V(load)(ar[q] + p), V(load)(bc[q] + p), a8[q]);
            if (kv < k)
#pragma GCC unroll 8
                for (int q = 0; q < STEP; q++)
                    a8[q] = V(fma)(V(load_part)(ar[q] + kv, k - kv, 0),
                                   V(load_part)(bc[q] + kv, k - kv, 0), a8[q]);
#pragma GCC unroll 8
            for (int q = 0; q < STEP; q++) acc[h + q] = a8[q];
        }
        V(store)(sums + v * VLEN, V(hsums)(acc));
    }
}
#endif

/* C'[r][j] = sum_p A'[r][p] * B'[p][j] for r < m <= VLEN and j0 <= j < j1, where the columns
 * of B' are contiguous (B'[p][j] = b[p + j * b_cs]): each column of C' in one vector, its m
 * rows in lanes, summed over p in order from A'[.][p] (packed once into a vector a k) times
 * B'[p][j] broadcast, eight columns at a time (eight independent sums). It takes k fmas a
 * column of C', where the dot products (small_dot) take m k / VLEN and then sum each of the
 * m dots across lanes: so where the m rows fill most of a vector, or K is short. That is a C
 * of a few columns whose rows are contiguous (C^T, a row of A a column of C': the forward
 * pass of an output layer of 2-8 classes, x @ W) or a few rows against a transposed B.
 * small_columns_fits: k (VLEN - m) <= SMALL_COLUMNS_SUMS_COST m VLEN, i.e. the fmas of the
 * lanes past m cost at most what the sums across lanes do (about 3 fmas a dot, measured), and
 * A' packed (k vectors) at most SMALL_COLUMNS_MAX_BYTES; against small_dot_lanes' float32 sums
 * (15 adds for 16 dots), k (VLEN - m) < SMALL_COLUMNS_LANES_COST m VLEN (below). Sapphire
 * Rapids, one thread, against small_dot's dot products, alternating in one process, medians of
 * 7 blocks: float64 1024 x 16 x 8 2.23x (NumPy 0.51x -> 1.13x), 1024 x 32 x 8 1.54x, 1024 x 512 x 8
 * 1.26x, 4096 x 32 x 8 1.72x, 1024 x 16 x 6 1.59x, 1024 x 16 x 5 1.45x, 1024 x 16 x 4 1.19x, B
 * transposed 8 x 16 x 2048 1.74x (NumPy 0.87x -> 1.51x), 6 x 16 x 1024 1.59x; float32 1024 x 32 x 8
 * 1.32x, 256 x 32 x 8 1.24x, B transposed 8 x 32 x 2048 1.12x. Past the rule it lost: float64 1024
 * x 64 x 4 0.82x, 1024 x 32 x 2 0.57x; float32 1024 x 64 x 8 0.85x, 1024 x 32 x 4 0.72x. */
#define SMALL_COLUMNS_SUMS_COST 3
/* Against small_dot_lanes (`lanes`: FN(small_lanes_take)), float32: Sapphire Rapids, 2
 * threads, alternating in one process, medians of 7 blocks, small_dot_lanes against
 * small_columns: 1024 x 32 x 8 1.11x, 1024 x 32 x 7 1.11x, 1024 x 48 x 8 1.16x, 256 x 32 x 8
 * 1.08x, 4096 x 32 x 8 1.08x (ratio 2 and more); 1024 x 16 x 6, 7 and 8 (K one vector, the
 * row kernels' packed path instead: 0.86x, 0.79x, 0.88x) and 4096 x 16 x 6 0.86x (ratio
 * 1.2-1.7) small_columns'. (Float64 takes small_dot_lanes for one row only.) */
#define SMALL_COLUMNS_LANES_COST 2
#define SMALL_COLUMNS_MAX_BYTES (256 * 1024)
static inline int FN(small_columns_fits)(int64_t m, int64_t k, int lanes) {
    int64_t lanes_past_m = k * (VLEN - m);
    return m <= VLEN &&
           (lanes ? lanes_past_m < SMALL_COLUMNS_LANES_COST * m * VLEN
                  : lanes_past_m <= SMALL_COLUMNS_SUMS_COST * m * VLEN) &&
           k * VLEN * (int64_t)sizeof(T) <= SMALL_COLUMNS_MAX_BYTES;
}

/* acc[q] (q < 8): column j + q of C' (its m rows in lanes) for q < count (1 to 8; past it column
 * j's again, never stored): small_columns' sums (below), from A' packed at `at` (k vectors). */
static inline __attribute__((always_inline)) void FN(small_columns_8)(int64_t k, const T *at,
                                                                     const T *b, int64_t b_cs,
                                                                     int64_t j, int64_t count,
                                                                     VEC acc[8]) {
    const T *col[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) {
        col[q] = b + (j + (q < count ? q : 0)) * b_cs;
        acc[q] = V(zero)();
    }
    /* (B'[p][j] through memcpy: B' may lie off T's alignment, as the vector loads allow,
     * e.g. a model's input through predict) */
    for (int64_t p = 0; p < k; p++) {
        VEC av = V(load)(at + p * VLEN);
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) {
            T x;
            memcpy(&x, col[q] + p, sizeof x);
            acc[q] = V(fma)(V(set1)(x), av, acc[q]);
        }
    }
}

#if VLEN > 8
/* Columns j..j+count-1 (count <= VLEN) of the `rows` rows of C' = C (rows <= 8, a constant where
 * this is inlined; C's rows c_rs apart) from A' packed at `at` (A'[r][p] at p VLEN + r) and a B'
 * whose columns are contiguous (B'[p][j] = b[p + j * b_cs]): each VLEN rows of B' (the columns'
 * runs, VLEN x VLEN) transposed in registers, then `rows` fmas a row of B' with A'[r][p]
 * broadcast, a row of C' in each sum; small_columns_8 takes VLEN fmas a row of B' (a column of C'
 * in each, m of its lanes used). The same sums, in the same order: A'[r][p] B'[p][j] added over
 * p from zero. Where a vector has more than eight lanes: with eight, a transpose costs about what
 * the fmas it saves do. (Float32 on AVX-512, Zen 4, alternating in one process: small_columns.) */
static inline __attribute__((always_inline)) void FN(small_columns_rows)(
    const int rows, int64_t k, const T *restrict at, const T *restrict b, int64_t b_cs, int64_t j,
    int64_t count, T *restrict c, int64_t c_rs) {
    VEC acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) acc[r] = V(zero)();
    for (int64_t p0 = 0; p0 < k; p0 += VLEN) {
        int64_t kk = fastnn_min(VLEN, k - p0);
        VEC block[VLEN];
#pragma GCC unroll 16
        for (int q = 0; q < VLEN; q++)
            block[q] = q < count ? V(load_part)(b + (j + q) * b_cs + p0, kk, 0) : V(zero)();
        V(transpose)(block); /* block[p]: B'[p0 + p][j..j + VLEN) */
#pragma GCC unroll 16
        for (int p = 0; p < VLEN; p++) {
            if (p >= kk) break; /* (A' has no rows past k) */
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                acc[r] = V(fma)(V(set1)(at[(p0 + p) * VLEN + r]), block[p], acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) V(store_part)(c + r * c_rs + j, acc[r], count);
}
#endif

static int FN(small_columns)(int64_t m, int64_t k, const T *a, int64_t a_rs, int64_t a_cs,
                             const T *b, int64_t b_cs, T *c, int64_t c_rs, int64_t c_cs,
                             int64_t j0, int64_t j1) {
    T *at = fastnn_scratch(SCRATCH_GEMM_A, (size_t)k * VLEN * sizeof(T));
    if (!at) return FASTNN_OUT_OF_MEMORY;
    FN(pack_panel)(at, VLEN, a, a_cs == 1 ? a_rs : a_cs, m, k, a_cs == 1); /* A'[r][p] at p, r */
#if VLEN > 8
    if (c_cs == 1 && m <= 8) {
        /* C's rows contiguous along j (C' is C), and a vector wider than the eight columns: a
         * row of C' in a vector of VLEN columns, each VLEN rows of B' transposed in registers
         * (small_columns_rows), where each column of C' in a vector used m of its lanes, and
         * its numbers went to C one at a time (m x VLEN scalar stores; two thirds of the time
         * of a float32 8 x 16 x 1024 product with B transposed on AVX-512, perf, Zen 4). The
         * same sums. Zen 4, float32, alternating in one process, medians of 11 blocks, against
         * the stores alone made whole (two groups of eight columns transposed): B transposed 8
         * x 16 x 2048 20.4 -> 10.9 us (NumPy 33.9), 4 x 16 x 1024 2.53x, 6 x 16 x 2048 2.49x, 8
         * x 8 x 1024 1.90x, 8 x 32 x 2048 1.79x, A transposed too 8 x 16 x 4096 1.91x; and
         * those against the scalar stores: 8 x 16 x 1024 1.64x, 8 x 16 x 2048 1.59x. */
        for (int64_t j = j0; j < j1; j += VLEN) {
            int64_t count = fastnn_min(VLEN, j1 - j);
            switch (m) {
#define SMALL_COLUMNS_ROWS_CASE(R)                                                               \
    case R: FN(small_columns_rows)(R, k, at, b, b_cs, j, count, c, c_rs); break;
                SMALL_COLUMNS_ROWS_CASE(1)
                SMALL_COLUMNS_ROWS_CASE(2)
                SMALL_COLUMNS_ROWS_CASE(3)
                SMALL_COLUMNS_ROWS_CASE(4)
                SMALL_COLUMNS_ROWS_CASE(5)
                SMALL_COLUMNS_ROWS_CASE(6)
                SMALL_COLUMNS_ROWS_CASE(7)
                default: FN(small_columns_rows)(8, k, at, b, b_cs, j, count, c, c_rs); break;
#undef SMALL_COLUMNS_ROWS_CASE
            }
        }
        return FASTNN_OK;
    }
#endif
    for (int64_t j = j0; j < j1; j += 8) {
        int64_t count = fastnn_min(8, j1 - j);
        VEC acc[8];
        FN(small_columns_8)(k, at, b, b_cs, j, count, acc);
#if VLEN <= 8
        if (c_cs == 1) {
            /* C's rows contiguous along j (C' is C: rows of A against a transposed B): each
             * VLEN x VLEN block of the eight columns transposed in registers, then a row of C
             * each, rather than m numbers a column one at a time (their scalar stores were
             * half of the time of a float32 8 x 16 x 2048 product, B transposed, on AVX2) */
#pragma GCC unroll 8
            for (int h = 0; h < 8; h += VLEN) {
                if (h >= count) break;
                V(transpose)(acc + h);
                for (int64_t r = 0; r < m; r++)
                    V(store_part)(c + r * c_rs + j + h, acc[h + r], count - h);
            }
            continue;
        }
#endif
        for (int64_t q = 0; q < count; q++) {
            if (c_rs == 1 && m == VLEN) { /* (masked, float64 1024 x 16 x 8 ran 0.96-0.97x) */
                V(store)(c + (j + q) * c_cs, acc[q]);
            } else if (c_rs == 1) {
                V(store_part)(c + (j + q) * c_cs, acc[q], m);
            } else {
                T lanes[VLEN];
                V(store)(lanes, acc[q]);
                for (int64_t r = 0; r < m; r++)
                    memcpy(c + r * c_rs + (j + q) * c_cs, lanes + r, sizeof(T));
            }
        }
    }
    return FASTNN_OK;
}

/* Rows i0..i1-1, columns j0..j1-1 of C = act(S + bias), S read from src (row stride ld_src;
 * src may be c itself): the epilogue of the SMALL path. */
static void FN(gemm_epilogue_block)(T *c, int64_t ldc, const T *src, int64_t ld_src, int64_t i0,
                                    int64_t i1, int64_t j0, int64_t j1,
                                    const fastnn_epilogue *epilogue) {
    const T *bias = (const T *)epilogue->bias;
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j += VLEN) {
            int64_t cols = j1 - j;
            VEC r = V(add)(V(load_part)(src + i * ld_src + j, cols, 0),
                           V(load_part)(bias + j, cols, 0));
            V(store_part)(c + i * ldc + j, FN(activate)(r, epilogue->activation, (T)epilogue->alpha),
                          cols);
        }
}

/* Columns 0..w-1 of the m <= VLEN rows of C' in acc (row stride acc_ld) to C' = C^T, a column
 * of C' a row of C (c + j * ldc, m numbers): VLEN columns at a time, their block transposed in
 * registers (V(transpose)) and stored a row of C each, rather than m w numbers one at a time.
 * Where m fills half a vector or more: Sapphire Rapids, one thread, A transposed (the row
 * kernels), alternating in one process, the same bits: float64 1024 x 16 x 8 1.26x (NumPy
 * 0.73x -> 0.93x), 256 x 16 x 8 1.27x, 4096 x 16 x 4 1.17x, 1024 x 64 x 4 1.08x, 4096 x 32 x
 * 8 1.10x; float32 4096 x 16 x 8 1.19x; with fewer rows the transposes cost more than the
 * stores they save (float32 4096 x 16 x 2 0.58x, 1024 x 32 x 4 0.92x). */
static void FN(small_store_transposed)(int64_t m, const T *acc, int64_t acc_ld, int64_t w, T *c,
                                       int64_t ldc) {
    for (int64_t j = 0; j < w; j += VLEN) {
        int64_t count = fastnn_min(VLEN, w - j);
        VEC block[VLEN];
        for (int64_t r = 0; r < VLEN; r++)
            block[r] = r < m ? V(load_part)(acc + r * acc_ld + j, count, 0) : V(zero)();
        V(transpose)(block);
        for (int64_t q = 0; q < count; q++) V(store_part)(c + (j + q) * ldc, block[q], m);
    }
}

/* copy[r * k + p] = a[r + p * ld] (r < m) for p < the returned multiple of VLEN (the rest is
 * the caller's): the rows of an A' whose columns are contiguous (A transposed), for the dot
 * products, VLEN x VLEN blocks transposed in registers. One number at a time a stride
 * apart, the copy took as long as the dot products after it (float32 8 x 2048 x 16, A and B
 * transposed, 12-14 us against 6-7 with A not transposed: perf, Zen 4), and through
 * pack_panel (its masks and zero padding worked out a load at a time) no less. */
static int64_t FN(small_rows_of_columns)(T *restrict copy, const T *restrict a, int64_t ld,
                                         int64_t m, int64_t k) {
    int64_t p = 0;
    VEC block[VLEN];
    if (m <= VLEN) { /* (apart: as one loop with the rows a block, float32 0.7-0.9x on AVX-512) */
        for (; p + VLEN <= k; p += VLEN) {
#pragma GCC unroll 16
            for (int q = 0; q < VLEN; q++) block[q] = V(load_part)(a + (p + q) * ld, m, 0);
            V(transpose)(block);
            for (int64_t r = 0; r < m; r++) V(store)(copy + r * k + p, block[r]);
        }
        return p;
    }
    for (; p + VLEN <= k; p += VLEN)
        for (int64_t r0 = 0; r0 < m; r0 += VLEN) {
            int64_t rows = fastnn_min(VLEN, m - r0);
#pragma GCC unroll 16
            for (int q = 0; q < VLEN; q++)
                block[q] = V(load_part)(a + (p + q) * ld + r0, rows, 0);
            V(transpose)(block);
            for (int64_t r = 0; r < rows; r++) V(store)(copy + (r0 + r) * k + p, block[r]);
        }
    return p;
}

/* Columns j0..j1-1 of C' (see above). epilogue: NULL, or C' is C (c_cs == 1) and the epilogue
 * runs here on each block of columns as it is stored. Stored first and then read back by
 * gemm_epilogue_block, a row of a few columns was read by a masked vector load from the
 * narrower stores just made, which the store buffer cannot forward: that stall was a third
 * of an XOR training step's forward GEMMs (perf, Zen 4). */
static int FN(gemm_small_thread)(int64_t m, int64_t k, const T *a, int64_t a_rs, int64_t a_cs,
                                 const T *b, int64_t b_rs, int64_t b_cs, T *c, int64_t c_rs,
                                 int64_t c_cs, int64_t j0, int64_t j1,
                                 const fastnn_epilogue *epilogue) {
    if (j0 >= j1) return FASTNN_OK;
    /* (pack: below) */
    int pack = b_cs != 1 && k <= GEMM_SMALL_PACK_K && m >= GEMM_SMALL_PACK_ROWS;
    /* small_columns where it beats what would come next: pack's row kernels or the dot
     * products (small_dot_lanes or small_dot; one row as measured against small_dot, so that
     * it has the bits of a row of two: test_gemm_plan.py) */
    if (b_cs != 1 && /* (b_rs == 1) */
        FN(small_columns_fits)(m, k, !pack && m > 1 && FN(small_lanes_take)(m, k, c_rs, c_cs))) {
        int status = FN(small_columns)(m, k, a, a_rs, a_cs, b, b_cs, c, c_rs, c_cs, j0, j1);
        if (status == FASTNN_OK && epilogue)
            FN(gemm_epilogue_block)(c, c_rs, c, c_rs, 0, m, j0, j1, epilogue);
        return status;
    }
    /* Columns of B' contiguous (b_rs == 1), K one vector or less and a few rows: dot products
     * would spend more on summing each of the m x n' dots across lanes than on the products,
     * so each chunk of B' is packed into rows (VLEN x VLEN blocks transposed in registers, into
     * L1) and takes the row kernel below. The transposes cost what n' sums across lanes do, so
     * it pays from a few rows on. Measured (one thread, fastest of many calls): 8 x 16 x 4096
     * with B transposed 31.5 -> 16.4 us (NumPy 16.4), 8 x 16 x 256 3.5 -> 2.7 us; with one row
     * (1 x 16 x 2048) 5.0 -> 5.4 us, and with K of 32 or 64, 15-25% slower: not taken there. */
    if (b_cs == 1 || pack) {
        /* A' in place (small_a): by rows when they are contiguous, else by columns */
        int a_cm = a_cs != 1;
        int64_t a_ld = a_cm ? a_cs : a_rs;
        /* A chunk no wider than the columns there are: a 1 x 16 x 16 product clears 16
         * accumulators, not the 16 KB a wide one would. */
        int64_t chunk = fastnn_min(
            fastnn_max(VLEN, GEMM_SMALL_ACC_BYTES / ((int64_t)sizeof(T) * m) / VLEN * VLEN),
            fastnn_ceil_div(j1 - j0, VLEN) * VLEN);
        if (pack)
            chunk = fastnn_min(chunk, fastnn_max(VLEN, GEMM_SMALL_ACC_BYTES /
                                                           ((int64_t)sizeof(T) * k) / VLEN * VLEN));
        /* rows of the accumulators: a vector more than a chunk, for small_axpy's head */
        int64_t acc_ld = chunk + VLEN;
        T *acc = fastnn_scratch(SCRATCH_GEMM_B_PANEL, (size_t)m * acc_ld * sizeof(T));
        T *panel = pack ? fastnn_scratch(SCRATCH_GEMM_B, (size_t)k * chunk * sizeof(T)) : NULL;
        if (!acc || (pack && !panel)) return FASTNN_OUT_OF_MEMORY;
        /* Four rows or more, and this thread's B' in L2: the register tiles of small_tile.
         * Measured (one thread, fastest of 61 alternating 1 ms blocks, loaded machine): 8 x 256
         * x 256 float64 15.6 -> 9.9 us, float32 6.9 -> 4.4 us, 4 x 256 x 256 float32 4.8 -> 3.7
         * us, 6 x 777 x 129 float64 18.6 -> 14.3 us. A B' larger than L2, read a block of
         * columns at a time from memory, loses to small_axpy's long runs (8 x 256 x 1024 float64,
         * 2 MB: 67.5 -> 71.6 us), so it keeps them. */
        int tile = m >= GEMM_SMALL_TILE_ROWS &&
                   (double)k * (double)(j1 - j0) * sizeof(T) <= (double)fastnn_l2_bytes();
        /* The chunks' columns: [j0, narrow) by the row kernels, [narrow, j1) by
         * small_axpy_narrow when the last chunk is that narrow. A column's sums do not depend
         * on where small_axpy keeps it (its head, small_head): the bits do not depend on where
         * the arrays lie. They do on the kernel (small_axpy adds four rows of B' a step,
         * small_axpy_narrow eight, small_tile one), which the thread's share of the columns
         * chooses: the same bits on one thread count, the contract's tolerance across counts
         * (tests/test_determinism.py; float32 1 x 1000 x 4104 differs in 7 columns). (Before
         * small_axpy's head, the columns up to B''s first line boundary went first as a short
         * chunk of their own where B' stayed in L2, a pass over B' of their own.) */
        int64_t narrow = j0 + (j1 - j0 - 1) / chunk * chunk;
        /* (two vectors of columns for small_tile's rows stay with small_tile: float64 4 x 1024
         * x 16 0.75x, 8 x 4096 x 16 0.57x by small_axpy_narrow; four for a B' in L2,
         * GEMM_SMALL_NARROW_IN_L2, or read in one pass, GEMM_SMALL_NARROW_ONE_PASS) */
        int64_t narrow_w = (tile ? 1
                            : pack || FN(small_b_in_l2)(k, b_rs) || GEMM_SMALL_NARROW_ONE_PASS(m)
                                ? GEMM_SMALL_NARROW_IN_L2
                                : GEMM_SMALL_NARROW) *
                           VLEN;
        if (j1 - narrow > narrow_w || narrow == j0) narrow = j1;
        for (int64_t jc = j0, w = 0; jc < j1; jc += w) {
            w = fastnn_min(chunk, (jc < narrow ? narrow : j1) - jc);
            int64_t head = 0, body = 0; /* small_axpy's head (small_head), where the rest is */
            const T *bc = b + jc;
            int64_t bc_rs = b_rs;
            if (pack) { /* panel[p][j] = B'[p][jc + j], rows of whole vectors */
                bc_rs = fastnn_ceil_div(w, VLEN) * VLEN;
                FN(pack_panel)(panel, bc_rs, b + jc * b_cs, b_cs, w, k, 1);
                bc = panel;
            }
            /* kernel(R rows, A' layout CM, ...) for R = m, a constant in each case */
#define SMALL_ROWS(KERNEL, CM, FIRST)                                                        \
    switch (m) {                                                                             \
        SMALL_ROWS_##FIRST(KERNEL, CM)                                                       \
        case 5: KERNEL(5, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                 \
        case 6: KERNEL(6, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                 \
        case 7: KERNEL(7, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                 \
        default: KERNEL(8, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                \
    }
#define SMALL_ROWS_1(KERNEL, CM)                                                             \
    case 1: KERNEL(1, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                     \
    case 2: KERNEL(2, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                     \
    case 3: KERNEL(3, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;                     \
    SMALL_ROWS_4(KERNEL, CM)
#define SMALL_ROWS_4(KERNEL, CM)                                                             \
    case 4: KERNEL(4, CM, k, a, a_ld, bc, bc_rs, dst, dst_ld, w); break;
#define SMALL_LAYOUTS(KERNEL, FIRST)                                                         \
    if (a_cm) { SMALL_ROWS(KERNEL, 1, FIRST) } else { SMALL_ROWS(KERNEL, 0, FIRST) }
            T *dst = acc; /* where the kernel leaves its sums, rows dst_ld apart */
            int64_t dst_ld = acc_ld;
            int direct = 0; /* whether that is C itself */
            if (jc >= narrow || (narrow == j1 && j1 - j0 <= narrow_w)) {
                SMALL_LAYOUTS(FN(small_axpy_narrow), 1)
            } else if (tile) {
                /* C' = C without an epilogue: small_tile's sums go to C itself, not through
                 * the accumulators and a copy (a tenth of 8 x 16 x 2048: perf, Zen 4) */
                if (!epilogue && c_cs == 1) {
                    dst = c + jc;
                    dst_ld = c_rs;
                    direct = 1;
                }
                SMALL_LAYOUTS(SMALL_TILE, 4)
            } else {
                memset(acc, 0, (size_t)m * acc_ld * sizeof(T));
                SMALL_LAYOUTS(SMALL_AXPY, 1)
                head = FN(small_head)(bc, bc_rs, w);
                body = head ? VLEN : 0;
            }
#undef SMALL_LAYOUTS
#undef SMALL_ROWS_4
#undef SMALL_ROWS_1
#undef SMALL_ROWS
            if (direct) continue;
            if (epilogue) { /* C's columns jc.. from the accumulators, as they are stored */
                fastnn_epilogue columns = *epilogue;
                columns.bias = (const T *)epilogue->bias + jc;
                FN(gemm_epilogue_block)(c + jc, c_rs, acc, acc_ld, 0, m, 0, head, &columns);
                columns.bias = (const T *)columns.bias + head;
                FN(gemm_epilogue_block)(c + jc + head, c_rs, acc + body, acc_ld, 0, m, 0,
                                        w - head, &columns);
            } else if (c_rs == 1 && !head && m <= VLEN && 2 * m >= VLEN) { /* C' is C^T */
                FN(small_store_transposed)(m, acc, acc_ld, w, c + jc * c_cs, c_cs);
            } else {
                for (int64_t r = 0; r < m; r++) {
                    if (c_cs == 1) {
                        memcpy(c + r * c_rs + jc, acc + r * acc_ld, (size_t)head * sizeof(T));
                        memcpy(c + r * c_rs + jc + head, acc + r * acc_ld + body,
                               (size_t)(w - head) * sizeof(T));
                    } else {
                        for (int64_t j = 0; j < w; j++)
                            c[r * c_rs + (jc + j) * c_cs] =
                                acc[r * acc_ld + (j < head ? j : body + j - head)];
                    }
                }
            }
        }
        return FASTNN_OK;
    }
    /* b_rs == 1: dot products along the columns of B', against the rows of A', read in place
     * when they are contiguous, else copied into a contiguous block */
    const T *arows = a;
    int64_t kp = a_rs;
    if (a_cs != 1) {
        T *copy = fastnn_scratch(SCRATCH_GEMM_A, (size_t)m * k * sizeof(T));
        if (!copy) return FASTNN_OUT_OF_MEMORY;
        int64_t p0 = 0;
        if (a_rs == 1) /* columns contiguous: small_rows_of_columns */
            p0 = FN(small_rows_of_columns)(copy, a, a_cs, m, k);
        for (int64_t r = 0; r < m; r++)
            for (int64_t p = p0; p < k; p++) copy[r * k + p] = a[r * a_rs + p * a_cs];
        arows = copy;
        kp = k;
    }
    int64_t jl = j0; /* columns before jl: done by small_dot_lanes */
#if FASTNN_SIMD_FUSED_FMA
    if (FN(small_lanes_take)(m, k, c_rs, c_cs))
        for (; jl + VLEN <= j1; jl += VLEN) {
            T sums[VLEN];
            /* C''s columns jl.. in place where their m rows are contiguous, one after the
             * other: the sums go to them in whole stores. Through sums and back one
             * lane at a time, one row's columns took 1.08-1.19x the time where K is one vector
             * (Sapphire Rapids, float32, one thread, alternating in one process, medians of
             * 9-11 blocks, two runs: 1 x 16 x 1024, 2048 and 4096 with B transposed; 1 x 16 x
             * 4096 8.4 -> 7.1 us, NumPy 6.7; K = 32 and 48 the same within 3%) */
            T *to = c_cs == m ? c + jl * c_cs : sums; /* (else m is 1) */
            const T *cols = b + jl * b_cs;
            switch (m) {
                case 1: FN(small_dot_lanes)(1, k, arows, kp, cols, b_cs, to); break;
                case 2: FN(small_dot_lanes)(2, k, arows, kp, cols, b_cs, to); break;
                case 3: FN(small_dot_lanes)(3, k, arows, kp, cols, b_cs, to); break;
                case 4: FN(small_dot_lanes)(4, k, arows, kp, cols, b_cs, to); break;
                case 5: FN(small_dot_lanes)(5, k, arows, kp, cols, b_cs, to); break;
                case 6: FN(small_dot_lanes)(6, k, arows, kp, cols, b_cs, to); break;
                case 7: FN(small_dot_lanes)(7, k, arows, kp, cols, b_cs, to); break;
                default: FN(small_dot_lanes)(8, k, arows, kp, cols, b_cs, to); break;
            }
            if (c_cs != m)
                for (int q = 0; q < VLEN; q++) c[(jl + q) * c_cs] = sums[q];
        }
#endif
    for (int64_t j = jl; j < j1; j += 4) {
        int64_t count = fastnn_min(4, j1 - j);
        const T *cols[4];
        for (int q = 0; q < 4; q++) cols[q] = b + (j + (q < count ? q : 0)) * b_cs;
        for (int64_t r0 = 0; r0 < m; r0 += 4) {
            T sums[4][4];
            const T *ar = arows + r0 * kp;
            switch (fastnn_min(4, m - r0)) {
                case 1: FN(small_dot)(1, k, ar, kp, cols, sums); break;
                case 2: FN(small_dot)(2, k, ar, kp, cols, sums); break;
                case 3: FN(small_dot)(3, k, ar, kp, cols, sums); break;
                default: FN(small_dot)(4, k, ar, kp, cols, sums); break;
            }
            for (int64_t r = r0; r < fastnn_min(m, r0 + 4); r++)
                for (int64_t q = 0; q < count; q++) c[r * c_rs + (j + q) * c_cs] = sums[r - r0][q];
        }
    }
    if (epilogue) FN(gemm_epilogue_block)(c, c_rs, c, c_rs, 0, m, j0, j1, epilogue);
    return FASTNN_OK;
}

/* The SMALL path on one thread of `team`, share t: C' columns in whole vectors. */
static int FN(gemm_small)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int trans_a,
                          const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                          const fastnn_epilogue *epilogue, int transposed, int t, int team) {
    /* op(A)[i][p] = a[i * a_rs + p * a_cs], op(B)[p][j] = b[p * b_rs + j * b_cs] */
    int64_t a_rs = trans_a ? 1 : lda, a_cs = trans_a ? lda : 1;
    int64_t b_rs = trans_b ? 1 : ldb, b_cs = trans_b ? ldb : 1;
    int64_t long_side = transposed ? m : n;
    int64_t share = fastnn_ceil_div(fastnn_ceil_div(long_side, VLEN), team) * VLEN;
    int64_t j0 = fastnn_min(long_side, share * t), j1 = fastnn_min(long_side, share * (t + 1));
    int status;
    if (!transposed) {
        status = FN(gemm_small_thread)(m, k, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, 1, j0, j1,
                                       epilogue);
    } else { /* C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m) */
        status = FN(gemm_small_thread)(n, k, b, b_cs, b_rs, a, a_cs, a_rs, c, 1, ldc, j0, j1,
                                       NULL);
        if (status == FASTNN_OK && epilogue && j0 < j1)
            FN(gemm_epilogue_block)(c, ldc, c, ldc, j0, j1, 0, n, epilogue);
    }
    return status;
}


/* The micro-kernel as gemm_plan.h sees it. */
static fastnn_gemm_kernel FN(gemm_kernel)(void) {
    fastnn_gemm_kernel kernel = {(int64_t)sizeof(T), GEMM_MR, GEMM_NR, GEMM_KC, GEMM_FEW_ROWS,
                                 GEMM_B_BLOCK_BYTES};
    return kernel;
}

int FN(fastnn_gemm_plan)(int64_t m, int64_t n, int64_t k, int trans_a, int trans_b,
                         int *threads, int *row_threads, int *col_threads) {
    fastnn_gemm_kernel kernel = FN(gemm_kernel)();
    fastnn_gemm_plan plan = fastnn_gemm_plan_for(m, n, k, trans_a, trans_b, &kernel);
    *threads = plan.threads;
    *row_threads = plan.row_threads;
    *col_threads = plan.col_threads;
    return (int)plan.path;
}

/* Share t of a team of `team` threads of the plan's SMALL, IN_PLACE or PACKED path (t = 0 of
 * 1: the whole product). */
static int FN(gemm_share)(const fastnn_gemm_plan *plan, int t, int team, int64_t m, int64_t n,
                          int64_t k, const T *a, int64_t lda, int trans_a, const T *b,
                          int64_t ldb, int trans_b, T *c, int64_t ldc,
                          const fastnn_epilogue *epilogue) {
    int64_t m_panels = fastnn_ceil_div(m, GEMM_MR), n_panels = fastnn_ceil_div(n, GEMM_NR);
    if (plan->path == FASTNN_GEMM_PATH_SMALL)
        return FN(gemm_small)(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue,
                              plan->transposed, t, team);
    if (plan->path == FASTNN_GEMM_PATH_IN_PLACE && plan->transposed) {
        /* this share's rows of C, as columns of C^T: panels of NR */
        int64_t panels = fastnn_ceil_div(m, GEMM_NR);
        int64_t p0 = panels * t / team, p1 = panels * (t + 1) / team;
        T *ct = fastnn_scratch(SCRATCH_GEMM_T, (size_t)m * n * sizeof(T));
        if (!ct) return FASTNN_OUT_OF_MEMORY;
        int status = FN(gemm_columns_transposed)(m, n, k, a, lda, trans_a, b, ldb, trans_b, ct,
                                                 p0, p1);
        if (status == FASTNN_OK)
            FN(gemm_gather_transposed)(c, ldc, ct, 1, m, n, p0 * GEMM_NR,
                                       fastnn_min(m, p1 * GEMM_NR), epilogue);
        return status;
    }
    if (plan->path == FASTNN_GEMM_PATH_IN_PLACE && plan->split_rows) {
        /* this share's rows of C (A not transposed), all its columns; each element sums its
         * K products in the same order whatever the rows around it: the bits of one thread */
        int64_t i0 = m * t / team, i1 = m * (t + 1) / team;
        return FN(gemm_columns_thread)(i1 - i0, n, k, a + i0 * lda, lda, trans_a, b, ldb,
                                       trans_b, c + i0 * ldc, ldc, epilogue, 0, n_panels);
    }
    if (plan->path == FASTNN_GEMM_PATH_IN_PLACE)
        return FN(gemm_columns_thread)(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc,
                                       epilogue, n_panels * t / team, n_panels * (t + 1) / team);
    /* PACKED: this thread's cell of the grid, an equal share of the row micro-panels (1024
     * rows over 2 threads: 37 + 37 panels of 14) and of the column panels */
    int rows = plan->row_threads, cols = plan->col_threads;
    if (team != rows * cols) { /* a smaller team than asked for (nested or limited OpenMP) */
        rows = team;
        cols = 1;
    }
    int tr = t / cols, tc = t % cols;
    int64_t i0 = m_panels * tr / rows * GEMM_MR;
    int64_t i1 = fastnn_min(m, m_panels * (tr + 1) / rows * GEMM_MR);
    int64_t j0 = n_panels * tc / cols * GEMM_NR;
    int64_t j1 = fastnn_min(n, n_panels * (tc + 1) / cols * GEMM_NR);
    return FN(gemm_packed_thread)(m, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue, i0,
                                  i1, j0, j1);
}

/* The PACKED path on one thread of a team: the chunks of C (the plan's row_chunks x
 * col_chunks cells, gemm_plan.h), each taken from the shared counter *next, until none is
 * left. A thread held up by the machine's other load takes fewer; the bits are those of one
 * cell (gemm_share), as each element sums its K blocks in the same order in any chunk. */
static int FN(gemm_packed_chunks)(const fastnn_gemm_plan *plan, int64_t *next, int64_t m,
                                  int64_t n, int64_t k, const T *a, int64_t lda, int trans_a,
                                  const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                                  const fastnn_epilogue *epilogue) {
    int64_t m_panels = fastnn_ceil_div(m, GEMM_MR), n_panels = fastnn_ceil_div(n, GEMM_NR);
    int64_t rows = plan->row_chunks, cols = plan->col_chunks;
    int status = FASTNN_OK;
    while (status == FASTNN_OK) {
        int64_t q = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
        if (q >= rows * cols) break;
        int64_t tr = q / cols, tc = q % cols;
        int64_t i0 = m_panels * tr / rows * GEMM_MR;
        int64_t i1 = fastnn_min(m, m_panels * (tr + 1) / rows * GEMM_MR);
        int64_t j0 = n_panels * tc / cols * GEMM_NR;
        int64_t j1 = fastnn_min(n, n_panels * (tc + 1) / cols * GEMM_NR);
        status = FN(gemm_packed_thread)(m, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue,
                                        i0, i1, j0, j1);
    }
    return status;
}

/* fastnn_gemm in the kernels' floating-point mode (the caller's thread has entered it). */
static int FN(gemm_planned)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda,
                            int trans_a, const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                            const fastnn_epilogue *epilogue) {
    fastnn_gemm_kernel kernel = FN(gemm_kernel)();
    fastnn_gemm_plan plan = fastnn_gemm_plan_for(m, n, k, trans_a, trans_b, &kernel);
    if (plan.path == FASTNN_GEMM_PATH_SPLIT_K) /* on a busy machine, its parts in turn */
        return FN(gemm_split_k)(&plan, m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc,
                                epilogue);
    int status = FASTNN_OK; /* any thread's FASTNN_OUT_OF_MEMORY */
    /* On a busy machine (internal.h), this thread alone: SMALL and IN_PLACE run each thread's
     * share in turn, as a share's width picks SMALL's kernel (its B' in L2 or not) and so its
     * sums' order; PACKED's cells sum each element's K products in the same blocks whatever
     * the grid, so it runs as one cell. */
    if (plan.threads > 1 && fastnn_contended()) {
        if (plan.path == FASTNN_GEMM_PATH_PACKED)
            plan.threads = plan.row_threads = plan.col_threads = 1;
        else {
            int parts = plan.path == FASTNN_GEMM_PATH_SMALL ? plan.col_chunks : plan.threads;
            for (int t = 0; t < parts && status == FASTNN_OK; t++)
                status = FN(gemm_share)(&plan, t, parts, m, n, k, a, lda, trans_a, b, ldb,
                                        trans_b, c, ldc, epilogue);
            return status;
        }
    }
    if (plan.threads == 1)
        return FN(gemm_share)(&plan, 0, 1, m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc,
                              epilogue);
    /* For fastnn_team_report; one thread reports nothing, and its tiny products would pay the
     * clock read (6% of a 1 x 16 x 16 call's time under perf, cffi's included). */
    int64_t start = fastnn_now_ns(), done = 0, next = 0;
    fastnn_share shares[plan.threads]; /* SMALL's column chunks */
    if (plan.path == FASTNN_GEMM_PATH_SMALL)
        fastnn_shares_set(shares, plan.threads, plan.col_chunks);
    int team_cpu = fastnn_team_cpu();
#pragma omp parallel num_threads(plan.threads) reduction(| : status)
    {
        fastnn_team_join(team_cpu);
        unsigned fp = fastnn_fp_enter();
        int t = fastnn_team_index();
        if (plan.path == FASTNN_GEMM_PATH_PACKED)
            status |= FN(gemm_packed_chunks)(&plan, &next, m, n, k, a, lda, trans_a, b, ldb,
                                             trans_b, c, ldc, epilogue);
        else if (plan.path == FASTNN_GEMM_PATH_SMALL) { /* its chunks, its own ones first */
            int at = 0;
            for (int64_t q; status == FASTNN_OK &&
                            (q = FN(gemm_chunk_next)(shares, plan.threads, plan.col_chunks,
                                                     fastnn_team_size(), t, &at)) >= 0;)
                status |= FN(gemm_share)(&plan, (int)q, plan.col_chunks, m, n, k, a, lda, trans_a,
                                         b, ldb, trans_b, c, ldc, epilogue);
        } else
            status |= FN(gemm_share)(&plan, t, fastnn_team_size(), m, n, k, a, lda, trans_a, b,
                                     ldb, trans_b, c, ldc, epilogue);
        fastnn_fp_leave(fp);
        if (t == 0) done = fastnn_now_ns();
    }
    fastnn_team_report(start, done, fastnn_now_ns());
    return status;
}

int FN(fastnn_gemm)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int trans_a,
                    const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                    const fastnn_epilogue *epilogue) {
    unsigned fp = fastnn_fp_enter();
    int status = FN(gemm_planned)(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue);
    fastnn_fp_leave(fp);
    return status;
}

#undef GEMM_NR
#undef SMALL_AXPY
#undef SMALL_TILE
#undef SMALL_TILE_4
#undef SMALL_TILE_5
#undef SMALL_TILE_6
#undef SMALL_TILE_7
#undef SMALL_TILE_8
#undef GEMM_B_BLOCK_BYTES
#undef GEMM_SMALL_ACC_BYTES
#undef GEMM_SMALL_PACK_K
#undef GEMM_SMALL_PACK_ROWS
#undef GEMM_SMALL_TILE_ROWS
#undef GEMM_SMALL_NARROW
#undef GEMM_COLUMNS_KC
#undef GEMM_A_T_GROUP
#undef GEMM_A_T_AHEAD
#undef GEMM_B_AHEAD
#undef GEMM_SAME_SET_ROWS
#undef GEMM_A_T_IN_PLACE_BYTES
#undef GEMM_A_T_IN_PLACE_SPAN
