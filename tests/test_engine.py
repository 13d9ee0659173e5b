"""The engine on a real machine (issue 14): subnormals, fork, the OpenMP wait policy.

Speed (the busy neighbour, NumPy interleaved, subnormal data) is measured by
``benchmarks/engine.py``, not here: these tests check behaviour.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.backends import runtime

from conftest import BACKENDS

COMPILED = [name for name in ("c", "numba") if name in BACKENDS]


def _numba_flushes() -> bool:
    """The Numba kernels set the mode where numba_kernels.fp_mode can (x86-64's MXCSR)."""
    from fastnn.backends.numba_kernels import fp_mode
    return fp_mode.SUPPORTED


#: The backends whose kernels flush subnormals.
FLUSHING = [name for name in COMPILED if name == "c" or _numba_flushes()]
TINY = {np.dtype(np.float32): np.float32(1e-39), np.dtype(np.float64): 1e-310}


@pytest.fixture
def ieee_subnormals():
    """Keep IEEE subnormals for the test, then put the default (flush) back."""
    fastnn.set_flush_denormal(False)
    yield
    fastnn.set_flush_denormal(True)


def subnormal_operands(dtype, n=48):
    rng = np.random.default_rng(0)
    a = rng.uniform(1.0, 2.0, (n, n)).astype(dtype)
    return (a * TINY[np.dtype(dtype)]).astype(dtype), a


@pytest.mark.parametrize("name", FLUSHING)
def test_subnormal_inputs_count_as_zero_by_default(name, dtype):
    """Denormals-are-zero: a product of subnormal inputs is exactly zero on the compiled
    backends, while the numpy backend (the IEEE reference) keeps them."""
    tiny, a = subnormal_operands(dtype)
    assert np.all(tiny != 0) and np.all(np.abs(tiny) < np.finfo(dtype).tiny)
    with fastnn.use_backend(name):
        assert not ops.matmul(tiny, a).any()
        x, w = tiny, a
        assert not ops.linear_forward(x, w, np.zeros(len(a), dtype), "relu").any()
    with fastnn.use_backend("numpy"):
        assert ops.matmul(tiny, a).all()


@pytest.mark.parametrize("name", FLUSHING)
def test_subnormal_results_flush_to_zero_by_default(name, dtype):
    """Flush-to-zero: normal inputs whose products are subnormal give zeros."""
    small = np.full((20, 20), np.sqrt(np.finfo(dtype).tiny) * 0.5, dtype)
    with fastnn.use_backend(name):
        assert not ops.matmul(small, small / 40).any()
    assert (small @ (small / 40)).all()  # NumPy's own result is subnormal


@pytest.mark.parametrize("name", FLUSHING)
def test_set_flush_denormal_false_keeps_ieee_subnormals(name, dtype, ieee_subnormals):
    tiny, a = subnormal_operands(dtype)
    expected = tiny.astype(np.float64) @ a.astype(np.float64)
    with fastnn.use_backend(name):
        got = ops.matmul(tiny, a)
        dx, dw, db = ops.linear_backward(a, a, a, tiny, "identity")
    np.testing.assert_allclose(got, expected, rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert db.all() and dx.all()


@pytest.mark.parametrize("name", FLUSHING)
def test_the_callers_floating_point_mode_is_restored(name):
    """After a kernel (on two threads, big enough for every thread to run), and after a
    compiled training loop (whose kernels run inside the loop's mode), NumPy on the calling
    thread still makes subnormals: the kernel put the thread's mode back."""
    a = np.random.default_rng(1).standard_normal((300, 300)).astype(np.float32)
    model = fastnn.Sequential([fastnn.Dense(16, "relu"), fastnn.Dense(3, "softmax")], seed=0)
    model.compile(fastnn.SGD(0.1), "sparse_categorical_crossentropy")
    with fastnn.use_backend(name):
        ops.matmul(a, a)
        ops.linear_backward(a, a, a, a, "relu")
        ops.softmax(a)
        model.fit(a, np.arange(len(a)) % 3, epochs=1, batch_size=32, verbose=0, seed=0)
    half_tiny = np.float32(np.finfo(np.float32).tiny) * np.float32(0.25)
    assert half_tiny != 0
    assert (np.full(4, np.finfo(np.float32).tiny, np.float32) * np.float32(0.25)).all()


def test_set_flush_denormal_checks_its_argument():
    with pytest.raises(TypeError, match="mode"):
        fastnn.set_flush_denormal(1)
    assert runtime.flush_denormal() is True
    assert fastnn.set_flush_denormal(True) is True


def run_python(code: str, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a hang fails the test when the timeout expires)."""
    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment,
                          capture_output=True, text=True, timeout=timeout)


FORK_CHECK = """
    import multiprocessing as mp, numpy as np, fastnn
    from fastnn import ops
    fastnn.set_backend({name!r})
    fastnn.set_num_threads(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 300)).astype(np.float32)
    w = rng.standard_normal((300, 200)).astype(np.float32)
    b = np.zeros(200, np.float32)

    def work():
        y = ops.linear_forward(a, w, b, "relu")
        _, dw, _ = ops.linear_backward(a, w, y, y, "relu")
        p = ops.softmax(ops.matmul(a, w))
        return float(ops.matmul(a, w).sum()), float(dw.sum()), float(p.sum())

    def child(queue):
        try:
            queue.put(("ok", work()))
        except Exception as exc:  # must name the spawn start method
            queue.put(("error", f"{{type(exc).__name__}}: {{exc}}"))

    expected = work()  # the parent ran parallel kernels before the fork
    context = mp.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    status, value = queue.get(timeout=120)
    process.join(30)
    assert process.exitcode == 0, process.exitcode
    if status == "ok":
        np.testing.assert_allclose(value, expected, rtol=1e-4)
        print("child worked")
    else:
        assert "spawn" in value, value
        print("child raised", value)
"""


@pytest.mark.parametrize("name", COMPILED)
def test_a_forked_child_works_after_parallel_kernels(name):
    """multiprocessing's fork start method after the parent ran parallel kernels: the child
    works (on one thread) or raises naming spawn; it never hangs or dies."""
    result = run_python(FORK_CHECK.format(name=name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "child worked" in result.stdout or "child raised" in result.stdout


def test_wait_policy_is_short_unless_the_user_set_one():
    code = """
        import os, fastnn
        from fastnn.backends import runtime
        print(os.environ.get("GOMP_SPINCOUNT"), runtime.WAIT_POLICY_SET_BY_FASTNN)
    """
    clean = {k: v for k, v in os.environ.items() if k not in runtime.WAIT_POLICY_VARIABLES}
    fresh = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean,
                           capture_output=True, text=True, timeout=120)
    assert fresh.stdout.split() == [str(runtime.SPIN_COUNT), "True"], fresh.stderr
    active = run_python(code, OMP_WAIT_POLICY="active")
    assert active.stdout.split()[1] == "False", active.stderr
    spins = run_python(code, GOMP_SPINCOUNT="123")
    assert spins.stdout.split() == ["123", "False"], spins.stderr


def test_openblas_wait_is_short_when_fastnn_comes_before_numpy():
    """import fastnn before NumPy: OPENBLAS_THREAD_TIMEOUT is set to fastnn's short wait; after
    NumPy (OpenBLAS has read its environment) or with the user's own value, it is left alone."""
    code = """
        import os, sys
        {first}
        import fastnn
        from fastnn.backends import runtime
        print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), runtime.OPENBLAS_TIMEOUT_SET_BY_FASTNN)
    """
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}

    def run(first, env):
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code.format(first=first))],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert run("", clean) == [str(runtime.OPENBLAS_TIMEOUT), "True"]
    assert run("import numpy", clean) == ["None", "False"]
    assert run("", dict(clean, OPENBLAS_THREAD_TIMEOUT="20")) == ["20", "False"]


