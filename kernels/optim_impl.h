/* optim_impl.h - SGD and Adam steps in place, one pass over the arrays, for T
 * (template: see instantiate.h). The loops are vmath_impl.h's (sgd_plain_run in vectors,
 * sgd_momentum_run and adam_run plain loops that the compiler vectorizes), shared with the
 * weight update that linear_impl.h fuses with the weight gradient. */
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
    if (!velocity)
        FN(sgd_plain_run)(param + begin, grad + begin, end - begin, lr, decay);
    else
        FN(sgd_momentum_run)(param + begin, velocity + begin, grad + begin, end - begin, lr,
                             momentum, nesterov, decay);
}

void FN(fastnn_sgd_step)(T *param, T *velocity, const T *grad, int64_t size, double lr,
                         double momentum, int nesterov, double weight_decay) {
    int threads = fastnn_threads_for((double)size, OPTIM_GRAIN);
    FASTNN_FOR(threads, part, threads,
               FN(sgd_range)(param, velocity, grad, FN(optim_part_start)(size, part, threads),
                             FN(optim_part_start)(size, part + 1, threads), (T)lr, (T)momentum,
                             nesterov, (T)weight_decay););
}

void FN(fastnn_adam_step)(T *param, T *m, T *v, const T *grad, int64_t size, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          int64_t step) {
    T m_scale, v_scale;
    FN(adam_scales)(beta1, beta2, step, &m_scale, &v_scale);
    int threads = fastnn_threads_for((double)size, OPTIM_GRAIN);
    FASTNN_FOR(threads, part, threads, {
        int64_t begin = FN(optim_part_start)(size, part, threads);
        int64_t end = FN(optim_part_start)(size, part + 1, threads);
        FN(adam_run)(param + begin, m + begin, v + begin, grad + begin, end - begin, (T)lr,
                     (T)beta1, (T)beta2, (T)eps, (T)weight_decay, m_scale, v_scale);
    });
}
#undef OPTIM_GRAIN
