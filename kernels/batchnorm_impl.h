/* batchnorm_impl.h - fused batch normalization (statistics, normalize, scale, shift and an
 * activation) and its backward, for T (template: see instantiate.h).
 *
 * x, y, dy, out, dx: (N, M) row-major; every other array (M,). The threads split the rows:
 * each sums the columns of its rows (register accumulators over a block of columns, as
 * linear_impl.h's dz_and_db_block), a barrier, each combines a share of the columns into the
 * per-column coefficients, a barrier, then each writes its rows. A thread's rows are read a
 * second time while they are still in its L2 (1024 x 256 float32 is 512 KB per thread): one
 * pass over memory. One thread runs the same phases without a parallel region. */
#include "vmath_impl.h"

/* Rows x columns worth a thread of their own. */
#define BN_GRAIN 32768.0
/* Column block of the sums: BN_BLOCK_VECTORS vectors, two accumulators each, in registers. */
#define BN_BLOCK_VECTORS 4

#define BN_BARRIER(team)                                                                       \
    do {                                                                                        \
        if ((team) > 1) {                                                                       \
            FASTNN_PRAGMA(omp barrier)                                                          \
        }                                                                                       \
    } while (0)

static inline VEC FN(bn_load)(const T *p, int64_t cols) {
    return cols >= VLEN ? V(load)(p) : V(load_part)(p, cols, 0);
}

static inline void FN(bn_store)(T *p, VEC v, int64_t cols) {
    if (cols >= VLEN)
        V(store)(p, v);
    else
        V(store_part)(p, v, cols);
}

/* Over rows [i0, i1): first (m) = column sums of (x - shift) and second (m) = of its squares
 * (forward: shifted by a row of x, which keeps the variance exact for large means); or, for
 * the backward (dy given), first = sums of dz = dy * act'(y) and second = of dz * xhat, with
 * xhat = (x - mean) * inv_std. */
static void FN(bn_column_sums)(T *first, T *second, const T *x, const T *shift,
                               const T *inv_std, const T *y, const T *dy, int64_t i0,
                               int64_t i1, int64_t m, int activation, T alpha) {
    const int64_t block = BN_BLOCK_VECTORS * VLEN;
    for (int64_t j0 = 0; j0 < m; j0 += block) {
        int64_t width = fastnn_min(block, m - j0);
        VEC a[BN_BLOCK_VECTORS], b[BN_BLOCK_VECTORS], center[BN_BLOCK_VECTORS],
            scale[BN_BLOCK_VECTORS];
#pragma GCC unroll 4
        for (int v = 0; v < BN_BLOCK_VECTORS; v++) {
            int64_t cols = width - v * VLEN;
            a[v] = b[v] = center[v] = scale[v] = V(zero)();
            if (cols <= 0) continue;
            center[v] = FN(bn_load)(shift + j0 + v * VLEN, cols);
            scale[v] = dy ? FN(bn_load)(inv_std + j0 + v * VLEN, cols) : V(zero)();
        }
        for (int64_t i = i0; i < i1; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < BN_BLOCK_VECTORS; v++) {
                int64_t cols = width - v * VLEN;
                if (cols <= 0) break;
                int64_t at = i * m + j0 + v * VLEN;
                VEC d = V(sub)(FN(bn_load)(x + at, cols), center[v]);
                if (dy) {
                    VEC dz = V(mul)(FN(bn_load)(dy + at, cols),
                                    FN(activation_grad)(FN(bn_load)(y + at, cols), activation,
                                                        alpha));
                    a[v] = V(add)(a[v], dz);
                    b[v] = V(fma)(dz, V(mul)(d, scale[v]), b[v]);
                } else {
                    a[v] = V(add)(a[v], d);
                    b[v] = V(fma)(d, d, b[v]);
                }
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < BN_BLOCK_VECTORS; v++) {
            int64_t cols = width - v * VLEN;
            if (cols <= 0) break;
            V(store_part)(first + j0 + v * VLEN, a[v], cols);
            V(store_part)(second + j0 + v * VLEN, b[v], cols);
        }
    }
}

/* Column j's total over the team's partial sums (partial: team blocks of 2m numbers). */
static inline T FN(bn_total)(const T *partial, int team, int64_t m, int64_t j) {
    T total = 0;
    for (int q = 0; q < team; q++) total += partial[(int64_t)q * 2 * m + j];
    return total;
}

