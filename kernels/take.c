/* take.c - gathering the rows of a batch (any element type: it moves bytes). */
#include <string.h>

#include "internal.h"

/* Bytes worth a thread of their own: a row gather is bound by memory latency (each row of a
 * shuffled batch is a fresh miss), which two threads hide twice as well as one. */
#define TAKE_BYTES_PER_THREAD (64 * 1024.0)

/* Rows ahead of the one being copied whose lines are asked for (prefetcht0), for rows of
 * TAKE_AHEAD_MIN_BYTES or more (their first TAKE_AHEAD_MAX_BYTES): a shuffled batch's row is a
 * run of misses that the hardware's stream prefetch only follows once the copy has started it.
 * MNIST-shaped rows (3136 bytes) of a 188 MB array, one thread, 1-2 MB touched between
 * gathers (a stand-alone C loop, medians of an epoch's gathers): 32 rows 11-16 -> 7-11 us,
 * 128 rows 38-58 -> 27-38 us; 1 row ahead about as good as 2, 3 or 4 worse. */
#define TAKE_AHEAD 2
#define TAKE_AHEAD_MIN_BYTES 256
#define TAKE_AHEAD_MAX_BYTES 4096

void fastnn_take_rows(void *out, const void *source, const int64_t *index, int64_t n,
                      int64_t row_bytes) {
    char *dst = out;
    const char *src = source;
    int threads = fastnn_threads_for((double)n * row_bytes, TAKE_BYTES_PER_THREAD);
    /* Rows of 4, 8 or 16 bytes (labels, a few features) as moves of that size: a call to
     * memcpy per row (5% of an XOR training step's samples, rows of 8 bytes) cost more than
     * the row. */
#define TAKE(BYTES) FASTNN_FOR_SHARED(threads, i, n, memcpy(dst + i * (BYTES), \
                                                            src + index[i] * (BYTES), \
                                                            (size_t)(BYTES)););
    switch (row_bytes) {
        case 4: TAKE(4) break;
        case 8: TAKE(8) break;
        case 16: TAKE(16) break;
        default: {
            /* Each row a run of misses: the lines of the row TAKE_AHEAD on are asked for
             * before this one is copied, so that its misses overlap this copy's */
            int64_t ahead = row_bytes < TAKE_AHEAD_MIN_BYTES
                                ? 0 : fastnn_min(row_bytes, TAKE_AHEAD_MAX_BYTES);
            FASTNN_FOR_SHARED(threads, i, n, {
                if (ahead && i + TAKE_AHEAD < n)
                    fastnn_prefetch_lines(src + index[i + TAKE_AHEAD] * row_bytes, ahead);
                memcpy(dst + i * row_bytes, src + index[i] * row_bytes, (size_t)row_bytes);
            });
            break;
        }
    }
#undef TAKE
}

/* Lines asked for at the start of each row: the first two (128 bytes). The hardware's stream
 * prefetch follows a row once the gather reads it, so the rest of a row's lines asked for too
 * bought little and cost the calling thread while the other one waited: MNIST-shaped, 128 rows
 * of 3136 bytes, gather + prefetch ~52 -> ~38 us a step (every line -> two lines; no prefetch
 * ~43), 32 rows ~9.5 -> ~8.2 us (no prefetch ~13); timers around both, 2 threads, alternating
 * epochs in one process, a loaded machine. */
#define PREFETCH_LINES 2

/* Ask the memory system for rows index[0..n) of source (row_bytes each) ahead of their
 * fastnn_take_rows: the compiled training loop names the next step's rows while this step
 * computes, so that the next gather waits less for the misses of a shuffled batch's rows. Into
 * L2 (prefetcht1): the rows are read once, by the next gather. Each row's first PREFETCH_LINES
 * lines (those its first bytes touch). */
void fastnn_prefetch_rows(const void *source, const int64_t *index, int64_t n,
                          int64_t row_bytes) {
    const char *src = source;
    for (int64_t i = 0; i < n; i++) {
        const char *row = src + index[i] * row_bytes;
        const char *line = (const char *)((uintptr_t)row & ~(uintptr_t)63);
        const char *end = row + fastnn_min(row_bytes, PREFETCH_LINES * 64);
        for (; line < end; line += 64) __builtin_prefetch(line, 0, 2);
    }
}
