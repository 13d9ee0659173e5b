"""The command line and what users read: one-line errors for every bad option value and
environment variable, --version, --threads, progress output on terminals and pipes, the
numba compile notice, fastnn bench's files and spread, model-file errors, help texts."""

from __future__ import annotations

import argparse
import json
import os
import pydoc
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import arguments, bench, cli, environment, progress, train
from fastnn import backends as registry

from conftest import BACKENDS

ROOT = Path(__file__).resolve().parent.parent


def run_fastnn(*argv: str, env=None, shell_suffix: str = "", cwd=None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m fastnn argv...`` in a subprocess (optionally piped, e.g. '| cat')."""
    environment_ = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep
                    + os.environ.get("PYTHONPATH", ""), **(env or {})}
    command = [sys.executable, "-m", "fastnn", *argv]
    if shell_suffix:
        return subprocess.run(" ".join(shlex.quote(part) for part in command) + shell_suffix,
                              shell=True, capture_output=True, text=True, env=environment_,
                              cwd=cwd, timeout=timeout)
    return subprocess.run(command, capture_output=True, text=True, env=environment_, cwd=cwd,
                          timeout=timeout)


def assert_one_line_error(err: str, *names: str) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0], err
    for name in names:
        assert name in lines[0], err


# -- every option of every subcommand, with a bad value ------------------------------------

#: For each subcommand, each option and bad values of it (every option must be here: a
#: test below checks the parser against this table).
BAD_VALUES = {
    "train": {
        "--backend": ["cuda", ""],
        "--epochs": ["0", "-3", "x", "1.5"],
        "--batch-size": ["0", "-1", "many"],
        "--hidden": ["0", "32,x", "-4", ",,", "128,", "1000000000", "99999999999999999999"],
        "--optimizer": ["rmsprop"],
        "--lr": ["-1", "0", "nan", "inf", "fast"],
        "--seed": ["-1", "x"],
        "--dtype": ["float16", "int8"],
        "--threads": ["0", "-2", "x", str(environment.usable_cpus() + 1), "1000"],
        "--verbose": ["3", "-1", "loud"],
        "--quiet": ["=yes"],
        "--dataset": ["/no/such/file.csv", "imagenet"],
        "--target": ["zebra"],
        "--plot": ["/no/such/folder/chart.png", "chart.notaformat", "."],
        "--matmul-precision": ["float16", "bf16"],
    },
    "bench": {
        "--backends": ["cuda", "numpy,gpu", ",", "c,c", "c,,numpy"],
        "--threads": ["0", "1,x", "", "1,,2", str(arguments.MAX_THREADS + 1), "1000",
                      f"1,{environment.usable_cpus() + 1}"],
        "--quick": ["=yes"],
        "--json": ["/no/such/folder/out.json", ".", ""],
        "--plot": ["/no/such/folder/chart.png", "chart.notaformat", "."],
        "--sweep": ["=yes"],
        "--sweep-backend": ["cuda"],
        "--sweep-threads": ["0", "x", "1000"],
        "--budget": ["-1", "soon"],
        "--dtypes": ["float16", "float32,float32"],
        "--transposes": ["nx", ""],
        "--ms": ["0", "1,x"],
        "--ks": ["-4", ""],
        "--ns": ["16,16", ","],
    },
    "info": {},
    "cache": {},
}

CASES = [(command, option, value) for command, options in BAD_VALUES.items()
         for option, values in options.items() for value in values]


def _options(parser: argparse.ArgumentParser):
    return {option for action in parser._actions for option in action.option_strings
            if option not in ("-h", "--help", "--version")}


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_the_table_of_bad_values_covers_every_option_of_every_command():
    commands = _subparsers(cli.build_parser())
    assert set(commands) == set(BAD_VALUES)
    for name, parser in commands.items():
        assert _options(parser) == set(BAD_VALUES[name]), name
        for action_parser in _subparsers(parser).values():  # fastnn cache dir|clear
            assert _options(action_parser) == set(), name


@pytest.mark.parametrize("command, option, value", CASES)
def test_a_bad_option_value_is_one_line_naming_the_option_with_exit_2(command, option, value,
                                                                       capsys, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [command, option + value] if value.startswith("=") else [command, option, value]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    shown = capsys.readouterr()
    assert shown.out == ""
    assert_one_line_error(shown.err, f"fastnn {command}", option)
    if not value.startswith("=") and value.strip(",") and value != ".":
        assert repr(value) in shown.err or value in shown.err  # what it got


@pytest.mark.parametrize("options, option, mode", [
    (["--budget", "5"], "--budget", "only with --sweep"),
    (["--ms", "8"], "--ms", "only with --sweep"),
    (["--quick", "--dtypes", "float64"], "--dtypes", "only with --sweep"),
    (["--sweep-backend", "numpy"], "--sweep-backend", "only with --sweep"),
    (["--sweep", "--threads", "1"], "--threads", "not with --sweep"),
    (["--sweep", "--json", "out.json"], "--json", "not with --sweep"),
])
def test_an_option_of_the_other_bench_mode_is_refused_naming_it(options, option, mode, capsys,
                                                               tmp_path, monkeypatch):
    """Not ignored: ``fastnn bench --ms 8`` ran the kernel table, as if --ms were not there."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["bench", *options])
    assert stop.value.code == 2
    shown = capsys.readouterr()
    assert_one_line_error(shown.err, "fastnn bench", option)
    assert mode in shown.err and not os.listdir(tmp_path)


@pytest.mark.parametrize("argv", [[], ["bogus"], ["cache"], ["cache", "purge"],
                                  ["train", "--no-such-option"], ["train", "--epochs"]])
def test_a_missing_or_unknown_command_or_option_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("variable, value", [
    ("FASTNN_BACKEND", "gpu"), ("FASTNN_BACKEND", "numpy,c"),
    ("FASTNN_SCRATCH_LIMIT", "lots"), ("FASTNN_SCRATCH_LIMIT", "-5"),
    ("FASTNN_NUM_THREADS", "zero"), ("FASTNN_NUM_THREADS", "0"),
    ("FASTNN_NUM_THREADS", "99999"),
    ("FASTNN_MPI_TIMEOUT", "soon"), ("FASTNN_MPI_TIMEOUT", "0"), ("FASTNN_MPI_TIMEOUT", "inf"),
    ("FASTNN_CACHE_DIR", "relative/cache"), ("FASTNN_DATA", "/dev/null"),
    ("FASTNN_ISA", "sse9"), ("FASTNN_DATA", "relative/data"),
    ("NUMBA_NUM_THREADS", "abc"), ("NUMBA_NUM_THREADS", "0"), ("NUMBA_NUM_THREADS", "99999"),
    ("OMP_NUM_THREADS", "x"), ("OMP_NUM_THREADS", "0"), ("OMP_NUM_THREADS", "2,,1"),
    ("NUMBA_THREADING_LAYER", "fast"),
])
@pytest.mark.parametrize("command", [["info"], ["train", "--epochs", "1"], ["cache", "dir"]])
def test_a_bad_environment_variable_is_one_line_naming_it_with_exit_2(variable, value,
                                                                      command, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stop:
        cli.main(command)
    assert stop.value.code == 2
    shown = capsys.readouterr()
    assert_one_line_error(shown.err, variable, repr(value), "expected")


def test_fastnn_backend_gpu_from_the_shell_is_one_line_with_exit_2():
    result = run_fastnn("info", env={"FASTNN_BACKEND": "gpu"})
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "FASTNN_BACKEND", "'gpu'", "c, numba, numpy")


def test_the_library_raises_value_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("FASTNN_BACKEND", "gpu")
    monkeypatch.setattr(registry, "_default_name", None)
    with pytest.raises(ValueError, match=r"FASTNN_BACKEND: expected one of c, numba, numpy.*"
                                         r"got 'gpu'"):
        fastnn.get_backend_name()


def test_environment_readers_accept_good_values_and_name_bad_ones(monkeypatch):
    for variable in ("FASTNN_BACKEND", "FASTNN_SCRATCH_LIMIT", "FASTNN_TEST_BACKENDS"):
        monkeypatch.delenv(variable, raising=False)
    assert environment.backend() is None and environment.scratch_limit() is None
    monkeypatch.setenv("FASTNN_BACKEND", " numpy ")
    monkeypatch.setenv("FASTNN_SCRATCH_LIMIT", "65536")
    monkeypatch.setenv("FASTNN_TEST_BACKENDS", "numpy, c")
    assert environment.backend() == "numpy"
    assert environment.scratch_limit() == 65536
    assert environment.backend_list("FASTNN_TEST_BACKENDS") == ["numpy", "c"]
    monkeypatch.setenv("FASTNN_TEST_BACKENDS", "numpy,cuda")
    with pytest.raises(ValueError, match="FASTNN_TEST_BACKENDS: expected comma-separated"):
        environment.backend_list("FASTNN_TEST_BACKENDS")
    monkeypatch.setenv("FASTNN_BENCH_THREADS", "0")
    with pytest.raises(ValueError, match="FASTNN_BENCH_THREADS: expected an integer >= 1"):
        environment.positive_int("FASTNN_BENCH_THREADS")
    monkeypatch.setenv("FASTNN_MPI_TIMEOUT", " 2.5 ")
    assert environment.mpi_timeout() == 2.5
    monkeypatch.setenv("FASTNN_MPI_TIMEOUT", "nan")
    with pytest.raises(ValueError, match="FASTNN_MPI_TIMEOUT: expected a finite number"):
        environment.mpi_timeout()


def test_a_user_error_raised_while_a_command_runs_is_one_line(capsys, monkeypatch):
    def failing(args):
        raise fastnn.ModelFileError("model.npz: not a fastnn model file\n(second line)")

    monkeypatch.setattr(cli, "info", failing)
    with pytest.raises(SystemExit) as stop:
        cli.main(["info"])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "fastnn info: error: model.npz",
                          "(second line)")


