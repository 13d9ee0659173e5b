"""The bracket of every ``prange`` loop: the threads' floating-point mode and the fallback to
one thread on a busy machine (the C kernels' ``fastnn_contended``, kernels/internal.h).

Every parallel loop of the Numba kernels reads::

    region = region_enter()
    for task in prange(tasks):
        mode = task_enter()
        ...
        task_leave(mode)
    region_leave(region)

* **Floating-point mode.** task_enter runs fp_mode.fp_enter on each thread running a task
  (the calling thread included), task_leave puts the thread's mode back.
* **A busy machine.** When the calling thread has finished its tasks and then waits at the
  loop's end for more than :data:`CONTENDED_WAIT_NS` and longer than half of its own work,
  another thread was held up. If another task was runnable when it arrived (a busy neighbour
  process, another library's spinning threads; Linux's count in ``/proc/loadavg``), its core
  was taken: for the next :data:`CONTENDED_PAUSE_NS`, region_enter sets Numba's thread count
  of the calling thread to 1 for the loop (put back by region_leave), and the first loop
  after that probes again. If none was, the hypervisor paused the thread's virtual CPU for a
  few milliseconds (about once per 500 ms on a quiet VM here): the wait sat it out, and the
  next loop runs on all threads, unless held-up loops go on for more than
  :data:`SPELL_MOST_NS`. The loops keep their tasks: a sum split between tasks (db's
  partial sums, a loss's per-chunk sums) keeps its split, so results stay bit for bit those
  of the threads. A quiet machine never waits that long, so nothing changes there.
  ``FASTNN_ASSUME_CONTENDED=1`` (read at import, as by the C library) makes every loop run
  on one thread, for the test that checks the bits. The rule and its values are the C
  kernels' (kernels/internal.h, runtime.c's ``fastnn_team_report``).

The state (until when the machine counts as busy, when the calling thread last finished a
task, when a loop was last held up and when its spell began) is process-wide memory reached through a symbol, as fp_mode's flag; the clock is
``clock_gettime(CLOCK_MONOTONIC)``, the one of ``time.monotonic_ns``. Numba's thread count
and thread number are its threading layer's own functions (the symbols Numba's
``set_num_threads`` and ``get_thread_id`` call), so nothing here defeats the disk cache.
"""

from __future__ import annotations

import ctypes
import os
import time

import numba
import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .fp_mode import UNCHANGED, external_global, fp_enter, fp_inherited, fp_leave

#: A wait at a loop's end longer than this (and than half the calling thread's work)
#: means another thread was held up; with another task runnable, the loops then run on one
#: thread for CONTENDED_PAUSE_NS. Held-up loops less than SPELL_GAP_NS apart belong to one
#: spell, which counts as a taken core once it lasts SPELL_MOST_NS. The C kernels' values
#: (FASTNN_CONTENDED_WAIT_NS, _PAUSE_NS, FASTNN_SPELL_GAP_NS, _MOST_NS).
CONTENDED_WAIT_NS = 200_000
CONTENDED_PAUSE_NS = 100_000_000
SPELL_GAP_NS = 50_000_000
SPELL_MOST_NS = 10_000_000

#: The state's fields: until when (CLOCK_MONOTONIC ns) loops run on one thread; when the
#: calling thread last finished a task; 1 when FASTNN_ASSUME_CONTENDED=1; when a loop was
#: last held up; when the spell of held-up loops began.
UNTIL, MASTER_DONE, ASSUMED, LAST_HELD_UP, SPELL_BEGAN = range(5)
STATE_FIELDS = 5
STATE_SYMBOL = "fastnn_numba_team_state"
_state = (ctypes.c_int64 * STATE_FIELDS)()
_state[ASSUMED] = os.environ.get("FASTNN_ASSUME_CONTENDED", "") == "1"
binding.add_symbol(STATE_SYMBOL, ctypes.addressof(_state))

CLOCK_SYMBOL = "fastnn_numba_clock_gettime"
CLOCK_MONOTONIC = 1  # Linux's (and time.CLOCK_MONOTONIC where Python has it)
_libc = ctypes.CDLL(None)
binding.add_symbol(CLOCK_SYMBOL, ctypes.cast(_libc.clock_gettime, ctypes.c_void_p).value)
#: libc's open, read and close, for /proc/loadavg (symbols, as the clock: see the docstring)
FILE_SYMBOLS = {name: f"fastnn_numba_{name}" for name in ("open", "read", "close")}
for _name, _symbol in FILE_SYMBOLS.items():
    binding.add_symbol(_symbol, ctypes.cast(getattr(_libc, _name), ctypes.c_void_p).value)
