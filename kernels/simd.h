/* simd.h - the small vector vocabulary every kernel is written in, chosen at compile time.
 *
 * For each float type (suffix f32 / f64) it defines a vector type vf32 / vf64 of
 * VLEN_F32 / VLEN_F64 lanes and inline operations named v<suffix>_<op>:
 *   zero, set1, load, store, load_part (first n lanes, the rest = pad; n may be <= 0,
 *   and memory past lane n is not touched), store_part,
 *   add, sub, mul, div, fma (a*b + c), max, min (both return b when a or b is NaN, as the
 *   x86 instructions do), abs, select_gt (a > b ? x : y; false for NaN),
 *   round (to nearest integer), pow2i (p * 2^n for integral n), hsum, hmax,
 *   hsums (VLEN vectors' hsums in one vector, bit for bit),
 *   transpose (rows[VLEN], a square block, transposed in place: lane j of rows[i] becomes
 *   lane i of rows[j]).
 * Three implementations:
 *   - AVX-512 (when the compiler targets __AVX512F__): intrinsics, masked partial loads/stores;
 *   - AVX2+FMA: GCC vector extensions of 32 bytes (the compiler emits ymm code), partial
 *     loads and stores by AVX2's masked moves, fma by FMA3's intrinsic;
 *   - portable: GCC vector extensions of 16 bytes (SSE2 on x86-64, NEON on arm64, scalar
 *     code elsewhere).
 * FASTNN_VREGS is the number of vector registers a kernel may plan its register tiles for: 32
 * with AVX-512, 16 otherwise (x86-64's ymm and xmm registers; arm64's 32 taken as 16).
 * FASTNN_HSUMS_SHARED is 1 where hsums shares its adds between the vectors (AVX-512: 15 adds
 * for 16 sums; GCC's vector extensions: VLEN - 1), so that zero vectors filling a group cost
 * less than the separate hsums they replace; 0 where it is VLEN separate hsums (clang).
 * FASTNN_PARTIAL_STORES_SLOW is 1 where store_part costs far more than a whole store
 * (AVX2's VMASKMOVPS store is microcoded on AMD's Zen; the portable copy stores lane by lane),
 * so a packing that may overwrite the numbers after a run stores a whole vector; 0 with
 * AVX-512's masked stores.
 * Code that includes this header never names an ISA; the templates (*_impl.h) reach these
 * operations through the V(op) macro of type.h.
 */
#ifndef FASTNN_SIMD_H
#define FASTNN_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define FASTNN_SIMD_NAME "avx512"
/* 1: fma is one fused instruction wherever it is written, so two kernels that add the same
 * products in the same order give the same bits (also AVX2's, below); the portable copy's
 * a * b + c is fused or not as GCC's contraction finds it, which differs between kernels (the
 * GEMM's dot products of one row and of two rows of A, tests/test_gemm_plan.py). */
#define FASTNN_SIMD_FUSED_FMA 1
#define VLEN_F32 16
#define VLEN_F64 8
#define FASTNN_VREGS 32
#define FASTNN_HSUMS_SHARED 1
#define FASTNN_PARTIAL_STORES_SLOW 0
typedef __m512 vf32;
typedef __m512d vf64;

/* Lanes [0, n) of a mask; n may be <= 0 (no lane) or exceed the lane count (all). */
static inline __mmask16 fastnn_mask16(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}
static inline __mmask8 fastnn_mask8(int64_t n) {
    return n >= 8 ? (__mmask8)0xFF : n <= 0 ? 0 : (__mmask8)((1u << n) - 1u);
}

