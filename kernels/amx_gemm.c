/* amx_gemm.c - C = op(A) @ op(B) (+ bias, activation) with bfloat16 operands on AMX tiles,
 * float32 accumulation and a float32 epilogue (fastnn_amx_gemm, isa.h).
 *
 * The instruction (Intel SDM, TDPBF16PS): C (16 x 16 float32) += A (16 rows x 32 bfloat16)
 * . B (16 rows of 16 pairs), B in the "VNNI" order where element (k, n) sits at
 * [k / 2][n][k % 2]. Here:
 *  - packing converts float32 to bfloat16 while it copies (round to nearest even, as
 *    fastnn_round_bf16; by VCVTNE2PS2BF16 but for subnormals) into whole 1 KB tiles: A as
 *    [16-row block][32-k block][16][32], B as [16-column block][32-k block][16][16][2].
 *    K is padded with zeros to a multiple of 32 in both operands, and the rows of A and
 *    columns of B past the edge with zeros, so a NaN of one row never reaches another row
 *    (oneDNN #5717: its bf16 matmul let one leak when K % 32 != 0). A transposed A is
 *    copied 32 stored rows of a pair of row blocks at a time as bfloat16 into a block on the
 *    stack, then transposed 8 x 8 numbers inside each 128-bit lane (pack_at_blocks); a
 *    transposed B, 16 x 16 pairs in registers. A bfloat16 A not transposed,
 *    with whole k-blocks and row blocks and rows on cache lines, is not packed: the A
 *    tiles are loaded from its rows where they lie (packed_gemm);
 *  - the micro-kernel computes a 32 x 32 block of C in four tiles (2 A tiles x 2 B tiles:
 *    4 loads per 4 products, the blocking of oneDNN's brgemm and llama.cpp), over all of K;
 *    an edge block of 16 rows or columns runs with fewer tiles. (Tried and not kept: K in
 *    pieces of 8, 16 or 32 k-blocks, the sums of the shared operand's blocks kept aside
 *    between pieces so that the own operand's piece is reused from L1: Sapphire Rapids, 2
 *    threads, same bits, alternating in one process: 1024 x 4096 x 4096 and 1024^3 1.00-1.12x
 *    faster, 128 x 1024 x 4096 and 128 x 4096 x 4096 0.78-0.99x; with the sums kept in C
 *    itself, its row stride of 16 KB put a tile's 16 rows in one set of L1: 0.5-0.8x.
 *    Neither a software prefetch of the shared tiles 1, 2 or 4 k-blocks ahead nor a larger
 *    shared chunk (1 or 1.5 MB) gained; the packing of B split by k between the threads,
 *    whole rows each, 0.8x at 32 x 4096 x 1024. Nor did K outermost within groups of 8 own
 *    x 32 shared pairs, pieces of 16 k-blocks, their sums (1 MB) kept in L2: 0.85-1.11x,
 *    though a one-core micro-benchmark of the tile loop ran 2.7 TFLOP/s over pieces of 8
 *    k-blocks, one operand's tiles in L1, against 1.8 over K = 1024 from L2);
 *  - the block goes through a 4 KB float32 buffer, where bias and activation are applied
 *    with AVX-512 before the store to C (masked at the edges); with both bfloat16 operands
 *    transposed, the kernel may compute C^T = B A from the stored operands and each block is
 *    transposed there first (bf16_gemm);
 *  - the threads split the blocks of C by rows or by columns (packed_gemm says which):
 *    each packs its own part of the operand split and a share of the other, which all
 *    read whole, and they wait for each other once (or, the other operand small, each packs
 *    all of it for itself and none waits: private_a, private_b). With a few rows (on tiles,
 *    up to 256) split by columns and B not transposed (or on tiles, bfloat16 and more than
 *    128 rows), B may instead be packed a group of columns and a piece of K at a time, the
 *    sums of C carried across the pieces (columns_in_pieces); with A
 *    transposed, each thread packs a piece of K of its rows of A and its columns of B (all
 *    of the other operand's) at a time, the next beside the products, and shares nothing
 *    (blocks_in_pieces);
 *  - without AMX (fastnn_dot_bf16_gemm), the same blocks by VDPBF16PS dot products (with
 *    few rows, columns_in_pieces for a float32 B too). Every block of C sums all of K in the
 *    same order on one thread (or, a small C over a long K on tiles, each half of K so, the two
 *    sums added after: k_split_gemm, by the shape alone), whatever the path, layout, split or
 *    thread count: the bits do not depend on them. Each thread loads the tile configuration
 *    before its first tile instruction and releases the tiles after its last one: the
 *    configuration is per thread, and a shared mutable one is what corrupted oneDNN's and
 *    PyTorch's state (oneDNN #5393).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC target("avx,avx2,fma,bmi,bmi2,f16c,popcnt,avx512f,avx512dq,avx512bw,avx512vl," \
                   "avx512bf16,amx-tile,amx-bf16")
#include <immintrin.h>
#include <string.h>

#include "isa.h"

/* The activations (vmath_impl.h), for AVX-512 float32 vectors: activate_f32_amx. */
#define FASTNN_ISA_SUFFIX _amx
#define FASTNN_TEMPLATE "vmath_impl.h"
#include "instantiate.h"

typedef uint16_t bf16;

#ifdef FASTNN_AMX_EMULATE
/* A test build for CPUs without AMX (FASTNN_EXTRA_CFLAGS=-DFASTNN_AMX_EMULATE, which
 * vector_paths.sh uses): the tile instructions become scalar code over 8 tiles of this
 * thread, so the packing, padding, blocking and epilogue above them run and are tested.
 * TDPBF16PS is emulated as float32 sums of the exact bfloat16 products. */
static __thread float emulated_tiles[8][16][16];
static void emulated_load(int t, const void *p, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy(emulated_tiles[t][r], (const char *)p + r * stride, 64);
}
static void emulated_store(int t, void *p, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy((char *)p + r * stride, emulated_tiles[t][r], 64);
}
static float emulated_bf16(const float *tile_row, int index) {
    uint16_t half;
    memcpy(&half, (const char *)tile_row + 2 * index, 2);
    uint32_t bits = (uint32_t)half << 16;
    float value;
    memcpy(&value, &bits, 4);
    return value;
}
static void emulated_dpbf16ps(int c, int a, int b) {
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float sum = emulated_tiles[c][i][j];
            for (int q = 0; q < 16; q++)
                for (int e = 0; e < 2; e++)
                    sum += emulated_bf16(emulated_tiles[a][i], 2 * q + e) *
                           emulated_bf16(emulated_tiles[b][q], 2 * j + e);
            emulated_tiles[c][i][j] = sum;
        }
}
#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbf16ps
#define _tile_loadconfig(config) ((void)(config))
#define _tile_release() ((void)0)
#define _tile_zero(t) memset(emulated_tiles[t], 0, sizeof emulated_tiles[t])
#define _tile_loadd(t, p, stride) emulated_load(t, p, stride)
#define _tile_stored(t, p, stride) emulated_store(t, p, stride)
#define _tile_dpbf16ps(c, a, b) emulated_dpbf16ps(c, a, b)
#endif

#define TILE_ROWS 16                       /* rows of every tile */
#define TILE_K 32                          /* bfloat16 numbers in a row of an A tile */
#define TILE_ELEMS (FASTNN_AMX_TILE_BYTES / 2) /* bfloat16 numbers in a tile */
#define TILE_STRIDE 64                     /* bytes from one row of a packed tile to the next */

/* Palette 1, 8 tiles of 16 rows x 64 bytes: LDTILECFG's 64-byte block (palette, start row,
 * 14 reserved zero bytes, 16 column widths in bytes, 16 row counts). In static storage: a
 * stack copy that the compiler dropped gave an invalid configuration in llama.cpp. */
typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;
static const tile_config TILE_CONFIG = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

/* Each lane's float rounded to bfloat16, its 16 bits in the lane's low half (bf16.c's
 * rounding, 16 lanes at a time). */
static inline __m512i round_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(
        r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

/* The lanes of x that hold a float32 subnormal (from the bits: VFPCLASSPS follows MXCSR's
 * DAZ, which the kernels set). */
static inline __mmask16 subnormal_lanes(__m512 x) {
    __m512i magnitude = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF));
    return _mm512_cmplt_epu32_mask(_mm512_sub_epi32(magnitude, _mm512_set1_epi32(1)),
                                   _mm512_set1_epi32(0x007FFFFF));
}

/* 32 floats (lo: the first 16, hi: the next 16) as 32 bfloat16 in order. VCVTNE2PS2BF16
 * rounds to nearest even and quiets NaN exactly as round_bf16, but takes a float32
 * subnormal as zero (Intel SDM), where round_bf16 keeps it, or rounds it up to the smallest
 * normal bfloat16: a vector with a subnormal (rare) takes round_bf16. */
static inline __m512i bf16_pack32(__m512 lo, __m512 hi) {
    static const uint16_t even[32] = {0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20,
                                      22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42,
                                      44, 46, 48, 50, 52, 54, 56, 58, 60, 62};
    if (__builtin_expect(subnormal_lanes(lo) | subnormal_lanes(hi), 0))
        return _mm512_permutex2var_epi16(round_bf16(lo), _mm512_loadu_si512(even),
                                         round_bf16(hi));
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Two runs of 16 floats as 16 pairs of bfloat16: lane n = (lo[n], hi[n]). */
static inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
    static const uint16_t interleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                            21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                            11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(interleave), bf16_pack32(lo, hi));
}

/* The first `count` (may be <= 0) of 32 floats at p as 32 bfloat16 in order, zeros after;
 * memory past them is not read. */
static inline __m512i bf16_run32(const float *p, int64_t count) {
    return bf16_pack32(_mm512_maskz_loadu_ps(fastnn_mask16(count), p),
                       _mm512_maskz_loadu_ps(fastnn_mask16(count - 16), p + 16));
}

/* The first `count` of 16 floats at p, zeros after. */
static inline __m512 run16(const float *p, int64_t count) {
    return _mm512_maskz_loadu_ps(fastnn_mask16(count), p);
}

/* Operands already in bfloat16 (fastnn_matmul_bf16_operands) are packed into the same tiles
 * by copying their bits: nothing to round. */

/* The first `count` (may be <= 0) of 32 bfloat16 at p, zeros after; memory past them is not
 * read. */
static inline __m512i run32_bf16(const bf16 *p, int64_t count) {
    __mmask32 mask = count >= 32 ? ~(__mmask32)0 : count <= 0 ? 0 : ((__mmask32)1 << count) - 1;
    return _mm512_maskz_loadu_epi16(mask, p);
}

/* 16 pairs of bfloat16, lane n = (r0[n], r1[n]), of the first `count` of 16 numbers of each
 * row, zeros after; r1 NULL: zeros for the second row. */
static inline __m512i pairs_bf16(const bf16 *r0, const bf16 *r1, int64_t count) {
    __mmask16 mask = fastnn_mask16(count);
    __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, r0));
    if (!r1) return lo;
    __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, r1));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* An operand of the GEMM: float32 numbers (rounded to bfloat16 by the packing) or bfloat16
 * ones (uint16_t bits), op(X)[r][c] at x[r * ld + c], or x[c * ld + r] when trans. */
typedef struct {
    const void *data;
    int64_t ld;
    int trans, bf16;
} operand;

/* The numbers of x from element `at` on: the first `count` of 32 as bfloat16 in order, zeros
 * after (bf16_run32 or run32_bf16). */
static inline __m512i run32_of(operand x, int64_t at, int64_t count) {
    return x.bf16 ? run32_bf16((const bf16 *)x.data + at, count)
                  : bf16_run32((const float *)x.data + at, count);
}

/* 16 pairs of bfloat16, lane n = (x[at0 + n], x[at1 + n]), of the first `count`, zeros after;
 * with `second` 0, zeros for the second run (at1 unused). A run that is absent is not loaded at
 * all, not even by a load whose mask is all zeros: such a load is architecturally no read, but
 * where its address is not mapped (rows past the last of a matrix that ends a mapping, as
 * NumPy's large arrays often do: glibc maps them apart) AMD Zen 5 runs each one as a
 * fault-suppressing assist of hundreds of cycles. A B not transposed whose K is not a whole
 * number of k-blocks loaded the missing rows of its last k-block so (up to 16 rows past its
 * end): Zen 5, 2 threads, alternating in one process, same bits, against those loads, float32
 * operands in bfloat16 precision 64 x 16 x 2048 on one thread 0.17 -> 0.058 ms; bfloat16
 * operands 256 x 16 x 1024 3.6x, 128 x 100 x 1024 3.5x, 64 x 16 x 2048 1.4x, 64 x 784 x 256
 * 1.26x (where the memory past B was mapped, no change). */
static inline __m512i pairs_of(operand x, int64_t at0, int64_t at1, int64_t count, int second) {
    if (x.bf16)
        return pairs_bf16((const bf16 *)x.data + at0, second ? (const bf16 *)x.data + at1 : NULL,
                          count);
    return bf16_pairs(run16((const float *)x.data + at0, count),
                      second ? run16((const float *)x.data + at1, count) : _mm512_setzero_ps());
}

/* The A tile of op(A)[i0 : i0+16][p0 : p0+32], A not transposed, into dst (16 rows of 32
 * bfloat16); element `at` of a is op(A)[i0][p0]; rows >= `rows` and columns >= `ks` are
 * zeros. */
static void pack_a_tile(bf16 *dst, operand a, int64_t at, int64_t rows, int64_t ks) {
    for (int r = 0; r < TILE_ROWS; r++)
        _mm512_storeu_si512(dst + r * TILE_K, r < rows ? run32_of(a, at + r * a.ld, ks)
                                                       : _mm512_setzero_si512());
}

/* Four 128-bit pieces, from p0 to p3, as the four lanes of a vector: one broadcast load and
 * three masked ones (loads and blends, no shuffle). */
static inline __m512i lanes_of(const bf16 *p0, const bf16 *p1, const bf16 *p2, const bf16 *p3) {
    __m512i x = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p0));
    x = _mm512_mask_broadcast_i32x4(x, 0x00F0, _mm_loadu_si128((const __m128i *)p1));
    x = _mm512_mask_broadcast_i32x4(x, 0x0F00, _mm_loadu_si128((const __m128i *)p2));
    return _mm512_mask_broadcast_i32x4(x, 0xF000, _mm_loadu_si128((const __m128i *)p3));
}

/* The A tile of the 16 columns at s (rows of 32 bfloat16, `ld` apart, of a stored op(A)^T: row
 * p holds k = p) into dst, rows i = the columns: row i's pair q is (s[2q][i], s[2q+1][i]).
 * Each half of the tile (8 columns) takes 8 vectors whose lane L holds 8 numbers of stored
 * row 8L + j (lanes_of), then an 8 x 8 transpose of 16-bit numbers inside the lanes (24
 * unpacks), where vf32_transpose takes 64 shuffles and the pairs 32 more. */
