"""pytest-benchmark set-up: 2 threads, every backend as a row, a speedup table at the end.

Each group holds one kernel at one shape; its rows are the fastnn backends
(``numpy`` is the reference) and, where it is installed, PyTorch CPU. After
the run a table gives each row's median and its speedup over the ``numpy``
row of the same group, measured in the same run.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

import fastnn
from fastnn import environment

THREADS = environment.positive_int("FASTNN_BENCH_THREADS") or 2
IMPLEMENTATIONS = fastnn.available_backends() + ["torch"]

#: Seconds every benchmark waits before it starts. After a call, OpenBLAS's threads spin for up
#: to 0.1 s (2^28 cycles: OPENBLAS_THREAD_TIMEOUT) and OpenMP's (ours, Numba's, PyTorch's) for
#: milliseconds; on a 2-core machine they take a core from whatever runs next, so without the
#: pause a row's time depended on which library the row before it used.
SETTLE_SECONDS = 0.3


def pytest_configure(config):
    fastnn.set_num_threads(THREADS)


def pytest_collection_modifyitems(config, items):
    """Run the rows of each group back to back.

    pytest orders the tests by the ``implementation`` fixture first, so every ``c`` row ran
    before every ``numpy`` row, tens of seconds apart; a slow spell of the shared machine then
    hit one backend's rows and not the reference's (``linear_backward`` at 1024 rows measured
    0.58x to 1.16x in three runs of one build). Next to each other, a row and its reference
    meet the same machine.
    """
    def function_of(item):
        return item.fspath.strpath, getattr(item, "originalname", item.name)

    first_seen = {}
    for index, item in enumerate(items):
        first_seen.setdefault(function_of(item), index)

    def group_key(item):
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        return (first_seen[function_of(item)],
                [(name, repr(value)) for name, value in sorted(params.items())
                 if name != "implementation"])
    items.sort(key=group_key)  # stable: within a group the implementations keep their order


@pytest.fixture(autouse=True)
def settle(request):
    if not request.config.getoption("benchmark_disable", False):
        time.sleep(SETTLE_SECONDS)


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request):
    """A fastnn backend name (made current for the test) or "torch"."""
    if request.param == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(THREADS)
        yield "torch"
        return
    with fastnn.use_backend(request.param):
        yield request.param


def speedup_rows(benchmarks):
    """(group, implementation, median seconds, speedup over numpy, extra) per benchmark; the
    speedup is None in a group without a numpy row (e.g. fastnn against PyTorch)."""
    by_group = defaultdict(dict)
    for bench in benchmarks:
        by_group[bench.group][bench.extra_info.get("implementation", bench.name)] = bench
    for group in sorted(by_group, key=str):
        rows = by_group[group]
        reference = rows.get("numpy")
        for name, bench in sorted(rows.items(), key=lambda item: item[1].stats.median):
            median = bench.stats.median
            speedup = reference.stats.median / median if reference and median else None
            yield group, name, median, speedup, bench.extra_info


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    write = terminalreporter.write_line
    write("")
    write(f"speedup over the numpy backend, same run, {THREADS} threads (median times)")
    for group, name, median, speedup, extra in speedup_rows(session.benchmarks):
        rate = ", ".join(f"{value:.1f} {unit}" for unit, value in extra.items()
                         if unit in ("GFLOP/s", "GB/s", "speedup vs scikit-learn"))
        ratio = f"x{speedup:6.2f}" if speedup is not None else "(no numpy row)"
        write(f"  {group:<44} {name:<6} {median * 1e3:10.3f} ms  {ratio}  {rate}")