/* The AVX-512 operations differ between the types only in the ps/pd suffix and mask width. */
#define FASTNN_AVX512_OPS(S, T, V, MASK, ps)                                                    \
    static inline V v##S##_zero(void) { return _mm512_setzero_##ps(); }                        \
    static inline V v##S##_set1(T x) { return _mm512_set1_##ps(x); }                           \
    static inline V v##S##_load(const T *p) { return _mm512_loadu_##ps(p); }                   \
    static inline void v##S##_store(T *p, V x) { _mm512_storeu_##ps(p, x); }                   \
    static inline V v##S##_load_part(const T *p, int64_t n, T pad) {                           \
        return _mm512_mask_loadu_##ps(_mm512_set1_##ps(pad), MASK(n), p);                      \
    }                                                                                           \
    static inline void v##S##_store_part(T *p, V x, int64_t n) {                               \
        _mm512_mask_storeu_##ps(p, MASK(n), x);                                                 \
    }                                                                                           \
    static inline V v##S##_add(V a, V b) { return _mm512_add_##ps(a, b); }                     \
    static inline V v##S##_sub(V a, V b) { return _mm512_sub_##ps(a, b); }                     \
    static inline V v##S##_mul(V a, V b) { return _mm512_mul_##ps(a, b); }                     \
    static inline V v##S##_div(V a, V b) { return _mm512_div_##ps(a, b); }                     \
    static inline V v##S##_fma(V a, V b, V c) { return _mm512_fmadd_##ps(a, b, c); }           \
    static inline V v##S##_max(V a, V b) { return _mm512_max_##ps(a, b); }                     \
    static inline V v##S##_min(V a, V b) { return _mm512_min_##ps(a, b); }                     \
    static inline V v##S##_abs(V a) { return _mm512_abs_##ps(a); }                             \
    static inline V v##S##_select_gt(V a, V b, V x, V y) {                                     \
        return _mm512_mask_blend_##ps(_mm512_cmp_##ps##_mask(a, b, _CMP_GT_OQ), y, x);         \
    }                                                                                           \
    static inline V v##S##_round(V a) {                                                        \
        return _mm512_roundscale_##ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);       \
    }                                                                                           \
    static inline V v##S##_pow2i(V p, V n) { return _mm512_scalef_##ps(p, n); }               \
    static inline T v##S##_hsum(V a) { return _mm512_reduce_add_##ps(a); }                     \
    static inline T v##S##_hmax(V a) { return _mm512_reduce_max_##ps(a); }

/* In-register transposes: pairs of rows interleaved, then pairs of pairs, then the 128-bit
 * lanes twice; 64 shuffles for 16 x 16 floats, where gathering the columns took about twice
 * as long from L2. */
static inline void vf32_transpose(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; h++) {
            __m512d lo = _mm512_castps_pd(t[i + h]), hi = _mm512_castps_pd(t[i + h + 2]);
            r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
            r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
        }
    for (int i = 0; i < 8; i++) {
        int j = i / 4 * 8 + i % 4;
        t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
        t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}
static inline void vf64_transpose(__m512d r[8]) {
    __m512d t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        int j = i / 2 * 4 + i % 2;
        r[j] = _mm512_shuffle_f64x2(t[j], t[j + 2], 0x88);
        r[j + 2] = _mm512_shuffle_f64x2(t[j], t[j + 2], 0xdd);
    }
    /* r[i] (i < 4): columns i and i + 4 of rows 0-3; r[i + 4]: the same of rows 4-7 */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f64x2(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f64x2(r[i], r[i + 4], 0xdd);
    }
    for (int i = 0; i < 8; i++) r[i] = t[i];
}

FASTNN_AVX512_OPS(f32, float, vf32, fastnn_mask16, ps)
FASTNN_AVX512_OPS(f64, double, vf64, fastnn_mask8, pd)

/* hsums: lane i = hsum(v[i]) bit for bit (GCC's _mm512_reduce_add_*: the 256-bit halves
 * added, high + low, then the 128-bit halves, high + low, then pairs of lanes, low + high),
 * each level adding two vectors' halves at once: 7 adds for 8 sums instead of 24 (float64),
 * 15 for 16 instead of 64 (float32). The vectors go in the order that leaves the sums in
 * lane order. */
