"""fastnn.cache: where compiled kernels are kept, how the folder is keyed and cleared, and the
warning on first use when backend "c" did not build. (Whole installs: tests/test_install.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import pytest

import fastnn
from fastnn import backends as registry
from fastnn import cache

PACKAGE = Path(fastnn.__file__).resolve().parent


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("FASTNN_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    return monkeypatch


def test_default_is_the_platform_user_cache_folder(no_env, tmp_path):
    no_env.setenv("XDG_CACHE_HOME", str(tmp_path))  # platformdirs' rule on Linux
    if sys.platform.startswith("linux"):
        assert cache.cache_dir() == tmp_path / "fastnn"
    from platformdirs import user_cache_dir
    assert cache.cache_dir() == Path(user_cache_dir("fastnn", appauthor=False))
    no_env.setenv("FASTNN_CACHE_DIR", "  ")  # empty counts as unset
    assert cache.cache_dir() == Path(user_cache_dir("fastnn", appauthor=False))


def test_environment_variable_overrides_and_expands_home(no_env, tmp_path):
    no_env.setenv("FASTNN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"
    no_env.setenv("HOME", str(tmp_path))
    no_env.setenv("FASTNN_CACHE_DIR", "~/c")
    assert cache.cache_dir() == tmp_path / "c"


@pytest.mark.parametrize("value, expected", [("relative/dir", "absolute path"),
                                             ("FILE", "not a folder")])
def test_bad_environment_variable_is_a_clear_error(no_env, tmp_path, value, expected):
    if value == "FILE":
        value = str(tmp_path / "a-file")
        Path(value).write_text("x")
    no_env.setenv("FASTNN_CACHE_DIR", value)
    for function in (cache.cache_dir, cache.numba_cache_dir, cache.clear):
        with pytest.raises(ValueError, match=f"FASTNN_CACHE_DIR: .*{expected}") as error:
            function()
        assert repr(value) in str(error.value)


def test_numba_folder_is_keyed_by_version_sources_cpu_numba_and_python(no_env, tmp_path):
    no_env.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    folder = cache.numba_cache_dir()
    assert folder.parent == tmp_path / "numba"
    python = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    for part in (fastnn.__version__, python, f"numba{numba.__version__}"):
        assert part in folder.name
    # Another source digest or another CPU: another folder.
    no_env.setattr(cache, "_kernel_sources_digest", lambda: b"edited")
    edited = cache.numba_cache_dir()
    no_env.setattr(cache, "_cpu_identity", lambda: ("othercpu", "+avx2,-avx512f"))
    other_cpu = cache.numba_cache_dir()
    assert len({folder, edited, other_cpu}) == 3
    assert "othercpu" in other_cpu.name


def test_a_users_numba_cache_dir_is_kept(no_env, tmp_path):
    no_env.setattr(numba.config, "CACHE_DIR", str(tmp_path / "numba-cache"))
    assert cache.numba_cache_dir().parent == tmp_path / "numba-cache" / "fastnn"


def test_every_cached_kernel_of_fastnn_is_cached_in_the_keyed_folder():
    """Every ``cache=True`` jitted function in any fastnn module caches under numba_cache_dir,
    never beside its source; and Numba's own setting is left as it was for other code."""
    from numba.core.dispatcher import Dispatcher

    fastnn.backends.load_backend("numba")
    cached = {f"{module.__name__}.{name}": Path(value._cache.cache_path)
              for module in list(sys.modules.values())
              if getattr(module, "__name__", "").startswith("fastnn.")
              for name, value in list(vars(module).items())
              if isinstance(value, Dispatcher) and hasattr(value._cache, "cache_path")}
    assert len(cached) > 10, cached  # the scan found the kernels
    elsewhere = {name: path for name, path in cached.items()
                 if path.parent != cache.numba_cache_dir()}
    assert not elsewhere, elsewhere
    assert numba.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")


def test_clear_deletes_fastnns_caches_only_and_counts_bytes(no_env, tmp_path):
    no_env.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    assert cache.clear() == 0  # nothing there yet
    kernels = tmp_path / "numba" / "key" / "sub"
    kernels.mkdir(parents=True)
    (kernels / "a.nbi").write_bytes(b"x" * 100)
    (kernels / "a.1.nbc").write_bytes(b"y" * 23)
    (tmp_path / "someone-elses.txt").write_text("keep")
    assert cache.clear() == 123
    assert not (tmp_path / "numba").exists()
    assert (tmp_path / "someone-elses.txt").read_text() == "keep"


def test_unwritable_cache_folder_warns_and_kernels_still_run(tmp_path):
    """A cache folder that cannot be made: kernels compile, run, and nothing is written into
    the package; the warning names FASTNN_CACHE_DIR. (Root ignores permission bits, so the
    folder is made impossible by a file in its path.)"""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = ("import numpy as np, fastnn\n"
            "with fastnn.use_backend('numba'):\n"
            "    print(float(fastnn.ops.softmax(np.ones((2, 3), np.float32)).sum()))\n")
    env = {**os.environ, "FASTNN_CACHE_DIR": str(blocker / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2.0"
    assert "cannot write the cache folder" in result.stderr
    assert "FASTNN_CACHE_DIR" in result.stderr
    written = [p for p in PACKAGE.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert not written, written


def test_first_use_warns_once_when_c_did_not_build(monkeypatch):
    reason = "the C extension failed to build: CompileError: no compiler"
    monkeypatch.delenv("FASTNN_BACKEND", raising=False)
    monkeypatch.delitem(registry._loaded, "c", raising=False)
    monkeypatch.setitem(registry._failures, "c", reason)
    monkeypatch.setattr(registry, "_default_name", None)
    with pytest.warns(registry.CBackendUnavailableWarning, match="failed to build") as record:
        name = registry.get_backend_name()
        registry.get_backend_name()
    assert name != "c"
    assert len(record) == 1
    assert f"FASTNN_BACKEND={name}" in str(record[0].message)


def test_a_chosen_backend_silences_the_warning(monkeypatch):
    monkeypatch.setenv("FASTNN_BACKEND", "numpy")
    monkeypatch.delitem(registry._loaded, "c", raising=False)
    monkeypatch.setitem(registry._failures, "c", "the C extension failed to build")
    monkeypatch.setattr(registry, "_default_name", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.get_backend_name() == "numpy"
