/* take.c - gathering the rows of a batch (any element type: it moves bytes). */
#include <string.h>

#include "internal.h"

/* Bytes worth a thread of their own: a row gather is bound by memory latency (each row of a
 * shuffled batch is a fresh miss), which two threads hide twice as well as one. */
#define TAKE_BYTES_PER_THREAD (64 * 1024.0)

void fastnn_take_rows(void *out, const void *source, const int64_t *index, int64_t n,
                      int64_t row_bytes) {
    char *dst = out;
    const char *src = source;
    int threads = fastnn_threads_for((double)n * row_bytes, TAKE_BYTES_PER_THREAD);
    FASTNN_FOR(threads, i, n,
               memcpy(dst + i * row_bytes, src + index[i] * row_bytes, (size_t)row_bytes););
}