static inline __m512d fastnn_halves_f64(__m512d a, __m512d b, int shift) {
    /* shift 0: (a's 256-bit high + low | b's); 1: the same of 128-bit blocks 2-3 and 0-1 of
     * two such results (the immediates are constants where this is inlined) */
    if (shift)
        return _mm512_add_pd(_mm512_shuffle_f64x2(a, b, 0xdd), _mm512_shuffle_f64x2(a, b, 0x88));
    return _mm512_add_pd(_mm512_shuffle_f64x2(a, b, 0xee), _mm512_shuffle_f64x2(a, b, 0x44));
}
static inline __m512d vf64_hsums(const __m512d v[8]) {
    __m512d ac = fastnn_halves_f64(fastnn_halves_f64(v[0], v[2], 0),
                                   fastnn_halves_f64(v[4], v[6], 0), 1);
    __m512d bd = fastnn_halves_f64(fastnn_halves_f64(v[1], v[3], 0),
                                   fastnn_halves_f64(v[5], v[7], 0), 1);
    return _mm512_add_pd(_mm512_unpacklo_pd(ac, bd), _mm512_unpackhi_pd(ac, bd));
}
static inline __m512 fastnn_halves_f32(__m512 a, __m512 b, int shift) {
    if (shift)
        return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0xdd), _mm512_shuffle_f32x4(a, b, 0x88));
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0xee), _mm512_shuffle_f32x4(a, b, 0x44));
}
static inline __m512 vf32_hsums(const __m512 v[16]) {
    __m512 quad[4]; /* quad[q]: 128-bit block i holds (high + low) twice over of v[4 i + q] */
    for (int q = 0; q < 4; q++)
        quad[q] = fastnn_halves_f32(fastnn_halves_f32(v[q], v[q + 4], 0),
                                    fastnn_halves_f32(v[q + 8], v[q + 12], 0), 1);
    /* lanes 0 + 2 and 1 + 3 of each block, then the two pairs */
    __m512 lo = _mm512_add_ps(_mm512_shuffle_ps(quad[0], quad[1], 0x44),
                              _mm512_shuffle_ps(quad[0], quad[1], 0xee));
    __m512 hi = _mm512_add_ps(_mm512_shuffle_ps(quad[2], quad[3], 0x44),
                              _mm512_shuffle_ps(quad[2], quad[3], 0xee));
    return _mm512_add_ps(_mm512_shuffle_ps(lo, hi, 0x88), _mm512_shuffle_ps(lo, hi, 0xdd));
}

#else /* GCC vector extensions */

/* FASTNN_SIMD_FUSED_FMA: 1 with AVX2, whose fma is FMA3's instruction by its intrinsic (see
 * FASTNN_VEXT_FMA); 0 in the portable copy, where a * b + c is fused or not as GCC's
 * contraction finds it. */
#if defined(__AVX2__) && defined(__FMA__)
#define FASTNN_SIMD_NAME "avx2"
#define FASTNN_VBYTES 32
#define FASTNN_SIMD_FUSED_FMA 1
#else
#define FASTNN_SIMD_NAME "portable"
#define FASTNN_VBYTES 16
#define FASTNN_SIMD_FUSED_FMA 0
#endif
#define FASTNN_VREGS 16
#define FASTNN_PARTIAL_STORES_SLOW 1
#define FASTNN_HSUMS_SHARED FASTNN_VEXT_HSUMS_SHARED
#define VLEN_F32 (FASTNN_VBYTES / 4)
#define VLEN_F64 (FASTNN_VBYTES / 8)
typedef float vf32 __attribute__((vector_size(FASTNN_VBYTES), aligned(4)));
typedef double vf64 __attribute__((vector_size(FASTNN_VBYTES), aligned(8)));
typedef int32_t vi32 __attribute__((vector_size(FASTNN_VBYTES)));
typedef int64_t vi64 __attribute__((vector_size(FASTNN_VBYTES)));
/* The same vectors read and written in place through any float pointer (load, store). By
 * memcpy, as before the forty-seventh session, GCC expands a copy of 32 bytes into moves of the
 * build's baseline width (SSE2: 16 bytes) even under the AVX2 target pragma, through a stack
 * slot: two 16-byte stores and one 32-byte load, which store forwarding cannot serve, on every
 * vector of B (Sapphire Rapids, the AVX2 copy, float32 256^3: 990 us a product against NumPy's
 * 127; 219-223 us through this type). */
/* Aligned to 1 byte: a NumPy array may start at any byte (a view of a buffer at an odd offset,
 * whose flags say not aligned), and a load of a float's alignment from there is undefined in C
 * (UBSan's report in the AVX2 copy's all_finite, on a host whose best copy is AVX2; AVX-512's
 * loadu intrinsics assume nothing). The same unaligned moves are emitted. */
