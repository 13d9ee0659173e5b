/* internal.h - what the kernel files share with each other but not with Python. */
#ifndef FASTNN_INTERNAL_H
#define FASTNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fastnn.h"

/* Activation codes: the order of contract.ACTIVATIONS. */
enum { ACT_IDENTITY = 0, ACT_RELU = 1, ACT_LEAKY_RELU = 2, ACT_SIGMOID = 3, ACT_TANH = 4 };

/* What the GEMM does to each output tile after its last K block, while the tile is in
 * registers: add bias (a vector of the output's columns, of the GEMM's float type) and
 * apply the activation. */
typedef struct {
    const void *bias;
    int activation;
    double alpha; /* leaky_relu slope */
} fastnn_epilogue;

/* C (m, n; row stride ldc) = op(A) (m, k) @ op(B) (k, n), then the epilogue (or none: NULL).
 * op(A)[i][p] is a[i*lda + p], or a[p*lda + i] when trans_a; op(B)[p][j] is b[p*ldb + j],
 * or b[j*ldb + p] when trans_b. Runs on fastnn_threads_for(2mnk) threads. Returns 0, or
 * FASTNN_OUT_OF_MEMORY (C is then left partly written). */
#define FASTNN_DECLARE_GEMM(S, T)                                                               \
    int fastnn_gemm_##S(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int trans_a, \
                         const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,              \
                         const fastnn_epilogue *epilogue);
FASTNN_DECLARE_GEMM(f32, float)
FASTNN_DECLARE_GEMM(f64, double)

/* bfloat16 precision (bf16.c): fastnn_gemm_f32's product with both operands rounded to
 * bfloat16 (fastnn_round_bf16), accumulated and finished (epilogue) in float32: on AMX tiles
 * when the AMX instruction set is chosen, else by the float32 kernels on rounded copies. */
FASTNN_DECLARE_GEMM(bf16, float)

/* ||x||^2 of `size` values, in double (misc_impl.h): the L2 term of scikit-learn's loss. */
double fastnn_sum_squares_f32(const float *x, int64_t size);
double fastnn_sum_squares_f64(const double *x, int64_t size);

/* Threads for a job of `work` units when one thread should get at least `grain` of them:
 * between 1 and fastnn_get_num_threads(), so small jobs never start a thread team. */
int fastnn_threads_for(double work, double grain);

/* A busy machine. When the calling thread of a parallel region has finished its share and then
 * waits at the region's end for more than FASTNN_CONTENDED_WAIT_NS and longer than half of its
 * own work, another thread's core was taken (a busy neighbour process, a spinning thread pool of
 * another library, the OS): for a spell (fastnn_contended_spell, fastnn.h), fastnn_contended()
 * is 1, and the kernels whose results do not depend on the thread count (FASTNN_FOR's loops, the
 * GEMM but for its K split) run on the calling thread alone; the first region after that probes
 * again. The first spell is FASTNN_CONTENDED_PAUSE_MIN_NS; a region held up again within 4
 * spells' lengths of the last one's end makes the next 8 times as long, up to
 * FASTNN_CONTENDED_PAUSE_MAX_NS. So a lasting load (a busy process on the other core: one held
 * up region every few ms) reaches the longest spell after three, and a one-off wait costs
 * little: this VM takes a worker's core for 3-8 ms now and then on a quiet machine too (about
 * once per MNIST-shaped epoch), and a fixed 100 ms spell on one thread made such an epoch
 * ~50-100 ms slower (c, batch 128, 160-168 ms without one, 241-272 ms with one).
 * A held-up region that started more than FASTNN_CONTENDED_IDLE_NS after the last one ended
 * starts its spell with no time on one thread (fastnn_spell_end): its workers had stopped
 * spinning (fastnn's short wait, or libgomp's default) and slept, and their wake-up took this
 * VM 0.2-2.6 ms, where a taken core is only one cause (benchmarks/bf16_vs_torch.py, its 0.2 s
 * pauses before each block: 5-7 spells a run, each leaving the first calls of the block on one
 * thread, 1024 x 1024 x 256 in bfloat16 0.43-0.47 ms instead of 0.23 in 2 of 6 runs). A
 * lasting load holds up the next region too, whose spell is then the 8 times longer one: as
 * many held-up regions as before, and one short spell fewer.
 * Sums split between threads (a K split, db, FASTNN_FOR_SUM) keep their split, so the same seed
 * still trains bit for bit the same. A quiet machine never waits that long, so nothing changes
 * there. Each parallel region reports with fastnn_team_report(its start, when the calling thread
 * finished its share, its end). */
