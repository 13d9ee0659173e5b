/* vmath_impl.h - vector exp and the activations, for T (template: see instantiate.h).
 * Included by every template that needs them; one translation unit may instantiate several
 * of those templates (isa_kernels.h), so the body is guarded per type. Everything is static
 * inline. */
#include "libm.h"
#if (defined(FASTNN_INSTANCE_F32) && !defined(FASTNN_VMATH_F32)) ||                            \
    (defined(FASTNN_INSTANCE_F64) && !defined(FASTNN_VMATH_F64))
#ifdef FASTNN_INSTANCE_F32
#define FASTNN_VMATH_F32
#else
#define FASTNN_VMATH_F64
#endif

/* Range reduction of exp: x = n ln2 + r with |r| <= ln2/2 (ln2 split in a high part exact
 * in T and a low correction, Cody-Waite); returns exp(r) - 1 by its Taylor polynomial of
 * degree EXP_DEGREE (Horner, no constant term, so small results keep their precision) and
 * sets *n. x must lie in [EXP_LO, EXP_HI], where 2^n is a normal number. */
static inline VEC FN(exp_reduced_minus_one)(VEC x, VEC *n) {
    *n = V(round)(V(mul)(x, V(set1)((T)1.44269504088896340736)));
    VEC r = V(fma)(*n, V(set1)((T)-0.693145751953125), x);
    r = V(fma)(*n, V(set1)((T)-1.42860682030941723212e-6), r);
    T inverse_factorial = 1;
    for (int i = 2; i <= EXP_DEGREE; i++) inverse_factorial /= (T)i;
    VEC q = V(set1)(inverse_factorial);
#pragma GCC unroll 16
    for (int i = EXP_DEGREE; i >= 2; i--) {
        inverse_factorial *= (T)i; /* now 1/(i-1)! */
        q = V(fma)(q, r, V(set1)(inverse_factorial));
    }
    return V(mul)(q, r);
}

/* V(max)(a, b) and V(min)(a, b) return b when either is NaN, so NaN stays NaN here. */
static inline VEC FN(exp_clamp)(VEC x) {
    return V(min)(V(set1)((T)EXP_HI), V(max)(V(set1)((T)EXP_LO), x));
}

/* exp(x) lane-wise, to about one ulp of T. Below EXP_LO the result is 0 (as the true value
 * is, to within T's smallest normal number), so exp(-1000) and exp(-inf) are exactly 0. */
static inline VEC FN(vexp)(VEC x) {
    VEC n, q = FN(exp_reduced_minus_one)(FN(exp_clamp)(x), &n);
    VEC e = V(pow2i)(V(add)(q, V(set1)((T)1)), n);
    return V(select_gt)(V(set1)((T)EXP_LO), x, V(zero)(), e); /* NaN: e, a NaN */
}

/* exp(x) - 1 lane-wise, accurate also for x near 0 (where exp(x) - 1 cancels). */
static inline VEC FN(vexpm1)(VEC x) {
    VEC n, q = FN(exp_reduced_minus_one)(FN(exp_clamp)(x), &n);
    VEC one = V(set1)((T)1);
    /* 2^n (q + 1) - 1 = 2^n q + (2^n - 1); both terms exact or small when n is 0. */
    VEC e = V(add)(V(pow2i)(q, n), V(sub)(V(pow2i)(one, n), one));
    return V(select_gt)(V(set1)((T)EXP_LO), x, V(set1)((T)-1), e);
}

/* act(z) lane-wise; the forms avoid overflow at any z (exp of -|z| only). */
static inline VEC FN(activate)(VEC z, int activation, T alpha) {
    VEC zero = V(zero)(), one = V(set1)((T)1);
    switch (activation) {
    case ACT_RELU:
        return V(max)(zero, z); /* NaN stays NaN, as in np.maximum */
    case ACT_LEAKY_RELU:
        return V(select_gt)(z, zero, z, V(mul)(z, V(set1)(alpha)));
    case ACT_SIGMOID: {
        VEC e = FN(vexp)(V(sub)(zero, V(abs)(z)));
        VEC r = V(div)(one, V(add)(one, e)); /* sigmoid(|z|) */
        return V(select_gt)(z, zero, r, V(mul)(e, r));
    }
    case ACT_TANH: {
        /* tanh(|z|) = (1 - e) / (1 + e) with e = exp(-2|z|), written with e - 1 so small z
         * keeps its relative precision. */
        VEC em1 = FN(vexpm1)(V(mul)(V(set1)((T)-2), V(abs)(z)));
        VEC t = V(div)(V(sub)(zero, em1), V(add)(V(set1)((T)2), em1));
        return V(select_gt)(z, zero, t, V(sub)(zero, t));
    }
    default:
        return z;
    }
}

