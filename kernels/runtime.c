/* runtime.c - thread count (and fork), floating-point mode switch, per-thread scratch buffers. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* One count for every Python thread: omp_set_num_threads would only affect the calling
 * thread, so each parallel region passes num_threads(fastnn_threads_for(...)) instead.
 * 0 means "not read from the environment yet". */
static int g_num_threads = 0;

/* 1 in a child made by fork() (multiprocessing's "fork" start method). GNU OpenMP's thread pool
 * does not survive a fork: the child's copy believes the parent's threads exist, and its first
 * parallel region waits for them forever. So a forked child runs every kernel on its calling
 * thread, without an OpenMP team: it works, on one thread (the "spawn" and "forkserver" start
 * methods give a child its own pool). */
static int g_forked_child = 0;

static void mark_forked_child(void) {
    g_forked_child = 1;
    g_num_threads = 1;
}

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, mark_forked_child);
}

int fastnn_forked_child(void) { return g_forked_child; }

void fastnn_set_num_threads(int n) {
    if (n < 1 || g_forked_child) n = 1;
    __atomic_store_n(&g_num_threads, n, __ATOMIC_RELAXED);
}

int fastnn_flush_denormal_flag = 1;
__thread int fastnn_fp_nested;

void fastnn_set_flush_denormal(int on) {
    __atomic_store_n(&fastnn_flush_denormal_flag, on ? 1 : 0, __ATOMIC_RELAXED);
}

int fastnn_get_flush_denormal(void) {
    return __atomic_load_n(&fastnn_flush_denormal_flag, __ATOMIC_RELAXED);
}

int fastnn_get_num_threads(void) {
    int n = __atomic_load_n(&g_num_threads, __ATOMIC_RELAXED);
    if (n == 0) {
#ifdef _OPENMP
        n = omp_get_max_threads(); /* OMP_NUM_THREADS, else the CPUs we may run on */
#else
        n = 1;
#endif
        __atomic_store_n(&g_num_threads, n, __ATOMIC_RELAXED);
    }
    return n;
}

int64_t fastnn_now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Until when (fastnn_now_ns) the kernels run on one thread, because the last parallel region
 * found the other threads' cores taken (see fastnn_team_report). */
static int64_t g_contended_until = 0;
/* The length of that spell (0: none yet). */
static int64_t g_contended_spell = 0;

int64_t fastnn_contended_spell(int64_t last_spell_ns, int64_t since_its_end_ns) {
    if (last_spell_ns > 0 && since_its_end_ns < 4 * last_spell_ns)
        return fastnn_min(8 * last_spell_ns, FASTNN_CONTENDED_PAUSE_MAX_NS);
    return FASTNN_CONTENDED_PAUSE_MIN_NS;
}

/* When the last parallel region ended (0: none yet). */
static int64_t g_last_region_end = 0;

int fastnn_held_up(int64_t waited_ns, int64_t worked_ns) {
    return waited_ns > FASTNN_CONTENDED_WAIT_NS && 2 * waited_ns > worked_ns;
}

int64_t fastnn_spell_end(int64_t end_ns, int64_t spell_ns, int64_t idle_ns) {
    return idle_ns > FASTNN_CONTENDED_IDLE_NS ? end_ns : end_ns + spell_ns;
}

void fastnn_team_report(int64_t start, int64_t master_done, int64_t end) {
    /* idle since the last region or the end of the last spell (whose regions, on one thread,
     * do not report): a probe after a spell is not an idle gap */
    int64_t last_end = __atomic_exchange_n(&g_last_region_end, end, __ATOMIC_RELAXED);
    int64_t idle =
        start - fastnn_max(last_end, __atomic_load_n(&g_contended_until, __ATOMIC_RELAXED));
    if (!fastnn_held_up(end - master_done, master_done - start)) return;
    int64_t spell = fastnn_contended_spell(
        __atomic_load_n(&g_contended_spell, __ATOMIC_RELAXED),
        end - __atomic_load_n(&g_contended_until, __ATOMIC_RELAXED));
    __atomic_store_n(&g_contended_spell, spell, __ATOMIC_RELAXED);
    __atomic_store_n(&g_contended_until, fastnn_spell_end(end, spell, idle), __ATOMIC_RELAXED);
}

/* FASTNN_ASSUME_CONTENDED=1: always contended (the tests check that the one-thread fallback
 * gives the same numbers). */
static int g_assume_contended = 0;
static pthread_once_t assume_contended_once = PTHREAD_ONCE_INIT;

static void read_assume_contended(void) {
    const char *text = getenv("FASTNN_ASSUME_CONTENDED");
    g_assume_contended = text && *text == '1';
}

int fastnn_contended(void) {
    pthread_once(&assume_contended_once, read_assume_contended);
    return g_assume_contended ||
           fastnn_now_ns() < __atomic_load_n(&g_contended_until, __ATOMIC_RELAXED);
}

int fastnn_threads_for(double work, double grain) {
    /* Less than two grains (most calls of a small network's step): one thread, without the
     * division (~13 cycles of latency) nor the thread count (a call through the PLT); the
     * division was 5% of an XOR training step (perf, Zen 4). */
    if (work < 2.0 * grain) return 1;
    int most = fastnn_get_num_threads();
    double wanted = work / grain;
    return wanted < (double)most ? (int)wanted : most;
}

int fastnn_team_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int fastnn_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

typedef struct {
    void *data;
    size_t bytes;
} scratch_slot;

/* The slots of each OS thread live behind a pthread key, whose destructor frees them when the
 * thread exits: a program that starts a Python thread per task would otherwise keep every
 * finished thread's buffers (a few MB each) until the process ends. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;

static void free_scratch_slots(void *slots) {
    scratch_slot *slot = slots;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(slot[i].data);
    free(slots);
}

static void create_scratch_key(void) { pthread_key_create(&scratch_key, free_scratch_slots); }

static scratch_slot *this_thread_slots(void) {
    pthread_once(&scratch_key_once, create_scratch_key);
    scratch_slot *slots = pthread_getspecific(scratch_key);
    if (!slots) {
        slots = calloc(SCRATCH_SLOTS, sizeof *slots);
        if (slots && pthread_setspecific(scratch_key, slots) != 0) {
            free(slots);
            slots = NULL;
        }
    }
    return slots;
}

/* FASTNN_SCRATCH_LIMIT (bytes), read once: larger requests fail as if memory had run out,
 * so the tests can check that the kernels report it instead of crashing. */
static size_t g_scratch_limit = SIZE_MAX;
static pthread_once_t scratch_limit_once = PTHREAD_ONCE_INIT;

static void read_scratch_limit(void) {
    const char *text = getenv("FASTNN_SCRATCH_LIMIT");
    if (text && *text) g_scratch_limit = (size_t)strtoull(text, NULL, 10);
}

void *fastnn_scratch(int slot, size_t bytes) {
    pthread_once(&scratch_limit_once, read_scratch_limit);
    scratch_slot *slots = this_thread_slots();
    if (!slots || bytes > g_scratch_limit) return NULL;
    if (slots[slot].bytes < bytes) {
        free(slots[slot].data);
        /* Round up to whole cache lines (aligned_alloc wants a multiple of the alignment) and
         * grow by half again, so a slowly growing request does not reallocate every call. */
        size_t size = (bytes + bytes / 2 + 63) & ~(size_t)63;
        slots[slot].data = size >= bytes ? aligned_alloc(64, size) : NULL; /* NULL: overflow */
        slots[slot].bytes = slots[slot].data ? size : 0;
    }
    return slots[slot].data;
}