static void pack_at_tile(bf16 *dst, const bf16 *s, int64_t ld) {
    for (int h = 0; h < 2; h++) {
        const bf16 *c = s + 8 * h;
        __m512i x[8], y[8];
        for (int j = 0; j < 8; j++)
            x[j] = lanes_of(c + j * ld, c + (8 + j) * ld, c + (16 + j) * ld, c + (24 + j) * ld);
        for (int j = 0; j < 4; j++) { /* y[j]: columns 0-3 of rows 2j, 2j + 1; y[j + 4]: 4-7 */
            y[j] = _mm512_unpacklo_epi16(x[2 * j], x[2 * j + 1]);
            y[j + 4] = _mm512_unpackhi_epi16(x[2 * j], x[2 * j + 1]);
        }
        for (int g = 0; g < 8; g += 4) { /* columns g to g + 3, each all 8 rows of its lane */
            __m512i lo01 = _mm512_unpacklo_epi32(y[g], y[g + 1]);
            __m512i hi01 = _mm512_unpackhi_epi32(y[g], y[g + 1]);
            __m512i lo23 = _mm512_unpacklo_epi32(y[g + 2], y[g + 3]);
            __m512i hi23 = _mm512_unpackhi_epi32(y[g + 2], y[g + 3]);
            bf16 *row = dst + (8 * h + g) * TILE_K;
            _mm512_storeu_si512(row, _mm512_unpacklo_epi64(lo01, lo23));
            _mm512_storeu_si512(row + TILE_K, _mm512_unpackhi_epi64(lo01, lo23));
            _mm512_storeu_si512(row + 2 * TILE_K, _mm512_unpacklo_epi64(hi01, hi23));
            _mm512_storeu_si512(row + 3 * TILE_K, _mm512_unpackhi_epi64(hi01, hi23));
        }
    }
}

/* The tiles of k-block p0 of the row blocks of a transposed A from row i0 on: op(A)[i0 : i0 +
 * rows][p0 : p0+32], element `at` of a is op(A)[i0][p0], row block r's tile at dst + r
 * second; rows past `rows` (of its last row block) and columns >= `ks` are zeros. The 32
 * stored rows' numbers, AT_GROUP_PAIRS pairs of row blocks at a time (AT_GROUP_PAIRS x 64
 * bytes of each stored row for bfloat16, twice that for float32, each line read once, in
 * order), are first copied as bfloat16 into a block on the stack (rounded as every packing
 * rounds: run32_of), then transposed by pack_at_tile. Against a tile at a time by pairs_of
 * and vf32_transpose (same bits; Sapphire Rapids, 2 threads, alternating in one process),
 * a pair at a time, A transposed: bfloat16 operands 1024 x 1024 x 256 1.19x, 1024 x 256 x 256
 * 1.14x, 256 x 1024 x 1024 1.05x, 256 x 4096 x 256 1.04x; float32 operands 784 x 128 x 256
 * 1.67x, 2048 x 1024 x 512 1.10x, 256 x 1024 x 128 1.10x, 784 x 1024 x 256 1.04x; four pairs
 * at a time against one, bfloat16 1024 x 1024 x 256 1.08-1.13x, the rest within 3%. */
#define AT_GROUP_PAIRS 4
static void pack_at_blocks(bf16 *dst, int64_t second, operand a, int64_t at, int64_t rows,
                           int64_t ks) {
    enum { width = 32 * AT_GROUP_PAIRS };
    bf16 block[32 * width] __attribute__((aligned(64)));
    for (int64_t g = 0; g < rows; g += width) { /* the group's rows from g on */
        int64_t left = rows - g, runs = fastnn_ceil_div(fastnn_min(width, left), 32);
        for (int p = 0; p < 32; p++)
            for (int64_t r = 0; r < runs; r++)
                _mm512_store_si512(block + p * width + 32 * r,
                                   p < ks ? run32_of(a, at + p * a.ld + g + 32 * r,
                                                     left - 32 * r)
                                          : _mm512_setzero_si512());
        for (int64_t b = 0; b < fastnn_ceil_div(fastnn_min(width, left), TILE_ROWS); b++)
            pack_at_tile(dst + (g / TILE_ROWS + b) * second, block + TILE_ROWS * b, width);
    }
}

/* Rows q to q + PACK_B_PAIRS - 1 of the B tiles of `blocks` whole column blocks (16 columns
 * each) of a B not transposed, tile after tile `step` numbers apart from dst: row q + u from
 * the stored rows at element `at` + 2u ldb and the next, all present. What pack_b_tile_row
 * writes, without its masks (the packing of a large B ran at half the speed of its reads, two
 * dozen instructions for each 64-byte row). bfloat16 rows are read 32 numbers at a time:
 * VPUNPCKLWD/VPUNPCKHWD pair them within each 128-bit lane, and VPERMT2Q puts each 16-column
 * block's four lanes back in order. Eight stored rows at a time rather than two (more reads in
 * flight): Sapphire Rapids, 2 threads, bfloat16 operands, alternating in one process, same
 * bits, 32 x 1024 x 1024 1.17x, 32 x 4096 x 4096 1.10x, 256 x 256 x 4096 1.33x, 33 x 1000 x
 * 1000 1.15x, 64 x 2048 x 2048 1.03x (sixteen rows: 0.93-1.01x against four). */
#define PACK_B_PAIRS 4
static inline void pack_b_row_pairs(bf16 *dst, int64_t step, operand b, int64_t at,
                                    int64_t blocks) {
    int64_t jb = 0, ld = b.ld;
    if (b.bf16) {
        const bf16 *r = (const bf16 *)b.data + at;
        const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
        const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
        for (; jb + 2 <= blocks; jb += 2)
#pragma GCC unroll 4
            for (int u = 0; u < PACK_B_PAIRS; u++) {
                __m512i x0 = _mm512_loadu_si512(r + 2 * u * ld + 16 * jb);
                __m512i x1 = _mm512_loadu_si512(r + (2 * u + 1) * ld + 16 * jb);
                __m512i lo = _mm512_unpacklo_epi16(x0, x1), hi = _mm512_unpackhi_epi16(x0, x1);
                bf16 *row = dst + jb * step + u * TILE_K;
                _mm512_storeu_si512(row, _mm512_permutex2var_epi64(lo, first, hi));
                _mm512_storeu_si512(row + step, _mm512_permutex2var_epi64(lo, second, hi));
            }
    }
    for (; jb < blocks; jb++)
        for (int u = 0; u < PACK_B_PAIRS; u++) {
            int64_t at0 = at + 2 * u * ld + 16 * jb;
            _mm512_storeu_si512(dst + jb * step + u * TILE_K, pairs_of(b, at0, at0 + ld, 16, 1));
        }
}

/* Row q of the B tile of op(B)[p0 : p0+32][j0 : j0+16], B not transposed, in VNNI order:
 * the 16 pairs (B[2q][n], B[2q+1][n]) of the stored rows 2q and 2q + 1 (element `at` of b is
 * op(B)[p0][j0]); rows >= `ks` and columns >= `cols` are zeros. */
static inline void pack_b_tile_row(bf16 *dst, operand b, int64_t at, int q, int64_t cols,
                                   int64_t ks) {
    int64_t at0 = at + 2 * q * b.ld; /* stored rows past ks are not loaded (pairs_of) */
    _mm512_storeu_si512(dst + q * TILE_K, 2 * q < ks ? pairs_of(b, at0, at0 + b.ld, cols,
                                                                2 * q + 1 < ks)
                                                     : _mm512_setzero_si512());
}

/* The B tile of op(B)[p0 : p0+32][j0 : j0+16], B transposed, into dst in VNNI order (row q:
 * the 16 pairs (B[2q][n], B[2q+1][n])); element `at` of b is op(B)[p0][j0]; rows >= `ks` and
 * columns >= `cols` are zeros. */
static void pack_bt_tile(bf16 *dst, operand b, int64_t at, int64_t cols, int64_t ks) {
    /* row n of the stored matrix holds column n's run along k: 16 pairs indexed [n][q],
     * transposed into the tile's rows q. */
    __m512 pairs[16];
    for (int n = 0; n < 16; n++)
        pairs[n] = _mm512_castsi512_ps(n < cols ? run32_of(b, at + n * b.ld, ks)
                                                : _mm512_setzero_si512());
    vf32_transpose(pairs);
    for (int q = 0; q < 16; q++) _mm512_storeu_ps((float *)(dst + q * TILE_K), pairs[q]);
}

/* pack_bt_tile for a whole tile of a bfloat16 B: 16 stored rows (a stride of ld numbers
 * apart) of 32 numbers from src. The 16 x 16 transpose of their pairs (4-byte lanes) takes
 * 128-bit pieces from memory: vector (nn, Q) gathers lane Q of rows nn, nn + 4, nn + 8 and nn
 * + 12 by one broadcast and three masked broadcast loads, and a 4 x 4 transpose inside the
 * 128-bit lanes of the four vectors of a Q gives tile rows 4Q to 4Q + 3. 32 shuffles (port 5)
 * instead of vf32_transpose's 64. */
static inline void pack_bt_tile_whole(bf16 *dst, const bf16 *src, int64_t ld) {
    for (int q4 = 0; q4 < 4; q4++) {
        __m512 v[4];
        for (int nn = 0; nn < 4; nn++) {
            const float *p = (const float *)(src + nn * ld) + 4 * q4;
            int64_t step = 4 * ld / 2; /* four rows, in floats */
            __m512 x = _mm512_broadcast_f32x4(_mm_loadu_ps(p));
            x = _mm512_mask_broadcast_f32x4(x, 0x00F0, _mm_loadu_ps(p + step));
            x = _mm512_mask_broadcast_f32x4(x, 0x0F00, _mm_loadu_ps(p + 2 * step));
            v[nn] = _mm512_mask_broadcast_f32x4(x, 0xF000, _mm_loadu_ps(p + 3 * step));
        }
        __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(v[0], v[1]));
        __m512d t1 = _mm512_castps_pd(_mm512_unpackhi_ps(v[0], v[1]));
        __m512d t2 = _mm512_castps_pd(_mm512_unpacklo_ps(v[2], v[3]));
        __m512d t3 = _mm512_castps_pd(_mm512_unpackhi_ps(v[2], v[3]));
        float *row = (float *)(dst + 4 * q4 * TILE_K);
        _mm512_storeu_pd(row, _mm512_unpacklo_pd(t0, t2));
        _mm512_storeu_pd(row + 16, _mm512_unpackhi_pd(t0, t2));
        _mm512_storeu_pd(row + 32, _mm512_unpacklo_pd(t1, t3));
        _mm512_storeu_pd(row + 48, _mm512_unpackhi_pd(t1, t3));
    }
}

/* Row blocks [first, end) of op(A) (m x k), each all of K, into packed (block after block:
 * row block ib's k-block kb at tile (ib - first) k_blocks + kb). */
static void pack_a_blocks(bf16 *packed, operand a, int64_t m, int64_t k, int64_t first,
                          int64_t end) {
    int64_t k_blocks = fastnn_ceil_div(k, TILE_K);
    if (a.trans) { /* each 32 rows of k across the blocks (pack_at_blocks) */
        int64_t i = first * TILE_ROWS, rows = fastnn_min((end - first) * TILE_ROWS, m - i);
        for (int64_t kb = 0; kb < k_blocks; kb++) {
            int64_t p = kb * TILE_K;
            pack_at_blocks(packed + kb * TILE_ELEMS, k_blocks * TILE_ELEMS, a, p * a.ld + i,
                           rows, k - p);
        }
        return;
    }
    for (int64_t ib = first; ib < end; ib++) /* along the stored rows: a block's run of k */
        for (int64_t kb = 0; kb < k_blocks; kb++) {
            int64_t i = ib * TILE_ROWS, p = kb * TILE_K;
            pack_a_tile(packed + ((ib - first) * k_blocks + kb) * TILE_ELEMS, a, i * a.ld + p,
                        fastnn_min(TILE_ROWS, m - i), k - p);
        }
}

/* Column blocks [first, end) of op(B) (k x n), k-blocks [kb0, kb0 + kbn) of each, into
 * packed: column block jb's k-block kb at tile (jb - first) block_tiles + kb - kb0 (block
 * after block when block_tiles is kbn). */
static void pack_b_blocks(bf16 *packed, int64_t block_tiles, operand b, int64_t n, int64_t k,
                          int64_t first, int64_t end, int64_t kb0, int64_t kbn) {
    int64_t ldb = b.ld;
    if (!b.trans) {
        /* A few stored rows at a time across every column block (pack_b_row_pairs: eight; the
         * edge block and a last k-block's missing rows, pack_b_tile_row: two), where a tile at
         * a time read 32 rows at once (32 x 1024 x 4096: 47% of the time in the packing, at
         * ~29 GB/s on two threads). The tiles are laid out as pack_bt_tile's. */
        int64_t whole = fastnn_max(0, fastnn_min(end, n / 16) - first); /* blocks of 16 */
        for (int64_t kb = 0; kb < kbn; kb++) {
            int64_t p = (kb0 + kb) * TILE_K;
            for (int q0 = 0; q0 < 16; q0 += PACK_B_PAIRS) {
                /* the whole blocks when the group's rows are all present */
                int64_t rows = 2 * (q0 + PACK_B_PAIRS) <= k - p ? whole : 0;
                pack_b_row_pairs(packed + kb * TILE_ELEMS + q0 * TILE_K,
                                 block_tiles * TILE_ELEMS, b, (p + 2 * q0) * ldb + first * 16,
                                 rows);
                for (int q = q0; q < q0 + PACK_B_PAIRS; q++)
                    for (int64_t jb = rows; jb < end - first; jb++) {
                        int64_t j = (first + jb) * 16;
                        pack_b_tile_row(packed + (jb * block_tiles + kb) * TILE_ELEMS, b,
                                        p * ldb + j, q, fastnn_min(16, n - j), k - p);
                    }
            }
        }
        return;
    }
    /* Transposed: along the stored rows (each column block's runs of k), as pack_a_blocks. */
    for (int64_t jb = 0; jb < end - first; jb++)
        for (int64_t kb = 0; kb < kbn; kb++) {
            int64_t j = (first + jb) * 16, p = (kb0 + kb) * TILE_K;
            bf16 *dst = packed + (jb * block_tiles + kb) * TILE_ELEMS;
            if (b.bf16 && j + 16 <= n && p + TILE_K <= k)
                pack_bt_tile_whole(dst, (const bf16 *)b.data + j * ldb + p, ldb);
            else
                pack_bt_tile(dst, b, j * ldb + p, fastnn_min(16, n - j), k - p);
        }
}

