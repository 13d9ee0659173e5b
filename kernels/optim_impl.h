/* optim_impl.h - SGD and Adam steps in place, one pass over the arrays, for T
 * (template: see instantiate.h). Plain loops over a range: the compiler vectorizes them; plain
 * SGD's is written in vectors (vmath_impl.h's sgd_plain, shared with the fused weight update
 * of linear_impl.h). */
#include "vmath_impl.h"

/* Fewest elements worth a thread of their own. */
#define OPTIM_GRAIN 32768

/* Start of part `part` of `parts` equal contiguous parts of `size` elements, on a cache line
 * (16 floats). One part per thread, in order, so a weight matrix (K, M) is split by rows
 * as the GEMM splits K for the next forward pass: each thread then reads weights that are
 * in its own core's cache. */
static inline int64_t FN(optim_part_start)(int64_t size, int64_t part, int64_t parts) {
    return part == parts ? size : fastnn_min(size, size * part / parts / 16 * 16);
}

static void FN(sgd_range)(T *restrict param, T *restrict velocity, const T *restrict grad,
                          int64_t begin, int64_t end, T lr, T momentum, int nesterov, T decay) {
    if (!velocity) {
        FN(sgd_plain_run)(param + begin, grad + begin, end - begin, lr, decay);
    } else if (nesterov) {
        for (int64_t i = begin; i < end; i++) {
            T g = grad[i] + decay * param[i];
            T vel = momentum * velocity[i] + g;
            velocity[i] = vel;
            param[i] -= lr * (g + momentum * vel);
        }
    } else {
        for (int64_t i = begin; i < end; i++) {
            T vel = momentum * velocity[i] + (grad[i] + decay * param[i]);
            velocity[i] = vel;
            param[i] -= lr * vel;
        }
    }
}

void FN(fastnn_sgd_step)(T *param, T *velocity, const T *grad, int64_t size, double lr,
                         double momentum, int nesterov, double weight_decay) {
    int threads = fastnn_threads_for((double)size, OPTIM_GRAIN);
    FASTNN_FOR(threads, part, threads,
               FN(sgd_range)(param, velocity, grad, FN(optim_part_start)(size, part, threads),
                             FN(optim_part_start)(size, part + 1, threads), (T)lr, (T)momentum,
                             nesterov, (T)weight_decay););
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
