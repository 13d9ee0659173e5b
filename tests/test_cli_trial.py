"""What a new user's trial of the command line found after issue 13 (each a kind, not a case):
thread counts in options and in the variables our dependencies read, warnings and failures
that take more than their one line, and the first lines that a failure left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

import fastnn
from fastnn import cache, cli, environment, progress

from conftest import BACKENDS
from test_cli import PipeStream, assert_one_line_error, run_fastnn

CPUS = environment.usable_cpus()


# -- thread counts: --threads and NUMBA_NUM_THREADS / OMP_NUM_THREADS ---------------------------

def test_train_threads_is_bounded_by_the_cpus_with_the_reason(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--threads", "1000"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "argument --threads", f"from 1 to {CPUS}", "CPUs", "'1000'")
    assert "wait for each other" in err  # the reason for the bound


def test_train_threads_accepts_every_cpu(capsys):
    saved = fastnn.get_num_threads()
    try:
        assert cli.main(["train", "--backend", "numpy", "--threads", str(CPUS), "--epochs", "1",
                         "--verbose", "0"]) == 0
    finally:
        for name, count in saved.items():
            fastnn.backends.load_backend(name).set_num_threads(count)
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", str(CPUS + 1)])
def test_a_bad_numba_num_threads_is_named_not_blamed_on_the_backend(value, monkeypatch, capsys):
    """Numba ignored 'abc' (with a traceback) and failed at 0 with a message that does not
    name the variable, which `--backend numba` turned into 'invalid backend value'."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--backend", "numba", "--epochs", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "environment variable NUMBA_NUM_THREADS", "expected an integer "
                          f"from 1 to {CPUS}", f"got {value!r}")
    assert "--backend" not in err


@pytest.mark.skipif("numba" not in BACKENDS, reason="the numba backend does not load here")
def test_the_library_names_a_bad_numba_num_threads_when_the_backend_loads():
    code = ("import fastnn\n"
            "try:\n"
            "    fastnn.set_backend('numba')\n"
            "except ValueError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "NUMBA_NUM_THREADS": "0"}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("environment variable NUMBA_NUM_THREADS: expected an "
                                    "integer from 1 to"), result.stdout
    assert result.stdout.rstrip().endswith("got '0'") and result.stderr == ""


def test_good_thread_variables_are_accepted(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", str(CPUS))
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "workqueue")
    assert environment.numba_num_threads() == CPUS
    assert environment.omp_num_threads() == [2, 1]
    assert environment.numba_threading_layer() == "workqueue"
    environment.check()


def test_a_download_interrupted_by_the_user_leaves_no_folder(monkeypatch, tmp_path):
    from fastnn.datasets import download

    def interrupted(url, remote, path):
        raise KeyboardInterrupt

    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(download, "_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fastnn.datasets.load_mnist()
    assert os.listdir(tmp_path) == []


# -- warnings: one line under the command ------------------------------------------------

def test_the_unwritable_cache_warning_is_one_line(tmp_path, monkeypatch, capsys):
    """Python shows a warning as the file, line and category, then the source line: under
    a command that is one line, `fastnn <command>: warning: <message>`."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")

    def info(_args):
        folder = cache.writable_folder(blocker / "cache")  # Not a directory
        assert cache.is_temporary(folder / "kernels") and not cache.is_temporary(tmp_path)
        return 0

    monkeypatch.setattr(cli, "info", info)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["info"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"fastnn info: warning: cannot write the cache folder "
                          f"{blocker / 'cache'} (Not a directory): compiled Numba kernels are "
                          "kept for this process only; set FASTNN_CACHE_DIR"), err


def test_other_warnings_are_one_line_with_their_category(monkeypatch, capsys):
    def info(_args):
        warnings.warn("first line\nsecond line", DeprecationWarning)
        return 0

    monkeypatch.setattr(cli, "info", info)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["info"]) == 0
    assert capsys.readouterr().err == ("fastnn info: warning: DeprecationWarning: first line "
                                       "second line\n")


@pytest.mark.skipif("numba" not in BACKENDS, reason="the numba backend does not load here")
def test_the_compile_notice_promises_no_cache_it_cannot_keep(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = ("import numpy as np, fastnn\n"
            "with fastnn.use_backend('numba'):\n"
            "    fastnn.ops.softmax(np.ones((2, 3), np.float32))\n")
    env = {**os.environ, "FASTNN_CACHE_DIR": str(blocker / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "compiling" in line]
    assert len(notices) == 1 and "kept for this process only" in notices[0], result.stderr
    assert "later runs" not in result.stderr


# -- a failure shows the error alone ----------------------------------------------------------

@pytest.mark.skipif("c" not in BACKENDS, reason="the C backend does not load here")
def test_a_scratch_limit_failure_is_the_error_alone_naming_the_limit():
    """The failing first step printed an epoch line of zeros ('loss: 0.0000 ... stopped
    after 0 of 1438 samples') before the error."""
    result = run_fastnn("train", "--backend", "c", "--epochs", "2",
                        env={"FASTNN_SCRATCH_LIMIT": "10"})
    assert result.returncode == 1, result.stderr
    assert "Epoch" not in result.stdout and "0.0000" not in result.stdout, result.stdout
    assert_one_line_error(result.stderr, "fastnn train: error: out of memory",
                          "FASTNN_SCRATCH_LIMIT=10")


@pytest.mark.parametrize("verbose", [1, 2])
def test_an_epoch_that_fails_before_its_first_step_prints_no_line(verbose):
    stream = PipeStream()
    bar = progress.EpochBar(0, 5, 100, lambda: {"loss": 0.0}, verbose=verbose, stream=stream)
    try:
        raise MemoryError("no scratch")
    except MemoryError:
        bar.close({"loss": 0.0})
    assert stream.text == ""
    bar = progress.EpochBar(0, 5, 100, lambda: {"loss": 0.0}, verbose=verbose, stream=stream)
    bar.close({"loss": 0.5})  # an epoch that ends normally prints its line, even an empty one
    assert stream.text.startswith("Epoch 1/5: loss: 0.5000")


# -- the environment checks run before the options are read --------------------------------

def test_help_and_version_work_with_a_bad_variable(monkeypatch, capsys):
    monkeypatch.setenv("FASTNN_BACKEND", "gpu")
    for argv in (["--version"], ["train", "--help"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 0
    assert "fastnn" in capsys.readouterr().out


def test_relative_folder_variables_are_refused_alike(monkeypatch):
    for variable in ("FASTNN_CACHE_DIR", "FASTNN_DATA"):
        monkeypatch.setenv(variable, "some/where")
        with pytest.raises(ValueError, match=f"environment variable {variable}: expected an "
                                             "absolute path to a folder .* got 'some/where'"):
            environment.folder(variable)
        monkeypatch.delenv(variable)
