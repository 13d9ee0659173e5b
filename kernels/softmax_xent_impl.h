/* softmax_xent_impl.h - row-wise softmax, log-softmax and softmax cross-entropy, for T
 * (template: see instantiate.h). Every kernel reads a row of x at most twice: once for
 * its max and sum of exponentials (row_max_sumexp), once to write the result. */
#include "vmath_impl.h"

/* Rows per thread worth starting a thread for, in elements. */
#define SOFTMAX_GRAIN 32768.0

/* Vectors per step of row_max_sumexp: one rescaling exp per step instead of one per vector. */
#define SUMEXP_UNROLL 4

/* The max of row x (c values) and the sum of exp(x - max), in one read. Each lane keeps
 * its own running max and rescales its sum when that max grows (online softmax), once per
 * SUMEXP_UNROLL vectors; the lanes are combined at the end. */
static inline void FN(row_max_sumexp)(const T *x, int64_t c, T *max_out, T *sum_out) {
    VEC lane_max = V(set1)(-T_MAX), lane_sum = V(zero)();
    int64_t j = 0;
    for (; j + SUMEXP_UNROLL * VLEN <= c; j += SUMEXP_UNROLL * VLEN) {
        VEC v[SUMEXP_UNROLL], step_max = lane_max;
#pragma GCC unroll 4
        for (int u = 0; u < SUMEXP_UNROLL; u++) {
            v[u] = V(load)(x + j + u * VLEN);
            step_max = V(max)(step_max, v[u]);
        }
        VEC sum = V(mul)(lane_sum, FN(vexp)(V(sub)(lane_max, step_max)));
#pragma GCC unroll 4
        for (int u = 0; u < SUMEXP_UNROLL; u++)
            sum = V(add)(sum, FN(vexp)(V(sub)(v[u], step_max)));
        lane_sum = sum;
        lane_max = step_max;
    }
    for (; j < c; j += VLEN) {
        VEC v = c - j >= VLEN ? V(load)(x + j) : V(load_part)(x + j, c - j, -T_MAX);
        VEC new_max = V(max)(lane_max, v);
        lane_sum = V(fma)(lane_sum, FN(vexp)(V(sub)(lane_max, new_max)),
                          FN(vexp)(V(sub)(v, new_max)));
        lane_max = new_max;
    }
    T row_max = V(hmax)(lane_max);
    *max_out = row_max;
    *sum_out = V(hsum)(V(mul)(lane_sum, FN(vexp)(V(sub)(lane_max, V(set1)(row_max)))));
}

/* A row of c <= VLEN values is one vector: its max, exponentials and sum need one exp. The
 * padding lanes are -T_MAX, whose exp is 0 (see vexp). */
static inline VEC FN(short_row_exp)(const T *x, int64_t c, T *max_out, T *sum_out) {
    VEC v = V(load_part)(x, c, -T_MAX);
    T row_max = V(hmax)(v);
    VEC e = FN(vexp)(V(sub)(v, V(set1)(row_max)));
    *max_out = row_max;
    *sum_out = V(hsum)(e);
    return e;
}

/* out[j] = scale * exp(x[j] - max) for the c values of a row; out may be x. */
static inline void FN(scaled_exp_row)(T *out, const T *x, int64_t c, T max, T scale) {
    VEC max_v = V(set1)(max), scale_v = V(set1)(scale);
    for (int64_t j = 0; j < c; j += VLEN) {
        if (c - j >= VLEN) {
            V(store)(out + j, V(mul)(FN(vexp)(V(sub)(V(load)(x + j), max_v)), scale_v));
        } else {
            VEC v = V(load_part)(x + j, c - j, 0);
            V(store_part)(out + j, V(mul)(FN(vexp)(V(sub)(v, max_v)), scale_v), c - j);
        }
    }
}

static void FN(softmax_row)(T *out, const T *x, int64_t c) {
    T max, sum;
    if (c <= VLEN) {
        VEC e = FN(short_row_exp)(x, c, &max, &sum);
        V(store_part)(out, V(mul)(e, V(set1)((T)1 / sum)), c);
        return;
    }
    FN(row_max_sumexp)(x, c, &max, &sum);
    FN(scaled_exp_row)(out, x, c, max, (T)1 / sum);
}