#define FASTNN_CONTENDED_WAIT_NS 200000
#define FASTNN_CONTENDED_PAUSE_MIN_NS 2000000
#define FASTNN_CONTENDED_PAUSE_MAX_NS 100000000
#define FASTNN_CONTENDED_IDLE_NS 5000000
int64_t fastnn_now_ns(void);
int fastnn_contended(void);
void fastnn_team_report(int64_t start, int64_t master_done, int64_t end);

/* This thread's number in the innermost OpenMP team, and the team's size (0 and 1 outside
 * a parallel region). */
int fastnn_team_index(void);
int fastnn_team_size(void);

/* A parallel region's workers kept off the calling thread's CPU (affinity.c): the calling
 * thread's CPU before the region (-1: nothing to do), and, first thing in the region on every
 * thread, a worker on that CPU moving off it. */
int fastnn_team_cpu(void);
void fastnn_team_join(int team_cpu);

/* Scratch memory of this OS thread, 64-byte aligned, at least `bytes` long, kept and reused
 * across calls (so a training step allocates nothing). Each slot is an independent buffer;
 * a pointer stays valid until the same thread asks the same slot for more bytes. NULL when
 * the memory cannot be had: the kernel then returns FASTNN_OUT_OF_MEMORY. */
enum {
    SCRATCH_GEMM_B = 0,
    SCRATCH_GEMM_A = 1,
    SCRATCH_GEMM_B_PANEL = 2,
    SCRATCH_LINEAR_DZ = 3,
    SCRATCH_GEMM_PARTIAL = 4,
    SCRATCH_LINEAR_DB = 5,
    SCRATCH_BF16_A = 6, /* bfloat16 precision: packed or rounded operands */
    SCRATCH_BF16_B = 7,
    SCRATCH_BATCHNORM = 8,
    SCRATCH_GEMM_T = 9, /* the GEMM's C^T of a C of few columns (gemm_impl.h) */
    SCRATCH_WEIGHT_UPDATE = 10, /* the weight gradient's tiles of linear_backward_update */
    SCRATCH_BF16_C = 11, /* a bfloat16 C's float32 sums, on the float32 kernels (bf16.c) */
    SCRATCH_BF16_HALVES = 12, /* the sums of the two halves of K (amx_gemm.c's k_split_gemm) */
    SCRATCH_SLOTS = 13
};
void *fastnn_scratch(int slot, size_t bytes);

/* An optimizer's step of one weight matrix, fused into its gradient (linear_impl.h's
 * linear_backward_update): fastnn_sgd_step's or fastnn_adam_step's parameters, and the
 * optimizer's state of this matrix (arrays parallel to it; NULL for plain SGD). */
typedef struct {
    int adam;     /* 0: SGD (torch.optim.SGD), 1: Adam (torch.optim.Adam) */
    int nesterov; /* SGD with momentum: Nesterov's form */
    double lr, weight_decay, momentum, beta1, beta2, eps;
    int64_t step;          /* Adam's step count, this step included */
    void *state1, *state2; /* SGD's velocity (NULL: none), or Adam's m and v */
} fastnn_weight_update;

#define FASTNN_PRAGMA(text) _Pragma(#text)

/* The floating-point mode of a thread running a kernel: flush-to-zero and denormals-are-zero
 * (MXCSR's FTZ and DAZ bits on x86-64, FPCR's FZ on arm64) while fastnn_set_flush_denormal(1),
 * the default; nothing changes with fastnn_set_flush_denormal(0), so the kernels then keep the
 * IEEE subnormals of the caller's mode. Every kernel, on every thread that runs it, brackets
 * its work with fastnn_fp_enter() and fastnn_fp_leave(saved), which puts back the thread's own
 * mode: the Python thread that called, and the OpenMP threads that other libraries share. */
extern int fastnn_flush_denormal_flag;
/* Set while a kernel on this thread has entered the mode: a kernel that another kernel calls
 * (train_steps' products, linear_forward's GEMM) finds it set and touches no control register,
 * since reading MXCSR twice per kernel call was ~6% of an XOR training step (perf, Zen 5).
 * The default (dynamic) TLS model: initial-exec, one %fs-relative load, made the library
 * unloadable (dlopen: "cannot allocate memory in static TLS block") once the module had more
 * thread-local data than glibc's static surplus (the emulated-AMX test build's 8 KB of tiles),
 * since every thread-local of an initial-exec module must then be static. */
