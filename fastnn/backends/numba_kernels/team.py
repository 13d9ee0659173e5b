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
  another thread's core was taken (a busy neighbour process, another library's spinning
  threads): for a spell of :data:`CONTENDED_PAUSE_MIN_NS` to :data:`CONTENDED_PAUSE_MAX_NS`
  (the C kernels' rule, kernels/internal.h: the shortest after a one-off wait, 8 times the last
  spell when found again soon after it; a loop that started more than
  :data:`CONTENDED_IDLE_NS` after the last one ended, whose workers were asleep, starts its
  spell with no time on one thread), region_enter sets Numba's thread count of the calling
  thread to 1 for the loop (put back by region_leave), and the first loop after that probes
  again. The loops keep their tasks: a sum split between tasks (db's partial sums, a loss's
  per-chunk sums) keeps its split, so results stay bit for bit those of the threads. A quiet
  machine never waits that long, so nothing changes there. ``FASTNN_ASSUME_CONTENDED=1``
  (read at import, as by the C library) makes every loop run on one thread, for the test
  that checks the bits.

The state (until when the machine counts as busy, when the calling thread last finished a
task) is process-wide memory reached through a symbol, as fp_mode's flag; the clock is
``clock_gettime(CLOCK_MONOTONIC)``, the one of ``time.monotonic_ns``. Numba's thread count
and thread number are its threading layer's own functions (the symbols Numba's
``set_num_threads`` and ``get_thread_id`` call), so nothing here defeats the disk cache.
"""

from __future__ import annotations

import ctypes
import os
import time

import numba
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .fp_mode import UNCHANGED, external_global, fp_enter, fp_inherited, fp_leave

#: A wait at a loop's end longer than this (and than half the calling thread's work)
#: means another thread's core was taken; the loops then run on one thread for a spell of
#: CONTENDED_PAUSE_MIN_NS, or 8 times the last spell (at most CONTENDED_PAUSE_MAX_NS) when
#: found within 4 spells' lengths of the last one's end. The C kernels' values
#: (FASTNN_CONTENDED_WAIT_NS, _PAUSE_MIN_NS, _PAUSE_MAX_NS, kernels/internal.h).
CONTENDED_WAIT_NS = 200_000
CONTENDED_PAUSE_MIN_NS = 2_000_000
CONTENDED_PAUSE_MAX_NS = 100_000_000
#: A held-up loop that started longer than this after the last one ended starts its spell
#: with no time on one thread: its workers had gone to sleep, and their wake-up is not a
#: taken core; a lasting load holds up the next loop too (FASTNN_CONTENDED_IDLE_NS).
CONTENDED_IDLE_NS = 5_000_000

#: The state's fields: until when (CLOCK_MONOTONIC ns) loops run on one thread; when the
#: calling thread last finished a task; 1 when FASTNN_ASSUME_CONTENDED=1; the length of the
#: last one-thread spell (ns, 0: none yet); when the last loop ended (0: none yet).
UNTIL, MASTER_DONE, ASSUMED, PAUSE, LAST_END = range(5)
STATE_FIELDS = 5
STATE_SYMBOL = "fastnn_numba_team_state"
_state = (ctypes.c_int64 * STATE_FIELDS)()
_state[ASSUMED] = os.environ.get("FASTNN_ASSUME_CONTENDED", "") == "1"
binding.add_symbol(STATE_SYMBOL, ctypes.addressof(_state))

CLOCK_SYMBOL = "fastnn_numba_clock_gettime"
CLOCK_MONOTONIC = 1  # Linux's (and time.CLOCK_MONOTONIC where Python has it)
_libc = ctypes.CDLL(None)
binding.add_symbol(CLOCK_SYMBOL, ctypes.cast(_libc.clock_gettime, ctypes.c_void_p).value)

numba.get_num_threads()  # starts Numba's threading layer: its symbols, used below


def contended() -> bool:
    """Whether parallel loops run on one thread now (a busy machine, or assumed)."""
    return bool(_state[ASSUMED]) or time.monotonic_ns() < _state[UNTIL]


def assume_contended(mode: bool) -> None:
    """Run every parallel loop on one thread (True), as FASTNN_ASSUME_CONTENDED=1, or measure
    again (False; also forgets a busy spell found so far). For tests."""
    _state[ASSUMED] = 1 if mode else 0
    _state[UNTIL] = _state[PAUSE] = 0


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


@njit(cache=True, error_model="numpy")
def contended_spell(last_spell_ns, since_its_end_ns):
    """The length (ns) of a spell on one thread after a held-up loop, given the last spell's
    length (0: none yet) and the time since its end: the C kernels' fastnn_contended_spell."""
    if last_spell_ns > 0 and since_its_end_ns < 4 * last_spell_ns:
        return min(8 * last_spell_ns, CONTENDED_PAUSE_MAX_NS)
    return CONTENDED_PAUSE_MIN_NS


@njit(cache=True, error_model="numpy")
def held_up(waited_ns, worked_ns):
    """Whether a loop counts as held up, given the calling thread's wait at its end and its
    own work (ns): the C kernels' fastnn_held_up."""
    return waited_ns > CONTENDED_WAIT_NS and 2 * waited_ns > worked_ns


@njit(cache=True, error_model="numpy")
def spell_end(end_ns, spell_ns, idle_ns):
    """The end of the spell a held-up loop starts, given its end, the spell's length and the
    time from the last loop's end to its start: its end after an idle gap (no time on one
    thread), else end + spell: the C kernels' fastnn_spell_end."""
    return end_ns if idle_ns > CONTENDED_IDLE_NS else end_ns + spell_ns


@njit(cache=True, error_model="numpy")
def region_leave(region):
    """After the prange loop: the thread count back; a long wait of the calling thread for
    the others makes the loops of the next spell run on one thread (see CONTENDED_WAIT_NS)."""
    team, start = region
    if start < 0:
        set_team_size(team)
    elif start > 0:
        end = now_ns()
        done = state_load(MASTER_DONE)
        # idle since the last loop or the end of the last spell (whose loops, on one thread,
        # do not come here): a probe after a spell is not an idle gap
        idle = start - max(state_load(LAST_END), state_load(UNTIL))
        state_store(LAST_END, end)
        if held_up(end - done, done - start):
            pause = contended_spell(state_load(PAUSE), end - state_load(UNTIL))
            state_store(PAUSE, pause)
            state_store(UNTIL, spell_end(end, pause, idle))