CONTENDED_CHECK = """
    import hashlib, numpy as np, fastnn
    from fastnn import ops
    fastnn.set_backend({name!r})
    fastnn.set_num_threads(2)
    rng = np.random.default_rng(3)
    digest = hashlib.sha256()
    for n, k, m in [(128, 784, 256), (300, 500, 100), (1024, 300, 600), (1, 2048, 1000)]:
        x = rng.standard_normal((n, k)).astype(np.float32)
        w = rng.standard_normal((k, m)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        y = ops.linear_forward(x, w, b, "tanh")
        for array in (ops.matmul(x, w), y, *ops.linear_backward(x, w, y, y, "tanh"),
                      ops.softmax(y), ops.matmul(x, w, precision="bfloat16"),
                      *ops.linear_backward(x, w, y, y, "tanh", precision="bfloat16")):
            digest.update(array.tobytes())
    # few rows and a B' about an L2 wide: on the C GEMM's SMALL path each thread's share of
    # B' fits in L2 where the whole does not, which picks another kernel and order of sums
    for dtype in (np.float32, np.float64):
        for n, k, m in [(8, 256, 1024), (8, 512, 1024), (4, 1024, 512), (32, 64, 4096)]:
            for trans_a in (False, True):
                for trans_b in (False, True):
                    a = rng.standard_normal((k, n) if trans_a else (n, k)).astype(dtype)
                    b = rng.standard_normal((m, k) if trans_b else (k, m)).astype(dtype)
                    digest.update(ops.matmul(a, b, trans_a, trans_b).tobytes())
    # the C training loop's optimizer steps fused with the weight gradient: each thread's row
    # tiles, and on one thread the others' taken from their backs (numba has no fused step)
    x = rng.random((512, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 512)
    optimizers = ((fastnn.SGD(0.05, momentum=0.9), fastnn.Adam(0.001)) if {name!r} == "c"
                  else ())
    for optimizer in optimizers:
        model = fastnn.Sequential([fastnn.Dense(256, "relu"), fastnn.Dense(10, "softmax")],
                                  seed=0)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        model.fit(x, labels, epochs=2, batch_size=128, verbose=0, seed=0)
        for weight in model.get_weights():
            digest.update(weight.tobytes())
    print(digest.hexdigest())
"""


