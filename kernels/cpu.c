/* cpu.c - which instruction sets this CPU, the OS and the build allow, the OS's permission to
 * use AMX, and the choice of the kernels' copy (isa.h).
 *
 * Checked for each set, in order, and the first failing step is its reason:
 *   avx2:   CPUID leaf 1 (FMA, OSXSAVE, AVX) and leaf 7 (AVX2); XCR0 bits 1-2 (the OS saves
 *           the SSE and AVX registers);
 *   avx512: CPUID leaf 7 (AVX512 F, DQ, BW, VL); XCR0 bits 5-7 (opmask and zmm state);
 *   amx:    avx512 allowed; CPUID leaf 7 EDX (AMX-TILE bit 24, AMX-BF16 bit 22); XCR0 bits
 *           17-18 (tile config and tile data); CPUID leaf 0x1D palette 1 with at least
 *           8 tiles of 16 rows x 64 bytes (some virtual machines report AMX with an empty
 *           palette); the OS's permission, asked once per process with
 *           arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) and read back with
 *           ARCH_GET_XCOMP_PERM (Linux, Documentation/arch/x86/xstate.rst).
 * A set is also unavailable when the compiler did not build its copy. Anything that fails
 * makes the set unavailable, never the library: bfloat16 precision then runs on the float32
 * kernels with the same rounding (bf16.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "isa.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif

static const char *const ISA_NAMES[FASTNN_ISA_COUNT] = {"portable", "avx2", "avx512", "amx"};

/* "" when allowed, else why not; written once (detect). */
static char g_reason[FASTNN_ISA_COUNT][200];
static int g_best = FASTNN_ISA_PORTABLE;
static int g_dot_bf16 = 0; /* AVX512-BF16 allowed and its GEMM built */
static int g_current = FASTNN_ISA_PORTABLE;
static const fastnn_isa_kernels *g_kernels = &fastnn_isa_portable;
static pthread_once_t g_detect_once = PTHREAD_ONCE_INIT;

static void set_reason(int isa, const char *text) {
    snprintf(g_reason[isa], sizeof g_reason[isa], "%s", text);
}

#if defined(__x86_64__) && defined(__GNUC__)
typedef struct {
    unsigned a, b, c, d;
} cpuid_regs;

static cpuid_regs cpuid(unsigned leaf, unsigned subleaf) {
    cpuid_regs r = {0, 0, 0, 0};
    /* (__get_cpuid_max returns an unsigned int in GCC's cpuid.h, an int in clang's) */
    if ((unsigned)__get_cpuid_max(0, NULL) >= leaf)
        __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
    return r;
}

static unsigned long long xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

#define BIT(value, n) (((value) >> (n)) & 1u)

/* The reason AMX's tiles cannot be used here, or NULL: CPUID, XCR0, palette, permission. */
static const char *amx_refusal(unsigned long long os_state, char *buffer, size_t size) {
#ifdef FASTNN_AMX_EMULATE
    (void)os_state, (void)buffer, (void)size;
    return fastnn_amx_gemm ? NULL : "the AMX kernels were not compiled in"; /* test build */
#endif
    cpuid_regs leaf7 = cpuid(7, 0);
    if (!BIT(leaf7.d, 24) || !BIT(leaf7.d, 22))
        return "the CPU has no AMX-TILE / AMX-BF16 (CPUID leaf 7 EDX bits 24, 22)";
    if ((os_state & 0x60000ull) != 0x60000ull)
        return "the OS does not enable the AMX tile state (XCR0 bits 17-18)";
    if ((unsigned)__get_cpuid_max(0, NULL) < 0x1D || cpuid(0x1D, 0).a < 1)
        return "the CPU reports no AMX tile palette (CPUID leaf 0x1D)";
    cpuid_regs palette = cpuid(0x1D, 1);
    unsigned bytes_per_row = palette.b & 0xFFFF, names = palette.b >> 16,
             rows = palette.c & 0xFFFF;
    if (bytes_per_row < 64 || names < 8 || rows < 16) {
        snprintf(buffer, size,
                 "AMX palette 1 has %u tiles of %u rows x %u bytes; the kernels need 8 of "
                 "16 x 64 (CPUID leaf 0x1D)", names, rows, bytes_per_row);
        return buffer;
    }
#if defined(__linux__)
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
        int error = errno;
        snprintf(buffer, size,
                 "Linux refused the AMX tile data permission "
                 "(arch_prctl(ARCH_REQ_XCOMP_PERM): %s%s)", strerror(error),
                 error == ENOSPC ? "; a thread's alternate signal stack (sigaltstack) is "
                                   "smaller than the AMX signal frame"
                                 : "");
        return buffer;
    }
    unsigned long long permitted = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &permitted) != 0 ||
        !BIT(permitted, XFEATURE_XTILEDATA))
        return "Linux did not grant the AMX tile data permission (ARCH_GET_XCOMP_PERM)";
    return NULL;
#else
    return "AMX needs Linux's arch_prctl permission; this OS is not supported";
#endif
}

/* Why a copy is not in this build: what it needs, and the compiler that built this one. */
#if defined(__clang__)
#define COMPILER __VERSION__ /* e.g. "Debian Clang 14.0.6" */
#else
#define COMPILER "GCC " __VERSION__
#endif
#define NOT_COMPILED(needs) "not compiled in (needs " needs "; built by " COMPILER ")"
#if defined(FASTNN_NO_AVX2_COPY) /* the sanitizer and emulated-AMX builds */
#define NOT_COMPILED_AVX2 "not compiled in (left out by -DFASTNN_NO_AVX2_COPY)"
#else
#define NOT_COMPILED_AVX2 NOT_COMPILED("GCC's target pragmas on x86-64")
#endif