/* Where the tiles of a pair of row blocks of op(A) are read: packed (pack_a_blocks: stride
 * TILE_STRIDE bytes, k-block after k-block TILE_ELEMS apart, the second row block k_blocks
 * tiles on), or in place from a bfloat16 A not transposed (TILELOADD's row stride is A's:
 * k-blocks 32 numbers apart, the second row block 16 rows on). */
typedef struct {
    const bf16 *first, *second;
    int64_t stride, step;
} a_tiles;

/* Where C goes: float32 numbers, or (bf16) bfloat16 ones (uint16_t bits, the sums rounded as
 * fastnn_round_bf16 rounds); row stride ld elements. With trans, the kernel computes C^T
 * (both operands transposed: bf16_gemm) and store_block writes its blocks transposed. */
typedef struct {
    void *data;
    int64_t ld;
    int bf16, trans;
    int stream_bf16; /* a bfloat16 C streamed as a float32 one is (STREAM_MIN_BYTES) */
} output;

/* Smallest float32 C (bytes) whose whole rows of a block are written by streaming stores
 * (MOVNTPS: no read for ownership of C's lines, which go to memory rather than the caches) when
 * its rows start on cache lines; packed_gemm's threads end with SFENCE. AMD Zen 5 (no AMX), 2
 * threads, float32 operands in bfloat16 precision, alternating in one process, same bits:
 * C of 4-16 MB with K of 256 1.13-1.21x (1024 x 256 x 4096, A or B transposed 1.14-1.18x;
 * 2048 x 256 x 2048, 1024 x 256 x 2048, 1024 x 256 x 1024, 256 x 256 x 4096 1.10-1.13x),
 * 1024 x 1024 x 4096 1.07x, 1024 x 4096 x 4096 1.03x, 512 x 256 x 1024 (2 MB) 1.18x; C of 1
 * MB 0.98-0.99x (512^3, 256 x 1024 x 1024), so not below 2 MB; epochs of 784-2048-2048-10 in
 * bfloat16 precision (batch 256 and 1024) and 784-4096-4096-10 (512), their training buffers
 * 64-byte aligned so that the forward passes stream, within 2% of before. A bfloat16 C of 8
 * MB lost on tiles (Sapphire Rapids: 1024 x 256 x 4096, 2048 x 256 x 4096 0.95x, perhaps held
 * in L3 between calls): regular stores there. With dot products (stream_bf16) it gained where
 * K is short and the stores bound the time: Zen 5, 2 threads, bfloat16 operands and C,
 * alternating in one process, same bits, 2048 x 16 x 1024 1.50x, 1024 x 16 x 2048 1.45x,
 * 1024 x 16 x 4096 (B transposed) 1.36x, 512 x 16 x 2048 1.28x, 1024 x 64 x 2048 1.25x, 1024 x
 * 128 x 2048 1.05x; K of 256-1024 0.97-1.01x (1024 x 256 x 2048, 1024 x 256 x 4096, 2048 x
 * 256 x 4096, 4096 x 256 x 1024, 1024^3, 1024 x 784 x 2048). Rows off cache lines lost, their
 * whole lines streamed and the parts of lines shared with the blocks beside stored as usual
 * (12x slower). */
#define STREAM_MIN_BYTES (2 * 1024 * 1024)

/* Whether the rows of a block of C (m x n) `cols` wide are written by streaming stores
 * (STREAM_MIN_BYTES). */
static inline int streamed(output c, int64_t m, int64_t n, int64_t cols) {
    int64_t elem = c.bf16 ? (int64_t)sizeof(bf16) : (int64_t)sizeof(float);
    return (!c.bf16 || c.stream_bf16) && cols == 32 && m * n * elem >= STREAM_MIN_BYTES &&
           ((uintptr_t)c.data | (uintptr_t)(c.ld * elem)) % 64 == 0;
}

/* A row of 32 sums (lo: the first 16, hi: the next 16) streamed to C's row at `row`, rounded
 * by bf16_pack32 for a bfloat16 C (rows that streamed() allows). */
static inline void stream_row(int bf16_c, void *row, __m512 lo, __m512 hi) {
    if (bf16_c) {
        _mm512_stream_si512((__m512i *)row, bf16_pack32(lo, hi));
    } else {
        _mm512_stream_ps((float *)row, lo);
        _mm512_stream_ps((float *)row + 16, hi);
    }
}

/* The block of C (m x n) at row block pair ip and column block pair jp, held in `block`
 * (32 x 32, row stride 32), to C with the epilogue; only its rows and columns inside C. */
static void store_block(output c, const float *block, int64_t m, int64_t n, int64_t ip,
                        int64_t jp, const fastnn_epilogue *epilogue) {
    int64_t rows = fastnn_min(32, m - ip * 32), cols = fastnn_min(32, n - jp * 32);
    if (c.trans) { /* a block of C^T (m x n): C's block (jp, ip), its 16 x 16 quarters moved */
        float turned[32 * 32] __attribute__((aligned(64)));
        for (int qr = 0; 16 * qr < rows; qr++)
            for (int qc = 0; 16 * qc < cols; qc++) {
                __m512 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = _mm512_loadu_ps(block + (16 * qr + i) * 32 + 16 * qc);
                vf32_transpose(r);
                for (int i = 0; i < 16; i++)
                    _mm512_store_ps(turned + (16 * qc + i) * 32 + 16 * qr, r[i]);
            }
        c.trans = 0;
        store_block(c, turned, n, m, jp, ip, epilogue);
        return;
    }
    const float *bias = epilogue ? (const float *)epilogue->bias + jp * 32 : NULL;
    int64_t at = ip * 32 * c.ld + jp * 32;
    __m512 bias_v[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    if (epilogue)
        for (int h = 0; h < 2; h++)
            bias_v[h] = _mm512_maskz_loadu_ps(fastnn_mask16(cols - 16 * h), bias + 16 * h);
    /* a row of bfloat16 at once: 32 numbers rounded by VCVTNE2PS2BF16 (bf16_pack32). Whole
     * vectors by unmasked stores: Zen 5, 2 threads, alternating in one process, against
     * masked stores of all lanes, bfloat16 C 1024 x 16 x 2048 1.22-1.28x, 512 x 64 x 1024
     * 1.04-1.05x, float32 C 16 bytes off a line 1.08x, the others 0.98-1.10x. */
    __mmask32 row_mask = cols >= 32 ? ~(__mmask32)0 : ((__mmask32)1 << cols) - 1;
    int stream = streamed(c, m, n, cols);
    for (int64_t r = 0; r < rows; r++) {
        __m512 v[2];
        for (int h = 0; h < 2; h++) {
            v[h] = _mm512_maskz_load_ps(fastnn_mask16(cols - 16 * h), block + r * 32 + 16 * h);
            if (epilogue && 16 * h < cols)
                v[h] = activate_f32_amx(_mm512_add_ps(v[h], bias_v[h]), epilogue->activation,
                                        (float)epilogue->alpha);
        }
        int64_t to = at + r * c.ld;
        if (stream) {
            stream_row(c.bf16, c.bf16 ? (void *)((bf16 *)c.data + to) : (float *)c.data + to,
                       v[0], v[1]);
        } else if (c.bf16) {
            if (cols == 32)
                _mm512_storeu_si512((bf16 *)c.data + to, bf16_pack32(v[0], v[1]));
            else
                _mm512_mask_storeu_epi16((bf16 *)c.data + to, row_mask, bf16_pack32(v[0], v[1]));
        } else
            for (int h = 0; h < 2 && 16 * h < cols; h++)
                if (cols - 16 * h >= 16)
                    _mm512_storeu_ps((float *)c.data + to + 16 * h, v[h]);
                else
                    _mm512_mask_storeu_ps((float *)c.data + to + 16 * h,
                                          fastnn_mask16(cols - 16 * h), v[h]);
    }
}

/* The tiles of a few blocks of an operand packed some k-blocks at a time beside the tile
 * products of the blocks of C before theirs, rather than all at once before their own blocks:
 * of A (x, m rows) the row blocks [first, end) (a pair, or for blocks_in_pieces a thread's own
 * pairs), of B (b_side: x, n columns) the column blocks [first, end), all of K (k, or the
 * total k-blocks of a piece), laid out as packed_gemm's (block after block, total tiles
 * each). k-blocks [done, total) are still to pack into dst, per_step of them beside each block
 * of C (amx_block, through deferred_store); then those of `then`, if any. */
typedef struct pack_ahead {
    bf16 *dst;
    operand x;
    int b_side;
    int64_t size, k, first, end, done, total, per_step;
    struct pack_ahead *then; /* if not NULL: packed after this one */
} pack_ahead;

/* The blocks [first, end) of A (size m) or of B (b_side, size n) into dst, per_step k-blocks
 * beside each of `blocks` blocks of C. */
static pack_ahead pack_ahead_of(bf16 *dst, operand x, int b_side, int64_t size, int64_t k,
                                int64_t first, int64_t end, int64_t blocks) {
    int64_t k_blocks = fastnn_ceil_div(k, TILE_K);
    return (pack_ahead){dst, x, b_side, size, k, first, end, 0, k_blocks,
                        fastnn_ceil_div(k_blocks, fastnn_max(1, blocks)), NULL};
}

/* Row block pair ip of A (m x k) into dst, per_step k-blocks beside each of `blocks` blocks. */
static pack_ahead pack_ahead_of_pair(bf16 *dst, operand a, int64_t m, int64_t k, int64_t ip,
                                     int64_t blocks) {
    int64_t m_blocks = fastnn_ceil_div(m, TILE_ROWS);
    return pack_ahead_of(dst, a, 0, m, k, 2 * ip, fastnn_min(m_blocks, 2 * ip + 2), blocks);
}

/* The next `count` k-blocks of p (fewer at its end), of every block. */
static void pack_ahead_step(pack_ahead *p, int64_t count) {
    int64_t cnt = fastnn_min(p->total - p->done, count);
    if (cnt <= 0) return;
    if (p->b_side) {
        pack_b_blocks(p->dst + p->done * TILE_ELEMS, p->total, p->x, p->size, p->k, p->first,
                      p->end, p->done, cnt);
        p->done += cnt;
        return;
    }
    int64_t i = p->first * TILE_ROWS;
    int64_t rows = fastnn_min((p->end - p->first) * TILE_ROWS, p->size - i);
    int64_t second = p->total * TILE_ELEMS;
    for (int64_t end = p->done + cnt; p->done < end; p->done++) {
        int64_t q = p->done * TILE_K;
        bf16 *dst = p->dst + p->done * TILE_ELEMS;
        if (p->x.trans) {
            pack_at_blocks(dst, second, p->x, q * p->x.ld + i, rows, p->k - q);
            continue;
        }
        for (int64_t r = 0; r < rows; r += TILE_ROWS) /* each row block's tile */
            pack_a_tile(dst + r / TILE_ROWS * second, p->x, (i + r) * p->x.ld + q,
                        fastnn_min(TILE_ROWS, rows - r), p->k - q);
    }
}

/* A step of the first of p's chain (p, p->then, ...) not yet packed whole. */
static void pack_ahead_next(pack_ahead *p) {
    while (p && p->done >= p->total) p = p->then;
    if (p) pack_ahead_step(p, p->per_step);
}

/* The rest of p's chain. */
static void pack_ahead_rest(pack_ahead *p) {
    for (; p; p = p->then) pack_ahead_step(p, p->total);
}

/* A block of C whose sums wait for store_block: its epilogue (AVX-512: rounding, activation,
 * stores to C) runs after the next block's tile products are issued, beside them, rather than
 * between two blocks; the next block's tiles are stored over its sums after that. Sapphire
 * Rapids, 2 threads, bfloat16 operands, alternating in one process, same bits: 256 x 256 x
 * 4096 1.04-1.17x, 1024 x 1024 x 256 1.03-1.20x, 1024^3 1.03-1.11x, 1024 x 4096 x 4096 1.05x,
 * 2048 x 512 x 512 1.07x, 512^3 0.93-1.02x. (Skipping store_block altogether, a timing
 * experiment, made 256 x 256 x 4096 1.74x faster: 0.11 ms of its 0.38 writing C, 0.07 ms
 * storing the tiles and rounding.) */
typedef struct {
    float sums[32 * 32] __attribute__((aligned(64))); /* row stride 32 */
    output c;
    int64_t m, n, ip, jp; /* the waiting block is (ip, jp) */
    const fastnn_epilogue *epilogue;
    int waiting;
    pack_ahead *ahead; /* if not NULL: a step of it beside each block's products */
    const float *from; /* if not NULL: the waiting block's sums (row stride 32), not sums */
} deferred_store;

/* The waiting block, if any, to C. */
static void flush_store(deferred_store *s) {
    if (!s->waiting) return;
    store_block(s->c, s->from ? s->from : s->sums, s->m, s->n, s->ip, s->jp, s->epilogue);
    s->waiting = 0;
}

/* The (16 mt) x (16 nt) block of C (mt, nt in {1, 2}, constants where inlined) from the
 * row blocks of a (mt of them) and the packed column blocks at b (k_blocks tiles each),
 * into out (32 x 32 floats, row stride 32), from zeros or (accumulate) out's sums: the
 * same bits as one pass over both ranges of k. Tiles 0-3 accumulate C, 4-5 hold A, 6-7 B.
 * With `store`, its waiting block goes to C after the products are issued, and a step of its
 * pack_ahead (if any) is packed. */
static inline __attribute__((always_inline)) void amx_block(const int mt, const int nt,
                                                            a_tiles a, const bf16 *b,
                                                            int64_t k_blocks, float *out,
                                                            int accumulate,
                                                            deferred_store *store) {
    const bf16 *b1 = b + k_blocks * TILE_ELEMS;
    if (accumulate) {
        _tile_loadd(0, out, 128);
        if (nt == 2) _tile_loadd(1, out + 16, 128);
        if (mt == 2) _tile_loadd(2, out + 16 * 32, 128);
        if (mt == 2 && nt == 2) _tile_loadd(3, out + 16 * 32 + 16, 128);
    } else {
        _tile_zero(0);
        if (nt == 2) _tile_zero(1);
        if (mt == 2) _tile_zero(2);
        if (mt == 2 && nt == 2) _tile_zero(3);
    }
    for (int64_t kb = 0; kb < k_blocks; kb++) {
        int64_t at = kb * TILE_ELEMS;
        _tile_loadd(4, a.first + kb * a.step, a.stride);
        _tile_loadd(6, b + at, TILE_STRIDE);
        if (nt == 2) _tile_loadd(7, b1 + at, TILE_STRIDE);
        _tile_dpbf16ps(0, 4, 6);
        if (nt == 2) _tile_dpbf16ps(1, 4, 7);
        if (mt == 2) {
            _tile_loadd(5, a.second + kb * a.step, a.stride);
            _tile_dpbf16ps(2, 5, 6);
            if (nt == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
    if (store) { /* while the products run */
        flush_store(store);
        pack_ahead_next(store->ahead);
    }
    _tile_stored(0, out, 128);
    if (nt == 2) _tile_stored(1, out + 16, 128);
    if (mt == 2) _tile_stored(2, out + 16 * 32, 128);
    if (mt == 2 && nt == 2) _tile_stored(3, out + 16 * 32 + 16, 128);
}

/* The pairs of K's last k-block (1 to 16) that hold any of K: the dot products skip the
 * others, whose numbers are all padding zeros. Their products (+0) would change no sum but
 * a -0 (a sum reaches -0 when VDPBF16PS flushes a negative subnormal), to +0: so where any
 * are skipped, +0 is added to each sum once after the loop (zero_signs), and the bits are
 * those of all 16 pairs (and of the tiles, which take whole k-blocks). Zen 5, 2 threads,
 * bfloat16 operands and C, alternating in one process with all 16 pairs, the same bits in
 * 8608 cases: 512 x 16 x 1024 1.34x, 1024 x 16 x 2048 (B transposed) 1.31x, 256 x 16 x 4096
 * 1.46x, 512 x 16 x 2048 (A transposed) 1.16x, 1024 x 16 x 4096 1.20x, 64 x 17 x 1000 1.24x,
 * 100 x 47 x 300 1.06x, 33 x 784 x 129 1.04x (issue 20's sweep against torch.mm had K = 16
 * at 0.39-0.79x). */
static inline int tail_pairs(int64_t k) { return (int)((k - 1) % TILE_K / 2 + 1); }
static inline __m512 zero_signs(__m512 sum) { return _mm512_add_ps(sum, _mm512_setzero_ps()); }

/* The 16 x 16 block of C from one packed row block (a) and one column block (b), with
 * AVX512-BF16 dot products instead of tiles (VDPBF16PS: 16 lanes, each += the two products
 * of a bfloat16 pair, flushing subnormals as TDPBF16PS does): row q of a B tile is one
 * vector of 16 pairs, and pair q of an A tile's row r is broadcast to every lane; the last
 * k-block only its first `tail` pairs (tail_pairs). Into out (row stride 32). */
static inline void dot_block16(const bf16 *a, int64_t a_row, int64_t a_step, const bf16 *b,
                               int64_t k_blocks, int tail, float *out, int accumulate) {
    __m512 acc[16];
    for (int r = 0; r < 16; r++)
        acc[r] = accumulate ? _mm512_load_ps(out + r * 32) : _mm512_setzero_ps();
    for (int64_t kb = 0; kb < k_blocks; kb++) {
        const bf16 *a_tile = a + kb * a_step, *b_tile = b + kb * TILE_ELEMS;
        int steps = kb + 1 < k_blocks ? 16 : tail;
        for (int q = 0; q < steps; q++) {
            __m512bh pairs = (__m512bh)_mm512_load_si512(b_tile + q * TILE_K);
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                int32_t pair;
                memcpy(&pair, a_tile + r * a_row + 2 * q, sizeof pair);
                acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32(pair), pairs);
            }
        }
    }
    if (tail < 16 && k_blocks > 0)
        for (int r = 0; r < 16; r++) acc[r] = zero_signs(acc[r]);
    for (int r = 0; r < 16; r++) _mm512_store_ps(out + r * 32, acc[r]);
}

/* The 8 x 2 accumulators of dot_block8x2 (rows 8 x 32 floats of out, row stride 32): zeros
 * or (accumulate) out's sums; out <- acc. */
static inline void acc8x2_start(__m512 acc[8][2], const float *out, int accumulate) {
    for (int r = 0; r < 8; r++)
        for (int h = 0; h < 2; h++)
            acc[r][h] = accumulate ? _mm512_load_ps(out + r * 32 + 16 * h) : _mm512_setzero_ps();
}
static inline void acc8x2_finish(__m512 acc[8][2], float *out) {
    for (int r = 0; r < 8; r++)
        for (int h = 0; h < 2; h++) _mm512_store_ps(out + r * 32 + 16 * h, acc[r][h]);
}

/* Step q of an A tile's 8 rows (a_tile: the first) against B's pairs p0 and p1: each
 * broadcast pair of A serves two dot products. */
static inline void dot8x2_step(__m512 acc[8][2], const bf16 *a_tile, int64_t a_row, int q,
                               __m512bh p0, __m512bh p1) {
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        int32_t pair;
        memcpy(&pair, a_tile + r * a_row + 2 * q, sizeof pair);
        __m512bh broadcast = (__m512bh)_mm512_set1_epi32(pair);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], broadcast, p0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], broadcast, p1);
    }
}