@pytest.mark.parametrize("name", COMPILED)
def test_one_thread_fallback_of_a_busy_machine_gives_the_same_bits(name):
    """When the compiled kernels find the other cores taken, they run on one thread; sums that
    the threads split (the GEMM's K split, db) keep their split, so results stay bit for bit."""
    normal = run_python(CONTENDED_CHECK.format(name=name), FASTNN_ASSUME_CONTENDED="0")
    busy = run_python(CONTENDED_CHECK.format(name=name), FASTNN_ASSUME_CONTENDED="1")
    assert normal.returncode == 0 and busy.returncode == 0, normal.stderr + busy.stderr
    assert normal.stdout == busy.stdout


def engine_rule(name):
    """The busy machine's rule of backend `name`: contended_spell(last spell, ns since its end)
    -> next spell, held_up(wait, work) and spell_end(end, spell, idle gap)."""
    if name == "c":
        from fastnn.backends.c_backend import lib
        return lib.fastnn_contended_spell, lib.fastnn_held_up, lib.fastnn_spell_end
    from fastnn.backends.numba_kernels import team
    return team.contended_spell, team.held_up, team.spell_end


MS = 1_000_000


@pytest.mark.parametrize("name", COMPILED)
def test_a_one_off_wait_costs_a_short_spell_and_a_lasting_load_a_long_one(name):
    """A held-up region starts the shortest spell on one thread (2 ms: a worker of a quiet VM
    is off its core for a few ms now and then); held up again within 4 spells' lengths of the
    last spell's end, 8 times the last (a busy neighbour: 2, 16, 100 ms, at most 100)."""
    spell, _, _ = engine_rule(name)
    assert spell(0, 0) == 2 * MS  # the first ever
    assert spell(2 * MS, 1 * MS) == 16 * MS
    assert spell(2 * MS, 7 * MS) == 16 * MS
    assert spell(16 * MS, 30 * MS) == 100 * MS
    assert spell(100 * MS, 0) == 100 * MS
    assert spell(2 * MS, -1 * MS) == 16 * MS  # a region that began before the spell's end
    assert spell(2 * MS, 8 * MS) == 2 * MS  # long after: a one-off wait again
    assert spell(100 * MS, 400 * MS) == 2 * MS


@pytest.mark.parametrize("name", COMPILED)
def test_a_region_after_an_idle_gap_starts_its_spell_with_no_time_on_one_thread(name):
    """A calling thread that waits at a region's end longer than 0.2 ms and than half its own
    work was held up by a taken core, and a spell on one thread follows; but a region that
    started more than 5 ms after the last one ended found its workers asleep, whose wake-up
    (up to a few ms on a VM) is not a taken core: its spell is counted (the next held-up
    region's is 8 times longer) but ends at once."""
    _, held_up, spell_end = engine_rule(name)
    assert held_up(300_000, 400_000)
    assert not held_up(200_000, 100_000)  # a wait of 0.2 ms or less
    assert not held_up(300_000, 600_000)  # a wait of half the work or less
    end = 1_000 * MS
    assert spell_end(end, 2 * MS, 0) == end + 2 * MS  # back to back
    assert spell_end(end, 16 * MS, 5 * MS) == end + 16 * MS
    assert spell_end(end, 2 * MS, 5 * MS + 1) == end  # after an idle gap
    assert spell_end(end, 100 * MS, 300 * MS) == end


AFFINITY_CHECK = """
    import os, threading, numpy as np, fastnn
    from fastnn import ops
    fastnn.set_backend("c")
    fastnn.set_num_threads(2)
    a = np.ones((256, 256), np.float32)
    ops.matmul(a, a)  # the OpenMP team exists from here on
    cpus = sorted(os.sched_getaffinity(0))
    main = threading.get_native_id()
    tasks = [int(t) for t in os.listdir("/proc/self/task")]
    for task in tasks:  # every thread, the calling one too, on the first CPU
        os.sched_setaffinity(task, {{cpus[0]}})
    for _ in range({calls}):
        ops.matmul(a, a)
    moved = [t for t in tasks if t != main and os.sched_getaffinity(t) == set(cpus[1:])]
    print(len(moved), sorted(os.sched_getaffinity(main)) == [cpus[0]])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or "c" not in BACKENDS,
                    reason="thread affinity through /proc and sched_setaffinity: Linux, backend c")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                    reason="a worker can only move off the calling thread's CPU with 2 CPUs or more")
def test_a_worker_on_the_calling_threads_cpu_moves_off_it_and_the_caller_stays():
    """kernels/affinity.c: a worker that finds itself on the calling thread's CPU at the start of
    a region takes the process's other CPUs; the calling thread's mask is never changed; with
    OpenMP's own binding asked for (OMP_PROC_BIND), fastnn moves nothing."""
    code = AFFINITY_CHECK.format(calls=20)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY")}
    moved = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean,
                           capture_output=True, text=True, timeout=240)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.split() == ["1", "True"], moved.stdout + moved.stderr
    bound = run_python(code, OMP_PROC_BIND="true")
    assert bound.returncode == 0, bound.stderr
    assert bound.stdout.split() == ["0", "True"], bound.stdout + bound.stderr
