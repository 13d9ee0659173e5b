/* misc_impl.h - mse, one_hot, count_correct, all_finite, for T (template: see instantiate.h). */

/* Elements per chunk: the unit of threading, and of float64 accumulation of T partial sums. */
#define MISC_CHUNK 4096

/* The squared errors d^2 of elements [begin, end) of d = pred - target, summed in a vector's
 * lanes (each lane its own elements, in order), and (grad given) their gradients d * two_scale
 * stored at the same elements. */
static inline VEC FN(mse_span)(T *grad, const T *pred, const T *target, int64_t begin,
                               int64_t end, VEC two_scale) {
    VEC acc = V(zero)();
    for (int64_t j = begin; j < end; j += VLEN) {
        int64_t cols = end - j;
        VEC d = cols >= VLEN ? V(sub)(V(load)(pred + j), V(load)(target + j))
                             : V(sub)(V(load_part)(pred + j, cols, 0),
                                      V(load_part)(target + j, cols, 0));
        acc = V(fma)(d, d, acc);
        if (grad) {
            if (cols >= VLEN)
                V(store)(grad + j, V(mul)(d, two_scale));
            else
                V(store_part)(grad + j, V(mul)(d, two_scale), cols);
        }
    }
    return acc;
}

/* Rows of weighted squared errors: sum_i weight[i] sum_j d^2 over rows [i0, i1), grad = 2
 * scale weight[i] d. */
static double FN(weighted_mse_rows)(T *grad, const T *pred, const T *target, const T *weight,
                                    int64_t i0, int64_t i1, int64_t m, double grad_scale) {
    double total = 0;
    for (int64_t i = i0; i < i1; i++) {
        VEC two_scale = V(set1)((T)(2 * grad_scale) * weight[i]);
        VEC acc = FN(mse_span)(grad, pred, target, i * m, (i + 1) * m, two_scale);
        total += (double)weight[i] * (double)V(hsum)(acc);
    }
    return total;
}

double FN(fastnn_mse)(T *grad, const T *pred, const T *target, const T *weight, int64_t n,
                      int64_t m, double grad_scale) {
    int64_t size = n * m;
    if (weight) {
        int64_t rows = fastnn_max(1, MISC_CHUNK / m), chunks = fastnn_ceil_div(n, rows);
        int threads = fastnn_threads_for((double)size, 65536.0);
        double total = 0;
        FASTNN_FOR_SUM(threads, chunk, chunks, total,
            total += FN(weighted_mse_rows)(grad, pred, target, weight, chunk * rows,
                                           fastnn_min(n, (chunk + 1) * rows), m, grad_scale););
        return total;
    }
    int64_t chunks = fastnn_ceil_div(size, MISC_CHUNK);
    int threads = fastnn_threads_for((double)size, 65536.0);
    VEC two_scale = V(set1)((T)(2 * grad_scale));
    double total = 0;
    FASTNN_FOR_SUM(threads, chunk, chunks, total,
        int64_t end = fastnn_min(size, (chunk + 1) * MISC_CHUNK);
        VEC acc = FN(mse_span)(grad, pred, target, chunk * MISC_CHUNK, end, two_scale);
        total += (double)V(hsum)(acc););
    return total;
}

void FN(fastnn_one_hot)(T *out, const int64_t *labels, int64_t n, int64_t c) {
    memset(out, 0, (size_t)n * c * sizeof(T));
    for (int64_t i = 0; i < n; i++) out[i * c + labels[i]] = 1;
}

int64_t FN(fastnn_count_correct)(const T *scores, const int64_t *labels, int64_t n, int64_t c) {
    int threads = fastnn_threads_for((double)n * c, 65536.0);
    int64_t correct = 0;
    FASTNN_FOR_SUM(threads, i, n, correct,
        const T *row = scores + i * c;
        int64_t best = 0; /* the first maximum, as numpy.argmax */
        for (int64_t j = 1; j < c; j++)
            if (row[j] > row[best]) best = j;
        correct += best == labels[i];);
    return correct;
}