O_RDONLY, O_CLOEXEC = os.O_RDONLY, getattr(os, "O_CLOEXEC", 0)

numba.get_num_threads()  # starts Numba's threading layer: its symbols, used below


def contended() -> bool:
    """Whether parallel loops run on one thread now (a busy machine, or assumed)."""
    return bool(_state[ASSUMED]) or time.monotonic_ns() < _state[UNTIL]


def assume_contended(mode: bool) -> None:
    """Run every parallel loop on one thread (True), as FASTNN_ASSUME_CONTENDED=1, or measure
    again (False; also forgets a busy spell found so far). For tests."""
    _state[ASSUMED] = 1 if mode else 0
    _state[UNTIL] = _state[LAST_HELD_UP] = _state[SPELL_BEGAN] = 0


def _state_slot(builder, index):
    state = external_global(builder.module, ir.ArrayType(ir.IntType(64), STATE_FIELDS),
                            STATE_SYMBOL)
    i32 = ir.IntType(32)
    return builder.gep(state, [ir.Constant(i32, 0), ir.Constant(i32, index)])


@intrinsic
def state_load(typingctx, index):
    if not isinstance(index, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_state_slot(builder, index.literal_value), "monotonic", 8)

    return types.int64(index), codegen


@intrinsic
def state_store(typingctx, index, value):
    if not isinstance(index, types.IntegerLiteral) or not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        builder.store_atomic(context.cast(builder, args[1], signature.args[1], types.int64),
                             _state_slot(builder, index.literal_value), "monotonic", 8)
        return context.get_dummy_value()

    return types.void(index, value), codegen


@intrinsic
def now_ns(typingctx):
    """CLOCK_MONOTONIC in nanoseconds (int64), as time.monotonic_ns."""

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        timespec = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
        clock = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [i32, timespec.type]), CLOCK_SYMBOL)
        builder.call(clock, [ir.Constant(i32, CLOCK_MONOTONIC), timespec])
        seconds, nanoseconds = (
            builder.load(builder.gep(timespec, [ir.Constant(i32, 0), ir.Constant(i32, k)]))
            for k in (0, 1))
        return builder.add(builder.mul(seconds, ir.Constant(i64, 1_000_000_000)), nanoseconds)

    return types.int64(), codegen


def _threading_layer_call(builder, name, return_type, arguments):
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(return_type, [a.type for a in arguments]), name)
    return builder.call(function, arguments)