extern __thread int fastnn_fp_nested;
#define FASTNN_FP_NESTED 0xFFFFFFFFu /* enter's answer inside an entered kernel */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FASTNN_FTZ_DAZ 0x8040u /* MXCSR: FTZ (bit 15) | DAZ (bit 6) */
static inline unsigned fastnn_fp_enter(void) {
    if (fastnn_fp_nested) return FASTNN_FP_NESTED;
    fastnn_fp_nested = 1;
    unsigned saved = _mm_getcsr();
    if (__atomic_load_n(&fastnn_flush_denormal_flag, __ATOMIC_RELAXED) &&
        (saved & FASTNN_FTZ_DAZ) != FASTNN_FTZ_DAZ)
        _mm_setcsr(saved | FASTNN_FTZ_DAZ);
    return saved;
}
static inline void fastnn_fp_leave(unsigned saved) {
    if (saved == FASTNN_FP_NESTED) return;
    fastnn_fp_nested = 0;
    if (_mm_getcsr() != saved) _mm_setcsr(saved);
}
#elif defined(__aarch64__)
#define FASTNN_FPCR_FZ ((uint64_t)1 << 24)
static inline unsigned fastnn_fp_enter(void) {
    if (fastnn_fp_nested) return FASTNN_FP_NESTED;
    fastnn_fp_nested = 1;
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    if (__atomic_load_n(&fastnn_flush_denormal_flag, __ATOMIC_RELAXED) && !(fpcr & FASTNN_FPCR_FZ))
        __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr | FASTNN_FPCR_FZ));
    return (unsigned)(fpcr & FASTNN_FPCR_FZ ? 1 : 0);
}
static inline void fastnn_fp_leave(unsigned saved) {
    if (saved == FASTNN_FP_NESTED) return;
    fastnn_fp_nested = 0;
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    uint64_t want = saved ? fpcr | FASTNN_FPCR_FZ : fpcr & ~FASTNN_FPCR_FZ;
    if (want != fpcr) __asm__ __volatile__("msr fpcr, %0" : : "r"(want));
}
#else
static inline unsigned fastnn_fp_enter(void) { return 0; }
static inline void fastnn_fp_leave(unsigned saved) { (void)saved; }
#endif

/* The loop of FASTNN_FOR and FASTNN_FOR_SUM: for (int64_t i = 0; i < count; i++) { body } on
 * `threads` threads (a parallel region with `clauses`, a static schedule) when `team`, else
 * inline; each thread in the kernels' floating-point mode (fastnn_fp_enter). */
#define FASTNN_FOR_TEAM_(team, threads, clauses, i, count, ...)                                \
    do {                                                                                        \
        int64_t fastnn_count_ = (count);                                                       \
        if (team) {                                                                             \
            int64_t fastnn_start_ = fastnn_now_ns(), fastnn_done_ = 0;                          \
            int fastnn_cpu_ = fastnn_team_cpu();                                               \
            FASTNN_PRAGMA(omp parallel num_threads(threads) clauses)                            \
            {                                                                                   \
                fastnn_team_join(fastnn_cpu_);                                                 \
                unsigned fastnn_fp_ = fastnn_fp_enter();                                       \
                FASTNN_PRAGMA(omp for schedule(static) nowait)                                  \
                for (int64_t i = 0; i < fastnn_count_; i++) { __VA_ARGS__ }                     \
                fastnn_fp_leave(fastnn_fp_);                                                    \
                if (fastnn_team_index() == 0) fastnn_done_ = fastnn_now_ns();                   \
            }                                                                                   \
            fastnn_team_report(fastnn_start_, fastnn_done_, fastnn_now_ns());                   \
        } else {                                                                                \
            unsigned fastnn_fp_ = fastnn_fp_enter();                                           \
            for (int64_t i = 0; i < fastnn_count_; i++) { __VA_ARGS__ }                         \
            fastnn_fp_leave(fastnn_fp_);                                                        \
        }                                                                                       \
    } while (0)

/* for (int64_t i = 0; i < count; i++) { body } on `threads` threads (static schedule), each
 * thread in the kernels' floating-point mode (fastnn_fp_enter); on this thread alone on a busy
 * machine (fastnn_contended). One thread runs the loop inline: even an if(0) parallel region
 * costs a team set-up, which would dominate the kernels of a tiny network. */
#define FASTNN_FOR(threads, i, count, ...)                                                     \
    FASTNN_FOR_TEAM_((threads) > 1 && !fastnn_contended(), threads, , i, count, __VA_ARGS__)

/* Items [next, end) left of one thread's share of a parallel loop, in one word (next in the low
 * 32 bits: shares of fewer than 2^32 items), so that its owner, taking them from the front,
 * and a thread done with its own share, taking them from the back, never take the same item;
 * a cache line each, so that the owner's claims stay in its core's cache. */
typedef struct {
    uint64_t word;
} __attribute__((aligned(64))) fastnn_share;