typedef struct {
    T *out, *mean, *inv_std, *moving_mean, *moving_var, *partial, *scale;
    const T *x, *gamma, *beta;
    int64_t n, m;
    T momentum, epsilon, alpha;
    int training, activation;
} FN(bn_forward_args);

static void FN(bn_forward_team)(const FN(bn_forward_args) *a, int t, int team) {
    int64_t n = a->n, m = a->m, i0 = n * t / team, i1 = n * (t + 1) / team;
    T *partial = a->partial + (int64_t)t * 2 * m;
    if (a->training)
        FN(bn_column_sums)(partial, partial + m, a->x, a->x, NULL, NULL, NULL, i0, i1, m, 0, 0);
    BN_BARRIER(team);
    for (int64_t j = m * t / team; j < m * (t + 1) / team; j++) {
        T mean, var;
        if (a->training) {
            T shift = a->x[j], d = FN(bn_total)(a->partial, team, m, j) / (T)n;
            T square = FN(bn_total)(a->partial + m, team, m, j) / (T)n;
            mean = shift + d;
            var = square - d * d;
            if (var < 0) var = 0; /* rounding; a constant column gives exactly 0 */
            a->moving_mean[j] = a->momentum * a->moving_mean[j] + (1 - a->momentum) * mean;
            a->moving_var[j] = a->momentum * a->moving_var[j] + (1 - a->momentum) * var;
        } else {
            mean = a->moving_mean[j];
            var = a->moving_var[j];
        }
        T inv = (T)1 / FASTNN_SQRT(var + a->epsilon);
        a->mean[j] = mean;
        a->inv_std[j] = inv;
        a->scale[j] = a->gamma[j] * inv;
    }
    BN_BARRIER(team);
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = 0; j < m; j += VLEN) {
            int64_t cols = m - j;
            VEC z = V(fma)(V(sub)(FN(bn_load)(a->x + i * m + j, cols), FN(bn_load)(a->mean + j, cols)),
                           FN(bn_load)(a->scale + j, cols), FN(bn_load)(a->beta + j, cols));
            FN(bn_store)(a->out + i * m + j, FN(activate)(z, a->activation, a->alpha), cols);
        }
    }
}

int FN(fastnn_batchnorm_forward)(T *out, T *mean, T *inv_std, T *moving_mean, T *moving_var,
                                 const T *x, const T *gamma, const T *beta, int64_t n,
                                 int64_t m, double momentum, double epsilon, int training,
                                 int activation, double alpha) {
    int threads = fastnn_threads_for((double)n * m, BN_GRAIN);
    if (threads > n) threads = (int)n;
    T *scratch = fastnn_scratch(SCRATCH_BATCHNORM, (size_t)(2 * threads + 1) * m * sizeof(T));
    if (!scratch) return FASTNN_OUT_OF_MEMORY;
    FN(bn_forward_args) args = {out, mean, inv_std, moving_mean, moving_var, scratch,
                                scratch + (int64_t)2 * threads * m, x, gamma, beta, n, m,
                                (T)momentum, (T)epsilon, (T)alpha, training, activation};
    if (threads == 1) {
        FN(bn_forward_team)(&args, 0, 1);
    } else {
        int team_cpu = fastnn_team_cpu();
#pragma omp parallel num_threads(threads)
        {
            fastnn_team_join(team_cpu);
            FN(bn_forward_team)(&args, fastnn_team_index(), fastnn_team_size());
        }
    }
    return FASTNN_OK;
}

typedef struct {
    T *dx, *dgamma, *dbeta, *partial, *coef;
    const T *x, *y, *dy, *gamma, *mean, *inv_std;
    int64_t n, m;
    T alpha;
    int batch_statistics, activation;
} FN(bn_backward_args);