static void FN(log_softmax_row)(T *out, const T *x, int64_t c) {
    T max, sum;
    FN(row_max_sumexp)(x, c, &max, &sum);
    VEC max_v = V(set1)(max), log_sum = V(set1)(FASTNN_LOG(sum));
    for (int64_t j = 0; j < c; j += VLEN) { /* (x - max) first: exact near the max */
        int64_t cols = c - j;
        VEC v = cols >= VLEN ? V(load)(x + j) : V(load_part)(x + j, cols, 0);
        V(store_part)(out + j, V(sub)(V(sub)(v, max_v), log_sum), cols);
    }
}

/* Loss -log_softmax(x)[label] = log(sum) - (x[label] - max), and when grad is given,
 * grad = scale * (softmax(x) - onehot(label)); grad may be x. */
static void FN(xent_label_row)(T *loss, T *grad, const T *x, int64_t label, int64_t c, T scale) {
    T max, sum;
    T picked = x[label]; /* before grad overwrites it */
    if (c <= VLEN) {
        VEC e = FN(short_row_exp)(x, c, &max, &sum);
        if (grad) V(store_part)(grad, V(mul)(e, V(set1)(scale / sum)), c);
    } else {
        FN(row_max_sumexp)(x, c, &max, &sum);
        if (grad) FN(scaled_exp_row)(grad, x, c, max, scale / sum);
    }
    if (grad) grad[label] -= scale;
    *loss = FASTNN_LOG(sum) - (picked - max);
}

/* Loss -sum_j p[j] * log_softmax(x)[j] and grad = scale * (softmax(x) - p); grad may be x. */
static void FN(xent_probs_row)(T *loss, T *grad, const T *x, const T *p, int64_t c, T scale) {
    T max, sum;
    FN(row_max_sumexp)(x, c, &max, &sum);
    VEC max_v = V(set1)(max), log_sum = V(set1)(FASTNN_LOG(sum));
    VEC prob_scale = V(set1)(scale / sum), scale_v = V(set1)(scale);
    VEC total = V(zero)();
    for (int64_t j = 0; j < c; j += VLEN) {
        int64_t cols = c - j;
        VEC shifted = V(sub)(cols >= VLEN ? V(load)(x + j) : V(load_part)(x + j, cols, 0), max_v);
        VEC target = cols >= VLEN ? V(load)(p + j) : V(load_part)(p + j, cols, 0);
        total = V(fma)(target, V(sub)(shifted, log_sum), total);
        if (grad) {
            VEC g = V(sub)(V(mul)(FN(vexp)(shifted), prob_scale), V(mul)(target, scale_v));
            if (cols >= VLEN)
                V(store)(grad + j, g);
            else
                V(store_part)(grad + j, g, cols);
        }
    }
    *loss = -V(hsum)(total);
}

void FN(fastnn_softmax)(T *out, const T *x, int64_t n, int64_t c) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n, FN(softmax_row)(out + i * c, x + i * c, c););
}

void FN(fastnn_log_softmax)(T *out, const T *x, int64_t n, int64_t c) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n, FN(log_softmax_row)(out + i * c, x + i * c, c););
}

void FN(fastnn_xent_labels)(T *row_loss, T *grad, const T *logits, const int64_t *labels,
                            int64_t n, int64_t c, double grad_scale) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n, FN(xent_label_row)(row_loss + i, grad ? grad + i * c : NULL, logits + i * c, labels[i],
                           c, (T)grad_scale););
}

void FN(fastnn_xent_probs)(T *row_loss, T *grad, const T *logits, const T *probs, int64_t n,
                           int64_t c, double grad_scale) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n, FN(xent_probs_row)(row_loss + i, grad ? grad + i * c : NULL, logits + i * c,
                           probs + i * c, c, (T)grad_scale););
}
#undef SOFTMAX_GRAIN
#undef SUMEXP_UNROLL
