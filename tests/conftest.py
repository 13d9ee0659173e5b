"""Shared fixtures: every backend that loads here, and tolerance-aware comparisons."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastnn
from fastnn import backends as registry
from fastnn import environment

#: The backends under test: every one that loads here, or those named in FASTNN_TEST_BACKENDS
#: (comma-separated; kernels/vector_paths.sh tests its builds of backend "c" alone).
#: A misspelt name is an error (fastnn.environment), not a silently empty list.
_ASKED = environment.backend_list("FASTNN_TEST_BACKENDS")
BACKENDS = [name for name in fastnn.available_backends() if _ASKED is None or name in _ASKED]
DTYPES = [np.float32, np.float64]

#: Per-dtype tolerances against the float64 oracle: (rtol, atol per unit of scale).
TOLERANCES = {np.dtype(np.float32): (2e-4, 2e-5), np.dtype(np.float64): (1e-9, 1e-11)}


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run the test body with each available backend current."""
    with fastnn.use_backend(request.param):
        yield request.param


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(autouse=True)
def _keep_default_backend():
    """Tests that call set_backend must not leak their choice into later tests."""
    saved = registry._default_name
    yield
    registry._default_name = saved


def oracle(function, *args, **kwargs):
    """Run an ops function on float64 copies of the float arguments with the NumPy backend."""
    def widen(value):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return value.astype(np.float64)
        return value
    with fastnn.use_backend("numpy"):
        return function(*map(widen, args), **{k: widen(v) for k, v in kwargs.items()})


def assert_close(got, expected, dtype, scale=1.0):
    """Compare a backend result with the float64 oracle at the dtype's tolerance.

    ``scale`` widens the absolute tolerance for results that sum many terms
    (e.g. sqrt(K) * max|operand|**2 for a GEMM of inner size K).
    """
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"result dtype {got.dtype}, expected {dtype}"
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol, atol=atol * scale)



# Hypothesis: a quick profile for the default test command, the full one on demand
# (FASTNN_HYPOTHESIS_PROFILE=full runs 200 examples per kernel per backend).
for _name, _examples in (("default", 25), ("full", 200)):
    settings.register_profile(_name, max_examples=_examples, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FASTNN_HYPOTHESIS_PROFILE", "default"))


def at_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of x whose data starts `offset` bytes past a 64-byte boundary (a
    cache line): where the kernels that read an operand in place meet it."""
    buffer = np.empty(x.nbytes + 128, np.uint8)
    start = (-buffer.ctypes.data) % 64 + offset
    placed = buffer[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    placed[...] = x
    return placed


#: Most workers of ``-n auto`` (pytest-xdist, the README's test command). The suite's longest
#: file (test_install.py: ~110 s with a warm Numba cache, of ~490 s of tests in all; sixty-first
#: session, 2 workers) bounds its time, so more than about five workers cannot shorten it, and
#: each worker costs its own memory (one reached 2.8 GB) and its own compiles of the Numba
#: kernels its files use.
MAX_AUTO_WORKERS = 8


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` / ``-n logical``: one worker per CPU this process may use
    (:func:`fastnn.environment.usable_cpus`, its affinity mask), at most
    :data:`MAX_AUTO_WORKERS`. ``PYTEST_XDIST_AUTO_NUM_WORKERS``, when set, is left to
    pytest-xdist (None: its own rule), as an explicit ``-n N`` always is."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return max(1, min(environment.usable_cpus(), MAX_AUTO_WORKERS))