/* ||x||^2 in double, on the calling thread: each MISC_CHUNK's squares summed in T by four
 * vector accumulators (so the FMAs overlap), the chunks' sums in double, in order. The same
 * bits for the same array on every call (the compiled loop sums a step's weights after their
 * update and before the next step's loss: they must agree). In float32 that is the rounding of
 * np.dot(w, w) on the per-layer path (BLAS sdot sums in float32 too): ~1e-6 relative. */
double FN(fastnn_sum_squares)(const T *x, int64_t size) {
    double total = 0;
    for (int64_t begin = 0; begin < size; begin += MISC_CHUNK) {
        int64_t end = fastnn_min(size, begin + MISC_CHUNK), j = begin;
        VEC acc0 = V(zero)(), acc1 = V(zero)(), acc2 = V(zero)(), acc3 = V(zero)();
        for (; j + 4 * VLEN <= end; j += 4 * VLEN) {
            VEC v0 = V(load)(x + j), v1 = V(load)(x + j + VLEN);
            VEC v2 = V(load)(x + j + 2 * VLEN), v3 = V(load)(x + j + 3 * VLEN);
            acc0 = V(fma)(v0, v0, acc0);
            acc1 = V(fma)(v1, v1, acc1);
            acc2 = V(fma)(v2, v2, acc2);
            acc3 = V(fma)(v3, v3, acc3);
        }
        for (; j < end; j += VLEN) {
            VEC v = end - j >= VLEN ? V(load)(x + j) : V(load_part)(x + j, end - j, 0);
            acc0 = V(fma)(v, v, acc0);
        }
        total += (double)V(hsum)(V(add)(V(add)(acc0, acc1), V(add)(acc2, acc3)));
    }
    return total;
}

/* Fewest bytes of all_finite worth a second thread: 64 MB. It reads memory once, which one core
 * nearly saturates, and it is the first kernel of a fit, evaluate or predict call, so its team
 * often wakes threads that went to sleep: on this 2-vCPU VM, after 20 ms idle, 50000 x 32
 * float32 (6.4 MB) took 1.0 ms on 2 threads against 0.32 on one (0.07 and 0.13 called back to
 * back), and 60000 x 784 (188 MB) 12-15 ms against 8.2-11.6 (7.4-8.6 and 7.6-7.9). So one
 * thread, unless the array is large enough for a second core's bandwidth to pay for a wake-up
 * of ~1 ms. */
#define ALL_FINITE_BYTES_PER_THREAD 67108864.0

/* The sum of x - x over the array is 0 when every element is finite and NaN otherwise (inf - inf
 * is NaN): branch-free, so it runs at memory speed. (Built without -ffast-math, the compiler
 * may not fold x - x to 0.) */
int FN(fastnn_all_finite)(const T *x, int64_t size) {
    int64_t chunks = fastnn_ceil_div(size, MISC_CHUNK);
    int threads = fastnn_threads_for((double)size * (double)sizeof(T),
                                     ALL_FINITE_BYTES_PER_THREAD);
    int64_t bad_chunks = 0;
    FASTNN_FOR_SUM(threads, chunk, chunks, bad_chunks,
        int64_t end = fastnn_min(size, (chunk + 1) * MISC_CHUNK);
        VEC acc = V(zero)();
        for (int64_t j = chunk * MISC_CHUNK; j < end; j += VLEN) {
            VEC v = end - j >= VLEN ? V(load)(x + j) : V(load_part)(x + j, end - j, 0);
            acc = V(add)(acc, V(sub)(v, v));
        }
        bad_chunks += V(hsum)(acc) != 0;); /* NaN != 0 holds */
    return bad_chunks == 0;
}
#undef MISC_CHUNK
#undef ALL_FINITE_BYTES_PER_THREAD
