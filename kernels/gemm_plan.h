/* gemm_plan.h - which path a GEMM takes, and how its threads share the work: one cost rule
 * over M, K, N, the transposes, the element size, the register tile and the cache sizes.
 *
 * Every GEMM of the C backend (matmul, the forward pass of linear_forward, the two products
 * of linear_backward) asks fastnn_gemm_plan() and follows its answer, so the rule is written
 * once. It knows nothing of the float type: the caller describes its micro-kernel in a
 * fastnn_gemm_kernel (element bytes, MR x NR register tile, K block), so a GEMM of another
 * type (bfloat16 with its own tile) can ask the same question.
 *
 * The paths (gemm_impl.h implements them for float32 and float64):
 *
 *  SMALL   at most FASTNN_GEMM_SMALL rows of C (or columns: C^T = op(B)^T op(A)^T is then
 *          computed; or, its dot products only, a few columns of any rows): a GEMV-like
 *          kernel that reads the big operand once, in long contiguous runs (its rows, with
 *          the few rows of C kept in L1, or dot products along its rows), and splits the
 *          long side of C between the threads (or, read by its rows, K: SPLIT_K below). It is
 *          bound by memory bandwidth, so a second thread also needs enough bytes to read.
 *  IN_PLACE (few rows, an operand B that fits in L2): A and B read in place, the threads split
 *          C's columns, or its rows (A not transposed, at least as many rows as K, too few
 *          column panels to split: each thread then reads all of B; any number of rows).
 *  SPLIT_K (few rows, a small C, a long K, neither operand transposed: a layer's forward pass
 *          over a batch; or either transposed when C is one panel of columns, e.g. 16):
 *          IN_PLACE where the threads split K and add up their partial products. Also SMALL's
 *          C' of a few rows whose big operand is read by its rows (row_kernels): each thread
 *          then reads a contiguous part of it, the same part call after call.
 *  PACKED  the GotoBLAS / BLIS blocking: B packed into L2-sized blocks, A into L1 micro-panels;
 *          the threads form a grid of row_threads x col_threads over C. Splitting the rows
 *          makes every thread pack all of B; splitting the columns makes every thread pack
 *          all of A (once per B block, or once where it is kept across the B blocks:
 *          FASTNN_GEMM_A_REUSE_BLOCKS below); the plan picks the grid that packs the least,
 *          given that each thread needs at least one register tile of each. The grid's cells
 *          are cut into chunks (column chunks of about one B block, or two a thread where A is
 *          kept across blocks; or row chunks of >= 256 rows), which the threads take from a
 *          shared counter: a thread slowed by the machine's other load (a shared VM) then
 *          does fewer of them instead of holding up the rest. A PACKED C's sums do not depend
 *          on the cells (each element sums its K blocks in order), so the bits are the same on
 *          any grid, chunks and thread count.
 *
 * Cost rule (in that order):
 *  1. threads: the flops, counted in float32 flops (a float64 one takes two, as a vector holds
 *     half the lanes), over FASTNN_GEMM_FLOPS_PER_THREAD (the SMALL path: the bytes of the big
 *     operand alone over FASTNN_GEMM_SMALL_BYTES_PER_THREAD), at most
 *     fastnn_get_num_threads();
 *  2. SMALL when min(M, N) <= FASTNN_GEMM_SMALL, or (its dot products) on one thread for a C
 *     of at most half a panel of columns with only B transposed and K >= 4 panels' width;
 *     SPLIT_K with SMALL's row kernels instead when the first would read B' by its rows on two
 *     threads or more and K is long enough for each thread's part (gemm_plan.c);
 *  3. IN_PLACE on rows, any number of them, when A is not transposed, M >= K, there are fewer
 *     than two column panels a thread and all of B fits in half of L2 (gemm_plan.c);
 *  4. IN_PLACE or SPLIT_K (a small C, and neither operand transposed or C one panel of
 *     columns) when M <= the kernel's few_rows (or, A transposed, C^T of at most half a
 *     panel of columns and K >= 4 panels' width, any M) and each thread's share of B fits in
 *     half of L2: reading a B panel in place then costs what reading a packed one does, and
 *     the copy is saved. A B larger than that, read in place with its long row stride, maps its
 *     panel's rows to a few cache sets and is read from memory again and again (issue 20: a
 *     128 x 2048 x 4096 product ran at 0.32x OpenBLAS that way);
 *  5. PACKED otherwise, with the grid of least packing.
 */
#ifndef FASTNN_GEMM_PLAN_H
#define FASTNN_GEMM_PLAN_H

#include <stdint.h>

/* Most rows (or columns) of C of the SMALL path. */
#ifndef FASTNN_GEMM_SMALL
#define FASTNN_GEMM_SMALL 8
#endif
/* Smallest job worth a thread of its own: below it the team start-up and the barriers cost
 * more than the thread saves. In float32 flops (float64 ones count twice), and for the SMALL
 * path in bytes of the big operand alone, whatever its flops (gemm_plan.c). Set at build time
 * to tune (FASTNN_EXTRA_CFLAGS).
 * 1 MFLOP: a 2 MFLOP product (the 256-128 layer of a 784-256-128-10 MLP at batch 32, ~8 us on
 * one thread) runs on two. With libgomp's threads awake between the kernels of a training
 * step (fastnn/backends/runtime.py's short spin), the fork and join cost ~1-2 us; the
 * MNIST-shaped epoch at batch 32 (c, 2 threads, alternating epochs in one process) took
 * 209 ms instead of 255 with 4 MFLOP, which ran that layer's three products on one thread. A
 * busy machine falls back to one thread anyway (fastnn_contended). */