/* 8 rows of a row block of A (a: its first row; a_row numbers from one row to the next and
 * a_step from one k-block to the next: TILE_K and TILE_ELEMS packed, A's row stride and TILE_K
 * read in place) by two column blocks (b0, b1): 16 x 2 accumulators, so a step of q takes 10
 * loads for 16 products where dot_block16 takes 17 for 16; the last k-block's first `tail`
 * pairs. Into out (row stride 32), from zeros or (accumulate) out's sums. */
static inline void dot8x2_sums(__m512 acc[8][2], const bf16 *a, int64_t a_row, int64_t a_step,
                               const bf16 *b0, const bf16 *b1, int64_t k_blocks, int tail) {
    for (int64_t kb = 0; kb < k_blocks; kb++) {
        const bf16 *b0_tile = b0 + kb * TILE_ELEMS, *b1_tile = b1 + kb * TILE_ELEMS;
        int steps = kb + 1 < k_blocks ? 16 : tail;
        for (int q = 0; q < steps; q++)
            dot8x2_step(acc, a + kb * a_step, a_row, q,
                        (__m512bh)_mm512_load_si512(b0_tile + q * TILE_K),
                        (__m512bh)_mm512_load_si512(b1_tile + q * TILE_K));
    }
    if (tail < 16 && k_blocks > 0)
        for (int r = 0; r < 8; r++)
            for (int h = 0; h < 2; h++) acc[r][h] = zero_signs(acc[r][h]);
}
static inline void dot_block8x2(const bf16 *a, int64_t a_row, int64_t a_step, const bf16 *b0,
                                const bf16 *b1, int64_t k_blocks, int tail, float *out,
                                int accumulate) {
    __m512 acc[8][2];
    acc8x2_start(acc, out, accumulate);
    dot8x2_sums(acc, a, a_row, a_step, b0, b1, k_blocks, tail);
    acc8x2_finish(acc, out);
}

/* rows x cols (<= 32 each) of a block of C over kbn k-blocks with dot products (the last
 * one's first `tail` pairs), into block (row stride 32): a at the first row block's first
 * k-block (the second row block a_next numbers further; a_row and a_step as dot_block8x2's),
 * b0 and b1 at the two column blocks' (kbn tiles each). accumulate: add to the sums in block
 * (those of the k-blocks before) instead of starting from zero, which gives the same bits as
 * one pass over both ranges. */
static inline void dot_pair(const bf16 *a, int64_t a_next, int64_t a_row, int64_t a_step,
                            const bf16 *b0, const bf16 *b1, int64_t kbn, int tail,
                            int64_t rows, int64_t cols, float *block, int accumulate) {
    for (int ia = 0; ia < 2 && 16 * ia < rows; ia++) {
        const bf16 *a_block = a + ia * a_next;
        if (cols > 16)
            for (int half = 0; half < 2 && 16 * ia + 8 * half < rows; half++)
                dot_block8x2(a_block + 8 * half * a_row, a_row, a_step, b0, b1, kbn, tail,
                             block + (16 * ia + 8 * half) * 32, accumulate);
        else
            dot_block16(a_block, a_row, a_step, b0, kbn, tail, block + ia * 16 * 32,
                        accumulate);
    }
}

/* The sums over kbn k-blocks of a rows x cols (<= 32 each) block of C, on tiles or (tiles 0)
 * with dot products (the last k-block's first `tail` pairs: tail_pairs of K for the
 * k-blocks that end K, else 16), from the row blocks of a (at their first k-block) and the
 * packed column blocks at b (kbn tiles each), into block (32 x 32, row stride 32): from
 * zeros, or (accumulate) added to block's sums of the k-blocks before. The waiting block of
 * `store` (if given) goes to C: on tiles beside the products, with dot products (nothing to
 * overlap) before them. */
static inline void block_sums(int tiles, a_tiles a, const bf16 *b, int64_t kbn, int tail,
                              int64_t rows, int64_t cols, float *block, int accumulate,
                              deferred_store *store) {
    if (!tiles) { /* (the second row block a.second - a.first numbers on; a.stride bytes a row) */
        if (store) flush_store(store);
        dot_pair(a.first, a.second - a.first, a.stride / (int64_t)sizeof(bf16), a.step, b,
                 b + kbn * TILE_ELEMS, kbn, tail, rows, cols, block, accumulate);
    } else if (rows > 16 && cols > 16)
        amx_block(2, 2, a, b, kbn, block, accumulate, store);
    else if (rows > 16)
        amx_block(2, 1, a, b, kbn, block, accumulate, store);
    else if (cols > 16)
        amx_block(1, 2, a, b, kbn, block, accumulate, store);
    else
        amx_block(1, 1, a, b, kbn, block, accumulate, store);
}

/* With dot products, a whole 32 x 32 block of C without epilogue whose rows are streamed
 * (streamed(): 2 MB or more, on lines), from the pair of row blocks of a and the packed column
 * blocks at b (all of K): each 8 rows' sums streamed to C from the accumulators (stream_row),
 * rather than stored into a block in L1 and read back by store_block: the same sums and stores,
 * the same bits. Not inlined: inlined into packed_gemm, its dot loop lost registers (1024 x 256
 * x 1024 and 1024^3 0.89-0.95x). Zen 5, 2 threads, bfloat16 operands and C, alternating in one
 * process, against store_block, three runs: 1024 x 16 x 2048 1.02-1.07x, 2048 x 16 x 1024 (A
 * transposed) 1.08-1.11x, 512 x 16 x 4096 (B transposed) 1.07-1.09x, 1024 x 64 x 1024 1.03x; K
 * of 128-1024 1.01-1.02x; float32 operands and C 0.99-1.04x (the bytes of C bound those). */
static __attribute__((noinline)) void dot_pair_streamed(a_tiles a, const bf16 *b, int64_t k,
                                                        output c, int64_t ip, int64_t jp) {
    int64_t k_blocks = fastnn_ceil_div(k, TILE_K), a_row = a.stride / (int64_t)sizeof(bf16);
    int64_t elem = c.bf16 ? (int64_t)sizeof(bf16) : (int64_t)sizeof(float);
    char *to = (char *)c.data + (ip * 32 * c.ld + jp * 32) * elem;
    for (int r0 = 0; r0 < 32; r0 += 8) {
        __m512 acc[8][2];
        acc8x2_start(acc, NULL, 0);
        dot8x2_sums(acc, (r0 < 16 ? a.first : a.second) + r0 % 16 * a_row, a_row, a.step, b,
                    b + k_blocks * TILE_ELEMS, k_blocks, tail_pairs(k));
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++)
            stream_row(c.bf16, to + (r0 + r) * c.ld * elem, acc[r][0], acc[r][1]);
    }
}

/* One block of C at row block pair ip and column block pair jp from the pair's row blocks of
 * A and packed column blocks at b (their k-blocks of all of K, k), into the sums of `store`,
 * where it waits for store_block (with the epilogue) until the next block's products are
 * issued, or flush_store. */
static inline void amx_pair(int tiles, a_tiles a, const bf16 *b, int64_t k, int64_t m,
                            int64_t n, int64_t ip, int64_t jp, deferred_store *store) {
    if (!tiles && !store->c.trans && !store->epilogue && m - ip * 32 >= 32 &&
        streamed(store->c, m, n, fastnn_min(32, n - jp * 32))) {
        flush_store(store);
        dot_pair_streamed(a, b, k, store->c, ip, jp);
        return;
    }
    block_sums(tiles, a, b, fastnn_ceil_div(k, TILE_K), tail_pairs(k),
               fastnn_min(32, m - ip * 32), fastnn_min(32, n - jp * 32), store->sums, 0,
               store);
    store->waiting = 1, store->ip = ip, store->jp = jp;
}

/* The tiles of row block pair ip of op(A): in place (a bfloat16 A not transposed, whole
 * k-blocks and row blocks), or packed at `packed` (k_blocks tiles a row block). */
static inline a_tiles row_pair(operand a, int in_place, const bf16 *packed, int64_t ip,
                               int64_t m, int64_t k_blocks) {
    if (!in_place)
        return (a_tiles){packed, packed + k_blocks * TILE_ELEMS, TILE_STRIDE, TILE_ELEMS};
    const bf16 *first = (const bf16 *)a.data + ip * 32 * a.ld;
    return (a_tiles){first, m - ip * 32 > 16 ? first + 16 * a.ld : first,
                     a.ld * (int64_t)sizeof(bf16), TILE_K};
}

/* The few-rows path for a B not transposed (on tiles, up to AMX_PIECE_MAX_PAIRS pairs of row
 * blocks, and a bfloat16 B transposed too), on the pairs of column blocks [first, end):
 * `group` pairs at a time, K in pieces of at most `piece` k-blocks (of about equal size).
 * Each piece of the group's B is packed first, two stored rows at a time across the group
 * (runs of group x 32 columns of each row), into this thread's panel (in L2); then each row
 * pair's sums over the piece are added to its blocks in partial (the group's pairs x m_pairs
 * blocks of 32 x 32 floats), and those of the last piece go to C at once (store_block, from
 * L1: after all of the group's blocks they came back from L2 or L3; Zen 5, 2 threads,
 * alternating in one process, same bits, float32 operands 128 x 16 x 2048 1.51x, 32 x 16 x
 * 4096 1.52x, 64 x 16 x 2048 1.36x, 128 x 16 x 4096 1.47x, a long K 0.98-1.06x, measured while
 * dot products took this path up to 128 rows and at K = 16: see DOT_FEW_MAX_PAIRS). Each block
 * still sums all of K in order on one thread: the bits of amx_pair. The packed B never goes to
 * memory and back, nor is B's row read in runs too short for the prefetchers.
 *  - With dot products (tiles 0; up to DOT_FEW_MAX_PAIRS pairs of row blocks), WIDE_GROUP_PAIRS
 *    of WIDE_K_BLOCKS. Zen 5, 2 threads, a busy host, 4 alternating processes each, B of
 *    long rows: 32 pairs of 2 k-blocks against 8 of 8 (runs of 1 KB), 32 x 2048 x 2048 0.97
 *    against 1.44 ms, 32 x 4096 x 4096 6.2 against 8.6, 128 x 1024 x 4096 2.6 against 3.4
 *    (16 of 4: between).
 *  - On tiles, AMX_PIECE_GROUP_PAIRS of AMX_PIECE_K_BLOCKS (the sums of a block are loaded
 *    into and stored from the tiles once a piece), where a thread's own groups of all of K
 *    would read B in runs shorter than 1 KB a row (packed_gemm). */