def test_under_mpiexec_rank_0_alone_writes_a_command_line_error(capsys, monkeypatch):
    """Every rank reads the same command line: one line in all, not one a rank."""
    for rank, silent in (("1", True), ("0", False)):
        monkeypatch.setenv("PMI_RANK", rank)
        for argv, variable in ((["train", "--lr", "-1"], None), (["info"], "FASTNN_BACKEND")):
            if variable:
                monkeypatch.setenv(variable, "gpu")
            with pytest.raises(SystemExit) as stop:
                cli.main(argv)
            monkeypatch.delenv("FASTNN_BACKEND", raising=False)
            assert stop.value.code == 2
            err = capsys.readouterr().err
            assert (err == "") if silent else ("error:" in err), (rank, argv, err)


def test_bfloat16_matmuls_with_float64_data_name_the_option(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--matmul-precision", "bfloat16", "--dtype", "float64"])
    assert stop.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "fastnn train: error: argument "
                          "--matmul-precision: bfloat16 needs --dtype float32, got --dtype "
                          "float64")


def test_a_diverging_training_is_one_line_with_exit_1(capsys):
    with pytest.raises(SystemExit) as stop, warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warnings either
        cli.main(["train", "--backend", "numpy", "--lr", "1e30", "--epochs", "2",
                  "--verbose", "0"])
    assert stop.value.code == 1
    assert_one_line_error(capsys.readouterr().err, "fastnn train: error: loss is nan",
                          "Lower the learning rate")


