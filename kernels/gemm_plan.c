/* gemm_plan.c - the GEMM's choice of path and thread split (see gemm_plan.h). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gemm_plan.h"
#include "internal.h"

int64_t fastnn_l2_bytes(void) {
#if defined(FASTNN_L2_BYTES)
    return FASTNN_L2_BYTES;
#else
    static int64_t bytes = 0; /* a race only writes the same value twice */
    if (bytes == 0) {
        long reported = -1;
#if defined(_SC_LEVEL2_CACHE_SIZE)
        reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        bytes = reported >= 65536 ? (int64_t)reported : (int64_t)1 << 20;
    }
    return bytes;
#endif
}

/* The size in bytes of the level-3 cache cpu0 reads from, as Linux lists it in sysfs ("32768K"):
 * the cache of its cluster of cores, where sysconf's _SC_LEVEL3_CACHE_SIZE adds up a whole
 * socket's (384 MB against 32 MB on the Zen 5 machine); -1 when not listed. */
static int64_t sysfs_l3_bytes(void) {
    for (int index = 0; index < 8; index++) {
        char path[64], text[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        FILE *file = fopen(path, "r");
        if (!file) return -1;
        int level = fgets(text, sizeof text, file) ? atoi(text) : 0;
        fclose(file);
        if (level != 3) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        file = fopen(path, "r");
        if (!file) return -1;
        char *end = NULL;
        long long size = fgets(text, sizeof text, file) ? strtoll(text, &end, 10) : -1;
        fclose(file);
        if (size <= 0 || !end) return -1;
        return *end == 'K' ? size << 10 : *end == 'M' ? size << 20 : size;
    }
    return -1;
}

int64_t fastnn_l3_bytes(void) {
#if defined(FASTNN_L3_BYTES)
    return FASTNN_L3_BYTES;
#else
    static int64_t bytes = 0; /* a race only writes the same value twice */
    if (bytes == 0) {
        int64_t listed = sysfs_l3_bytes();
        bytes = listed >= 1048576 ? listed : (int64_t)8 << 20;
    }
    return bytes;
#endif
}

int64_t fastnn_gemm_b_block_bytes(void) {
#if defined(FASTNN_GEMM_B_BLOCK_BYTES)
    return FASTNN_GEMM_B_BLOCK_BYTES;
#else
    return fastnn_l2_bytes() / 10 * 6;
#endif
}

/* A copied element costs about as much as this many multiply-adds (a load, a store and a
 * share of a transpose against two FMA vectors per cycle). */
#define PACK_COST 4.0

/* SMALL's row kernels on two threads or more split K (gemm_plan_for) when each thread's part
 * has at least SMALL_SPLIT_K_ROWS rows of B' and SMALL_SPLIT_K_ROWS_PER_ROW per row of C' (a
 * part's partial product, m' rows of C' written and read again, is then at most an eighth of
 * the B' it reads), in chunks of at least SMALL_SPLIT_K_CHUNK_ROWS rows of B', at most 4 a
 * thread. */
#define SMALL_SPLIT_K_ROWS 32
#define SMALL_SPLIT_K_ROWS_PER_ROW 8
#define SMALL_SPLIT_K_CHUNK_ROWS 256
/* (Tried in the fiftieth session and not kept: parts of at least 256 rows of B' for C^T, a C of
 * a few columns with A transposed (x^T dz of an output layer of a few classes), else the column
 * split. Two builds alternating in one process gave 1.2-2.5x for K of 64-384 (4096 x 64 x 3
 * 30.7 -> 12.3 us); the sweep, one package a process in alternating processes (`fastnn bench
 * --sweep --dtypes float32,float64 --ms 256,1024,4096 --ks 32,64,128,256 --ns 1,2,4,8
 * --transposes tn`, two runs each) gave 1.3-2x with 1024 columns and B' under 1 MB, but
 * 0.5-0.9x with 4096 columns or a B' of 2 MB (float32 4096 x 128 x 2 0.030 -> 0.041-0.060 ms),
 * and the same geometric mean (1.54-1.57x NumPy against 1.45-1.59x). The same rule for a few
 * rows of C lost float64 1 x 256 x 2048 from 4.4x NumPy to 1.4-1.6x in the sweep.) */

/* Whether each of `threads` parts of a K of k is long enough for SPLIT_K (above). */
static inline int split_k_fits(int64_t k, int64_t short_side, int threads) {
    return k >= SMALL_SPLIT_K_ROWS * threads &&
           k >= SMALL_SPLIT_K_ROWS_PER_ROW * short_side * threads;
}

/* A split of C's columns between the threads (each writing part of every row of C) costs this many
 * multiply-adds more an element of a thread's C, where K is at most SHARED_ROWS_MAX_K and M past
 * the few-rows paths: there, writing C is most of the work, and the same C written in whole rows
 * by each thread was found much faster (the cause not measured apart). Zen 4, 2 threads, old and
 * new plan alternating call by call in one process, medians of 7 rounds, float32, rows against
 * columns: `nn` 512 x 16 x 256 1.46-2.09x (0.64x NumPy before, 1.1-1.2x after), B transposed
 * 1.78x, 600 x 32 x 256 1.57x, 512 x 128 x 128 1.21x, 512 x 16 x 1024 1.66x, 2048 x 64 x 1024
 * 1.12x, 768 x 128 x 256 1.17x, A transposed 512 x 64 x 256 1.24x, 600 x 128 x 1024 1.09x, 4096 x
 * 128 x 1024 1.07x, both 512 x 32 x 128 1.37x, 768 x 32 x 512 1.45x; 14 drawn at random of the 448
 * shapes whose plan this changes (M 512-4096, K 16-128, N 128-4096, the four transposes) all
 * 1.00-1.57x; float64 512 x 16 x 256 2.06x, 768 x 64 x 512 (A transposed) 1.25x. With K of 256
 * (512 x 256 x 256 1.03x) it matters little, and over a few rows the threads' copies of a wide B
 * cost more (128 x 64 x 4096 0.88x, A transposed 128 x 128 x 4096 0.88x, 128 x 256 x 1024 0.91x):
 * not counted there. */
#define SHARED_ROWS_MAX_K 128
#define SHARED_ROWS_C_COST 16.0
/* ... and over a few rows too where K is at most SHARED_ROWS_ANY_M_K (writing C is then nearly
 * all the work: outer products of a batch of 1-16, a short input layer). Zen 4, 2 threads,
 * float32, alternating in one process, medians of 9 rounds, against the plan before (one
 * thread, GEMM_C_WRITE_MACS below, or the column split): A transposed 128 x 1 x 1024 1.57x
 * (2.4x against the column split on two threads), 48 x 2 x 2048 1.55x, 48 x 4 x 2048 1.78x,
 * 32 x 8 x 2048 1.42-1.57x, `nn` 64 x 1 x 1024 1.61x, 64 x 4 x 1024 1.39x, 128 x 16 x 1024
 * 2.92x, 24 x 16 x 2048 1.58x; 48 x 16 x 2048 0.85x. */
#define SHARED_ROWS_ANY_M_K 16

/* A GEMM's threads count each element of C written as this many multiply-adds more (as the
 * AMX kernels count 32): where K is short, writing C is much of the work, which two threads
 * share as they share the arithmetic. Until the fifty-ninth session the multiply-adds alone:
 * one thread below 1 MFLOP. Zen 4, 2 threads, float32, this rule against that alternating in
 * one process, medians of 7-11 rounds (a shared machine: each shape's ratio moved by up to 0.3
 * between runs): `nn` 128 x 16 x 256 1.11-1.30x (0.81-0.87x NumPy in the sweep before), A
 * transposed 1.11-1.26x, both 1.50x; 24 shapes drawn at random of the 1928 float32 ones whose
 * plan changes (M and N 1-2048, K 1-512) 1.1-2.0x in most runs, 0.8-1.0x in some (`nt` 200 x 8
 * x 384 0.79x then 1.27-1.52x), A transposed 128 x 1 x 1024 0.44-0.92x until the row split
 * above; float64, 10 drawn at random, 1.17-1.96x, `nn` 200 x 16 x 100 0.65x then 1.16x. With a
 * process spinning on the other core, 5 shapes: 1.0-2.0x, A transposed 784 x 1 x 256 (a weight
 * gradient at batch 1, 1.72x without) 0.66x. */
#define GEMM_C_WRITE_MACS 16

/* Cost, in multiply-adds of the slowest thread, of the PACKED path on a grid of rows x cols. */
static double packed_cost(int64_t m, int64_t n, int64_t k, int rows, int cols,
                          const fastnn_gemm_kernel *kernel) {
    int64_t m_panels = fastnn_ceil_div(m, kernel->mr), n_panels = fastnn_ceil_div(n, kernel->nr);
    int64_t my_rows = fastnn_ceil_div(m_panels, rows) * kernel->mr;
    int64_t my_cols = fastnn_ceil_div(n_panels, cols) * kernel->nr;
    int64_t kc = fastnn_ceil_div(k, fastnn_ceil_div(k, kernel->kc));
    int64_t nc = fastnn_max(1, kernel->b_block_bytes / (kernel->elem_bytes * kc * kernel->nr)) *
                 kernel->nr;
    int64_t b_blocks = fastnn_ceil_div(my_cols, nc);
    double packed;
    if (b_blocks >= FASTNN_GEMM_A_REUSE_BLOCKS) /* A once, B once per block of A */
        packed = (double)k * my_cols * (double)fastnn_ceil_div(
                     my_rows, fastnn_gemm_a_block_panels(kernel->elem_bytes, kc, kernel->mr) *
                                  kernel->mr) +
                 (double)my_rows * k;
    else /* B once, A once per B block */
        packed = (double)k * my_cols + (double)my_rows * k * (double)b_blocks;
    double shared_rows =
        cols > 1 && k <= SHARED_ROWS_MAX_K && (m > kernel->few_rows || k <= SHARED_ROWS_ANY_M_K)
            ? SHARED_ROWS_C_COST * (double)my_rows * my_cols
            : 0.0;
    return packed * PACK_COST + (double)my_rows * my_cols * k + shared_rows;
}

fastnn_gemm_plan fastnn_gemm_plan_for(int64_t m, int64_t n, int64_t k, int trans_a, int trans_b,
                                      const fastnn_gemm_kernel *kernel) {
    fastnn_gemm_plan plan = {FASTNN_GEMM_PATH_PACKED, 1, 0, 0, 1, 1, 1, 1, 1, 0};
    if (m <= FASTNN_GEMM_SMALL || n <= FASTNN_GEMM_SMALL) {
        plan.path = FASTNN_GEMM_PATH_SMALL;
        plan.transposed = n < m;
        int64_t long_side = plan.transposed ? m : n, short_side = plan.transposed ? n : m;
        /* Memory-bound (each element of B' serves at most 8 rows of C'): the threads by the
         * bytes of B' alone, FASTNN_GEMM_SMALL_BYTES_PER_THREAD a thread, each thread a few
         * panels. Each thread's share of B' then stays in its own L2 between calls, where one
         * thread read all of it from L3. A single row, Zen 5, 2 threads against 1, alternating
         * in one process, medians of 9-15 blocks: float32 1 x 1024 x 256 1.20-1.60x, 1 x 256 x
         * 1024 1.43-1.59x, 1 x 784 x 256 1.18-1.31x, B transposed 1.47-1.77x, 1 x 512 x 256
         * 1.05-1.07x; float64 1 x 1024 x 256 1.36-1.40x, 1 x 256 x 1024 1.34-1.52x; the same
         * with a process spinning on the other core (1.38-1.60x: the scheduler gives the woken
         * worker its turn), and a batch-1 training epoch (784-256-10) unchanged. (In an earlier
         * session, on another host and before the busy-machine rule and the workers' affinity,
         * this lost: float64 1 x 1024 x 256 and 1 x 256 x 1024 0.89 -> 0.75-0.86x NumPy.)
         * 2-8 rows took their threads by the flops and 1 MB of B' a thread until the
         * forty-fourth session, so a B' of 0.5-2 MB ran on one thread; by the bytes alone,
         * Sapphire Rapids, float32, 2 threads against that, alternating in one process, medians
         * of 9 blocks, NumPy's arrays and 64-byte aligned ones: 2 x 64 x 4096 1.24x, 2 x 256 x
         * 1024 1.46x (A or B transposed 1.52-1.72x), 2 x 512 x 512 1.47-1.51x, 3 x 256 x 1024
         * 1.47-1.52x, 4 x 256 x 1024 1.31-1.66x, 5 x 1024 x 256 1.48x, 6 x 256 x 1024
         * 1.36-1.78x, 8 x 512 x 512 1.49x, 8 x 128 x 1024 1.09-1.16x, B transposed 8 x 256 x
         * 1024 1.78-1.85x, C^T 1024 x 256 x 8 1.80-1.84x; 4 x 128 x 1024 (512 KB) 1.05x. */
        int threads = fastnn_get_num_threads(), split_threads = 1;
        if (threads > 1) {
            int by_bytes = fastnn_threads_for((double)k * long_side * kernel->elem_bytes,
                                              FASTNN_GEMM_SMALL_BYTES_PER_THREAD);
            plan.threads = (int)fastnn_max(
                1, fastnn_min(fastnn_min(by_bytes, threads), long_side / (2 * kernel->nr)));
            split_threads = fastnn_min(by_bytes, threads); /* SPLIT_K's: the bytes alone */
        }
        /* B' read by its rows (the row kernels) on two threads or more: the threads split K
         * (SPLIT_K, row_kernels) when it is long enough for each part (SMALL_SPLIT_K_ROWS),
         * each thread a contiguous part of B', the same part call after call, rather than a
         * part of each row of B' (runs of a few KB a row apart). Its part of a B' that fits in
         * the threads' L2s then stays in its own, and the hardware prefetch follows one long
         * run. The partial rows of C' are added after a barrier (other bits than one thread's,
         * as the column split's kernels already were across thread counts). Sapphire Rapids,
         * float32, 2 threads, against the column split (its chunks from a shared counter)
         * alternating in one process, medians of 9 blocks: 1 x 1024 x 1024 2.1-2.5x (NumPy
         * 0.9-1.0x -> 1.8-2.1x), 1 x 4096 x 1024 1.5-2.5x, 1 x 1024 x 4096 1.1-1.4x, 1 x 2048 x
         * 2048 0.95-1.2x (0.90-1.08x NumPy), 1 x 256 x 2048 1.1-1.4x, 1 x 2048 x 2048 with A
         * transposed 1.1-1.4x, a C of one column (C^T) 2048 x 2048 x 1 1.2-1.4x, 2 x 1024 x 1024
         * 1.8-2.4x, 4 and 8 x 1024 x 1024 1.3-2.1x, 8 x 128 x 8192 1.1-1.5x; 1 x 784 x 256, 1 x
         * 1024 x 256 and 1 x 256 x 1024 (1 MB) 0.97-1.09x; 1024 x 256 x 1 (C^T) 0.8-0.9x. Shorter
         * parts lost: 1 x 32 x 65536 0.86x (16 rows a part), 8 x 64 x 16384 0.89x (4 rows of
         * B' a part per row of C'; SMALL_SPLIT_K_ROWS_PER_ROW).
         * The split takes its threads by the bytes of B' alone, also where C' has too few
         * columns for the column split's threads (fewer than 4 panels: one thread until the
         * forty-seventh session). Sapphire Rapids, float32, 2 threads against 1, alternating in
         * one process, medians of 9 blocks, 0.2 s pauses: 1 x 2048 x 64 1.21x, 1 x 4096 x 64
         * 1.49x (NumPy 0.96x -> 1.43x), 2 x 4096 x 64 1.60x (0.81x -> 1.29x), 1 x 8192 x 64
         * 3.2x, 1 x 16384 x 64 3.4x (0.89x -> 3.0x: each thread's 2 MB stays in its L2), 1 x
         * 16384 x 40 4.6x, 1 x 4096 x 32 1.20x, 8 x 4096 x 32 1.49x, 8 x 2048 x 64 1.46x, 3 x
         * 4096 x 100 1.77x, A transposed 2 x 8192 x 48 1.86x, a C of one column 64 x 4096 x 1
         * (C^T) 1.44x; float64 1 x 8192 x 40 4.3x, 8 x 2048 x 32 1.50x. */
        int by_rows = plan.transposed ? trans_a : !trans_b; /* B' read by its rows */
        int k_threads = split_k_fits(k, short_side, split_threads) ? split_threads : plan.threads;
        if (by_rows && k_threads > 1 && split_k_fits(k, short_side, k_threads))
            plan.path = FASTNN_GEMM_PATH_SPLIT_K, plan.threads = k_threads;
        /* more than one chunk a thread only where B' is read from L3 whatever the split */
        int one_chunk = (double)k * long_side * kernel->elem_bytes <=
                        (double)plan.threads * (double)fastnn_l2_bytes();
        if (plan.path == FASTNN_GEMM_PATH_SPLIT_K) {
            plan.row_kernels = 1;
            int64_t per_thread = one_chunk ? 1 : k / (SMALL_SPLIT_K_CHUNK_ROWS * plan.threads);
            plan.k_chunks = plan.threads * (int)fastnn_max(1, fastnn_min(4, per_thread));
            return plan;
        }
        /* The threads take C's columns in chunks, each its own first (gemm_chunk_next); for
         * fewer than 4 rows of C' (single samples: the row kernels whose sums do not depend on
         * a chunk's width but for its last vector) in chunks of at least 2 KB of each row of
         * B', at most 4 per thread, where B' does not fit in the threads' L2s; where it does,
         * one chunk a thread, so each thread's stays in its L2. Sapphire Rapids, float32, 2
         * threads, B transposed (dot products), against chunks from a shared counter,
         * alternating in one process, medians of 9 blocks: 1 x 1024 x 1024 1.7-1.8x (NumPy
         * 0.5 -> 0.9x), 1 x 256 x 2048 1.2-1.6x; 1 x 2048 x 2048 (several chunks a thread)
         * 1.1x. */
        plan.col_chunks = plan.threads;
        if (plan.threads > 1 && short_side < 4 && !one_chunk) {
            int64_t per_thread = long_side / (2048 / kernel->elem_bytes * plan.threads);
            plan.col_chunks = plan.threads * (int)fastnn_max(1, fastnn_min(4, per_thread));
        }
        return plan;
    }
    /* The work in float32 flops, C's writes counted (GEMM_C_WRITE_MACS): a vector holds 64 /
     * elem_bytes lanes, so a float64 product takes twice the time of a float32 one of the same
     * flops, and is worth a thread at half of them. (Not the fused weight update's threads,
     * linear_impl.h: with C's writes counted there, 784-256-256-10 at batch 8 trained 0.94x as
     * fast, its 256 x 256 layer's step on two threads and forward pass on one.) */
    int threads = fastnn_threads_for(
        2.0 * m * n * (k + GEMM_C_WRITE_MACS) * (double)kernel->elem_bytes / 4.0,
        FASTNN_GEMM_FLOPS_PER_THREAD);

    /* A C of at most half a panel of columns (16 float32) on one thread, A not transposed and B
     * transposed: both read along K, the SMALL path's dot products (four rows by four columns,
     * summed across lanes once) beat tiles one vector wide over a transposed copy of B. Float32,
     * alternating blocks in one process, x NumPy: 32 x 1024 x 16 0.68 -> 1.03, 32 x 1024 x 10
     * 0.48 -> 0.99, 64 x 256 x 10 0.65 -> 0.99, 128 x 256 x 10 1.62 -> 2.26. A short K
     * (below 4 panels' width) keeps the tiles: the dot products' sums across lanes would
     * weigh more, and the SMALL path's row kernels (K of one vector) take at most 8 rows. */
    if (threads == 1 && trans_b && !trans_a && 2 * n <= kernel->nr && m <= kernel->few_rows &&
        k >= 4 * kernel->nr) {
        plan.path = FASTNN_GEMM_PATH_SMALL;
        return plan;
    }
    int64_t m_panels = fastnn_ceil_div(m, kernel->mr), n_panels = fastnn_ceil_div(n, kernel->nr);
    if (threads > m_panels * n_panels) threads = (int)(m_panels * n_panels);
    plan.threads = threads;

    /* B read in place: each thread's share of it must stay in L2, and its rows (a stride of n
     * elements apart when it is not transposed) must not all fall into the same few cache
     * sets, which a stride of a multiple of 4 KB does, unless C has at most two panels of rows:
     * each panel of B is then read by one or two row tiles (IN_PLACE's gemm_columns_thread),
     * so the evictions cost at most one read again from L2, less than PACKED's copy of B and
     * its padded edge tile. Zen 4, 2 threads, against PACKED alternating in one process,
     * medians of 7 rounds, float32 B of 1024-2048 columns: 16 x 16 x 2048 2.36x (NumPy 0.6-0.8x
     * -> 1.43x), A transposed 1.86x, 16 x 16 x 1024 1.37x, 24 x 16 x 2048 1.35x, 16 x 4 x 2048
     * 1.19x, 16 x 64 x 1024 1.17x, A transposed 16 x 64 x 2048 1.49x, 16 x 128 x 2048 1.37x,
     * 16 x 256 x 1024 1.61x, A transposed 24 x 128 x 1024 1.59x, 16 x 256 x 2048 1.07x, 24 x
     * 512 x 1024 and 9 x 512 x 2048 1.00-1.03x; float64 16 x 16 x 1024 2.02x, 16 x 256 x 512
     * 1.42x, A transposed 24 x 64 x 1024 1.52x, 9 x 16 x 2048 1.64x. */
    double b_bytes = (double)k * n * kernel->elem_bytes, half_l2 = 0.5 * (double)fastnn_l2_bytes();
    int b_rows_apart = trans_b || (n * kernel->elem_bytes) % 4096 != 0 || m <= 2 * kernel->mr;
    int b_fits = b_bytes / threads <= half_l2 && b_rows_apart;
    /* A C of at most half a panel of columns (16 float32) and at least a panel of rows, with A
     * transposed, is computed as C^T by IN_PLACE and SPLIT_K (gemm_impl.h's
     * gemm_columns_transposed): its tiles are then a whole panel wide, not one vector, and
     * op(A)^T, not transposed, is read in place. With A not transposed, C^T's packing would
     * transpose all of A, which cost more than the wide tiles saved. Float32, one thread,
     * medians of 9 alternating blocks in one process (loaded machine), before -> after:
     * 32 x 1024 x 16 12.1 -> 8.1 us, 64 x 1024 x 16 22.9 -> 14.3, 128 x 512 x 16 24.1 -> 12.4,
     * 32 x 1000 x 13 7.8 -> 4.6; A not transposed 32 x 1024 x 16 9.4 -> 10.1, 128 x 512 x 16
     * 14.1 -> 17.5; with a K of 32 (a weight gradient at batch 32), the tiles of C^T, a few
     * multiply-adds each, lost to the gather of C: 128 x 32 x 16 1.2 -> 1.8 us, so only
     * from a K of 4 panels' width (128 float32) on. */
    int narrow = trans_a && 2 * n <= kernel->nr && m >= kernel->nr && k >= 4 * kernel->nr;
    int rows_only = 0; /* PACKED's threads on rows alone */
    /* At least as many rows as K, too few column panels for two a thread, A not transposed
     * and all of B in half of L2, its rows not 4 KB apart (as b_fits; a hidden layer's forward
     * pass or input gradient at a large batch, 256 x 64 x 64): the threads split C's rows,
     * each reading its rows of A and all of B in place (packing B's panels if transposed).
     * The K split's partial products (M x N numbers written, read and added) and PACKED's
     * copies cost as much as the product there.
     * 2 threads, float32, the Zen 4 machine, old and new rule alternating in one process:
     * 256 x 64 x 64 19.5 -> 13.2 us (split along K before), 400 x 400 x 40 with B transposed
     * 102 -> 79; past the few-rows paths' rows (PACKED before) 2048 x 256 x 16 123 -> 77,
     * 1024 x 64 x 64 82 -> 75, 768 x 256 x 64 130 -> 113. With fewer rows than K the K split
     * can still win (100 x 2048 x 40: 98 us split along K, 108 on rows), hence M >= K.
     * On one thread too (a C of one panel of columns; PACKED before the forty-eighth
     * session), Sapphire Rapids, alternating in one process, medians of 9-11 blocks, the same
     * bits: float64 1024 x 16 x 16 1.22x (NumPy 0.87x -> 1.07x), 512 x 16 x 12 1.24x, B
     * transposed 1024 x 16 x 16 1.23x; float32 1024 x 16 x 32 1.15x, 512 x 32 x 24 1.18x;
     * 128-256 rows 0.95-1.04x. */
    /* More rows than the few-rows paths take, a C of at most half a panel of columns (one
     * vector) and A not transposed: the same, on one thread too, whatever K (PACKED's tiles
     * were half padding, and it copied all of A). Float32, old and new rule in alternating
     * processes, medians (shared machine): one thread 512 x 2048 x 16 332 -> 197 us (B
     * transposed 443 -> 209), 1024 x 2048 x 16 771 -> 399 (963 -> 404), 1024 x 256 x 16 104 ->
     * 46, 4096 x 256 x 16 367 -> 196; two threads 512 x 2048 x 16 319-358 -> 127-222 us,
     * 1024 x 2048 x 16 614-681 -> 232-425, 1024 x 4096 x 16 1294-1642 -> 857-870. */
    int narrow_rows = 2 * n <= kernel->nr && m > kernel->few_rows;
    if (!trans_a &&
        ((m >= k && n_panels < 2 * threads && m >= 2 * threads * kernel->mr) ||
         narrow_rows) &&
        b_bytes <= half_l2 && b_rows_apart) {
        plan.path = FASTNN_GEMM_PATH_IN_PLACE;
        plan.split_rows = 1;
        plan.row_threads = threads;
        return plan;
    }
    /* A narrow C^T (above) also past the few rows (PACKED before the forty-eighth session:
     * tiles a panel wide for at most half a panel of columns, over a transposing copy of all
     * of A). Sapphire Rapids, float32, alternating in one process, medians of 9-11 blocks: one
     * thread (IN_PLACE; other bits than PACKED's where K is longer than its K block: its own
     * blocks are longer, GEMM_COLUMNS_KC) 512 x 128 x 10 2.17x (NumPy 0.68x -> 1.48x), 600 x
     * 128 x 10 2.34x, 20000 x 128 x 10 1.15x, 4096 x 1024 x 10 1.01x; two (SPLIT_K, other
     * bits) 784 x 128 x 10 1.61-1.70x, 784 x 256 x 10 1.60x, 2048 x 128 x 10 1.33x, 4096 x
     * 512 x 10 1.45x, 4096 x 128 x 10 0.86x then 1.41x, 1024 x 256 x 16 1.23x then 0.89x,
     * 1024 x 128 x 10 0.93-0.94x, 1500 x 128 x 10 0.88x. */
    if ((m <= kernel->few_rows || narrow) && b_fits) {
        /* The partial products must stay small next to the work (at most 64 Ki numbers), and
         * each thread's share of K long. With A transposed (a weight gradient, x^T dz) the K
         * split was the slowest of the three; but a C of one panel of columns cannot be split
         * by columns, and split by rows (PACKED) each thread packs all of B: there the K split
         * wins whatever the transposes (32 x 1024 x 16 float64, alternating blocks on the
         * shared machine: B transposed 0.66 -> 0.83x NumPy, A transposed 0.58 -> 0.63x).
         * (Two threads from half the flops, 1 MFLOP, as a K split shares nothing but a small
         * C: 32 x 1024 x 16 float32 took 5.2 us instead of 8.2 with the other core idle, but
         * 0.79 -> 0.61x NumPy with it busy, so not taken.) */
        if (threads > 1 && (n_panels == 1 || (!trans_a && !trans_b)) &&
            (double)m * n <= 65536.0 && k >= 32 * threads) {
            plan.path = FASTNN_GEMM_PATH_SPLIT_K;
            plan.transposed = narrow;
            plan.k_chunks = threads;
            return plan;
        }
        if (threads == 1) {
            plan.path = FASTNN_GEMM_PATH_IN_PLACE;
            plan.transposed = narrow;
            return plan;
        }
        /* A transposed is packed, by every thread of a column split (all of it) and of a row
         * split (its rows, with all of B): the smaller copy wins. 256x128x128 took 32 us in
         * rows, 38-42 in columns. So with no more columns than rows the threads split the
         * rows (the grid's cost below, which counts a copied number the same whichever
         * operand it is from, chose columns for the weight gradients of an MLP's hidden
         * layers: 2 threads, old and new rule alternating in one process, four runs on the
         * Zen 4 machine, float32, rows / columns in us: 256x32x128 11.9-15.4 / 15.4-19.1,
         * 256x32x256 22.7-29.7 / 29.7-30.0, 300x64x300 58.5-58.9 / 72.6-73.1, 256x128x128
         * 42.2-42.6 / 45.5-46.6; 512x32x128 the same). */
        rows_only = trans_a && n <= m;
        if (!rows_only && n_panels >= 2 * threads) {
            plan.path = FASTNN_GEMM_PATH_IN_PLACE;
            return plan;
        }
    }

    /* PACKED: the grid of least cost among the factorizations of the thread count. */
    double best = -1.0;
    for (int rows = 1; rows <= threads; rows++) {
        if (threads % rows) continue;
        int cols = threads / rows;
        if (rows > m_panels || cols > n_panels || (rows_only && cols > 1)) continue;
        double cost = packed_cost(m, n, k, rows, cols, kernel);
        if (best < 0 || cost < best) {
            best = cost;
            plan.row_threads = rows;
            plan.col_threads = cols;
        }
    }
    if (best < 0) { /* no grid of exactly `threads` fits: rows alone, as many as there are */
        plan.row_threads = (int)fastnn_min(threads, m_panels);
        plan.col_threads = 1;
    }
    plan.threads = plan.row_threads * plan.col_threads;
    plan.row_chunks = plan.row_threads;
    plan.col_chunks = plan.col_threads;
    if (plan.threads > 1) {
        /* Chunks taken in turn (gemm_plan.h). A column chunk of one B block costs nothing more
         * than the grid when A is packed again per B block anyway, so the columns are cut into
         * whole B blocks, as many per thread (at most 8), or two chunks a thread (below). A
         * row chunk packs its own copy of B (k x its columns): rows of at least 256 keep that
         * copy at 4 * PACK_COST / 256 = 1.6% of its multiply-adds, at most 4 chunks per
         * thread. */
        if (plan.col_threads > 1) {
            int64_t kc = fastnn_ceil_div(k, fastnn_ceil_div(k, kernel->kc));
            int64_t block_panels =
                fastnn_max(1, kernel->b_block_bytes / (kernel->elem_bytes * kc * kernel->nr));
            int64_t per_thread = fastnn_ceil_div(fastnn_ceil_div(n_panels, block_panels),
                                                 plan.col_threads);
            /* With A kept across the B blocks, a chunk packs A once: two chunks a thread
             * (each of FASTNN_GEMM_A_REUSE_BLOCKS blocks or more) rather than one a block. */
            if (per_thread >= 2 * FASTNN_GEMM_A_REUSE_BLOCKS) per_thread = 2;
            else if (per_thread >= FASTNN_GEMM_A_REUSE_BLOCKS) per_thread = 1;
            per_thread = fastnn_min(fastnn_min(per_thread, 8), n_panels / plan.col_threads);
            plan.col_chunks = plan.col_threads * (int)fastnn_max(1, per_thread);
        }
        if (plan.row_threads > 1) {
            int64_t per_thread = fastnn_min(4, m / (256 * plan.row_threads));
            per_thread = fastnn_min(per_thread, m_panels / plan.row_threads);
            plan.row_chunks = plan.row_threads * (int)fastnn_max(1, per_thread);
        }
    }
    return plan;
}