#define WIDE_GROUP_PAIRS 32
#define WIDE_K_BLOCKS 2
/* With dot products, up to this many pairs of row blocks (32 rows), and only for a K of more
 * than one piece (WIDE_K_BLOCKS): the group's sums (128 KB) and its piece of B (128 KB) in L2.
 * Up to 4 pairs (128 rows) before: measured against the other paths (B's groups packed
 * before their blocks, whose sums go from the registers to C) once those stored C without
 * the L1 block, Zen 5, 2 threads, alternating in one process, medians of 7-9 blocks, same
 * bits, float32 operands and a bfloat16 C: 128 rows 1.36-1.66x at K = 16 and N of 2048-4096
 * (128 x 16 x 4096 0.072 -> 0.045 ms), 1.1-1.4x at K of 256-4096 (128 x 1024 x 1024 1.23x,
 * 128 x 4096 x 4096 1.17-1.27x), 96 x 16 x 4096 1.28-1.86x, 72-96 rows at long K 1.01-1.07x;
 * 64 rows 1.05-1.21x (64 x 16 x 4096 1.68x); bfloat16 operands 0.94-1.31x (their B takes the
 * pieces only for short groups). At 32 rows the pieces still win at long K and wide N (32 x
 * 4096 x 4096 0.75x, 32 x 4096 x 1024 0.80x without), not where K is one piece (32 x 16 x 4096
 * 1.28-1.48x, 32 x 64 x 4096 1.21-1.26x without; K of 96-128 even). */
#define DOT_FEW_MAX_PAIRS 1
/* A float32 B whose K is not a whole number of k-blocks (K % 32 != 0) takes columns_in_pieces
 * on the dot products only with rows longer than this (bytes from one row to the next), where
 * the pieces beat B packed whole (with 8 pairs of 8 k-blocks, the first sizes: 32 x 2048 x
 * 2048 0.84 -> 0.55-0.62 ms, 32 x 1024 x 4096 1.0 -> 0.73-0.91 ms); with shorter rows they
 * lost (128 x 784 x 256 and 128 x 784 x 1024 0.95-0.96x against own groups). */
#define DOT_MAX_ROW_BYTES 4096
#define AMX_PIECE_GROUP_PAIRS 16
#define AMX_PIECE_K_BLOCKS 8
/* On tiles, up to this many pairs of row blocks (256 rows): the group's sums (512 KB), its
 * piece of B (256 KB) and A's piece (128 KB) in L2. Sapphire Rapids, 2 threads, alternating
 * in one process, same bits, against the other paths (B packed whole, shared A chunks of all
 * of K): bfloat16 operands 256 x 4096 x 4096 1.18x (A transposed 1.27x), 192 x 4096 x 4096
 * 1.32x, 256 x 4096 x 1024 1.16x, 160 x 4096 x 1024 1.27x, 256 x 2048 x 2048 1.15x, 256 x
 * 4096 x 512 1.12x, 200 x 4096 x 600 1.22x, 256 x 1536 x 1024 1.06x; float32 operands 256 x
 * 4096 x 1024 1.19x, 256 x 4096 x 512 1.15x. Up to 512 rows it lost (0.54x at 512 x 4096 x
 * 4096, 0.96x at 384 rows: 1 MB of sums). */
#define AMX_PIECE_MAX_PAIRS 8
/* On tiles, a bfloat16 B transposed takes columns_in_pieces from this many pairs of row
 * blocks (packed_gemm). */
#define AMX_BT_PIECES_MIN_PAIRS 5
#define PIECES_THREAD_ELEMS(group, piece, pairs) \
    ((group) * 2 * (piece) * TILE_ELEMS + (group) * (pairs) * 32 * 32 * 2)
static void columns_in_pieces(int tiles, operand a, int a_in_place, const bf16 *a_pack,
                              int64_t k_blocks, int64_t m, int64_t n, int64_t k, operand b,
                              int64_t first, int64_t end, output c,
                              const fastnn_epilogue *epilogue, bf16 *panel) {
    int64_t group = tiles ? AMX_PIECE_GROUP_PAIRS : WIDE_GROUP_PAIRS;
    int64_t piece_blocks = tiles ? AMX_PIECE_K_BLOCKS : WIDE_K_BLOCKS;
    float *partial = (float *)(panel + group * 2 * piece_blocks * TILE_ELEMS);
    int64_t m_pairs = fastnn_ceil_div(m, 32), n_blocks = fastnn_ceil_div(n, 16);
    int64_t pieces = fastnn_ceil_div(k_blocks, piece_blocks);
    for (int64_t g0 = first; g0 < end; g0 += group) {
        int64_t g1 = fastnn_min(end, g0 + group);
        for (int64_t piece = 0; piece < pieces; piece++) {
            int64_t kb0 = k_blocks * piece / pieces;
            int64_t kbn = k_blocks * (piece + 1) / pieces - kb0;
            /* column block jb of the group at panel + (jb - 2 g0) kbn tiles */
            pack_b_blocks(panel, kbn, b, n, k, 2 * g0, fastnn_min(n_blocks, 2 * g1), kb0, kbn);
            for (int64_t jp = g0; jp < g1; jp++)
                for (int64_t ip = 0; ip < m_pairs; ip++) {
                    a_tiles rows = row_pair(a, a_in_place, a_pack + 2 * ip * k_blocks * TILE_ELEMS,
                                            ip, m, k_blocks);
                    float *block = partial + ((jp - g0) * m_pairs + ip) * 32 * 32;
                    rows.first += kb0 * rows.step;
                    rows.second += kb0 * rows.step;
                    block_sums(tiles, rows, panel + 2 * (jp - g0) * kbn * TILE_ELEMS, kbn,
                               piece + 1 == pieces ? tail_pairs(k) : 16,
                               fastnn_min(32, m - ip * 32), fastnn_min(32, n - jp * 32), block,
                               kb0 > 0, NULL);
                    if (piece + 1 == pieces) store_block(c, block, m, n, ip, jp, epilogue);
                }
        }
    }
}

/* op(X) from k = p0 on, as an operand of K - p0 (b_side: X is B, k its rows; else A, k its
 * columns). */
static operand from_k(operand x, int b_side, int64_t p0) {
    int64_t step = x.trans != b_side ? x.ld : 1; /* elements from one k to the next */
    x.data = (const char *)x.data + p0 * step * (x.bf16 ? (int64_t)sizeof(bf16) : 4);
    return x;
}

/* On tiles or (tiles 0) with dot products, with a transposed A (the weight gradient's x^T dz:
 * both operands stored k after k), the blocks of C at row pairs [first, end) and column pairs
 * [j_first, j_end) (a thread's own rows and all columns when split by rows, all rows and its
 * own columns when split by columns): K in pieces of at most PIECE_K_BLOCKS k-blocks (about
 * equal). Each thread
 * packs, for itself, the piece of its rows of A (their part of the stored rows, in order) and
 * of its columns of B, the next piece of both beside the tile products of the one before
 * (pack_ahead, two slots of piece_slot_elems), and adds each block's sums over the piece to
 * its block in partial (its blocks of 32 x 32 floats), in order of k: each block still sums
 * all of K in order on one thread, the bits of amx_pair. The blocks of the last piece go to C
 * through `store` (the epilogue beside the next block's products). Nothing is shared between
 * the threads: no barrier. Packed whole first instead (the transposed A) and shared, the copy
 * from memory waited before every product. Sapphire Rapids, 2 threads, alternating in one
 * process, same bits: by rows, bfloat16 operands, A transposed, 1024 x 1024 x 256 1.04-1.15x,
 * 1024 x 4096 x 256 1.09-1.19x, 1024 x 2048 x 256 1.07-1.08x, 512 x 2048 x 512 1.06-1.16x,
 * 2048 x 1024 x 128 1.06x, 784 x 1024 x 256 1.01-1.11x, both transposed 1024 x 4096 x 256
 * 1.15-1.17x; float32 operands 1024 x 4096 x 256 1.11x, 1024 x 1024 x 256 0.97-1.02x. With
 * 256 rows (a thread's part of a stored row: 256 bytes) 0.92-1.05x: from PIECES_MIN_ROWS_BY_ROWS
 * rows. By columns (A's stored rows read whole by both threads), bfloat16 operands: 256 x 1024
 * x 1024 1.11-1.17x, 256 x 4096 x 1024 1.18-1.21x, 256 x 2048 x 1024 1.10x, 256 x 1024 x 768
 * 1.09x, 384 x 1024 x 1024 1.02-1.05x, both transposed 1.03-1.05x; with 128 rows 0.88-0.94x
 * (from PIECES_MIN_ROWS_BY_COLUMNS), with float32 operands 0.90-1.06x (not taken). Pieces of 16 or
 * 32 k-blocks lost (0.80-0.98x), of 4 matched. */
#define PIECE_K_BLOCKS 8
#define PIECES_PARTIAL_BYTES (1024 * 1024)
#define PIECES_MIN_ROWS_BY_ROWS 512
#define PIECES_MIN_ROWS_BY_COLUMNS 256
static int64_t piece_slot_elems(int64_t own_pairs, int64_t n_pairs) {
    return 2 * (own_pairs + n_pairs) * PIECE_K_BLOCKS * TILE_ELEMS;
}
static void blocks_in_pieces(int tiles, operand a, operand b, int64_t k_blocks, int64_t m,
                             int64_t n, int64_t k, int64_t first, int64_t end, int64_t j_first,
                             int64_t j_end, bf16 *slots, float *partial,
                             deferred_store *store) {
    int64_t m_blocks = fastnn_ceil_div(m, TILE_ROWS), n_blocks = fastnn_ceil_div(n, 16);
    int64_t n_pairs = j_end - j_first;
    int64_t pieces = fastnn_ceil_div(k_blocks, PIECE_K_BLOCKS);
    int64_t slot_elems = piece_slot_elems(end - first, n_pairs);
    int64_t b_at = 2 * (end - first) * PIECE_K_BLOCKS * TILE_ELEMS; /* B's piece */
    pack_ahead next_a = {0}, next_b = {0};
    for (int64_t piece = -1; piece < pieces; piece++) {
        /* piece + 1 into slot (piece + 1) % 2: beside piece's blocks, or (piece -1) first */
        pack_ahead *ahead = NULL;
        if (piece + 1 < pieces) {
            int64_t kb0 = k_blocks * (piece + 1) / pieces;
            int64_t kbn = k_blocks * (piece + 2) / pieces - kb0;
            bf16 *slot = slots + (piece + 1) % 2 * slot_elems;
            int64_t p0 = kb0 * TILE_K, blocks = piece < 0 ? 1 : (end - first) * n_pairs;
            next_a = pack_ahead_of(slot, from_k(a, 0, p0), 0, m, k - p0, 2 * first,
                                   fastnn_min(m_blocks, 2 * end), blocks);
            next_b = pack_ahead_of(slot + b_at, from_k(b, 1, p0), 1, n, k - p0, 2 * j_first,
                                   fastnn_min(n_blocks, 2 * j_end), blocks);
            next_a.total = next_b.total = kbn;
            next_a.per_step = next_b.per_step = fastnn_ceil_div(kbn, blocks);
            next_a.then = &next_b;
            ahead = &next_a;
            if (piece < 0) {
                pack_ahead_rest(ahead);
                continue;
            }
        }
        int64_t kbn = k_blocks * (piece + 1) / pieces - k_blocks * piece / pieces;
        const bf16 *slot = slots + piece % 2 * slot_elems;
        int last = piece + 1 == pieces;
        store->ahead = ahead;
        for (int64_t ip = first; ip < end; ip++)
            for (int64_t jp = j_first; jp < j_end; jp++) {
                const bf16 *a_pair = slot + 2 * (ip - first) * kbn * TILE_ELEMS;
                float *sums = partial + ((ip - first) * n_pairs + jp - j_first) * 32 * 32;
                a_tiles rows = {a_pair, a_pair + kbn * TILE_ELEMS, TILE_STRIDE, TILE_ELEMS};
                block_sums(tiles, rows, slot + b_at + 2 * (jp - j_first) * kbn * TILE_ELEMS,
                           kbn, last ? tail_pairs(k) : 16, fastnn_min(32, m - ip * 32),
                           fastnn_min(32, n - jp * 32), sums, piece > 0, store);
                if (last) store->waiting = 1, store->ip = ip, store->jp = jp, store->from = sums;
            }
        pack_ahead_rest(ahead);
        store->ahead = NULL;
    }
}

/* Smallest product (flops, and 64 a C element: packed_gemm) worth a thread of its own. */
#define AMX_FLOPS_PER_THREAD 8.0e6
/* Bytes of the packed shared operand that one pass over a thread's own blocks reuses (kept in
 * L2); where a thread's own pairs exceed AMX_OWN_GROUP_BYTES, at least
 * AMX_SHARED_CHUNK_MIN_PAIRS pairs on tiles (DOT_SHARED_CHUNK_MIN_PAIRS with dot products)
 * while they fit AMX_SHARED_CHUNK_MAX_BYTES. On tiles 8 pairs, up from 4: with K of 1024-2048
 * the shared chunk is then 1 MB rather than 512 KB, and each own pair (read from L3 or
 * memory) is read once for 8 of the shared operand's pairs rather than 4. Sapphire Rapids
 * class (2 vCPUs, 2 MB L2 a core), 2 threads, alternating in one process, medians of 7
 * blocks, same bits: bfloat16 operands 4096 x 2048 x 256 1.12x, 2048 x 2048 x 512 1.08-1.11x,
 * 1024 x 2048 x 256 1.06-1.07x (B transposed 1.07-1.09x), 1024 x 2048 x 1024 1.04x, 512 x 2048
 * x 2048 1.03x; float32 operands in bfloat16 precision 4096 x 2048 x 256 1.18x, 1024 x 2048 x
 * 256 1.12-1.14x, 1024 x 2048 x 1024 1.08x, 2048 x 2048 x 512 1.08x; the rest 0.99-1.03x. 16
 * pairs (1 MB at K = 1024 too) 0.98-1.07x against 8, and chunks of up to 1.5 MB 0.95-1.01x:
 * not taken. (Dot products: measured on hosts without AMX at 4.) */
