/* isa_portable.c - the hot kernels for any CPU of the architecture (x86-64: SSE2), the
 * baseline every other set falls back to. See isa.h. */
#define FASTNN_ISA_SUFFIX _portable
#define FASTNN_ISA_TABLE fastnn_isa_portable
#include "isa_kernels.h"