typedef float vf32_mem __attribute__((vector_size(FASTNN_VBYTES), aligned(1), may_alias));
typedef double vf64_mem __attribute__((vector_size(FASTNN_VBYTES), aligned(1), may_alias));

/* x in every lane, -0 kept (as _mm512_set1_ps): GCC loads a number of memory straight into
 * all lanes (vbroadcastss) from a shuffle of lane 0, where (V){0} + x cost an add and a
 * register broadcast, both on the FMA ports' side, per broadcast number of the micro-kernels
 * (the AVX2 copy's float32 1024^3 14.0 -> 10.6 ms, Sapphire Rapids, 2 threads). Clang has no
 * __builtin_shuffle; it makes the same broadcast of the loop. */
#if defined(__clang__)
#define FASTNN_VEXT_SPLAT(V, I, VL, x)                                                          \
    __extension__({                                                                             \
        V splat_;                                                                               \
        for (int i_ = 0; i_ < (VL); i_++) splat_[i_] = (x);                                      \
        splat_;                                                                                 \
    })
#else
#define FASTNN_VEXT_SPLAT(V, I, VL, x) __builtin_shuffle((V){x}, (I){0})
#endif

/* The first n lanes (0 < n < VL) of p, the rest pad; and p's first n lanes from x. A loop
 * over n numbers became a call of libc's memcpy (GCC's loop distribution): half of the AVX2
 * copy's samples in a float32 1024 x 2048 x 16 product, packing A (panels of 6 rows: stores of
 * 6 numbers). So: AVX2's masked moves (VMASKMOVPS/PD, which touch no memory past lane n), else
 * one test per lane, unrolled. */
#if defined(__AVX2__)
#include <immintrin.h>
static inline __m256i fastnn_lanes32_below(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i fastnn_lanes64_below(int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
#define FASTNN_AVX2_PARTS(S, T, V, W, VT, ps)                                                   \
    static inline V fastnn_part_load_##S(const T *p, int64_t n, T pad) {                       \
        __m256i m = fastnn_lanes##W##_below(n);                                                 \
        return (V)_mm256_blendv_##ps(_mm256_set1_##ps(pad), _mm256_maskload_##ps(p, m),          \
                                     _mm256_castsi256_##ps(m));                                 \
    }                                                                                           \
    static inline void fastnn_part_store_##S(T *p, V x, int64_t n) {                           \
        _mm256_maskstore_##ps(p, fastnn_lanes##W##_below(n), (VT)x);                            \
    }
FASTNN_AVX2_PARTS(f32, float, vf32, 32, __m256, ps)
FASTNN_AVX2_PARTS(f64, double, vf64, 64, __m256d, pd)
#else
#define FASTNN_VEXT_PARTS(S, T, V, I, VL)                                                       \
    static inline V fastnn_part_load_##S(const T *p, int64_t n, T pad) {                       \
        V r = FASTNN_VEXT_SPLAT(V, I, VL, pad);                                                 \
        _Pragma("GCC unroll 8") for (int i = 0; i < VL; i++) if (i < n) r[i] = p[i];            \
        return r;                                                                               \
    }                                                                                           \
    static inline void fastnn_part_store_##S(T *p, V x, int64_t n) {                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < VL; i++) if (i < n) p[i] = x[i];            \
    }
#endif

/* hsums: lane i = hsum(v[i]), bit for bit. With GCC, the vectors are added in pairs, each
 * pair's even lanes to its odd ones (two shuffles and one add give the pair sums of two
 * vectors), then the pairs of those results, log2(VL) levels and VL - 1 adds in all, which
 * leave lane i holding v[i]'s sums in hsum's order; VL separate hsums before (the AVX2 copy's
 * dot products of K = 16: most of their time). Clang: VL hsums. */
#if defined(__clang__)
#define FASTNN_VEXT_HSUMS(S, V, I, VL, v)                                                       \
    __extension__({                                                                             \
        V sums_;                                                                                \
        for (int i_ = 0; i_ < (VL); i_++) sums_[i_] = v##S##_hsum((v)[i_]);                      \
        sums_;                                                                                  \
    })