#define AMX_SHARED_CHUNK_BYTES (512 * 1024)
#define AMX_SHARED_CHUNK_MIN_PAIRS 8
#define DOT_SHARED_CHUNK_MIN_PAIRS 4
#define AMX_SHARED_CHUNK_MAX_BYTES (1024 * 1024)
/* Bytes of the own operand packed at a time when the shared one is a single chunk (in L2 beside
 * it); on tiles with at most AMX_FEW_ROWS_PAIRS pairs of row blocks (128 rows),
 * AMX_FEW_ROWS_GROUP_BYTES, half as much (why it gains was not measured apart: with a bfloat16
 * B of 1024 or more rows, a group's runs of a row are then shorter than 1 KB, so more of these
 * shapes take columns_in_pieces; for the others, a group and its row of C blocks take half the
 * L2): Sapphire Rapids class (2 vCPUs, 2 MB L2 a core), 2 threads, alternating in one process,
 * medians of 7-9 blocks, same bits, bfloat16 operands 32 x 1024 x 1024 1.28-1.30x, 32 x 4096 x
 * 4096 (B transposed) 1.22x, 128 x 1024 x 1024 1.17-1.18x, 64 x 1024 x 2048 1.18x, 32 x 1024 x
 * 4096 1.16x, 128 x 1024 x 4096 1.06x, 64 x 1024 x 1024 (B transposed) 1.06x, the rest
 * 0.96-1.05x (96 x 2048 x 2048 0.90x then 1.05x); float32 operands in bfloat16 precision 32 x
 * 4096 x 4096 (B transposed) 1.30x, 64 x 2048 x 2048 1.23x, 96 x 2048 x 2048 1.17-1.19x, 32 x
 * 2048 x 1024 1.16x, 64 x 1024 x 1024 (B transposed) 1.15x, 128 x 2048 x 4096 1.11x, the rest
 * 0.95-1.07x. Halved for every number of rows, 512 x 1024 x 2048 to 1024 x 1024 x 4096 lost
 * 5-16%, 256 x 4096 x 4096 29%; 1.5 MB for every number of rows lost 3-15%. */
#define AMX_OWN_GROUP_BYTES (1024 * 1024)
#define AMX_FEW_ROWS_PAIRS 4
#define AMX_FEW_ROWS_GROUP_BYTES (512 * 1024)
/* B packed ahead in groups of this many pairs (packed_gemm's b_ahead), where K has at most
 * AMX_B_AHEAD_K_BLOCKS k-blocks and A at most AMX_B_AHEAD_A_PAIRS pairs of row blocks. */
#define AMX_B_AHEAD_PAIRS 8
#define AMX_B_AHEAD_K_BLOCKS 16
#define AMX_B_AHEAD_A_PAIRS 8
/* A bfloat16 B at most this large (packed) is packed whole by each thread of a split by rows,
 * for itself (packed_gemm). */
#define AMX_PRIVATE_B_BYTES (512 * 1024)
/* A packed A at most this large is packed whole by each thread of a split by columns
 * (packed_gemm). */
#define AMX_PRIVATE_A_BYTES (128 * 1024)
/* A packed B at most this large is read back from the caches (here: 16 MB of 2 x 2 MB L2 and
 * a large shared L3). */
#define AMX_CACHED_PACK_BYTES (16 * 1024 * 1024)

/* The packed bfloat16 GEMM, its blocks on tiles (AMX) or (tiles 0) by dot products; on this
 * thread alone when one_thread (k_split_gemm's halves), else on as many as the work is worth. */