def test_a_bug_keeps_its_traceback(monkeypatch):
    def failing(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "info", failing)
    with pytest.raises(KeyError):
        cli.main(["info"])


# -- --version, --threads, info, cache ----------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastnn {fastnn.__version__}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_threads_sets_the_thread_count(backend, capsys):
    fastnn.set_backend(backend)  # loaded, so that its count can be put back
    saved, requested = fastnn.get_num_threads(), registry._requested_threads
    try:
        assert cli.main(["train", "--backend", backend, "--threads", "1", "--epochs", "1",
                         "--verbose", "0"]) == 0
        assert fastnn.get_num_threads()[backend] == 1
        header = capsys.readouterr().out.splitlines()[0]
        assert f"backend {backend}" in header and header.endswith(", 1 thread")
    finally:
        for name, count in saved.items():
            registry.load_backend(name).set_num_threads(count)
        registry._requested_threads = requested


def test_train_names_dataset_and_file_for_a_non_npz_or_object_npz(capsys, tmp_path):
    (tmp_path / "junk.npz").write_text("not an archive\n")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object), y=np.arange(1))
    for name, reason in [("junk.npz", "not an .npz archive"),
                         ("objects.npz", "holds object arrays")]:
        path = str(tmp_path / name)
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", "--dataset", path, "--epochs", "1"])
        assert stop.value.code == 2
        shown = capsys.readouterr()
        assert_one_line_error(shown.err, "fastnn train", "--dataset")
        assert f"argument --dataset: {path}: {reason}" in shown.err
        assert "pickle=" not in shown.err and "pickled (object) data" not in shown.err


