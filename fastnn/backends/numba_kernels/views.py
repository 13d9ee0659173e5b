"""Views of the compiled training loop's buffers that hold no reference.

A slice or reshape in jitted code is a new array that holds a reference to its parent's
memory: Numba adds one to the count when the view is made and takes one off when it dies,
with atomic instructions (``lock inc``/``lock dec``). A training step of a small network
makes dozens of views (each layer's activations, weights, gradients), and perf showed
these two instructions at 38% of a 2-8-2 XOR step. The views below are ``numba.carray``
arrays over the same memory with no reference at all: valid only while the parent is alive,
which the caller guarantees (the plan's arrays, held by the Python caller of train_steps,
outlive the call). The arithmetic on them is that of the slices they replace.
"""

from __future__ import annotations

from numba import carray, njit, types
from numba.extending import intrinsic


@intrinsic
def element_pointer(typingctx, array, index):
    """Pointer to ``array.flat[index]`` (array: C-contiguous; index not checked)."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.gep(data, [offset])

    return types.CPointer(array.dtype)(array, index), codegen


@njit(cache=True, error_model="numpy", inline="always")
def rows_of(flat, offset, rows, units):
    """``flat[offset:offset + rows * units].reshape((rows, units))``, without a reference."""
    return carray(element_pointer(flat, offset), (rows, units))


@njit(cache=True, error_model="numpy", inline="always")
def span_of(flat, start, count):
    """``flat[start:start + count]`` (1-D), without a reference."""
    return carray(element_pointer(flat, start), count)


@njit(cache=True, error_model="numpy", inline="always")
def first_rows(matrix, count):
    """``matrix[:count]`` of a C-contiguous 2-D array, without a reference."""
    return carray(element_pointer(matrix, 0), (min(count, matrix.shape[0]), matrix.shape[1]))


@njit(cache=True, error_model="numpy", inline="always")
def first_items(vector, count):
    """``vector[:count]`` of a 1-D array, without a reference."""
    return carray(element_pointer(vector, 0), min(count, vector.shape[0]))