static int packed_gemm(int tiles, int one_thread, int64_t m, int64_t n, int64_t k, operand a,
                       operand b, output c, const fastnn_epilogue *epilogue) {
    int64_t k_blocks = fastnn_ceil_div(k, TILE_K);
    int64_t m_blocks = fastnn_ceil_div(m, 16), n_blocks = fastnn_ceil_div(n, 16);
    int64_t m_pairs = fastnn_ceil_div(m_blocks, 2), n_pairs = fastnn_ceil_div(n_blocks, 2);
    /* The work of each element of C (its packing, sums' store, rounding) counted as 32 more
     * k: a short K is worth a thread by C's size. Zen 5, 2 threads, alternating in one process,
     * same bits, 2 threads against 1 where this gives them: float32 operands 128 x 16 x 2048
     * 1.73-1.86x, 256 x 16 x 1024 1.77x; bfloat16 operands and C 1.63x, 1.69x; 64 x 16 x 2048
     * and 128 x 16 x 1024 (C of 256-512 KB) 0.92-1.02x. (Not measured on tiles.) */
    int threads = one_thread ? 1
                             : fastnn_threads_for(2.0 * m * n * (k + 32), AMX_FLOPS_PER_THREAD);
    if (threads > m_pairs * n_pairs) threads = (int)(m_pairs * n_pairs);
    /* On a busy machine (internal.h), this thread alone: every block of C sums all of K on
     * one thread whatever the split, so the bits do not change. */
    if (threads > 1 && fastnn_contended()) threads = 1;
    /* A bfloat16 A not transposed is read by the tiles where it lies (its rows are the A
     * tiles' rows, TILELOADD taking its row stride) when it has whole k-blocks and row
     * blocks and its rows start on cache lines: nothing to pack, the same products.
     * Sapphire Rapids, 2 threads, bfloat16 operands, alternating in one process, same bits,
     * A's rows 64-byte aligned: 1024 x 1024 x 256 0.30 -> 0.23 ms, 2048 x 512 x 512 0.51 ->
     * 0.42, 256 x 4096 x 256 0.40 -> 0.34, 1024^3 1.02 -> 0.96, 128 x 1024 x 1024 0.20 -> 0.19,
     * 256 x 256 x 4096 0.95-0.97x, the rest within 2%; with rows 16 bytes off a line (each
     * tile row then reads two), 0.87-1.11x; each pair of row blocks packed just before its
     * blocks instead, 0.77-0.95x against in place. The dot products likewise (their
     * broadcasts read pairs of A along its rows, any row stride): AMD Zen 5 (AVX512-BF16,
     * no AMX), 2 threads,
     * alternating in one process, same bits, against A packed: 1024 x 1024 x 256 1.05-1.10x
     * (0.56 ms; torch.mm 0.60), B transposed 1.18x, 256 x 4096 x 256 1.04-1.06x, 2048 x 512 x
     * 512 1.02-1.05x, 512^3 1.00-1.08x; a few rows (32-128, columns_in_pieces and own
     * groups) 0.98-1.02x. The split's tie below stays the packed A's for dot products. */
    int a_in_place = a.bf16 && !a.trans && k % TILE_K == 0 && m % TILE_ROWS == 0 &&
                     (tiles ? (uintptr_t)a.data % 64 == 0 &&
                                  a.ld * (int64_t)sizeof(bf16) % 64 == 0
                            : (uintptr_t)a.data % 4 == 0 && a.ld % 2 == 0);
    /* Each thread owns pairs of row blocks (by rows) or of column blocks: it packs its own
     * operand's pairs, and an equal share of the other operand, which every thread reads
     * whole, before one barrier. By rows when that leaves the busiest thread fewer blocks, or
     * as many and A is the larger operand (m >= n), so that the operand read whole is the
     * smaller one; but an A read in place is shared by columns up to twice B's rows (m <= 2n):
     * it is only read, where a packed B shared by rows is written again at each call, half by
     * each thread, and read by both (its lines move between the cores). Sapphire Rapids, 2
     * threads, bfloat16 operands, alternating in one process, same bits, by columns against
     * by rows: 256 x 4096 x 256 1.20x, 512 x 2048 x 512 1.11x, 256 x 1024 x 256 1.25x,
     * 128 x 4096 x 128 1.47x, 1024^3 and 2048^3 1.04x, 512 x 4096 x 256 1.16x, 1024 x 1024 x 512
     * 1.00x; at m = 4n mixed (1024 x 1024 x 256 and 2048 x 512 x 512 0.94-0.96x, 512 x 1024 x
     * 128 1.25x), so by rows there. */
    int64_t busiest_by_rows = fastnn_ceil_div(m_pairs, threads) * n_pairs;
    int64_t busiest_by_columns = fastnn_ceil_div(n_pairs, threads) * m_pairs;
    int by_rows = busiest_by_rows < busiest_by_columns ||
                  (busiest_by_rows == busiest_by_columns &&
                   (tiles && a_in_place ? m > 2 * n : m >= n));
    int64_t own_pairs = by_rows ? m_pairs : n_pairs, shared_pairs = by_rows ? n_pairs : m_pairs;
    /* Every thread owns at least one pair: a thread count above the pairs of the split (one
     * set past the CPUs, say 64 on 2: fastnn_set_num_threads allows it) would leave threads
     * with none, and blocks_in_pieces divided its steps by a thread's zero blocks (SIGFPE). */
    if (threads > own_pairs) threads = (int)own_pairs;
    /* Pairs of the shared operand per chunk reused over a thread's own pairs. */
    /* (A thread's own pairs larger than a group come from L3 for the first block of each
     * chunk, from L2 for the others: with K = 4096, a pair of 256 KB, 2 pairs a chunk read
     * half of the own operand's tiles from L3. Sapphire Rapids, 2 threads, alternating in one
     * process, same bits, 4 pairs of 1 MB against 2: 1024 x 4096 x 4096 16.2 -> 13.8 ms,
     * 512 x 4096 x 4096 9.0 -> 7.8, 2048 x 4096 x 1024 8.2 -> 6.9, 256 x 4096 x 4096 5.3 ->
     * 4.6, float32 operands 1024 x 4096 x 4096 19.0 -> 16.3; where the own pairs fit L2
     * beside the chunk, 256 x 4096 x 256 0.95x; 1 MB chunks for every K lost 2-8% where 512
     * KB holds 8 or more pairs, e.g. 1024 x 1024 x 4096.) */
    int64_t pair_bytes = 2 * k_blocks * FASTNN_AMX_TILE_BYTES;
    int64_t chunk = fastnn_max(1, AMX_SHARED_CHUNK_BYTES / pair_bytes);
    if (fastnn_ceil_div(own_pairs, threads) * pair_bytes > AMX_OWN_GROUP_BYTES)
        chunk = fastnn_max(chunk, fastnn_min(tiles ? AMX_SHARED_CHUNK_MIN_PAIRS
                                                   : DOT_SHARED_CHUNK_MIN_PAIRS,
                                             AMX_SHARED_CHUNK_MAX_BYTES / pair_bytes));
    /* A few rows by columns (on dot products, B not transposed): columns_in_pieces, for some
     * B (pieces below). A transposed B packs faster whole on dot products (its runs of k are
     * contiguous), and measured slower in pieces. */
    int few_rows_by_columns = !by_rows && (!b.trans || tiles) &&
                              (tiles ? m_pairs <= AMX_PIECE_MAX_PAIRS
                                     : m_pairs <= DOT_FEW_MAX_PAIRS && k_blocks > WIDE_K_BLOCKS);
    /* When the shared operand is one chunk (read whole from L2 for each own pair),
     * the own operand is packed a group of pairs (AMX_OWN_GROUP_BYTES) at a time just before
     * their blocks, into this thread's panel (in L2), rather than whole before the barrier:
     * the packed own operand no longer goes to memory and back. Sapphire Rapids, 2 threads,
     * against packing it whole (alternating in one process; same bits): bfloat16 operands
     * 32 x 1024 x 4096 0.59-0.67 -> 0.43 ms (torch.mm 0.37), 32 x 4096 x 4096 2.8 -> 1.8 ms,
     * 128 x 1024 x 4096 0.90 -> 0.74 ms; float32 operands 32 x 1024 x 4096 0.84 -> 0.57 ms,
     * 32 x 4096 x 4096 4.2 -> 3.1 ms; the others within 5% (groups of 256 KB: 32 x 4096 x 1024
     * 0.82x; a pair at a time: 32 x 1024 x 1024 0.45x, its B read in runs of 64 bytes).
     * With dot products likewise (B was packed whole before): AMD Zen 5 (EPYC, AVX512-BF16,
     * no AMX), 2 threads, bfloat16 operands, alternating in one process, same bits, B
     * transposed 32 x 4096 x 4096 1.45-1.72x (2.3-2.6 ms; torch.mm 2.2), 128 x 4096 x 4096
     * 1.19x, 32 x 1024 x 4096 and 32 x 4096 x 1024 1.10x; not transposed 32 x 1024 x 4096
     * 1.06-1.17x, 32 x 4096 x 4096 1.08x; the others within this host's noise (0.94-1.06x). */
    int64_t panel_elems = 2 * k_blocks * TILE_ELEMS;
    int64_t group_bytes = tiles && m_pairs <= AMX_FEW_ROWS_PAIRS ? AMX_FEW_ROWS_GROUP_BYTES
                                                                 : AMX_OWN_GROUP_BYTES;
    int64_t group = fastnn_max(1, group_bytes / pair_bytes);
    /* (a B not transposed is packed along its rows, 32 x group columns at a time: runs
     * shorter than 1 KB a row starve the prefetchers, and packing it whole is then faster
     * while the packed B stays in the caches: float32 32 x 4096 x 1024 and 64 x 4096 x 512
     * 0.93x in groups, where 32 x 4096 x 4096, 32 MB packed, gained 1.33x, bfloat16 1.75x) */
    int group_runs_short = group * 32 * (b.bf16 ? 2 : (int64_t)sizeof(float)) < 1024;
    int short_runs = !by_rows && !b.trans && group_runs_short &&
                     n_blocks * k_blocks * FASTNN_AMX_TILE_BYTES <= AMX_CACHED_PACK_BYTES;
    /* B packed a group and a piece at a time (columns_in_pieces): with dot products, a float32
     * B whose K is a whole number of k-blocks or whose rows are long (DOT_MAX_ROW_BYTES);
     * on tiles, a few rows whose own groups would read runs shorter than 1 KB of
     * B's rows, more than one group a thread. Sapphire Rapids, 2 threads, bfloat16
     * operands, alternating in one process, same bits, against own groups or B packed
     * whole (pieces of 8 k-blocks, groups of 16 pairs): 32 x 4096 x 1024 0.55 -> 0.45 ms,
     * 32 x 4096 x 4096 2.0 -> 1.7, 64 x 2048 x 2048 0.68 -> 0.58, 128 x 4096 x 4096 3.6 ->
     * 2.6, 32 x 2048 x 1024 0.236 -> 0.224; float32 operands 32 x 4096 x 1024 0.91 -> 0.61,
     * 128 x 4096 x 4096 5.6 -> 4.8. Where the groups' runs are 1 KB already, pieces lost:
     * 32 x 1024 x 4096 0.78-0.84x, 32 x 1024 x 1024 0.75-0.83x (groups of 8 of 8, 4 of 16,
     * 16 of 4 k-blocks: between). A bfloat16 B transposed, with AMX_BT_PIECES_MIN_PAIRS
     * pairs of row blocks or more, likewise (its piece of each stored row: 512 bytes): 256 x 4096 x
     * 4096 1.22x, 192 x 4096 x 4096 1.24x, 160 x 4096 x 1024 1.15x, 200 x 4096 x 600 1.13x, 256
     * x 2048 x 2048 1.09x, 256 x 2048 x 1024 0.98x; with fewer rows it lost (32 x 4096 x 1024
     * 0.71x, 64 x 2048 x 2048 0.79x, 128 x 4096 x 4096 0.90x), as with float32 operands (256 x
     * 4096 x 4096 0.89x: its rounding). With dot products a bfloat16 B not transposed
     * likewise (groups of WIDE_GROUP_PAIRS, pieces of WIDE_K_BLOCKS): AMD Zen 5 (no AMX), 2
     * threads, alternating in one process, same bits, against own groups: 32 x 4096 x 1024
     * 1.14-1.18x, 32 x 4096 x 4096 1.18-1.20x, 64 x 2048 x 2048 1.08-1.09x, 33 x 4000 x 1000
     * 1.06x; A transposed 32 x 4096 x 4096 1.35x, 64 x 2048 x 2048 1.09x; the rest even. A
     * float32 B whose K is a whole number of k-blocks was rounded in pieces of up to 8
     * k-blocks into an L1 panel beside the products of the first 8 rows, 32 columns at a time
     * (fused_columns, removed): in pieces instead, Zen 5, 2 threads, alternating in one
     * process, same bits, 1 x 1024 x 1024 and 8 x 1024 x 1024 1.42-1.46x, 32 x 4096 x 1024
     * 1.22-1.27x (1.36x with B not in the caches), 32 x 1024 x 1024 1.19-1.23x, 32 x 1056 x 1000
     * 1.18-1.20x, 32 x 4096 x 512 1.16-1.17x, 128 x 4096 x 1024 1.11-1.15x, 128 x 1024 x 1024
     * 1.08-1.12x, 32 x 1024 x 256 1.08-1.21x; narrow or short ones (N of 10-128, K of 64-256)
     * 0.96-1.02x. */
    int short_groups = group_runs_short && fastnn_ceil_div(n_pairs, threads) > group;
    int long_rows = b.ld * (int64_t)sizeof(float) > DOT_MAX_ROW_BYTES;
    int pieces = few_rows_by_columns &&
                 (tiles    ? short_groups && (!b.trans || (b.bf16 &&
                                                          m_pairs >= AMX_BT_PIECES_MIN_PAIRS))
                  : b.bf16 ? short_groups
                           : long_rows || k % TILE_K == 0);
    /* So too split by columns with an A read in place in more than one chunk: each group of
     * a thread's own pairs of B, packed just before its blocks, against every pair of A (read
     * from L3, where A lies, a pair against the group), rather than B packed whole (to memory)
     * and read back once for each chunk of A. Sapphire Rapids, 2 threads, bfloat16 operands,
     * alternating in one process, same bits: 1024 x 1024 x 4096 1.08-1.09x, 1024 x 4096 x 4096
     * 1.08x, 2048 x 1024 x 2048 1.12x, 384 x 1024 x 2048 1.19x, 512 x 1024 x 1024 1.08x, 512 x
     * 4096 x 4096 1.05x, 1024^3 1.04x, 2048^3 0.99x; B transposed 1024 x 4096 x 4096 1.17x,
     * 2048 x 1024 x 2048 1.22x, 1024 x 1024 x 4096 1.08x, 512 x 1024 x 1024 1.12x. (With a
     * packed A on tiles: 0.96-1.21x, not taken.) With dot products the packed, shared A too:
     * AMD Zen 5 (no AMX), 2 threads, alternating in one process, same bits, bfloat16
     * operands 256 x 4096 x 4096 1.07-1.15x, 1024 x 1024 x 4096 1.05-1.12x, 1024 x 4096 x 4096
     * 1.07x, 384 x 1024 x 2048 1.07x, A transposed 256 x 4096 x 4096 1.07x; float32 operands
     * 256 x 4096 x 4096 1.10x, 1024 x 1024 x 4096 1.05x; the rest within this host's noise
     * (0.95-1.04x). */
    int own_panel = (shared_pairs <= chunk || ((a_in_place || !tiles) && !by_rows)) &&
                    !short_runs && !pieces;
    /* Split by rows on tiles, a thread's own pairs of a packed A are packed one pair ahead,
     * beside the tile products of the pair before (pack_ahead), instead of a group of pairs
     * (own_panel: into two slots, the pair's and the next one's) or all of them before the
     * barrier (packed whole: during the first pass over B's chunks): the copy's reads from
     * memory then wait beside the products rather than before them. Sapphire Rapids, 2
     * threads, alternating in one process, same bits: float32 operands 1024 x 784 x 256
     * 1.18-1.22x, 4096 x 784 x 256 1.30x, 1024 x 1024 x 256 1.21x, 1024 x 256 x 256 1.14x,
     * 512 x 784 x 256 1.10x, 2048 x 512 x 512 1.06x; bfloat16 operands packed (K % 32 != 0, or
     * rows off cache lines) 1024 x 784 x 256 1.28x, 1024 x 768 x 256 1.33x. Not an A
     * transposed (the weight gradient's x^T dz), which pack_a_blocks packs whole first:
     * packed ahead, a tile at a time 0.78-0.92x (2048 x 1024 x 512, 4096 x 512 x 256), a
     * k-block of the pair at a time (pack_at_blocks: each stored row's 64 or 128 bytes)
     * 0.77-0.86x (2048 x 1024 x 512, 1024 x 1024 x 256, 256 x 4096 x 256). */
    int a_ahead = tiles && by_rows && !a_in_place && !a.trans;
    int64_t own_most = fastnn_ceil_div(own_pairs, threads);
    /* A transposed, K in pieces packed beside the products (blocks_in_pieces): split by rows, or
     * by columns (each thread all of A's piece and its own columns of B's) with bfloat16
     * operands. With dot products too (the next piece is then packed after the products of
     * the one before, not beside them, but each piece's operands stay in L2): AMD Zen 5 (no
     * AMX), 2 threads, alternating in one process, same bits, against A packed whole:
     * bfloat16 operands 1024 x 4096 x 256 1.06-1.15x, 256 x 4096 x 1024 1.04-1.08x, 512 x
     * 2048 x 256 1.02-1.05x; float32 operands 1024 x 4096 x 256 1.09x; 4096 x 1024 x 256, 1024
     * x 4096 x 1024, 256 x 2048 x 2048 0.97-1.03x. */
    int64_t other_most = by_rows ? n_pairs : m_pairs;
    int k_pieces = a.trans && k_blocks >= 4 * PIECE_K_BLOCKS &&
                   (by_rows ? m >= PIECES_MIN_ROWS_BY_ROWS
                            : a.bf16 && m >= PIECES_MIN_ROWS_BY_COLUMNS) &&
                   own_most * other_most * 32 * 32 * (int64_t)sizeof(float) <=
                       PIECES_PARTIAL_BYTES;
    /* Split by columns with the shared A one chunk (own_panel), B not transposed: where K is
     * short (at most AMX_B_AHEAD_K_BLOCKS), A has at most AMX_B_AHEAD_A_PAIRS pairs and each
     * thread has at least 4 groups of AMX_B_AHEAD_PAIRS own pairs, B is packed that many
     * pairs at a time, the next group beside the blocks of the one before (pack_ahead), into
     * two slots, rather than 1 MB of pairs before their blocks. Sapphire Rapids, 2 threads,
     * alternating in one process, same bits: bfloat16 operands 256 x 256 x 4096 1.28-1.39x,
     * 128 x 256 x 4096 1.12-1.51x, 64 x 256 x 4096 1.25x, 32 x 256 x 4096 1.12x, 256 x 256 x
     * 2048 1.15x, 256 x 512 x 4096 1.08x; float32 operands 256 x 256 x 4096 1.16x, 64 x 256 x
     * 4096 1.17x, 256 x 512 x 4096 1.12x. Not kept where K is 1024 (128 x 1024 x 4096 0.93x,
     * 32 x 1024 x 1024 0.60-0.67x: the groups' runs of B's rows, 512 bytes, read slower and
     * the products are too short to hide them), nor for 512 or more rows (1024 x 256 x 4096
     * 0.96x), nor with fewer groups a thread (256 x 256 x 1024 0.92-1.00x). */
    int b_ahead = own_panel && !by_rows && !b.trans && k_blocks <= AMX_B_AHEAD_K_BLOCKS &&
                  m_pairs <= AMX_B_AHEAD_A_PAIRS &&
                  fastnn_ceil_div(n_pairs, threads) >= 4 * AMX_B_AHEAD_PAIRS &&
                  group >= 2 * AMX_B_AHEAD_PAIRS;
    /* An odd last block is packed as a pair's first half; its second half is never read. */
    size_t tile_bytes = FASTNN_AMX_TILE_BYTES;
    size_t panels_bytes = (size_t)(threads * group * panel_elems) * sizeof(bf16);
    size_t slots_bytes = (size_t)(threads * 2 * panel_elems) * sizeof(bf16);
    /* Split by columns with a packed A (float32 operands, or A transposed) of at most
     * AMX_PRIVATE_A_BYTES, each thread packs all of A for itself, as private_b below, rather
     * than half of a shared copy that both read: as each packs its own B, the threads then
     * share nothing and skip the barrier. Sapphire Rapids, 2 threads, alternating in one
     * process, same bits: float32 operands 64 x 784 x 256 1.09x, 32 x 1024 x 256 1.16-1.24x,
     * 256 x 256 x 1024 1.08-1.10x; bfloat16 operands, A transposed, 64 x 784 x 256 1.43x, 32 x
     * 1024 x 256 1.18-1.34x, 128 x 256 x 1024 1.04-1.23x, 256 x 256 x 1024 1.08-1.14x. With an A
     * of 256-512 KB it lost (32 x 4096 x 4096 0.92-0.95x, 128 x 1024 x 1024 0.93x). */
    size_t a_whole = (size_t)(m_blocks * k_blocks) * tile_bytes;
    int private_a = tiles && !by_rows && threads > 1 && !a_in_place && !pieces &&
                    a_whole <= AMX_PRIVATE_A_BYTES;
    bf16 *a_pack = fastnn_scratch(SCRATCH_BF16_A, a_in_place || k_pieces ? tile_bytes
                                                  : private_a ? threads * a_whole
                                                  : own_panel && a_ahead ? slots_bytes
                                                                         : a_whole);
    int64_t pieces_elems =
        tiles ? PIECES_THREAD_ELEMS(AMX_PIECE_GROUP_PAIRS, AMX_PIECE_K_BLOCKS, AMX_PIECE_MAX_PAIRS)
              : PIECES_THREAD_ELEMS(WIDE_GROUP_PAIRS, WIDE_K_BLOCKS, DOT_FEW_MAX_PAIRS);
    /* Split by rows, every thread reads all of the packed B. With bfloat16 operands and a B
     * of at most AMX_PRIVATE_B_BYTES, each thread packs all of it for itself (copying bits is
     * cheap), rather than half of a shared copy: no line of it then moves between the cores
     * (written by one, read by the other, invalidated in the reader's L2 at the next call),
     * and as each thread packs its own rows of A, the threads share nothing and skip the
     * barrier. Sapphire Rapids, 2 threads, alternating in one process, same bits: 1024 x 256
     * x 256 1.17-1.19x, 1024 x 256 x 128 1.16x, 4096 x 256 x 256 1.12x, 2048 x 256 x 512
     * 1.12x, 1024 x 1024 x 256 1.04-1.09x, 1024 x 800 x 256 1.13x, 2048 x 512 x 512 0.98-1.03x,
     * B transposed 1.0-1.28x. (Float32 operands, whose packing rounds, lost: 0.87-0.95x; a B of
     * 1-2 MB gained nothing.) */
    size_t b_whole = (size_t)(n_blocks * k_blocks) * tile_bytes;
    int private_b = tiles && by_rows && threads > 1 && b.bf16 && !pieces &&
                    !k_pieces && b_whole <= AMX_PRIVATE_B_BYTES;
    /* blocks_in_pieces: each thread's two slots, then its sums (floats) */
    int64_t piece_slots = 2 * piece_slot_elems(own_most, other_most);
    int64_t piece_thread = piece_slots + 2 * own_most * other_most * 32 * 32;
    size_t b_bytes = k_pieces ? (size_t)(threads * piece_thread) * sizeof(bf16)
                     : pieces ? (size_t)threads * pieces_elems * sizeof(bf16)
                     : own_panel && !by_rows ? panels_bytes
                     : private_b             ? threads * b_whole
                                             : b_whole;
    bf16 *b_pack = fastnn_scratch(SCRATCH_BF16_B, b_bytes);
    if (!a_pack || !b_pack) return FASTNN_OUT_OF_MEMORY;
    int64_t start = fastnn_now_ns(), done = 0;
    int team_cpu = threads > 1 ? fastnn_team_cpu() : -1;

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        fastnn_team_join(team_cpu);
        /* the kernels' floating-point mode on every thread (the epilogue's activation) */
        unsigned fp = fastnn_fp_enter();
        int t = fastnn_team_index(), team = fastnn_team_size();
        deferred_store store = {.c = c, .m = m, .n = n, .epilogue = epilogue};
        int64_t first = own_pairs * t / team, end = own_pairs * (t + 1) / team;
        /* its own pairs, and an equal share of the shared operand's blocks */
        int64_t b_first = private_b ? 0 : by_rows ? n_blocks * t / team : 2 * first;
        int64_t b_end = private_b ? n_blocks
                        : by_rows ? n_blocks * (t + 1) / team
                                  : fastnn_min(n_blocks, 2 * end);
        bf16 *b_packed = private_b ? b_pack + t * (b_whole / sizeof(bf16)) : b_pack;
        int64_t a_first = private_a ? 0 : by_rows ? 2 * first : m_blocks * t / team;
        int64_t a_end = private_a ? m_blocks
                        : by_rows ? fastnn_min(m_blocks, 2 * end) : m_blocks * (t + 1) / team;
        bf16 *a_mine = private_a ? a_pack + t * (a_whole / sizeof(bf16)) : a_pack;
        if (!a_in_place && !a_ahead && !k_pieces)
            pack_a_blocks(a_mine + a_first * k_blocks * TILE_ELEMS, a, m, k, a_first, a_end);
        if (!pieces && !k_pieces && !(own_panel && !by_rows))
            pack_b_blocks(b_packed + b_first * k_blocks * TILE_ELEMS, k_blocks, b, n, k, b_first,
                          b_end, 0, k_blocks);
        if (!private_b && !k_pieces && !private_a) { /* (the same on every thread) */
#pragma omp barrier
        }
        if (tiles) _tile_loadconfig(&TILE_CONFIG);
        if (k_pieces) {
            bf16 *mine = b_pack + t * piece_thread;
            if (by_rows)
                blocks_in_pieces(tiles, a, b, k_blocks, m, n, k, first, end, 0, n_pairs, mine,
                                 (float *)(mine + piece_slots), &store);
            else
                blocks_in_pieces(tiles, a, b, k_blocks, m, n, k, 0, m_pairs, first, end, mine,
                                 (float *)(mine + piece_slots), &store);
        } else if (pieces)
            columns_in_pieces(tiles, a, a_in_place, a_pack, k_blocks, m, n, k, b, first, end, c,
                              epilogue, b_pack + t * pieces_elems);
        else if (own_panel && a_ahead) {
            bf16 *slots = a_pack + t * 2 * panel_elems; /* own pair ip at (ip - first) % 2 */
            pack_ahead ahead = pack_ahead_of_pair(slots, a, m, k, first, 1);
            pack_ahead_step(&ahead, ahead.total);
            for (int64_t own = first; own < end; own++) {
                bf16 *mine = slots + (own - first) % 2 * panel_elems;
                store.ahead = NULL;
                if (own + 1 < end) {
                    ahead = pack_ahead_of_pair(slots + (own + 1 - first) % 2 * panel_elems, a,
                                               m, k, own + 1, shared_pairs);
                    store.ahead = &ahead;
                }
                for (int64_t jp = 0; jp < shared_pairs; jp++)
                    amx_pair(tiles, row_pair(a, 0, mine, own, m, k_blocks),
                             b_packed + jp * panel_elems, k, m, n, own, jp, &store);
                if (store.ahead) pack_ahead_step(&ahead, ahead.total); /* the rest, if any */
            }
            store.ahead = NULL;
        } else if (own_panel) { /* by columns (B a group of pairs at a time), or A in place */
            bf16 *panel = by_rows ? b_packed : b_pack + t * group * panel_elems;
            /* with b_ahead, groups of AMX_B_AHEAD_PAIRS in two slots of the panel, the next
             * one packed beside the blocks of the one before */
            int64_t pairs = b_ahead ? AMX_B_AHEAD_PAIRS : group;
            pack_ahead ahead = {0};
            for (int64_t g0 = first, slot = 0; g0 < end; g0 += pairs, slot ^= 1) {
                int64_t g1 = fastnn_min(end, g0 + pairs);
                bf16 *mine = b_ahead ? panel + slot * pairs * panel_elems : panel;
                if (!by_rows && (!b_ahead || g0 == first))
                    pack_b_blocks(mine, k_blocks, b, n, k, 2 * g0, fastnn_min(n_blocks, 2 * g1),
                                  0, k_blocks);
                store.ahead = NULL;
                if (b_ahead && g1 < end) {
                    int64_t g2 = fastnn_min(end, g1 + pairs);
                    ahead = pack_ahead_of(panel + (slot ^ 1) * pairs * panel_elems, b, 1, n, k,
                                          2 * g1, fastnn_min(n_blocks, 2 * g2),
                                          (g1 - g0) * shared_pairs);
                    store.ahead = &ahead;
                }
                /* C's blocks row of blocks after row of blocks, both ways: by columns, each
                 * pair of A (read from L2) against the group's own pairs of B, so that C is
                 * written in runs of the group's columns along its rows, rather than 64 or 128
                 * bytes of each of its rows (each a line the stores fetch, 2-16 KB from the
                 * next), a pair of B against each pair of A. Sapphire Rapids, 2 threads,
                 * alternating in one process, same bits: bfloat16 operands 1024 x 256 x 4096
                 * 1.17x (B transposed 1.23x), 2048 x 256 x 1024 1.15x, 768 x 256 x 2048 1.13x,
                 * 1024 x 128 x 4096 1.12x, 256 x 256 x 2048 1.11x, 256 x 512 x 4096 1.11x,
                 * 1024 x 256 x 1024 1.11x, 512 x 512 x 2048 1.08x; float32 operands 1024 x 256
                 * x 4096 1.56x, 512 x 256 x 2048 1.54x, 1024 x 256 x 1024 1.17x, 256 x 256 x
                 * 4096 1.09x; fewer rows (32-128) within 4% either way. */
                int64_t ip0 = by_rows ? g0 : 0, ip1 = by_rows ? g1 : shared_pairs;
                int64_t jp0 = by_rows ? 0 : g0, jp1 = by_rows ? shared_pairs : g1;
                for (int64_t ip = ip0; ip < ip1; ip++)
                    for (int64_t jp = jp0; jp < jp1; jp++)
                        amx_pair(tiles,
                                 row_pair(a, a_in_place, a_mine + ip * panel_elems, ip, m,
                                          k_blocks),
                                 mine + (by_rows ? jp : jp - g0) * panel_elems, k, m, n, ip,
                                 jp, &store);
                if (store.ahead) pack_ahead_step(&ahead, ahead.total); /* the rest, if any */
            }
            store.ahead = NULL;
        } else
            for (int64_t sc = 0; sc < shared_pairs; sc += chunk) {
                int64_t sc_end = fastnn_min(shared_pairs, sc + chunk);
                pack_ahead ahead = {0};
                if (a_ahead && sc == 0 && first < end) { /* the first pair before its blocks */
                    ahead = pack_ahead_of_pair(a_pack + first * panel_elems, a, m, k, first, 1);
                    pack_ahead_step(&ahead, ahead.total);
                }
                for (int64_t own = first; own < end; own++) {
                    store.ahead = NULL;
                    if (a_ahead && sc == 0 && own + 1 < end) { /* (own pairs: A's) */
                        ahead = pack_ahead_of_pair(a_pack + (own + 1) * panel_elems, a, m, k,
                                                   own + 1, sc_end - sc);
                        store.ahead = &ahead;
                    }
                    for (int64_t other = sc; other < sc_end; other++) {
                        int64_t ip = by_rows ? own : other, jp = by_rows ? other : own;
                        amx_pair(tiles,
                                 row_pair(a, a_in_place, a_mine + ip * panel_elems, ip, m,
                                          k_blocks),
                                 b_packed + jp * panel_elems, k, m, n, ip, jp, &store);
                    }
                    if (store.ahead) pack_ahead_step(&ahead, ahead.total); /* the rest, if any */
                }
                store.ahead = NULL;
            }
        flush_store(&store);
        _mm_sfence(); /* C's streaming stores (store_block) visible to the other threads */
        if (tiles) _tile_release();
        fastnn_fp_leave(fp);
        if (t == 0) done = fastnn_now_ns();
    }
    if (threads > 1) fastnn_team_report(start, done, fastnn_now_ns());
    return FASTNN_OK;
}