def test_info_prints_the_cache_folder_and_cache_commands_use_it(capsys, monkeypatch,
                                                                tmp_path):
    folder = tmp_path / "fastnn-cache"
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(folder))
    assert cli.main(["info"]) == 0
    assert f"cache: {folder}" in capsys.readouterr().out
    assert cli.main(["cache", "dir"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    (folder / "numba").mkdir(parents=True)
    (folder / "numba" / "kernel.nbi").write_bytes(b"x" * 1500)
    with open(folder / "numba" / "kernel.nbc", "wb") as big:
        big.truncate(48_372_847)  # sparse: the size without writing it
    (folder / "other.bin").write_bytes(b"y")
    assert cli.main(["cache", "clear"]) == 0
    # cache.clear() returns the bytes freed, printed as bytes (it once said "files")
    assert (capsys.readouterr().out.strip()
            == f"removed 48.4 MB (48374347 bytes) from {folder}")
    # only fastnn's own cache folders go (fastnn.cache.PARTS): FASTNN_CACHE_DIR may name a
    # folder that holds the user's other files
    assert not (folder / "numba").exists() and (folder / "other.bin").read_bytes() == b"y"
    assert cli.main(["cache", "clear"]) == 0
    assert capsys.readouterr().out.strip() == f"removed 0 bytes from {folder}"


@pytest.mark.parametrize("count, text", [(1, "1 byte"), (999, "999 bytes"),
                                         (1000, "1.0 kB (1000 bytes)"),
                                         (999_960, "1.0 MB (999960 bytes)"),
                                         (2_500_000_000, "2.5 GB (2500000000 bytes)")])
def test_cache_clear_counts_bytes_for_people(count, text):
    assert cli._bytes(count) == text


# -- progress output ------------------------------------------------------------------------

EPOCH_LINE = re.compile(r"^Epoch (\d+)/3: loss: \d+\.\d{4} - accuracy: \d\.\d{4} - "
                        r"\d+(ms|\.\ds) \([\d.]+k? samples/s\)$")


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch, capsys):
    # stdout a pipe whose reader has gone (as in fastnn info | head -1): writes fail with EPIPE
    read_end, write_end = os.pipe()
    os.close(read_end)
    gone = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", gone)
    try:
        assert cli.main(["info"]) == 0
    finally:
        monkeypatch.undo()
        gone.close()
    assert capsys.readouterr().err == ""


def test_train_piped_prints_one_plain_line_per_epoch():
    result = run_fastnn("train", "--epochs", "3", "--backend", "numpy", shell_suffix=" | cat")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout and "\r" not in result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch")]
    assert [EPOCH_LINE.match(line).group(1) for line in epochs] == ["1", "2", "3"], epochs
    assert "test accuracy" in result.stdout


def test_fit_verbose_1_off_a_terminal_and_verbose_2_print_the_same_lines(capsys):
    x, y = fastnn.datasets.load_digits()
    for verbose in (1, 2):
        model = fastnn.Sequential([fastnn.Dense(16, "relu"), fastnn.Dense(10, "softmax")],
                                  seed=0)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=2, validation_split=0.25, verbose=verbose, seed=0)
        shown = capsys.readouterr()
        lines = shown.out.splitlines()
        assert shown.err == "" and "\r" not in shown.out and len(lines) == 2, shown
        for epoch, line in enumerate(lines, 1):
            assert line.startswith(f"Epoch {epoch}/2: loss: ")
            for metric in ("accuracy", "val_loss", "val_accuracy"):
                assert f" - {metric}: " in line, line