#define FASTNN_VEXT_HSUMS_SHARED 0
#else
/* (the tree serves the portable copy's 16-byte vectors; AVX2 has its own hsums below) */
#define FASTNN_EVEN_LANES_4 {0, 2, 4, 6}
#define FASTNN_ODD_LANES_4 {1, 3, 5, 7}
#define FASTNN_EVEN_LANES_8 {0, 2}
#define FASTNN_ODD_LANES_8 {1, 3}
#define FASTNN_VEXT_HSUMS(S, V, I, VL, v) fastnn_hsums_##S(v)
#define FASTNN_VEXT_HSUMS_TREE(S, V, I, VL, BYTES)                                              \
    static inline V fastnn_hsums_##S(const V v[VL]) {                                          \
        V level[VL];                                                                            \
        for (int i = 0; i < VL; i++) level[i] = v[i];                                           \
        for (int n = VL; n > 1; n /= 2)                                                         \
            for (int i = 0; i < n / 2; i++)                                                     \
                level[i] = __builtin_shuffle(level[2 * i], level[2 * i + 1],                    \
                                             (I)FASTNN_EVEN_LANES_##BYTES) +                    \
                           __builtin_shuffle(level[2 * i], level[2 * i + 1],                    \
                                             (I)FASTNN_ODD_LANES_##BYTES);                      \
        return level[0];                                                                        \
    }
#define FASTNN_VEXT_HSUMS_SHARED 1
#endif

/* transpose: with GCC, log2(VL) stages of shuffles of two rows, rows i and i + b (b = 1, 2,
 * 4) exchanging their lanes j with j & b (the 8 x 8 float32 block of AVX2: unpacks, shuffles
 * and 128-bit permutes, 24 in all); through numbers in memory before (64 scalar moves and
 * inserts: half of the AVX2 copy's samples in a float32 1024 x 2048 x 16 product once the
 * partial stores were mended). Clang (no __builtin_shuffle): through numbers in memory. */
#if defined(__clang__)
#define FASTNN_VEXT_TRANSPOSE(S, T, V, I, VL, rows)                                             \
    T t_[VL][VL];                                                                               \
    for (int i_ = 0; i_ < (VL); i_++)                                                           \
        for (int j_ = 0; j_ < (VL); j_++) t_[j_][i_] = (rows)[i_][j_];                           \
    for (int i_ = 0; i_ < (VL); i_++) (rows)[i_] = v##S##_load(t_[i_]);
#else
/* the lanes of row i (lo) and row i + b (hi) after the stage of b, in VL lanes: shuffle indices
 * into (row i, row i + b) */
#define FASTNN_T8_LO1 {0, 8, 2, 10, 4, 12, 6, 14}
#define FASTNN_T8_HI1 {1, 9, 3, 11, 5, 13, 7, 15}
#define FASTNN_T8_LO2 {0, 1, 8, 9, 4, 5, 12, 13}
#define FASTNN_T8_HI2 {2, 3, 10, 11, 6, 7, 14, 15}
#define FASTNN_T8_LO4 {0, 1, 2, 3, 8, 9, 10, 11}
#define FASTNN_T8_HI4 {4, 5, 6, 7, 12, 13, 14, 15}
#define FASTNN_T4_LO1 {0, 4, 2, 6}
#define FASTNN_T4_HI1 {1, 5, 3, 7}
#define FASTNN_T4_LO2 {0, 1, 4, 5}
#define FASTNN_T4_HI2 {2, 3, 6, 7}
#define FASTNN_T2_LO1 {0, 2}
#define FASTNN_T2_HI1 {1, 3}
#define FASTNN_TRANSPOSE_STAGE(V, I, VL, rows, b, LO, HI)                                        \
    for (int i_ = 0; i_ < (VL); i_++)                                                           \
        if (!(i_ & (b))) {                                                                      \
            V x_ = (rows)[i_], y_ = (rows)[i_ + (b)];                                           \
            (rows)[i_] = __builtin_shuffle(x_, y_, (I)LO);                                      \
            (rows)[i_ + (b)] = __builtin_shuffle(x_, y_, (I)HI);                                \
        }
#define FASTNN_TRANSPOSE_8(V, I, rows)                                                          \
    FASTNN_TRANSPOSE_STAGE(V, I, 8, rows, 1, FASTNN_T8_LO1, FASTNN_T8_HI1)                      \
    FASTNN_TRANSPOSE_STAGE(V, I, 8, rows, 2, FASTNN_T8_LO2, FASTNN_T8_HI2)                      \
    FASTNN_TRANSPOSE_STAGE(V, I, 8, rows, 4, FASTNN_T8_LO4, FASTNN_T8_HI4)
#define FASTNN_TRANSPOSE_4(V, I, rows)                                                          \
    FASTNN_TRANSPOSE_STAGE(V, I, 4, rows, 1, FASTNN_T4_LO1, FASTNN_T4_HI1)                      \
    FASTNN_TRANSPOSE_STAGE(V, I, 4, rows, 2, FASTNN_T4_LO2, FASTNN_T4_HI2)
#define FASTNN_TRANSPOSE_2(V, I, rows)                                                          \
    FASTNN_TRANSPOSE_STAGE(V, I, 2, rows, 1, FASTNN_T2_LO1, FASTNN_T2_HI1)
#if FASTNN_VBYTES == 32
#define FASTNN_TRANSPOSE_f32 FASTNN_TRANSPOSE_8
#define FASTNN_TRANSPOSE_f64 FASTNN_TRANSPOSE_4
#else
#define FASTNN_TRANSPOSE_f32 FASTNN_TRANSPOSE_4
#define FASTNN_TRANSPOSE_f64 FASTNN_TRANSPOSE_2
#endif
#define FASTNN_VEXT_TRANSPOSE(S, T, V, I, VL, rows) FASTNN_TRANSPOSE_##S(V, I, rows)
#endif

/* fma: with AVX2, FMA3's instruction by its intrinsic, one rounding wherever it is written,
 * so that two kernels adding the same products in the same order give the same bits (GCC
 * contracts a * b + c in some kernels and not others: the GEMM's dot products of one row and
 * of two rows of A differed); elsewhere a * b + c. */
#if FASTNN_SIMD_FUSED_FMA
#define FASTNN_VEXT_FMA_f32(a, b, c) (vf32) _mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c))
#define FASTNN_VEXT_FMA_f64(a, b, c)                                                            \
    (vf64) _mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c))
