/* dispatch.c - the exported kernels (fastnn.h), each a call into the instruction set's copy
 * chosen at load (dispatch_impl.h, isa.h), in float32 and float64. */
#include "isa.h"

#define FASTNN_TEMPLATE "dispatch_impl.h"
#include "instantiate.h"
