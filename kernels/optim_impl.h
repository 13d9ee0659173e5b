/* optim_impl.h - SGD and Adam steps in place, one pass over the arrays, for T
 * (template: see instantiate.h). SGD in sgd_update_impl.h's vectors; Adam a plain loop over
 * a range, which the compiler vectorizes. */
#include "sgd_update_impl.h"

/* Fewest elements worth a thread of their own. */
#define OPTIM_GRAIN 32768

/* Start of part `part` of `parts` equal contiguous parts of `size` elements, on a cache line
 * (16 floats). One part per thread, in order, so a weight matrix (K, M) is split by rows
 * as the GEMM splits K for the next forward pass: each thread then reads weights that are
 * in its own core's cache. */
static inline int64_t FN(optim_part_start)(int64_t size, int64_t part, int64_t parts) {
    return part == parts ? size : fastnn_min(size, size * part / parts / 16 * 16);
}

/* The SGD step over [begin, end) a vector at a time (sgd_update_impl.h: the arithmetic the
 * weight-gradient GEMM's update epilogue does too, so the compiled loop's fused update gives
 * the bits of this one). */
static void FN(sgd_range)(T *restrict param, T *restrict velocity, const T *restrict grad,
                          int64_t begin, int64_t end, const FN(sgd_factors) *factors) {
    for (int64_t i = begin; i < end; i += VLEN) {
        int64_t cols = end - i;
        VEC g = cols >= VLEN ? V(load)(grad + i) : V(load_part)(grad + i, cols, 0);
        FN(sgd_vector)(param + i, velocity ? velocity + i : NULL, g, cols, factors);
    }
}

void FN(fastnn_sgd_step)(T *param, T *velocity, const T *grad, int64_t size, double lr,
                         double momentum, int nesterov, double weight_decay) {
    FN(sgd_factors) factors = FN(sgd_factors_of)(lr, momentum, nesterov, weight_decay);
    int threads = fastnn_threads_for((double)size, OPTIM_GRAIN);
    FASTNN_FOR(threads, part, threads,
               FN(sgd_range)(param, velocity, grad, FN(optim_part_start)(size, part, threads),
                             FN(optim_part_start)(size, part + 1, threads), &factors););
}

/* m_scale and v_scale are the bias corrections 1 / (1 - beta^step). */
static void FN(adam_range)(T *restrict param, T *restrict m, T *restrict v,
                           const T *restrict grad, int64_t begin, int64_t end, T lr, T beta1,
                           T beta2, T eps, T decay, T m_scale, T v_scale) {
    const T one_minus_beta1 = 1 - beta1, one_minus_beta2 = 1 - beta2;
    for (int64_t i = begin; i < end; i++) {
        T g = grad[i] + decay * param[i];
        T mi = beta1 * m[i] + one_minus_beta1 * g;
        T vi = beta2 * v[i] + one_minus_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] -= lr * (mi * m_scale) / (FASTNN_SQRT(vi * v_scale) + eps);
    }
}

void FN(fastnn_adam_step)(T *param, T *m, T *v, const T *grad, int64_t size, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          int64_t step) {
    T m_scale = (T)(1.0 / (1.0 - pow(beta1, (double)step)));
    T v_scale = (T)(1.0 / (1.0 - pow(beta2, (double)step)));
    int threads = fastnn_threads_for((double)size, OPTIM_GRAIN);
    FASTNN_FOR(threads, part, threads,
               FN(adam_range)(param, m, v, grad, FN(optim_part_start)(size, part, threads),
                              FN(optim_part_start)(size, part + 1, threads), (T)lr, (T)beta1,
                              (T)beta2, (T)eps, (T)weight_decay, m_scale, v_scale););
}
#undef OPTIM_GRAIN