class PipeStream:
    """A text stream that is not a terminal (a pipe or a file, for progress.EpochBar), which
    keeps what is written to it in ``text``."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return False


def test_an_epoch_cut_short_says_how_far_it_got():
    stream = PipeStream()
    bar = progress.EpochBar(0, 5, 100, lambda: {"loss": 1.0}, verbose=1, stream=stream)
    bar.advance(40)
    try:
        raise FloatingPointError("diverged")
    except FloatingPointError:
        bar.close({"loss": float("nan")})
    assert stream.text.startswith("Epoch 1/5: loss: nan - ")
    assert stream.text.endswith("stopped after 40 of 100 samples\n")


def test_wrap_breaks_a_long_epoch_line_at_its_separators():
    line = ("Epoch 20/20: loss: 0.0060 - accuracy: 1.0000 - val_loss: 0.0273 - "
            "val_accuracy: 0.9916 - 12ms (251k samples/s)")
    wrapped = progress.wrap(line, 80).splitlines()
    assert all(len(part) <= 80 for part in wrapped) and len(wrapped) == 2
    assert " - ".join(part.strip() for part in wrapped) == line


FIT_SCRIPT = """
import fastnn
x, y = fastnn.datasets.load_digits()
model = fastnn.Sequential([fastnn.Dense(32, "relu"), fastnn.Dense(10, "softmax")], seed=0)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=2, validation_split=0.25, seed=0)
"""


def run_in_terminal(columns: int, rows: int, code: str) -> str:
    """What ``python -c code`` writes on a pseudo-terminal of columns x rows."""
    pty = pytest.importorskip("pty")  # a POSIX terminal
    import fcntl
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: size the terminal, then run the code
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.environ["FASTNN_BACKEND"] = "numpy"
            os.environ.pop("COLUMNS", None)
            os.environ.pop("LINES", None)
            os.execv(sys.executable, [sys.executable, "-c", code])
        finally:
            os._exit(127)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output.decode()


@pytest.mark.parametrize("columns, rows", [(80, 24), (0, 0)])
def test_on_a_terminal_every_metric_is_readable_and_no_blank_lines(columns, rows):
    shown = run_in_terminal(columns, rows, FIT_SCRIPT).replace("\r\n", "\n")
    lines = shown.split("\n")
    assert lines[-1] == "" and all(line.strip() for line in lines[:-1]), repr(shown)
    # What stays on the screen: each line's text after its last carriage return.
    screen = "\n".join(line.rsplit("\r", 1)[-1] for line in lines[:-1])
    for epoch in (1, 2):
        start = screen.index(f"Epoch {epoch}/2: loss: ")
        text = " ".join(screen[start:].split("\n    ")[:3])
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f"{metric}: " in text, screen
    assert all(len(line) <= 80 for line in screen.split("\n")), screen


# -- the numba compile notice -----------------------------------------------------------------

@pytest.mark.skipif("numba" not in BACKENDS, reason="the numba backend does not load here")
def test_numba_says_once_that_it_compiles_and_nothing_on_a_warm_cache(tmp_path):
    code = ("import numpy as np, fastnn\n"
            "with fastnn.use_backend('numba'):\n"
            "    fastnn.ops.softmax(np.ones((3, 4), np.float32))\n"
            "    fastnn.ops.log_softmax(np.ones((3, 4), np.float32))\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "FASTNN_CACHE_DIR": str(tmp_path)}
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr + warm.stderr
    notices = [line for line in cold.stderr.splitlines() if "compiling" in line]
    assert len(notices) == 1 and "once" in notices[0] and "cache" in notices[0], cold.stderr
    assert warm.stderr == ""
    # under mpiexec every rank compiles, and rank 0 alone says so (each rank said it)
    other = tmp_path / "rank-1"
    rank_1 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "NUMBA_CACHE_DIR": str(other),
                                 "FASTNN_CACHE_DIR": str(other), "PMI_RANK": "1"},
                            timeout=600)
    assert rank_1.returncode == 0 and rank_1.stderr == "", rank_1.stderr


# -- fastnn bench ---------------------------------------------------------------------------

def test_bench_writes_no_file_unless_asked_and_json_with_json(tmp_path):
    quick = ["bench", "--quick", "--backends", "numpy", "--threads", "1"]
    plain = run_fastnn(*quick, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert os.listdir(tmp_path) == [] and "IQR" in plain.stdout
    (tmp_path / "out").mkdir()
    asked = run_fastnn(*quick, "--json", "out/results.json", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["results.json"]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert rows and all(r["q1_s"] <= r["median_s"] <= r["q3_s"] for r in rows)
    assert all(r["spread"] == pytest.approx((r["q3_s"] - r["q1_s"]) / r["median_s"])
               for r in rows)


def fake_row(kernel, backend, threads, times):
    row = {"kernel": kernel, "shape": "8x8", "backend": backend, "threads": threads,
           **bench.summary(times), "GFLOP/s": 1.0, "GB/s": None}
    return row


def test_bench_marks_rows_whose_spread_says_the_machine_was_busy():
    steady, noisy = [1.0, 1.01, 0.99, 1.0, 1.02], [1.0, 0.6, 1.5, 0.9, 2.5]
    assert not bench.summary(steady)["busy"] and bench.summary(noisy)["busy"]
    assert bench.summary([1, 2, 3, 4, 5])["spread"] == pytest.approx(2 / 3)
    results = [fake_row("matmul", "numpy", 1, steady), fake_row("matmul", "c", 1, noisy)]
    bench._add_speedups(results)
    table = bench.format_table(results).splitlines()
    numpy_row = next(line for line in table if line.strip().startswith("numpy"))
    c_row = next(line for line in table if line.strip().startswith("c "))
    assert "!" not in numpy_row and re.search(r"\d+%!", c_row)
    assert "1 of 2 rows spread by more than 20%" in table[-1] and "busy" in table[-1]
    low, high = results[1]["speedup_range"]
    assert low < results[1]["speedup_vs_numpy"] < high


def test_bench_marks_rows_much_slower_with_more_threads():
    steady = [1.0, 1.01, 0.99, 1.0, 1.02]
    results = [fake_row("sgd_step", backend, threads, [t * factor for t in steady])
               for backend, threads, factor in (("numpy", 1, 1.0), ("numpy", 2, 1.1),
                                                ("c", 1, 0.5), ("c", 2, 30.0))]
    bench._add_speedups(results)
    bench._mark_stalls(results)
    assert [r["stalled"] for r in results] == [False, False, False, True]
    assert [r["busy"] for r in results] == [False, False, False, True]
    table = bench.format_table(results).splitlines()
    assert "1 of 4 rows" in table[-1] and "3x slower with more threads (1 rows)" in table[-1]


def test_bench_chart_is_written_with_error_bars(tmp_path):
    pytest.importorskip("matplotlib")
    results = [fake_row(kernel, backend, 1, times)
               for kernel in ("matmul", "softmax_cross_entropy", "adam_step")
               for backend, times in (("numpy", [2.0, 2.1, 1.9, 2.0, 2.0]),
                                      ("c", [1.0, 0.5, 3.0, 1.0, 9.0]))]
    bench._add_speedups(results)
    path = tmp_path / "chart.png"
    bench.plot_speedups(results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- model files ----------------------------------------------------------------------------

def small_model():
    model = fastnn.Sequential([fastnn.Dense(4, "relu", input_dim=3), fastnn.Dense(2, "softmax")])
    model.build()
    return model


@pytest.mark.parametrize("content", [b"hello, this is text\n", b"\x80\x04K\x01.",
                                     b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}"])
def test_load_model_on_a_file_that_is_not_a_model_says_so_naming_it(tmp_path, content):
    path = tmp_path / "notes.npz"
    path.write_bytes(content)
    with pytest.raises(fastnn.ModelFileError) as error:
        fastnn.load_model(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a fastnn model file")
    assert "pickle" not in message


def test_load_model_on_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.npz"))):
        fastnn.load_model(tmp_path / "gone.npz")


def test_saving_into_a_missing_folder_names_the_target_not_a_temporary_file(tmp_path):
    target = tmp_path / "no" / "such" / "model.npz"
    with pytest.raises(FileNotFoundError) as error:
        small_model().save(target)
    assert str(error.value).startswith(f"{target}: cannot save the model there")
    assert ".tmp" not in str(error.value) and ".fastnn-" not in str(error.value)
    with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path))):
        small_model().save(tmp_path)


# -- help texts -----------------------------------------------------------------------------

PUBLIC_CLASSES = [fastnn.Dense, fastnn.Activation, fastnn.BatchNormalization, fastnn.Dropout,
                  fastnn.Layer, fastnn.SGD, fastnn.Adam,
                  fastnn.optimizers.Optimizer, fastnn.initializers.Initializer,
                  *fastnn.initializers.INITIALIZERS.values(), fastnn.losses.Loss,
                  *fastnn.losses.LOSSES.values()]
#: Methods a user calls; every other public method's docstring says it is internal.
USER_METHODS = {"get_config", "load_state", "state"}
REST_MARKUP = re.compile(r"``|:(meth|class|func|mod|attr):`")


def test_help_of_dense_lists_every_activation_and_initializer_name():
    text = pydoc.render_doc(fastnn.Dense, renderer=pydoc.plaintext)
    for name in fastnn.layers.DENSE_ACTIVATIONS + ("linear",):
        assert f'"{name}"' in text, name
    for name in fastnn.initializers.INITIALIZERS:
        assert f'"{name}"' in text, name
    assert "None" in text


def test_loss_optimizer_and_initializer_help_list_their_names():
    loss_help = fastnn.losses.Loss.__doc__ + fastnn.losses.get.__doc__
    for name in list(fastnn.losses.LOSSES) + ["mean_squared_error"]:
        assert f'"{name}"' in loss_help, name
    for name in fastnn.optimizers.OPTIMIZERS:
        assert f'"{name}"' in fastnn.optimizers.Optimizer.__doc__, name
    for name in fastnn.initializers.INITIALIZERS:
        assert f'"{name}"' in fastnn.initializers.Initializer.__doc__, name
        assert f'"{name}"' in fastnn.initializers.INITIALIZERS[name].__doc__, name


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda cls: cls.__name__)
def test_public_help_is_plain_text_and_internal_methods_say_so(cls):
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert not REST_MARKUP.search(text), REST_MARKUP.search(text).group(0)
    for name, member in vars(cls).items():
        for base in cls.__mro__:  # the docstring help() shows: the nearest one
            doc = getattr(vars(base).get(name), "__doc__", None)
            if doc:
                break
        if callable(member) and not name.startswith("_") and name not in USER_METHODS:
            assert doc and doc.startswith("Internal"), f"{cls.__name__}.{name}: {doc!r}"


def test_train_compiles_the_kernels_before_it_times_the_epochs(monkeypatch, capsys):
    """"ms per epoch" times training alone: a throwaway model takes one step first (a cold
    numba cache compiled inside the first timed epoch: 67 s reported for a 45 ms epoch)."""
    calls = []
    real_fit = fastnn.Sequential.fit

    def fit(model, x, y, **kwargs):
        calls.append((id(model), len(x), kwargs.get("callbacks")))
        return real_fit(model, x, y, **kwargs)

    monkeypatch.setattr(fastnn.Sequential, "fit", fit)
    assert cli.main(["train", "--epochs", "2", "--batch-size", "16", "--verbose", "0"]) == 0
    assert len(calls) == 2
    (warm, warm_rows, warm_callbacks), (timed, timed_rows, timed_callbacks) = calls
    assert warm != timed and warm_rows == 16 and not warm_callbacks
    assert timed_rows > 1000 and any(isinstance(c, train.EpochTimer) for c in timed_callbacks)
    assert "ms per epoch (median of 2)" in capsys.readouterr().out


def test_train_on_a_target_column_of_one_class_names_target(capsys, tmp_path):
    """A constant label column (a feature picked by mistake) is the --target's fault, said
    so; before, the error was about a softmax of one unit, which a CLI user cannot change."""
    path = tmp_path / "constant.csv"
    rng = np.random.default_rng(0)
    np.savetxt(path, np.column_stack([np.zeros(40), rng.random((40, 3))]), delimiter=",")
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--dataset", str(path), "--target", "0", "--epochs", "1"])
    assert stop.value.code == 2
    shown = capsys.readouterr()
    assert_one_line_error(shown.err, "fastnn train", "--target")
    assert "one class only (0)" in shown.err and "softmax" not in shown.err
