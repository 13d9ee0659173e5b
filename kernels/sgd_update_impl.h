/* sgd_update_impl.h - one vector of the SGD step, for T (template: see instantiate.h): the
 * arithmetic of fastnn_sgd_step (optim_impl.h) and of the weight-gradient GEMM's update
 * epilogue (gemm_impl.h, fastnn_sgd_update), written once so both give the same bits.
 * Included by each template that needs it; the body is guarded per type (as vmath_impl.h). */
#if (defined(FASTNN_INSTANCE_F32) && !defined(FASTNN_SGD_UPDATE_F32)) ||                       \
    (defined(FASTNN_INSTANCE_F64) && !defined(FASTNN_SGD_UPDATE_F64))
#ifdef FASTNN_INSTANCE_F32
#define FASTNN_SGD_UPDATE_F32
#else
#define FASTNN_SGD_UPDATE_F64
#endif

/* The step's factors in T. */
typedef struct {
    VEC lr_neg, momentum, decay;
    int nesterov;
} FN(sgd_factors);

static inline FN(sgd_factors) FN(sgd_factors_of)(double lr, double momentum, int nesterov,
                                                  double weight_decay) {
    FN(sgd_factors) f = {V(set1)(-(T)lr), V(set1)((T)momentum), V(set1)((T)weight_decay),
                         nesterov};
    return f;
}

/* The `cols` (<= VLEN, or more: a whole vector) parameters at param, and their velocities at
 * velocity (NULL without momentum), take one SGD step with gradient `grad` (PyTorch's SGD, the
 * contract's sgd_step): g = grad + decay * param; vel = momentum * vel + g; param -= lr * vel,
 * or lr * (g + momentum * vel) with Nesterov, or lr * g without momentum. Each a*b + c is one
 * fused multiply-add (V(fma)). */
static inline __attribute__((always_inline)) void FN(sgd_vector)(T *param, T *velocity,
                                                                 VEC grad, int64_t cols,
                                                                 const FN(sgd_factors) *f) {
    int full = cols >= VLEN;
    VEC p = full ? V(load)(param) : V(load_part)(param, cols, 0);
    VEC g = V(fma)(f->decay, p, grad), step = g;
    if (velocity) {
        VEC vel = V(fma)(f->momentum, full ? V(load)(velocity) : V(load_part)(velocity, cols, 0),
                         g);
        if (full)
            V(store)(velocity, vel);
        else
            V(store_part)(velocity, vel, cols);
        step = f->nesterov ? V(fma)(f->momentum, vel, g) : vel;
    }
    p = V(fma)(f->lr_neg, step, p);
    if (full)
        V(store)(param, p);
    else
        V(store_part)(param, p, cols);
}

#endif