#define FASTNN_VEXT_FMA(S, a, b, c) FASTNN_VEXT_FMA_##S(a, b, c)
#else
#define FASTNN_VEXT_FMA(S, a, b, c) ((a) * (b) + (c))
#endif

/* I is the integer lane type of the same width, used for masks and the exponent bits. */
#define FASTNN_VEXT_OPS(S, T, V, VM, I, VL, MANT_BITS, EXP_BIAS, ROUND_MAGIC)                   \
    static inline V v##S##_zero(void) { return (V){0}; }                                        \
    static inline V v##S##_set1(T x) { return FASTNN_VEXT_SPLAT(V, I, VL, x); }                 \
    static inline V v##S##_load(const T *p) { return *(const VM *)p; }                          \
    static inline void v##S##_store(T *p, V x) { *(VM *)p = x; }                                \
    static inline V v##S##_load_part(const T *p, int64_t n, T pad) {                           \
        if (n >= VL) return v##S##_load(p);                                                     \
        if (n <= 0) return v##S##_set1(pad);                                                    \
        return fastnn_part_load_##S(p, n, pad);                                                 \
    }                                                                                           \
    static inline void v##S##_store_part(T *p, V x, int64_t n) {                               \
        if (n >= VL)                                                                            \
            v##S##_store(p, x);                                                                 \
        else if (n > 0)                                                                         \
            fastnn_part_store_##S(p, x, n);                                                     \
    }                                                                                           \
    static inline V v##S##_add(V a, V b) { return a + b; }                                      \
    static inline V v##S##_sub(V a, V b) { return a - b; }                                      \
    static inline V v##S##_mul(V a, V b) { return a * b; }                                      \
    static inline V v##S##_div(V a, V b) { return a / b; }                                      \
    static inline V v##S##_fma(V a, V b, V c) { return FASTNN_VEXT_FMA(S, a, b, c); }           \
    static inline V v##S##_select_gt(V a, V b, V x, V y) {                                     \
        I m = (I)(a > b);                                                                       \
        return (V)((m & (I)x) | (~m & (I)y));                                                   \
    }                                                                                           \
    static inline V v##S##_max(V a, V b) { return v##S##_select_gt(a, b, a, b); }               \
    static inline V v##S##_min(V a, V b) { return v##S##_select_gt(b, a, a, b); }               \
    static inline V v##S##_abs(V a) { return v##S##_select_gt(a, (V){0}, a, -a); }             \
    /* Adding and subtracting 1.5 * 2^mantissa rounds |a| < 2^(mantissa-1) to an integer. */   \
    static inline V v##S##_round(V a) { return (a + ROUND_MAGIC) - ROUND_MAGIC; }               \
    static inline V v##S##_pow2i(V p, V n) {                                                   \
        I e = (__builtin_convertvector(n, I) + EXP_BIAS) << MANT_BITS;                          \
        return p * (V)e;                                                                        \
    }                                                                                           \
    /* lanes added in pairs, then pairs of pairs: ((a0 + a1) + (a2 + a3)) + (...) */          \
    static inline T v##S##_hsum(V a) {                                                         \
        T t[VL];                                                                                \
        for (int i = 0; i < VL; i++) t[i] = a[i];                                               \
        for (int w = 1; w < VL; w *= 2)                                                         \
            for (int i = 0; i < VL; i += 2 * w) t[i] += t[i + w];                               \
        return t[0];                                                                            \
    }                                                                                           \
    static inline V v##S##_hsums(const V v[VL]) { return FASTNN_VEXT_HSUMS(S, V, I, VL, v); }   \
    static inline T v##S##_hmax(V a) {                                                         \
        T s = a[0];                                                                             \
        for (int i = 1; i < VL; i++) s = a[i] > s ? a[i] : s;                                   \
        return s;                                                                               \
    }                                                                                           \
    static inline void v##S##_transpose(V rows[VL]) { FASTNN_VEXT_TRANSPOSE(S, T, V, I, VL, rows); }