#ifndef FASTNN_GEMM_FLOPS_PER_THREAD
#define FASTNN_GEMM_FLOPS_PER_THREAD 1.0e6
#endif
#ifndef FASTNN_GEMM_SMALL_BYTES_PER_THREAD
#define FASTNN_GEMM_SMALL_BYTES_PER_THREAD 262144.0
#endif

/* The PACKED path keeps a block of A packed across the B blocks of a thread's share of the
 * columns when there are at least FASTNN_GEMM_A_REUSE_BLOCKS of them (gemm_impl.h's
 * gemm_packed_thread), at most FASTNN_GEMM_A_BLOCK_BYTES of it (rows of one K block; more
 * rows take more blocks of A, and B is packed again for each). Without it A is packed again
 * for each B block, and a B block fills 60% of L2: on a Zen 3 core (512 KB of L2, blocks of
 * 192 columns at K blocks of 384 float32) A was packed 11 times in a product of 2048 columns:
 * with the packing's masked stores, 13% of the time of float32 1024 x 2048 x 2048 on one thread
 * and 40% with A transposed (perf). */
#ifndef FASTNN_GEMM_A_REUSE_BLOCKS
#define FASTNN_GEMM_A_REUSE_BLOCKS 2
#endif
#ifndef FASTNN_GEMM_A_BLOCK_BYTES
#define FASTNN_GEMM_A_BLOCK_BYTES (2 * 1024 * 1024)
#endif

/* Micro-panels of MR rows (K blocks of kc, elements of elem_bytes) in a block of A. */
static inline int64_t fastnn_gemm_a_block_panels(int64_t elem_bytes, int64_t kc, int64_t mr) {
    int64_t panels = FASTNN_GEMM_A_BLOCK_BYTES / (elem_bytes * kc * mr);
    return panels > 1 ? panels : 1;
}

typedef enum {
    FASTNN_GEMM_PATH_SMALL = 0,
    FASTNN_GEMM_PATH_IN_PLACE = 1,
    FASTNN_GEMM_PATH_SPLIT_K = 2,
    FASTNN_GEMM_PATH_PACKED = 3
} fastnn_gemm_path;

/* What the plan needs to know of a micro-kernel. */
typedef struct {
    int64_t elem_bytes; /* bytes of one element of A, B and C */
    int64_t mr, nr;     /* register tile: MR rows x NR columns of C */
    int64_t kc;         /* longest K block of the PACKED path */
    int64_t few_rows;   /* most rows of C of the IN_PLACE and SPLIT_K paths */
    int64_t b_block_bytes; /* bytes of a packed B block of the PACKED path (L2) */
} fastnn_gemm_kernel;

typedef struct {
    fastnn_gemm_path path;
    int threads;      /* 1: no OpenMP team */
    /* SMALL: C^T is computed (N, not M, is the small side); IN_PLACE on one thread and
     * SPLIT_K: C^T is computed (C has at most half a panel of columns, and a panel of rows). */
    int transposed;
    /* IN_PLACE: the threads split C's rows (1: row_threads = threads) or columns (0). */
    int split_rows;
    /* PACKED: threads = row_threads * col_threads. */
    int row_threads, col_threads;
    /* PACKED on two threads or more: C's cells, row_chunks x col_chunks (a multiple of the
     * grid), which the threads take in turn from a shared counter (gemm_impl.h). SMALL:
     * col_chunks parts of C's long side, each thread's own ones first (gemm_chunk_next; in
     * turn by the busy machine's one-thread fallback, so their bits are the same). */
    int row_chunks, col_chunks;
    /* SPLIT_K: the parts of K, k_chunks of them (at least one a thread), taken as SMALL's
     * column chunks are; their partial products are added in their order. row_kernels: each
     * part is computed by the SMALL path's row kernels (a C' of at most FASTNN_GEMM_SMALL
     * rows whose B' is read by its rows; `transposed` as SMALL's), not by IN_PLACE's tiles. */
    int k_chunks, row_kernels;
} fastnn_gemm_plan;

/* The plan of C (m x n) = op(A) (m x k) @ op(B) (k x n), every dimension >= 1. */
fastnn_gemm_plan fastnn_gemm_plan_for(int64_t m, int64_t n, int64_t k, int trans_a, int trans_b,
                                      const fastnn_gemm_kernel *kernel);

/* Bytes of L2 per core the plan assumes: FASTNN_L2_BYTES if set at build time, else what the
 * C library reports (sysconf), else 1 MB. */
int64_t fastnn_l2_bytes(void);

/* Bytes of the L3 a core reads from (shared with the other cores of its cluster):
 * FASTNN_L3_BYTES if set at build time, else what Linux lists for cpu0 in sysfs, else 8 MB. */
int64_t fastnn_l3_bytes(void);

/* Bytes of a packed B block of the PACKED path: FASTNN_GEMM_B_BLOCK_BYTES if set at build
 * time, else 60% of fastnn_l2_bytes(). */
int64_t fastnn_gemm_b_block_bytes(void);

#endif
