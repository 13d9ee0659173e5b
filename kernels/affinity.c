/* affinity.c - a parallel region's workers kept off the calling thread's CPU.
 *
 * On a VM (Sapphire Rapids, 2 vCPUs) a worker that had slept (after the spin of
 * GOMP_SPINCOUNT, fastnn/backends/runtime.py) was now and then woken onto the CPU of the
 * calling thread, and the two then shared that CPU call after call: bfloat16 32 x 1024 x 1024 on
 * 2 threads, blocks of 50 back-to-back calls after 0.1 s pauses, ran at one thread's speed
 * (0.18-0.20 against 0.10 ms) in most blocks after the first few, while the busy-machine rule
 * never fired. OMP_PROC_BIND=true OMP_PLACES=cores cured it by pinning every thread, the
 * calling (Python's main) thread too, whose one-CPU mask every process it starts would
 * inherit; pinning the workers alone did not (the calling thread then came to share the
 * worker's CPU).
 *
 * So before each parallel region the calling thread notes its CPU (fastnn_team_cpu), and each
 * worker, first thing in the region (fastnn_team_join), moves off that CPU if it is on it: its
 * affinity becomes the process's CPUs but that one. A syscall only when they meet; the calling
 * thread's own mask is never changed. Nothing is done when the user binds threads through
 * OpenMP (OMP_PROC_BIND other than false, OMP_PLACES or GOMP_CPU_AFFINITY set), nor with a
 * single CPU. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(_OPENMP) && defined(__linux__)
#include <sched.h>

/* The CPUs the process may run on, read before any worker moved; 0 CPUs: do nothing. */
static cpu_set_t g_cpus;
static int g_cpu_count = 0;
static pthread_once_t cpus_once = PTHREAD_ONCE_INIT;

static int user_binds_threads(void) {
    const char *bind = getenv("OMP_PROC_BIND");
    if (bind && *bind && strcasecmp(bind, "false") != 0) return 1;
    const char *places = getenv("OMP_PLACES"), *gomp = getenv("GOMP_CPU_AFFINITY");
    return (places && *places) || (gomp && *gomp);
}

static void read_cpus(void) {
    CPU_ZERO(&g_cpus);
    if (user_binds_threads() || sched_getaffinity(0, sizeof g_cpus, &g_cpus) != 0) return;
    g_cpu_count = CPU_COUNT(&g_cpus);
}

int fastnn_team_cpu(void) {
    pthread_once(&cpus_once, read_cpus);
    return g_cpu_count > 1 ? sched_getcpu() : -1;
}

void fastnn_team_join(int team_cpu) {
    if (team_cpu < 0 || team_cpu >= CPU_SETSIZE || fastnn_team_index() == 0 ||
        sched_getcpu() != team_cpu)
        return;
    cpu_set_t others = g_cpus;
    CPU_CLR(team_cpu, &others);
    if (CPU_COUNT(&others) > 0) pthread_setaffinity_np(pthread_self(), sizeof others, &others);
}
#else
int fastnn_team_cpu(void) { return -1; }
void fastnn_team_join(int team_cpu) { (void)team_cpu; }
#endif