#if !defined(__clang__) && defined(__AVX2__)
/* AVX2: the same sums by horizontal adds, which add neighbouring lanes (hsum's first level,
 * then its second), and one exchange of the 128-bit halves for the last: 9 instructions for 8
 * float32 sums where the shuffles of the tree took 14 permutes (each loading its index
 * vector) and 7 adds, most of the time of one row against a transposed B of K = 16 (Zen 3). */
static inline vf32 fastnn_hsums_f32(const vf32 v[8]) {
    __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps((__m256)v[0], (__m256)v[1]),
                               _mm256_hadd_ps((__m256)v[2], (__m256)v[3]));
    __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps((__m256)v[4], (__m256)v[5]),
                               _mm256_hadd_ps((__m256)v[6], (__m256)v[7]));
    /* lane i of q0 (i < 4) and q1 (i >= 4): v[i]'s first four lanes' sum, of lane i + 4: its
     * last four's */
    return (vf32)_mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                               _mm256_permute2f128_ps(q0, q1, 0x31));
}
static inline vf64 fastnn_hsums_f64(const vf64 v[4]) {
    __m256d h0 = _mm256_hadd_pd((__m256d)v[0], (__m256d)v[1]);
    __m256d h1 = _mm256_hadd_pd((__m256d)v[2], (__m256d)v[3]);
    return (vf64)_mm256_add_pd(_mm256_permute2f128_pd(h0, h1, 0x20),
                               _mm256_permute2f128_pd(h0, h1, 0x31));
}
#elif !defined(__clang__)
FASTNN_VEXT_HSUMS_TREE(f32, vf32, vi32, VLEN_F32, 4)
FASTNN_VEXT_HSUMS_TREE(f64, vf64, vi64, VLEN_F64, 8)
#endif
#if !defined(__AVX2__)
FASTNN_VEXT_PARTS(f32, float, vf32, vi32, VLEN_F32)
FASTNN_VEXT_PARTS(f64, double, vf64, vi64, VLEN_F64)
#endif
FASTNN_VEXT_OPS(f32, float, vf32, vf32_mem, vi32, VLEN_F32, 23, 127, 12582912.0f)
FASTNN_VEXT_OPS(f64, double, vf64, vf64_mem, vi64, VLEN_F64, 52, 1023, 6755399441055744.0)

#endif

#endif