static void detect(void) {
    char buffer[200];
    cpuid_regs leaf1 = cpuid(1, 0), leaf7 = cpuid(7, 0);
    unsigned long long os_state = BIT(leaf1.c, 27) ? xcr0() : 0; /* OSXSAVE */
    const char *why;
    set_reason(FASTNN_ISA_PORTABLE, "");

    /* what the CPU and OS allow of AVX2 (the AVX-512 copy needs it too, not the AVX2 copy:
     * the sanitizer build leaves that out, -DFASTNN_NO_AVX2_COPY in kernels/sanitize.sh) */
    const char *avx2_cpu = "";
    if (!BIT(leaf1.c, 28) || !BIT(leaf1.c, 12) || !BIT(leaf7.b, 5))
        avx2_cpu = "the CPU has no AVX2 + FMA (CPUID leaves 1 and 7)";
    else if ((os_state & 0x6ull) != 0x6ull)
        avx2_cpu = "the OS does not enable the AVX registers (XCR0 bits 1-2)";
    if (!fastnn_isa_compiled(FASTNN_ISA_AVX2))
        why = NOT_COMPILED_AVX2;
    else
        why = avx2_cpu;
    set_reason(FASTNN_ISA_AVX2, why);

    if (*avx2_cpu)
        why = "needs AVX2 first";
    else if (!fastnn_isa_compiled(FASTNN_ISA_AVX512))
        why = NOT_COMPILED("GCC's target pragmas on x86-64");
    else if (!BIT(leaf7.b, 16) || !BIT(leaf7.b, 17) || !BIT(leaf7.b, 30) || !BIT(leaf7.b, 31))
        why = "the CPU has no AVX-512 F/DQ/BW/VL (CPUID leaf 7)";
    else if ((os_state & 0xE6ull) != 0xE6ull)
        why = "the OS does not enable the AVX-512 registers (XCR0 bits 5-7)";
    else
        why = "";
    set_reason(FASTNN_ISA_AVX512, why);

    if (!fastnn_isa_compiled(FASTNN_ISA_AMX))
        why = NOT_COMPILED("GCC 11 or later on x86-64");
    else if (*g_reason[FASTNN_ISA_AVX512])
        why = "needs AVX-512 first";
    else
        why = amx_refusal(os_state, buffer, sizeof buffer);
    set_reason(FASTNN_ISA_AMX, why ? why : "");

    for (int isa = 0; isa < FASTNN_ISA_COUNT; isa++)
        if (!*g_reason[isa]) g_best = isa;
    g_dot_bf16 = !*g_reason[FASTNN_ISA_AVX512] && BIT(cpuid(7, 1).a, 5) && fastnn_dot_bf16_gemm;
}
#else
static void detect(void) {
    set_reason(FASTNN_ISA_PORTABLE, "");
    for (int isa = 1; isa < FASTNN_ISA_COUNT; isa++)
        set_reason(isa, "not an x86-64 build");
}
#endif

static void ensure_detected(void) { pthread_once(&g_detect_once, detect); }

int fastnn_cpu_has_dot_bf16(void) {
    ensure_detected();
    return g_dot_bf16;
}

const char *fastnn_isa_name(int isa) {
    return isa >= 0 && isa < FASTNN_ISA_COUNT ? ISA_NAMES[isa] : NULL;
}

int fastnn_isa_compiled(int isa) {
    switch (isa) {
    case FASTNN_ISA_PORTABLE: return 1;
    case FASTNN_ISA_AVX2: return &fastnn_isa_avx2 != NULL;
    case FASTNN_ISA_AVX512: return &fastnn_isa_avx512 != NULL;
    case FASTNN_ISA_AMX: return &fastnn_isa_avx512 != NULL && fastnn_amx_gemm != NULL;
    default: return 0;
    }
}

const char *fastnn_isa_unavailable(int isa) {
    if (isa < 0 || isa >= FASTNN_ISA_COUNT) return "no such instruction set";
    ensure_detected();
    return g_reason[isa];
}

int fastnn_isa_best(void) {
    ensure_detected();
    return g_best;
}

int fastnn_isa_current(void) { return __atomic_load_n(&g_current, __ATOMIC_ACQUIRE); }

int fastnn_isa_select(int isa) {
    if (isa < 0 || isa >= FASTNN_ISA_COUNT || *fastnn_isa_unavailable(isa)) return -1;
    const fastnn_isa_kernels *kernels = isa == FASTNN_ISA_PORTABLE ? &fastnn_isa_portable
                                        : isa == FASTNN_ISA_AVX2   ? &fastnn_isa_avx2
                                                                   : &fastnn_isa_avx512;
    __atomic_store_n(&g_kernels, kernels, __ATOMIC_RELEASE);
    __atomic_store_n(&g_current, isa, __ATOMIC_RELEASE);
    return 0;
}

const fastnn_isa_kernels *fastnn_active_kernels(void) {
    return __atomic_load_n(&g_kernels, __ATOMIC_ACQUIRE);
}

const char *fastnn_simd_name(void) {
    int isa = fastnn_isa_current();
    return ISA_NAMES[isa == FASTNN_ISA_AMX ? FASTNN_ISA_AVX512 : isa];
}

/* The best set, chosen when the library is loaded (Python's fastnn.backends.c_backend then
 * applies FASTNN_ISA). */
__attribute__((constructor)) static void select_best(void) { fastnn_isa_select(fastnn_isa_best()); }