@intrinsic
def team_size(typingctx):
    """Threads of the calling thread's next parallel loop (Numba's get_num_threads)."""

    def codegen(context, builder, signature, args):
        size = _threading_layer_call(builder, "get_num_threads", ir.IntType(32), [])
        return builder.sext(size, ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def set_team_size(typingctx, size):
    """Numba's set_num_threads for the calling thread (size: 1..NUMBA_NUM_THREADS)."""
    if not isinstance(size, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        count = builder.trunc(context.cast(builder, args[0], signature.args[0], types.int64),
                              ir.IntType(32))
        _threading_layer_call(builder, "set_num_threads", ir.VoidType(), [count])
        return context.get_dummy_value()

    return types.void(size), codegen


@intrinsic
def thread_number(typingctx):
    """This thread's number in its parallel loop, 0 for the calling thread (get_thread_id)."""

    def codegen(context, builder, signature, args):
        number = _threading_layer_call(builder, "get_thread_id", ir.IntType(32), [])
        return builder.sext(number, ir.IntType(64))

    return types.int64(), codegen


@njit(cache=True, error_model="numpy")
def region_enter():
    """Before a prange loop, on the calling thread: the team's size and the loop's start
    (ns; -1: on one thread for a busy machine, 0: one thread anyway)."""
    team = team_size()
    start = 0
    if team > 1:
        start = now_ns()
        if state_load(ASSUMED) != 0 or start < state_load(UNTIL):
            set_team_size(1)
            start = -1
        else:
            state_store(MASTER_DONE, start)
    return team, start


@njit(cache=True, error_model="numpy")
def task_enter():
    """At the start of a prange body: this thread's floating-point mode, for task_leave (a
    worker born in the calling thread's FTZ|DAZ gets them cleared: fp_mode.fp_inherited)."""
    mode = fp_enter()
    if mode == UNCHANGED and thread_number() != 0:
        mode = fp_inherited()
    return mode


@njit(cache=True, error_model="numpy")
def task_leave(mode):
    """At the end of a prange body: the thread's mode back; the calling thread notes when."""
    fp_leave(mode)
    if thread_number() == 0:
        state_store(MASTER_DONE, now_ns())


@intrinsic
def read_loadavg(typingctx, text):
    """Read /proc/loadavg into the uint8 array ``text`` (its size - 1 bytes at most): the
    bytes read, or -1 when it cannot be read."""
    if not (isinstance(text, types.Array) and text.dtype == types.uint8 and text.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        array = context.make_array(signature.args[0])(context, builder, args[0])
        data = builder.bitcast(array.data, i8p)
        size = builder.extract_value(array.shape, 0)
        open_ = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [i8p, i32], var_arg=True), FILE_SYMBOLS["open"])
        read = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i32, i8p, i64]), FILE_SYMBOLS["read"])
        close = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [i32]), FILE_SYMBOLS["close"])
        path = context.insert_const_string(builder.module, "/proc/loadavg")
        got = cgutils.alloca_once_value(builder, ir.Constant(i64, -1))
        fd = builder.call(open_, [path, ir.Constant(i32, O_RDONLY | O_CLOEXEC)])
        with builder.if_then(builder.icmp_signed(">=", fd, ir.Constant(i32, 0))):
            builder.store(builder.call(read, [fd, data, builder.sub(size, ir.Constant(i64, 1))]),
                          got)
            builder.call(close, [fd])
        return builder.load(got)

    return types.int64(text), codegen


@njit(cache=True, error_model="numpy")
def runnable_tasks():
    """The tasks runnable on the machine now, as Linux counts them (the 4th field of
    /proc/loadavg, "running/total"); -1 when it cannot be read."""
    text = np.zeros(128, np.uint8)
    size = read_loadavg(text)
    at, spaces = 0, 0
    while at < size and spaces < 3:  # past the three load averages
        if text[at] == 32:
            spaces += 1
        at += 1
    if spaces < 3 or at >= size or text[at] < 48 or text[at] > 57:
        return -1
    count = 0
    while at < size and 48 <= text[at] <= 57:
        count = count * 10 + (text[at] - 48)
        at += 1
    return count


@njit(cache=True, error_model="numpy")
def held_up_pause_ns(team, runnable, spell_ns):
    """Nanoseconds of loops on one thread after a loop of ``team`` threads was held up, when
    ``runnable`` tasks were runnable (-1: unknown) and its spell of held-up loops began
    ``spell_ns`` before: none for a short spell with nothing else runnable (the C kernels'
    fastnn_held_up_pause_ns)."""
    if 0 <= runnable <= team and spell_ns <= SPELL_MOST_NS:
        return 0
    return CONTENDED_PAUSE_NS


@njit(cache=True, error_model="numpy")
def held_up(team, end, runnable):
    """A loop of ``team`` threads was held up until ``end`` (CLOCK_MONOTONIC ns) with
    ``runnable`` tasks runnable: held_up_pause_ns of loops on one thread from then. Loops
    held up less than SPELL_GAP_NS apart belong to one spell."""
    last = state_load(LAST_HELD_UP)
    state_store(LAST_HELD_UP, end)
    if end - last > SPELL_GAP_NS:
        state_store(SPELL_BEGAN, end)
    pause = held_up_pause_ns(team, runnable, end - state_load(SPELL_BEGAN))
    if pause > 0:
        state_store(UNTIL, end + pause)


@njit(cache=True, error_model="numpy")
def region_leave(region):
    """After the prange loop: the thread count back; a long wait of the calling thread for
    the others (held_up) may make the next CONTENDED_PAUSE_NS of loops run on one thread."""
    team, start = region
    if start < 0:
        set_team_size(team)
    elif start > 0:
        end = now_ns()
        done = state_load(MASTER_DONE)
        waited, worked = end - done, done - start
        if waited > CONTENDED_WAIT_NS and 2 * waited > worked:
            held_up(team, end, runnable_tasks())