static void FN(bn_backward_team)(const FN(bn_backward_args) *a, int t, int team) {
    int64_t n = a->n, m = a->m, i0 = n * t / team, i1 = n * (t + 1) / team;
    T *partial = a->partial + (int64_t)t * 2 * m;
    FN(bn_column_sums)(partial, partial + m, a->x, a->mean, a->inv_std, a->y, a->dy, i0, i1, m,
                       a->activation, a->alpha);
    BN_BARRIER(team);
    /* dx = gamma inv_std (dz - dbeta/N - (x - mean) inv_std dgamma/N): coefficients
     * scale, offset, slope per column (offset and slope 0 for fixed statistics). */
    T *scale = a->coef, *offset = a->coef + m, *slope = a->coef + 2 * m;
    for (int64_t j = m * t / team; j < m * (t + 1) / team; j++) {
        T dbeta = FN(bn_total)(a->partial, team, m, j);
        T dgamma = FN(bn_total)(a->partial + m, team, m, j);
        a->dbeta[j] = dbeta;
        a->dgamma[j] = dgamma;
        scale[j] = a->gamma[j] * a->inv_std[j];
        offset[j] = a->batch_statistics ? dbeta / (T)n : 0;
        slope[j] = a->batch_statistics ? dgamma / (T)n * a->inv_std[j] : 0;
    }
    if (!a->dx) return;
    BN_BARRIER(team);
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t j = 0; j < m; j += VLEN) {
            int64_t cols = m - j, at = i * m + j;
            VEC dz = V(mul)(FN(bn_load)(a->dy + at, cols),
                            FN(activation_grad)(FN(bn_load)(a->y + at, cols), a->activation,
                                                a->alpha));
            VEC centered = V(sub)(FN(bn_load)(a->x + at, cols), FN(bn_load)(a->mean + j, cols));
            VEC inner = V(sub)(V(sub)(dz, FN(bn_load)(offset + j, cols)),
                               V(mul)(centered, FN(bn_load)(slope + j, cols)));
            FN(bn_store)(a->dx + at, V(mul)(inner, FN(bn_load)(scale + j, cols)), cols);
        }
    }
}

int FN(fastnn_batchnorm_backward)(T *dx, T *dgamma, T *dbeta, const T *x, const T *y,
                                  const T *dy, const T *gamma, const T *mean,
                                  const T *inv_std, int64_t n, int64_t m, int batch_statistics,
                                  int activation, double alpha) {
    int threads = fastnn_threads_for((double)n * m, BN_GRAIN);
    if (threads > n) threads = (int)n;
    T *scratch = fastnn_scratch(SCRATCH_BATCHNORM, (size_t)(2 * threads + 3) * m * sizeof(T));
    if (!scratch) return FASTNN_OUT_OF_MEMORY;
    FN(bn_backward_args) args = {dx, dgamma, dbeta, scratch, scratch + (int64_t)2 * threads * m,
                                 x, y, dy, gamma, mean, inv_std, n, m, (T)alpha,
                                 batch_statistics, activation};
    if (threads == 1) {
        FN(bn_backward_team)(&args, 0, 1);
    } else {
        int team_cpu = fastnn_team_cpu();
#pragma omp parallel num_threads(threads)
        {
            fastnn_team_join(team_cpu);
            FN(bn_backward_team)(&args, fastnn_team_index(), fastnn_team_size());
        }
    }
    return FASTNN_OK;
}

/* out = act(x), elementwise over size numbers. */
void FN(fastnn_activation_forward)(T *out, const T *x, int64_t size, int activation,
                                   double alpha) {
    int64_t chunks = fastnn_ceil_div(size, 4096);
    int threads = fastnn_threads_for((double)size, 65536.0);
    FASTNN_FOR(threads, chunk, chunks,
        int64_t end = fastnn_min(size, (chunk + 1) * 4096);
        for (int64_t j = chunk * 4096; j < end; j += VLEN)
            FN(bn_store)(out + j, FN(activate)(FN(bn_load)(x + j, end - j), activation, (T)alpha),
                         end - j););
}

/* dx = dy * act'(y), elementwise over size numbers. */
void FN(fastnn_activation_backward)(T *dx, const T *y, const T *dy, int64_t size,
                                    int activation, double alpha) {
    int64_t chunks = fastnn_ceil_div(size, 4096);
    int threads = fastnn_threads_for((double)size, 65536.0);
    FASTNN_FOR(threads, chunk, chunks,
        int64_t end = fastnn_min(size, (chunk + 1) * 4096);
        for (int64_t j = chunk * 4096; j < end; j += VLEN)
            FN(bn_store)(dx + j, V(mul)(FN(bn_load)(dy + j, end - j),
                                        FN(activation_grad)(FN(bn_load)(y + j, end - j),
                                                            activation, (T)alpha)),
                         end - j););
}
#undef BN_GRAIN
#undef BN_BLOCK_VECTORS
#undef BN_BARRIER
