/* train.c - the compiled training loop (train_impl.h) in float32 and float64, and the
 * counter-based generator of its dropout masks (fastnn/counter_rng.py is the reference). */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "isa.h"

#define FASTNN_LOG1P(x) _Generic((x), float: log1pf, double: log1p)(x)
#define FASTNN_EXP(x) _Generic((x), float: expf, double: exp)(x)

static const uint64_t GOLDEN = 0x9E3779B97F4A7C15ull;

/* SplitMix64's finalizer (counter_rng.mix). */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* counter_rng.step_key */
static inline uint64_t dropout_step_key(uint64_t layer_key, int64_t epoch, int64_t step) {
    return mix64(mix64(layer_key + (uint64_t)epoch) + (uint64_t)step);
}

/* Whether element e (from 0) of a batch block is kept under a step key. */
static inline int dropout_keep(uint64_t key, int64_t e, uint64_t threshold) {
    return (mix64(key + (uint64_t)(e + 1) * GOLDEN) >> 40) >= threshold;
}

#define FASTNN_TEMPLATE "train_impl.h"
#include "instantiate.h"
