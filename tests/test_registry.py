"""The backend registry: default choice, env var, set/use/restore, errors, threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import fastnn
from fastnn import backends as registry
from fastnn import environment


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=120)


def test_numpy_is_always_available_and_the_list_is_fastest_first():
    names = fastnn.available_backends()
    assert "numpy" in names
    order = list(registry.BACKEND_MODULES)
    assert names == sorted(names, key=order.index)


def test_default_is_the_fastest_available_backend():
    result = run_python("import fastnn; print(fastnn.get_backend_name())",
                        FASTNN_BACKEND="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == fastnn.available_backends()[0]


def test_environment_variable_picks_the_default():
    result = run_python("import fastnn; print(fastnn.get_backend_name())",
                        FASTNN_BACKEND="numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def test_unknown_backend_in_environment_is_a_clear_error():
    result = run_python("import fastnn; fastnn.get_backend()", FASTNN_BACKEND="cuda")
    assert result.returncode != 0
    assert "FASTNN_BACKEND" in result.stderr and "'cuda'" in result.stderr


@pytest.mark.skipif("c" not in fastnn.available_backends(), reason="no C backend here")
def test_a_malformed_omp_num_threads_is_a_clear_error_when_the_c_backend_loads():
    """libgomp alone would print a message and carry on with its default thread count."""
    result = run_python("import fastnn; fastnn.set_backend('c')", OMP_NUM_THREADS="two")
    assert result.returncode != 0
    assert "ValueError: environment variable OMP_NUM_THREADS" in result.stderr
    assert "'two'" in result.stderr and "libgomp" not in result.stderr
    good = run_python("import fastnn; fastnn.set_backend('c')", OMP_NUM_THREADS="1,1")
    assert good.returncode == 0, good.stderr


def test_set_backend_changes_the_default():
    fastnn.set_backend("numpy")
    assert fastnn.get_backend_name() == "numpy"
    assert fastnn.get_backend().NAME == "numpy"


@pytest.mark.parametrize("name", fastnn.available_backends())
def test_use_backend_restores_on_exit_and_on_exception(name):
    fastnn.set_backend("numpy")
    with fastnn.use_backend(name) as module:
        assert fastnn.get_backend_name() == name and module.NAME == name
    assert fastnn.get_backend_name() == "numpy"
    with pytest.raises(RuntimeError):
        with fastnn.use_backend(name):
            raise RuntimeError("boom")
    assert fastnn.get_backend_name() == "numpy"


def test_use_backend_nests():
    fastnn.set_backend("numpy")
    other = fastnn.available_backends()[0]
    with fastnn.use_backend(other):
        with fastnn.use_backend("numpy"):
            assert fastnn.get_backend_name() == "numpy"
        assert fastnn.get_backend_name() == other


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match=r"backend: unknown backend 'tpu'.*numpy"):
        fastnn.set_backend("tpu")
    with pytest.raises(ValueError, match="numba"):
        with fastnn.use_backend("tpu"):
            pass


def test_unavailable_backend_carries_its_reason(monkeypatch):
    monkeypatch.setitem(registry.BACKEND_MODULES, "broken", "fastnn.backends.no_such_module")
    monkeypatch.delitem(registry._failures, "broken", raising=False)
    with pytest.raises(fastnn.BackendUnavailableError) as info:
        fastnn.set_backend("broken")
    assert info.value.reason.startswith("ModuleNotFoundError")
    assert "no_such_module" in str(info.value)
    assert "broken" not in fastnn.available_backends()
    assert "no_such_module" in fastnn.backend_status()["broken"]


def test_use_backend_in_one_thread_does_not_change_another():
    fastnn.set_backend("numpy")
    seen = {}
    inside = threading.Event()
    release = threading.Event()
    other = fastnn.available_backends()[0]

    def worker():
        with fastnn.use_backend(other):
            seen["worker"] = fastnn.get_backend_name()
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(10)
    seen["main"] = fastnn.get_backend_name()
    release.set()
    thread.join()
    assert seen == {"worker": other, "main": "numpy"}


def test_set_num_threads_validates_and_applies():
    before = fastnn.get_num_threads()
    for bad in (0, -1, 2.0, True, "2", 10**10, 1025):
        with pytest.raises(ValueError, match="n: expected an int number of threads from 1 "
                                             "to 1024"):
            fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == before  # a refused count changes nothing
    fastnn.set_num_threads(1)
    try:
        counts = fastnn.get_num_threads()
        assert set(counts) >= {"numpy"} and all(n == 1 for n in counts.values()), counts
    finally:
        fastnn.set_num_threads(os.cpu_count() or 1)


def test_get_num_threads_in_a_fresh_process_holds_the_current_backend():
    """Not ``{}`` before a first kernel call loads a backend (a new user's trial)."""
    code = ("import fastnn\n"
            "fastnn.set_num_threads(1)\n"
            "counts = fastnn.get_num_threads()\n"
            "print(fastnn.get_backend_name(), counts)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    name, counts = result.stdout.split(" ", 1)
    assert counts.strip() == repr({name: 1})


def test_info_command_lists_every_backend():
    result = subprocess.run([sys.executable, "-m", "fastnn", "info"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, reason in fastnn.backend_status().items():
        expected = "available" if reason is None else f"unavailable: {reason}"
        assert any(line.split() == [name] + expected.split() for line in lines), lines
    assert "float32" in result.stdout and "threads:" in result.stdout


def test_backends_required_here_are_available():
    """CI names the backends that must have built (FASTNN_REQUIRE_BACKENDS=c,numba,numpy),
    so that a failed C build or Numba import cannot pass silently as 'unavailable'."""
    required = environment.backend_list("FASTNN_REQUIRE_BACKENDS") or ["numpy"]
    status = fastnn.backend_status()
    missing = {name: status.get(name, "unknown backend") for name in required
               if status.get(name, "unknown") is not None}
    assert not missing, f"required backends unavailable: {missing}"


def test_the_default_backend_is_the_first_that_loads_and_the_rest_stay_unimported():
    """The default is chosen fastest first and the backends after it are not imported: with
    "c" available, a first kernel call does not import Numba (about 0.35 s and a thread pool)."""
    code = ("import sys, numpy as np, fastnn\n"
            "from fastnn import ops\n"
            "ops.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))\n"
            "print(fastnn.get_backend_name(), 'numba' in sys.modules, "
            "','.join(fastnn.get_num_threads()))\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_BACKEND"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    name, numba_imported, loaded = result.stdout.split()
    status = fastnn.backend_status()
    order = list(registry.BACKEND_MODULES)
    assert name == next(n for n in order if status[n] is None)
    assert loaded.split(",") == [name]
    assert numba_imported == str(order.index(name) >= order.index("numba"))