/* Shares of `count` items (< 2^32) for `parts` threads, as equal as FASTNN_FOR's static ones. */
static inline void fastnn_shares_set(fastnn_share *shares, int parts, int64_t count) {
    for (int p = 0; p < parts; p++)
        shares[p].word = (uint64_t)(count * p / parts) | (uint64_t)(count * (p + 1) / parts) << 32;
}

/* An item of `share`: its first (front) or its last (!front), or -1 when none is left. */
static inline int64_t fastnn_share_claim(fastnn_share *share, int front) {
    uint64_t seen = __atomic_load_n(&share->word, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t next = seen & 0xFFFFFFFFu, end = seen >> 32;
        if (next >= end) return -1;
        uint64_t want = front ? seen + 1 : seen - ((uint64_t)1 << 32);
        if (__atomic_compare_exchange_n(&share->word, &seen, want, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return (int64_t)(front ? next : end - 1);
    }
}

/* The next item for the thread of share `part` of `parts`: the first left of its own share,
 * then the last left of each other share in turn, or -1 when none is left anywhere. *q, 0 at
 * the thread's start, is the share it is at (0: its own). */
static inline int64_t fastnn_shares_next(fastnn_share *shares, int parts, int part, int *q) {
    for (; *q < parts; ++*q) {
        int64_t item = fastnn_share_claim(shares + (part + *q) % parts, *q == 0);
        if (item >= 0) return item;
    }
    return -1;
}

/* FASTNN_FOR for items that may run on any thread: each thread runs its static
 * share from the front, then what is left of the others' from their backs, so that a thread
 * slowed by the machine's other load (a shared VM) does fewer items instead of holding up
 * the rest at the region's end. The body must not depend on which thread runs an item. One
 * thread runs the plain loop (no claims: a compare-and-swap per row cost more than the
 * 8-byte rows of a tiny network's batch), and 2^32 items or more FASTNN_FOR's static shares
 * (a share's word holds 32-bit bounds). */
#define FASTNN_FOR_SHARED(threads, i, count, ...)                                              \
    do {                                                                                        \
        int fastnn_parts_ = (threads);                                                          \
        int64_t fastnn_items_ = (count);                                                       \
        if (fastnn_parts_ <= 1 || fastnn_items_ > (int64_t)0xFFFFFFFF) { /* static shares */   \
            FASTNN_FOR(fastnn_parts_, i, fastnn_items_, __VA_ARGS__);                           \
            break;                                                                              \
        }                                                                                       \
        fastnn_share fastnn_shares_[fastnn_parts_];                                             \
        fastnn_shares_set(fastnn_shares_, fastnn_parts_, fastnn_items_);                        \
        FASTNN_FOR(fastnn_parts_, fastnn_part_, fastnn_parts_,                                  \
            int fastnn_q_ = 0;                                                                  \
            for (int64_t i; (i = fastnn_shares_next(fastnn_shares_, fastnn_parts_,             \
                                                    (int)fastnn_part_, &fastnn_q_)) >= 0;) {   \
                __VA_ARGS__                                                                     \
            });                                                                                 \
    } while (0)

/* FASTNN_FOR whose body adds into `sum` (a + reduction across the threads), on `threads`
 * threads even on a busy machine: the split of the sum, and so its bits, stay those of the
 * thread count (FASTNN_CONTENDED_WAIT_NS above). */
#define FASTNN_FOR_SUM(threads, i, count, sum, ...)                                            \
    FASTNN_FOR_TEAM_((threads) > 1, threads, reduction(+ : sum), i, count, __VA_ARGS__)

/* Ask for every line of [start, start + bytes): into L1 (prefetcht0; l2 0: take.c's rows ahead
 * of a gather, the GEMM's packing of a transposed A and of B's rows) or into L2 (prefetcht1; l2
 * 1: data needed after the work under way, the GEMM's next B block). */
static inline void fastnn_prefetch_lines_to(const void *start, int64_t bytes, int l2) {
    const char *line = (const char *)((uintptr_t)start & ~(uintptr_t)63);
    for (; line < (const char *)start + bytes; line += 64)
        if (l2)
            __builtin_prefetch(line, 0, 2);
        else
            __builtin_prefetch(line, 0, 3);
}
static inline void fastnn_prefetch_lines(const void *start, int64_t bytes) {
    fastnn_prefetch_lines_to(start, bytes, 0);
}

/* Prefetch rows index[0..n) of source (row_bytes bytes each) for a coming fastnn_take_rows
 * (take.c). */
void fastnn_prefetch_rows(const void *source, const int64_t *index, int64_t n,
                          int64_t row_bytes);

static inline int64_t fastnn_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t fastnn_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t fastnn_max(int64_t a, int64_t b) { return a > b ? a : b; }

#endif