/* A small C (at most K_SPLIT_MAX_BLOCKS blocks of 32 x 32, 8 to K_SPLIT_MAX_M rows and 8 to
 * K_SPLIT_MAX_N columns) over a long K (at least K_SPLIT_MIN_K_BLOCKS k-blocks), on tiles: K
 * in two halves (a whole number of k-blocks in the first), each multiplied by packed_gemm on
 * one thread into its float32 sums (partial, m x n each), the two threads side by side,
 * then C = epilogue(half 0's sums + half 1's) by rows of blocks, shared between the threads.
 * Each half reads its own stored rows or runs of both operands and nothing is shared until
 * the sums; on one thread (a busy machine) the halves run in turn: the same bits, and the
 * same for every layout (each half's sums are those of one pass over its K, whatever the
 * layout). Split by rows or columns instead, a few blocks of C leave each thread a few, a
 * transposed A (x^T dz) was packed half a stored row at a time by each thread, and the other
 * operand by both.
 * Sapphire Rapids, 2 threads, alternating in one process, bfloat16 operands: A transposed
 * 32 x 4096 x 256 1.31-1.36x, 8 x 4096 x 256 1.58x, 64 x 4096 x 256 1.36x, 128 x 4096 x 128
 * 1.58x, 32 x 4096 x 512 1.29x, 100 x 5000 x 100 1.70x; not transposed 32 x 4096 x 256
 * 1.13-1.29x, 32 x 4096 x 512 1.26x, 64 x 4096 x 256 1.19x, 128 x 4096 x 128 1.03-1.09x,
 * 32 x 8192 x 512 1.23x; B transposed 0.87-0.96x but 100 x 5000 x 100 1.55x; float32
 * operands 32 x 4096 x 256 1.24x, 128 x 4096 x 128 1.43x. With 32-64 blocks: A transposed
 * 128 x 4096 x 256 1.31x, 64 x 4096 x 512 1.29x, 256 x 4096 x 256 1.14-1.25x; not
 * transposed 1.08x, 1.17-1.23x, 0.92-0.99x; B transposed 1.05x, 0.87-0.99x, 0.89-0.91x.
 * Where K is 2048 the halves lost (0.78-0.93x not transposed or B transposed), with one row
 * (0.78-0.92x), and with more rows or columns, few of the other: 32 x 4096 x 1024 0.93x, 0.98x,
 * 0.85x (not transposed, A, B transposed), 1024 x 4096 x 32 0.94x, 1.00x, 0.92x, 512 x 4096 x
 * 64 0.85x, 1.23x, 0.93x. */
#define K_SPLIT_MIN_K_BLOCKS 128
#define K_SPLIT_MAX_BLOCKS 64
#define K_SPLIT_MAX_M 256
#define K_SPLIT_MAX_N 512
static int k_split_gemm(int64_t m, int64_t n, int64_t k, operand a, operand b, output c,
                        const fastnn_epilogue *epilogue) {
    int64_t half = fastnn_ceil_div(k, TILE_K) / 2 * TILE_K; /* k of the first half */
    float *partial = fastnn_scratch(SCRATCH_BF16_HALVES, (size_t)(2 * m * n) * sizeof(float));
    if (!partial) return FASTNN_OUT_OF_MEMORY;
    int threads = fastnn_threads_for(2.0 * m * n * k, AMX_FLOPS_PER_THREAD) > 1 ? 2 : 1;
    if (threads > 1 && fastnn_contended()) threads = 1;
    int status[2] = {FASTNN_OK, FASTNN_OK};
    int64_t m_pairs = fastnn_ceil_div(m, 32), n_pairs = fastnn_ceil_div(n, 32);
    int64_t start = fastnn_now_ns(), done = 0;
    int team_cpu = threads > 1 ? fastnn_team_cpu() : -1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        fastnn_team_join(team_cpu);
        int t = fastnn_team_index(), team = fastnn_team_size();
        for (int h = t; h < 2; h += team)
            status[h] = packed_gemm(1, 1, m, n, h ? k - half : half, from_k(a, 0, h * half),
                                    from_k(b, 1, h * half),
                                    (output){partial + h * m * n, n, 0}, NULL);
        if (team > 1) {
#pragma omp barrier
        }
        if (status[0] == FASTNN_OK && status[1] == FASTNN_OK) {
            unsigned fp = fastnn_fp_enter();
            float sums[32 * 32] __attribute__((aligned(64)));
            for (int64_t ip = m_pairs * t / team; ip < m_pairs * (t + 1) / team; ip++)
                for (int64_t jp = 0; jp < n_pairs; jp++) {
                    int64_t rows = fastnn_min(32, m - ip * 32), cols = fastnn_min(32, n - jp * 32);
                    for (int64_t r = 0; r < rows; r++)
                        for (int h = 0; h < 2; h++) {
                            const float *p0 = partial + (ip * 32 + r) * n + jp * 32 + 16 * h;
                            __mmask16 mask = fastnn_mask16(cols - 16 * h);
                            _mm512_store_ps(sums + r * 32 + 16 * h,
                                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p0),
                                                          _mm512_maskz_loadu_ps(mask, p0 + m * n)));
                        }
                    store_block(c, sums, m, n, ip, jp, epilogue);
                }
            _mm_sfence(); /* (as packed_gemm's threads) */
            fastnn_fp_leave(fp);
        }
        if (t == 0) done = fastnn_now_ns();
    }
    if (threads > 1) fastnn_team_report(start, done, fastnn_now_ns());
    return status[0] != FASTNN_OK ? status[0] : status[1];
}

/* The GEMM on tiles or (tiles 0) dot products. Both operands transposed (A stored K x M, B
 * stored N x K) and bfloat16, C = A^T B^T = (B A)^T: the product of the stored operands,
 * neither transposed (A's copy then interleaves pairs of its stored rows instead of
 * transposing them, and B is read in place on tiles), into C^T, whose blocks store_block
 * writes transposed; where K (M + N) >= M N, the copies it saves then weighing more than
 * the transposes of C's blocks. The same products in the same order as B A, whatever the
 * path: the bits of `nn` for (B A)^T. Sapphire Rapids, 2 threads, alternating in one process,
 * against both transposed as before: on tiles 32 x 4096 x 256 2.29-2.39x, 256 x 4096 x 2048
 * 1.53x, 512 x 4096 x 256 1.20-1.37x, 512 x 2048 x 512 1.28-1.34x, 1024^3 1.12-1.23x, 1024 x
 * 4096 x 1024 1.17x, 1024 x 1024 x 4096 1.15x, 128 x 1024 x 128 1.16-1.19x, 4096 x 1024 x
 * 1024 0.98x; where K (M + N) < M N it lost (4096 x 256 x 1024 0.79x: C written a column of
 * blocks at a time); with dot products 0.95-1.03x (bound by the products); float32
 * operands (packed with rounding either way) 0.86-1.07x, not taken. */
static int bf16_gemm(int tiles, int64_t m, int64_t n, int64_t k, operand a, operand b,
                     output c, const fastnn_epilogue *epilogue) {
    if (a.trans && b.trans && a.bf16 && k * (m + n) >= m * n) {
        operand stored_b = {b.data, b.ld, 0, b.bf16}, stored_a = {a.data, a.ld, 0, a.bf16};
        int64_t rows = m;
        a = stored_b, b = stored_a, m = n, n = rows, c.trans = 1;
    }
    if (tiles && fastnn_ceil_div(k, TILE_K) >= K_SPLIT_MIN_K_BLOCKS && fastnn_min(m, n) >= 8 &&
        m <= K_SPLIT_MAX_M && n <= K_SPLIT_MAX_N &&
        fastnn_ceil_div(m, 32) * fastnn_ceil_div(n, 32) <= K_SPLIT_MAX_BLOCKS)
        return k_split_gemm(m, n, k, a, b, c, epilogue);
    return packed_gemm(tiles, 0, m, n, k, a, b, c, epilogue);
}

int fastnn_amx_gemm(int64_t m, int64_t n, int64_t k, const void *a, int64_t lda, int trans_a,
                    const void *b, int64_t ldb, int trans_b, void *c, int64_t ldc,
                    const fastnn_epilogue *epilogue, int bf16_operands, int bf16_c) {
    return bf16_gemm(1, m, n, k, (operand){a, lda, trans_a, bf16_operands},
                     (operand){b, ldb, trans_b, bf16_operands}, (output){c, ldc, bf16_c, 0},
                     epilogue);
}

int fastnn_dot_bf16_gemm(int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                         int trans_a, const void *b, int64_t ldb, int trans_b, void *c,
                         int64_t ldc, const fastnn_epilogue *epilogue, int bf16_operands,
                         int bf16_c) {
    return bf16_gemm(0, m, n, k, (operand){a, lda, trans_a, bf16_operands},
                     (operand){b, ldb, trans_b, bf16_operands}, (output){c, ldc, bf16_c, 0, 1},
                     epilogue);
}
#else
typedef int fastnn_amx_absent; /* no AMX compiler support: cpu.c reports it */
#endif
