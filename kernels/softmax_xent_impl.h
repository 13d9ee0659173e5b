/* softmax_xent_impl.h - row-wise softmax, log-softmax, softmax and sigmoid cross-entropy, for T
 * (template: see instantiate.h). Every kernel reads a row of x at most twice: once for
 * its max and sum of exponentials (row_max_sumexp), once to write the result. */
#include "vmath_impl.h"

/* Rows per thread worth starting a thread for, in elements. */
#define SOFTMAX_GRAIN 32768.0

/* Vectors per step of row_max_sumexp: one rescaling exp per step instead of one per vector. */
#define SUMEXP_UNROLL 4

/* The max of row x (c values) and the sum of exp(x - max), in one read. Each lane keeps
 * its own running max and rescales its sum when that max grows (online softmax), once per
 * SUMEXP_UNROLL vectors; the lanes are combined at the end. When x_sum_out is not NULL, the
 * plain sum of the row is taken in the same read (label smoothing needs it). */
static inline void FN(row_max_sumexp)(const T *x, int64_t c, T *max_out, T *sum_out,
                                      T *x_sum_out) {
    VEC lane_max = V(set1)(-T_MAX), lane_sum = V(zero)(), lane_x_sum = V(zero)();
    int64_t j = 0;
    for (; j + SUMEXP_UNROLL * VLEN <= c; j += SUMEXP_UNROLL * VLEN) {
        VEC v[SUMEXP_UNROLL], step_max = lane_max;
#pragma GCC unroll 4
        for (int u = 0; u < SUMEXP_UNROLL; u++) {
            v[u] = V(load)(x + j + u * VLEN);
            step_max = V(max)(step_max, v[u]);
            if (x_sum_out) lane_x_sum = V(add)(lane_x_sum, v[u]);
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
        if (x_sum_out)
            lane_x_sum = V(add)(lane_x_sum, c - j >= VLEN ? v : V(load_part)(x + j, c - j, 0));
        VEC new_max = V(max)(lane_max, v);
        lane_sum = V(fma)(lane_sum, FN(vexp)(V(sub)(lane_max, new_max)),
                          FN(vexp)(V(sub)(v, new_max)));
        lane_max = new_max;
    }
    T row_max = V(hmax)(lane_max);
    *max_out = row_max;
    *sum_out = V(hsum)(V(mul)(lane_sum, FN(vexp)(V(sub)(lane_max, V(set1)(row_max)))));
    if (x_sum_out) *x_sum_out = V(hsum)(lane_x_sum);
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

/* out[j] = scale * exp(x[j] - max) + offset for the c values of a row; out may be x. */
static inline void FN(scaled_exp_row)(T *out, const T *x, int64_t c, T max, T scale,
                                      T offset) {
    VEC max_v = V(set1)(max), scale_v = V(set1)(scale), offset_v = V(set1)(offset);
    for (int64_t j = 0; j < c; j += VLEN) {
        if (c - j >= VLEN) {
            V(store)(out + j, V(fma)(FN(vexp)(V(sub)(V(load)(x + j), max_v)), scale_v, offset_v));
        } else {
            VEC v = V(load_part)(x + j, c - j, 0);
            V(store_part)(out + j, V(fma)(FN(vexp)(V(sub)(v, max_v)), scale_v, offset_v), c - j);
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
    FN(row_max_sumexp)(x, c, &max, &sum, NULL);
    FN(scaled_exp_row)(out, x, c, max, (T)1 / sum, 0);
}

static void FN(log_softmax_row)(T *out, const T *x, int64_t c) {
    T max, sum;
    FN(row_max_sumexp)(x, c, &max, &sum, NULL);
    VEC max_v = V(set1)(max), log_sum = V(set1)(FASTNN_LOG(sum));
    for (int64_t j = 0; j < c; j += VLEN) { /* (x - max) first: exact near the max */
        int64_t cols = c - j;
        VEC v = cols >= VLEN ? V(load)(x + j) : V(load_part)(x + j, cols, 0);
        V(store_part)(out + j, V(sub)(V(sub)(v, max_v), log_sum), cols);
    }
}

/* Lane numbers 0, 1, ... (VLEN is at most 16). */
static const T FN(xent_lanes)[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* Loss weight * -sum_j t'[j] log_softmax(x)[j] with the smoothed one-hot target
 * t' = (1 - eps) onehot(label) + eps / c, i.e. weight * (log(sum) - (1 - eps) (x[label] - max)
 * - eps/c sum_j (x[j] - max)); when grad is given, grad = scale * (softmax(x) - t') (scale
 * includes the weight); grad may be x. The row sum of label smoothing comes from the same
 * read as the max and the sum of exponentials. */
static void FN(xent_label_row)(T *loss, T *grad, const T *x, int64_t label, int64_t c, T scale,
                               T smoothing, T weight) {
    T max, sum, x_sum = 0;
    T picked = x[label]; /* before grad overwrites it */
    T offset = -scale * smoothing / (T)c;
    if (c <= VLEN) {
        VEC e = FN(short_row_exp)(x, c, &max, &sum);
        if (smoothing != 0) x_sum = V(hsum)(V(load_part)(x, c, 0));
        if (grad) { /* the label's lane less scale (1 - smoothing) in the register: read back
                     * from the masked store, grad[label] stalled the row (no store forwarding) */
            VEC away = V(abs)(V(sub)(V(load)(FN(xent_lanes)), V(set1)((T)label)));
            VEC hot = V(select_gt)(V(set1)((T)0.5), away, V(set1)(scale * (1 - smoothing)),
                                   V(zero)());
            V(store_part)(grad, V(sub)(V(fma)(e, V(set1)(scale / sum), V(set1)(offset)), hot), c);
        }
    } else {
        FN(row_max_sumexp)(x, c, &max, &sum, smoothing != 0 ? &x_sum : NULL);
        if (grad) {
            FN(scaled_exp_row)(grad, x, c, max, scale / sum, offset);
            grad[label] -= scale * (1 - smoothing);
        }
    }
    T loss_value = FASTNN_LOG(sum) - (1 - smoothing) * (picked - max);
    if (smoothing != 0) loss_value -= smoothing / (T)c * (x_sum - (T)c * max);
    *loss = weight * loss_value;
}

/* xent_label_row over the `count` rows of a block (count <= VLEN), for a few classes
 * (2 <= c <= VLEN / 2, and every row counted: no weights, no ignored label): the block's rows
 * are transposed in registers so that each vector holds one class of VLEN rows, and the max,
 * the exponentials, their sum, the picked logit and the gradient are computed for all rows at
 * once. One row at a time, the chain max -> exp -> sum -> log of a 2-class row took ~60 cycles
 * (5% of a tabular training step, batch 32, under perf). The same values as xent_label_row:
 * the same lane-wise exp, the max exact, the gradient's arithmetic per element the same and
 * the log the same scalar function; the sum of exponentials (and label smoothing's sum of
 * logits) adds the classes in order, so for c > 2 its rounding may differ from the row
 * kernel's tree of lanes by an ulp. grad may be logits. */
static void FN(xent_label_block)(T *loss, T *grad, const T *x, const int64_t *labels,
                                 int64_t count, int64_t c, T scale, T smoothing) {
    VEC rows[VLEN];
    T label_of[VLEN];
    for (int64_t r = 0; r < VLEN; r++) {
        rows[r] = r < count ? V(load_part)(x + r * c, c, 0) : V(zero)();
        label_of[r] = r < count ? (T)labels[r] : (T)0;
    }
    V(transpose)(rows); /* rows[j]: class j of the block's rows, lane r: row r */
    VEC label_v = V(load)(label_of), max = rows[0];
    for (int64_t j = 1; j < c; j++) max = V(max)(max, rows[j]);
    VEC sum = V(zero)(), picked = V(zero)(), x_sum = V(zero)();
    for (int64_t j = 0; j < c; j++) {
        VEC away = V(abs)(V(sub)(label_v, V(set1)((T)j)));
        picked = V(select_gt)(V(set1)((T)0.5), away, rows[j], picked);
        if (smoothing != 0) x_sum = V(add)(x_sum, rows[j]);
        VEC e = FN(vexp)(V(sub)(rows[j], max));
        sum = V(add)(sum, e);
        rows[j] = e;
    }
    if (grad) {
        VEC per_sum = V(div)(V(set1)(scale), sum), offset = V(set1)(-scale * smoothing / (T)c);
        VEC hot = V(set1)(scale * (1 - smoothing));
        for (int64_t j = 0; j < c; j++) {
            VEC away = V(abs)(V(sub)(label_v, V(set1)((T)j)));
            rows[j] = V(sub)(V(fma)(rows[j], per_sum, offset),
                             V(select_gt)(V(set1)((T)0.5), away, hot, V(zero)()));
        }
        V(transpose)(rows); /* back: rows[r] is row r's gradient */
        for (int64_t r = 0; r < count; r++) V(store_part)(grad + r * c, rows[r], c);
    }
    T sums[VLEN], maxes[VLEN], picks[VLEN], x_sums[VLEN];
    V(store)(sums, sum);
    V(store)(maxes, max);
    V(store)(picks, picked);
    V(store)(x_sums, x_sum);
    for (int64_t r = 0; r < count; r++) {
        T loss_value = FASTNN_LOG(sums[r]) - (1 - smoothing) * (picks[r] - maxes[r]);
        if (smoothing != 0) loss_value -= smoothing / (T)c * (x_sums[r] - (T)c * maxes[r]);
        loss[r] = loss_value;
    }
}

/* Ones to mask the lanes past a row's end (VLEN is at most 16). */
static const T FN(xent_ones)[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* Loss weight * -sum_j t'[j] * log_softmax(x)[j], t' = (1 - eps) p + eps / c, with 0 log 0 = 0
 * (a class of target 0 adds nothing even where its logit is -inf or its shifted logit
 * overflows), and grad = scale * (softmax(x) - t'); grad may be x. */
static void FN(xent_probs_row)(T *loss, T *grad, const T *x, const T *p, int64_t c, T scale,
                               T smoothing, T weight) {
    T max, sum;
    FN(row_max_sumexp)(x, c, &max, &sum, NULL);
    VEC max_v = V(set1)(max), log_sum = V(set1)(FASTNN_LOG(sum));
    VEC prob_scale = V(set1)(scale / sum), scale_v = V(set1)(scale);
    VEC keep = V(set1)(1 - smoothing), uniform = V(set1)(smoothing / (T)c), zero = V(zero)();
    VEC total = V(zero)();
    for (int64_t j = 0; j < c; j += VLEN) {
        int64_t cols = c - j;
        VEC shifted = V(sub)(cols >= VLEN ? V(load)(x + j) : V(load_part)(x + j, cols, 0), max_v);
        VEC target = V(fma)(cols >= VLEN ? V(load)(p + j) : V(load_part)(p + j, cols, 0), keep,
                            uniform);
        if (cols < VLEN) target = V(mul)(target, V(load_part)(FN(xent_ones), cols, 0));
        VEC term = V(mul)(target, V(sub)(shifted, log_sum));
        total = V(add)(total, V(select_gt)(target, zero, term, zero));
        if (grad) {
            VEC g = V(sub)(V(mul)(FN(vexp)(shifted), prob_scale), V(mul)(target, scale_v));
            if (cols >= VLEN)
                V(store)(grad + j, g);
            else
                V(store_part)(grad + j, g, cols);
        }
    }
    *loss = -weight * V(hsum)(total);
}

void FN(fastnn_softmax)(T *out, const T *x, int64_t n, int64_t c) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n, FN(softmax_row)(out + i * c, x + i * c, c););
}

void FN(fastnn_log_softmax)(T *out, const T *x, int64_t n, int64_t c) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n, FN(log_softmax_row)(out + i * c, x + i * c, c););
}

/* Row i of fastnn_xent_labels by xent_label_row. */
static inline void FN(xent_labels_row_at)(T *row_loss, T *grad, const T *logits,
                                          const int64_t *labels, const T *weight, int64_t i,
                                          int64_t c, double grad_scale, double label_smoothing,
                                          int64_t ignore_index) {
    T *row_grad = grad ? grad + i * c : NULL;
    if (labels[i] == ignore_index) {
        row_loss[i] = 0;
        if (row_grad) memset(row_grad, 0, (size_t)c * sizeof(T));
    } else {
        T w = weight ? weight[i] : (T)1;
        FN(xent_label_row)(row_loss + i, row_grad, logits + i * c, labels[i], c,
                           (T)grad_scale * w, (T)label_smoothing, w);
    }
}

/* The rows [i, i + count) of fastnn_xent_labels without weights, for a few classes: by
 * xent_label_block, or row by row when one of them has the ignored label. */
static inline void FN(xent_labels_block_at)(T *row_loss, T *grad, const T *logits,
                                            const int64_t *labels, int64_t i, int64_t count,
                                            int64_t c, double grad_scale,
                                            double label_smoothing, int64_t ignore_index) {
    int ignored = 0;
    for (int64_t r = i; r < i + count; r++) ignored |= labels[r] == ignore_index;
    if (!ignored)
        FN(xent_label_block)(row_loss + i, grad ? grad + i * c : NULL, logits + i * c,
                             labels + i, count, c, (T)grad_scale, (T)label_smoothing);
    else
        for (int64_t r = i; r < i + count; r++)
            FN(xent_labels_row_at)(row_loss, grad, logits, labels, NULL, r, c, grad_scale,
                                   label_smoothing, ignore_index);
}

void FN(fastnn_xent_labels)(T *row_loss, T *grad, const T *logits, const int64_t *labels,
                            const T *weight, int64_t n, int64_t c, double grad_scale,
                            double label_smoothing, int64_t ignore_index) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    if (!weight && c >= 2 && c <= VLEN / 2) { /* a few classes: VLEN rows at a time */
        FASTNN_FOR(threads, b, fastnn_ceil_div(n, VLEN),
            FN(xent_labels_block_at)(row_loss, grad, logits, labels, b * VLEN,
                                     fastnn_min(VLEN, n - b * VLEN), c, grad_scale,
                                     label_smoothing, ignore_index););
        return;
    }
    FASTNN_FOR(threads, i, n,
        FN(xent_labels_row_at)(row_loss, grad, logits, labels, weight, i, c, grad_scale,
                               label_smoothing, ignore_index););
}

void FN(fastnn_xent_probs)(T *row_loss, T *grad, const T *logits, const T *probs,
                           const T *weight, int64_t n, int64_t c, double grad_scale,
                           double label_smoothing) {
    int threads = fastnn_threads_for((double)n * c, SOFTMAX_GRAIN);
    FASTNN_FOR(threads, i, n,
        T w = weight ? weight[i] : (T)1;
        FN(xent_probs_row)(row_loss + i, grad ? grad + i * c : NULL, logits + i * c,
                           probs + i * c, c, (T)grad_scale * w, (T)label_smoothing, w););
}

/* Binary cross-entropy of sigmoid(z) per row: row_loss[i] = w_i sum_j (max(z, 0) - z t' +
 * log1p(exp(-|z|))), t' = (1 - eps) t + eps / 2; grad = scale w_i (sigmoid(z) - t'). Scalar
 * libm code: binary outputs are few per row. */
void FN(fastnn_sigmoid_xent)(T *row_loss, T *grad, const T *logits, const T *target,
                             const T *weight, int64_t n, int64_t m, double grad_scale,
                             double label_smoothing) {
    int threads = fastnn_threads_for((double)n * m, SOFTMAX_GRAIN / 4);
    T keep = (T)(1 - label_smoothing), half_eps = (T)(label_smoothing / 2);
    FASTNN_FOR(threads, i, n,
        T w = weight ? weight[i] : (T)1, scale = (T)grad_scale * w, total = 0;
        for (int64_t j = 0; j < m; j++) {
            T z = logits[i * m + j], t = target[i * m + j] * keep + half_eps;
            T e = FASTNN_EXP(-FASTNN_ABS(z)); /* in (0, 1]: never overflows */
            total += (z > 0 ? z : 0) - z * t + FASTNN_LOG1P(e);
            if (grad) grad[i * m + j] = scale * ((z >= 0 ? 1 : e) / (1 + e) - t);
        }
        row_loss[i] = w * total;);
}

#undef SOFTMAX_GRAIN
#undef SUMEXP_UNROLL