/* act'(z) written with the activation's output y = act(z), lane-wise. */
static inline VEC FN(activation_grad)(VEC y, int activation, T alpha) {
    VEC zero = V(zero)(), one = V(set1)((T)1);
    switch (activation) {
    case ACT_RELU:
        return V(select_gt)(y, zero, one, zero);
    case ACT_LEAKY_RELU:
        return V(select_gt)(y, zero, one, V(set1)(alpha));
    case ACT_SIGMOID:
        return V(mul)(y, V(sub)(one, y));
    case ACT_TANH:
        return V(sub)(one, V(mul)(y, y));
    default:
        return one;
    }
}

/* Plain SGD's step of one vector of parameters w with gradient g: w - lr (g + decay w), as
 * torch.optim.SGD without momentum; neg_lr holds -lr. Two multiply-adds, written once here
 * (with sgd_plain_run, its loop) for the two places that take the step (optim_impl.h's
 * sgd_range and linear_impl.h's weight update fused with the weight gradient), so both give
 * the same bits. */
static inline VEC FN(sgd_plain)(VEC w, VEC g, VEC neg_lr, VEC decay) {
    return V(fma)(neg_lr, V(fma)(decay, w, g), w);
}

/* w[0..size) stepped by sgd_plain from g[0..size). */
static inline void FN(sgd_plain_run)(T *restrict w, const T *restrict g, int64_t size, T lr,
                                     T decay) {
    VEC neg_lr = V(set1)(-lr), decay_v = V(set1)(decay);
    for (int64_t i = 0; i < size; i += VLEN) {
        int64_t count = size - i;
        if (count >= VLEN) {
            V(store)(w + i, FN(sgd_plain)(V(load)(w + i), V(load)(g + i), neg_lr, decay_v));
        } else {
            VEC r = FN(sgd_plain)(V(load_part)(w + i, count, 0), V(load_part)(g + i, count, 0),
                                  neg_lr, decay_v);
            V(store_part)(w + i, r, count);
        }
    }
}

/* SGD with momentum over w[0..size), velocity vel, gradient g, as torch.optim.SGD (dampening
 * 0): vel = momentum vel + (g + decay w); w -= lr vel, or with Nesterov lr (g + decay w +
 * momentum vel). Adam's step: m = beta1 m + (1 - beta1) g', v = beta2 v + (1 - beta2) g'^2
 * with g' = g + decay w, w -= lr (m m_scale) / (sqrt(v v_scale) + eps), m_scale and v_scale
 * the bias corrections 1 / (1 - beta^step) (adam_scales), as torch.optim.Adam.
 * One copy each (noinline): optim_impl.h's steps over the parameters and linear_impl.h's
 * weight update fused with the weight gradient call the same machine code; each element is
 * stepped alone (the vector body and its scalar tail contract the same multiply-adds), so
 * both give the same bits wherever a run starts. */
static __attribute__((noinline)) void FN(sgd_momentum_run)(T *restrict w, T *restrict vel,
                                                            const T *restrict g, int64_t size,
                                                            T lr, T momentum, int nesterov,
                                                            T decay) {
    if (nesterov) {
        for (int64_t i = 0; i < size; i++) {
            T gi = g[i] + decay * w[i];
            T vi = momentum * vel[i] + gi;
            vel[i] = vi;
            w[i] -= lr * (gi + momentum * vi);
        }
    } else {
        for (int64_t i = 0; i < size; i++) {
            T vi = momentum * vel[i] + (g[i] + decay * w[i]);
            vel[i] = vi;
            w[i] -= lr * vi;
        }
    }
}

static inline void FN(adam_scales)(double beta1, double beta2, int64_t step, T *m_scale,
                                   T *v_scale) {
    *m_scale = (T)(1.0 / (1.0 - pow(beta1, (double)step)));
    *v_scale = (T)(1.0 / (1.0 - pow(beta2, (double)step)));
}

static __attribute__((noinline)) void FN(adam_run)(T *restrict w, T *restrict m,
                                                    T *restrict v, const T *restrict g,
                                                    int64_t size, T lr, T beta1, T beta2, T eps,
                                                    T decay, T m_scale, T v_scale) {
    const T one_minus_beta1 = 1 - beta1, one_minus_beta2 = 1 - beta2;
    for (int64_t i = 0; i < size; i++) {
        T gi = g[i] + decay * w[i];
        T mi = beta1 * m[i] + one_minus_beta1 * gi;
        T vi = beta2 * v[i] + one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr * (mi * m_scale) / (FASTNN_SQRT(vi * v_scale) + eps);
    }
}
#endif
