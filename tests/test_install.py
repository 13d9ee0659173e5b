"""Installs as a new user makes them, in a temporary venv: every order leaves a working fastnn.

Slow (about 2-3 minutes: a build of the C extension, three more that link its objects from
the source tree's object cache, kernels/parallel_compile.py), so one venv serves the whole file.
It runs by default and in CI; ``FASTNN_SKIP_INSTALL_TESTS=1`` is the explicit opt-out for a
quick local run. It needs pip to reach the package index (or its cache) for the dependencies.

The sequence (issue 13): regular install, editable install with the README's test command run
in the source tree, regular install over it (the README's commands in the opposite order),
uninstall, regular install again. After each step, from another folder: ``fastnn info``,
``import fastnn; fastnn.Sequential``, and a Numba kernel compiled and cached; then no file of
fastnn's was written beside the installed or source package (the cause of issue 13: a Numba
cache under site-packages/fastnn that pip's uninstall did not know). After the uninstall, no
file of fastnn is left in site-packages.

Builds use ``--no-build-isolation`` with setuptools, cffi and NumPy (the headers of the matmul
call entry, kernels/fastcall) installed once in the venv, which
saves fetching them for every build; ``.ci/run`` also installs the sdist with build isolation.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

#: The slow tests (those of the ``work`` venv) skip where this is set; the quick check that
#: .ci/run runs the README's test command does not.
SKIP_INSTALL = os.environ.get("FASTNN_SKIP_INSTALL_TESTS", "").strip() not in ("", "0")

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTION = "fastnn-cpu"
#: Build products and caches of the working tree that a fresh clone would not have.
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                    "*.o", "*BUILD_ERROR.txt", ".benchmarks", ".hypothesis",
                                    ".pytest_cache", ".venv")
#: Names in site-packages that belong to fastnn (package, metadata, editable hooks).
OURS = ("fastnn", "fastnn_cpu*", "__editable__*fastnn*")


def readme_commands() -> list:
    """The README's two set-up commands, in order: the first two fenced blocks of its section
    "## Set-up: two commands" (install and run the main job; install and run the tests)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in section.split("```\n")[1::2]][:2]
    assert [c.split()[:2] for c in commands] == [["pip", "install"]] * 2, commands
    return commands


def readme_test_command() -> list:
    """The pytest part of the README's test command, as arguments: ``python -m pytest ...``."""
    install, run = readme_commands()[1].split("&&")
    assert install.split()[:3] == ["pip", "install", "-e"], install
    return shlex.split(run)


#: Compiles and caches Numba kernels: what used to write into the installed package.
USE_NUMBA = ("import numpy as np, fastnn\n"
             "with fastnn.use_backend('numba'):\n"
             "    out = fastnn.ops.softmax(np.ones((2, 3), np.float32))\n"
             "assert abs(float(out.sum()) - 2.0) < 1e-5, out\n")


class Venv:
    """A throwaway venv, and the commands run in it with a clean environment."""

    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.bin = root / "bin"
        self.python = self.bin / "python"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        self.env.update(PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                        FASTNN_CACHE_DIR=str(cache), PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        self.site = Path(self.run("python", "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"
                                  ).stdout.strip())

    def run(self, *command, cwd=None, check=True, **env) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.bin / command[0]), *command[1:]], cwd=cwd,
                                env={**self.env, **env}, capture_output=True, text=True,
                                timeout=900)
        if check:
            assert result.returncode == 0, (f"{' '.join(command)} failed ({result.returncode}):"
                                            f"\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def pip(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return self.run("python", "-m", "pip", *args, **kwargs)

    def ours(self) -> list:
        return sorted(str(p.relative_to(self.site)) for pattern in OURS
                      for p in self.site.glob(pattern))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A copy of the source tree, a venv with the build requirements, and an unrelated folder."""
    if SKIP_INSTALL:
        pytest.skip("FASTNN_SKIP_INSTALL_TESTS is set (explicit opt-out of the slow install tests)")
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    venv = Venv(root / "venv", root / "cache")
    venv.pip("install", "--quiet", "setuptools>=77", "cffi>=1.16", "numpy>=1.24", "build>=1")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return source, venv, elsewhere


def installed_files(venv: Venv) -> set:
    """Files pip recorded for fastnn-cpu (RECORD), relative to site-packages."""
    record = next(venv.site.glob("fastnn_cpu-*.dist-info")) / "RECORD"
    return {line.split(",")[0] for line in record.read_text().splitlines() if line}


def assert_usable(venv: Venv, elsewhere: Path, package_dir: Path) -> None:
    """fastnn works from another folder, is imported from ``package_dir``, writes no files there."""
    info = venv.run("fastnn", "info", cwd=elsewhere)
    assert info.stdout.startswith("fastnn "), info.stdout
    assert "backends:" in info.stdout, info.stdout
    # both extensions built: the cffi kernels and the matmul call entry
    assert "matmul call entry: C (kernels/fastcall)" in info.stdout, info.stdout
    where = venv.run("python", "-c", "import fastnn; fastnn.Sequential; print(fastnn.__file__)",
                     cwd=elsewhere)
    assert Path(where.stdout.strip()).parent == package_dir, where.stdout
    venv.run("python", "-c", USE_NUMBA, cwd=elsewhere)
    assert list(venv.root.parent.glob("cache/numba/*/*/*.nbi")), "Numba cached nothing"
    written = [p for p in package_dir.rglob("*")
               if p.suffix in (".nbi", ".nbc") or p.name.endswith(".sha256")]
    assert not written, f"fastnn wrote into its package folder: {written}"


def assert_only_recorded_files(venv: Venv) -> None:
    """Every file in site-packages/fastnn is pip's (RECORD) or Python's bytecode of one."""
    recorded = installed_files(venv)
    stray = [str(p.relative_to(venv.site)) for p in (venv.site / "fastnn").rglob("*")
             if p.is_file() and str(p.relative_to(venv.site)) not in recorded
             and p.parent.name != "__pycache__"]
    stray += [str(p.relative_to(venv.site)) for p in (venv.site / "fastnn").rglob("__pycache__/*")
              if p.suffix != ".pyc"]
    assert not stray, f"files in site-packages/fastnn that pip does not know: {stray}"


def test_install_editable_reinstall_uninstall_install(work):
    source, venv, elsewhere = work
    installed = venv.site / "fastnn"
    build = ("--no-build-isolation",)

    # 1. The README's first command: a regular install, then the main job from another folder.
    venv.pip("install", *build, str(source))
    venv.run("fastnn", "train", "--epochs", "1", cwd=elsewhere)
    assert_usable(venv, elsewhere, installed)
    assert_only_recorded_files(venv)

    # 2. The README's second command: editable install with the dev extra, tests in the tree.
    venv.pip("install", *build, "-e", f"{source}[dev]")
    venv.run(*readme_test_command(), "-q", "-p", "no:cacheprovider", "tests/test_registry.py",
             cwd=source)
    assert_usable(venv, elsewhere, source / "fastnn")
    assert not installed.exists(), f"the regular install left {sorted(installed.rglob('*'))}"

    # 3. The first command again, after the second: the opposite order.
    venv.pip("install", *build, str(source))
    assert_usable(venv, elsewhere, installed)
    assert_only_recorded_files(venv)

    # 4. Uninstall: nothing of fastnn is left in site-packages, nor its command.
    venv.pip("uninstall", "--yes", DISTRIBUTION)
    assert venv.ours() == [], f"left in site-packages after uninstall: {venv.ours()}"
    assert not (venv.bin / "fastnn").exists()
    gone = venv.run("python", "-c", "import fastnn", cwd=elsewhere, check=False)
    assert gone.returncode != 0 and "No module named 'fastnn'" in gone.stderr, gone.stderr

    # 5. A regular install again.
    venv.pip("install", *build, str(source))
    assert_usable(venv, elsewhere, installed)


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run's first block is the README's second set-up command, word for word."""
    command = readme_commands()[1]
    assert readme_test_command()[:3] == ["python", "-m", "pytest"], command
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in lines, f".ci/run does not run the README's test command {command!r}"


def test_auto_workers_one_per_cpu_at_most_eight(monkeypatch):
    """-n auto (the README's test command): conftest's hook gives one worker per usable CPU, at
    most MAX_AUTO_WORKERS, and leaves PYTEST_XDIST_AUTO_NUM_WORKERS to pytest-xdist."""
    import conftest
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    for cpus, workers in ((1, 1), (2, 2), (8, 8), (64, conftest.MAX_AUTO_WORKERS)):
        monkeypatch.setattr(conftest.environment, "usable_cpus", lambda cpus=cpus: cpus)
        assert conftest.pytest_xdist_auto_num_workers(None) == workers, cpus
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    assert conftest.pytest_xdist_auto_num_workers(None) is None


def test_sdist_holds_what_installing_and_testing_need(work, tmp_path):
    source, venv, _ = work
    venv.run("python", "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
             str(source))
    (sdist,) = tmp_path.glob("fastnn_cpu-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    required = {"LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
                "kernels/build_ffi.py", "kernels/fastnn.h", "kernels/README.md",
                "kernels/build_fastcall.py", "kernels/fastcall/fastcall.c",
                "tests/conftest.py", "tests/test_install.py", "fastnn/cache.py",
                "fastnn/data/digits.npz"}
    required |= {str(p.relative_to(REPO)) for folder in ("kernels", "examples", "benchmarks")
                 for p in (REPO / folder).glob("*") if p.suffix in (".c", ".h", ".py")}
    assert required <= names, f"missing from the sdist: {sorted(required - names)}"
    built = [n for n in names if n.endswith((".so", ".o", ".pyc")) or "__pycache__" in n]
    assert not built, f"build products in the sdist: {built}"


def test_failed_c_build_warns_at_install_and_still_installs(work, tmp_path):
    """No working compiler (CC=false): a loud warning per extension, their BUILD_ERROR.txt
    and FASTCALL_BUILD_ERROR.txt in the wheel, no .so."""
    source, venv, _ = work
    copy = tmp_path / "src"
    shutil.copytree(source, copy, ignore=NOT_SOURCE)
    result = venv.pip("wheel", "--no-deps", "--no-build-isolation", "-v", "--wheel-dir",
                      str(tmp_path), str(copy), CC="false")
    output = result.stdout + result.stderr
    assert "WARNING: fastnn's C backend was not built" in output, output[-3000:]
    assert "WARNING: fastnn's C call entry (kernels/fastcall) was not built" in output, \
        output[-3000:]
    (wheel,) = tmp_path.glob("fastnn_cpu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        reason = archive.read("fastnn/_c/BUILD_ERROR.txt").decode()
        fastcall_reason = archive.read("fastnn/_c/FASTCALL_BUILD_ERROR.txt").decode()
    assert "failed to build" in reason and "false" in reason, reason
    assert "fastnn._c._fastcall failed to build" in fastcall_reason, fastcall_reason
    assert not [n for n in names if n.endswith(".so")], names
    assert any(n.endswith("licenses/LICENSE") for n in names), names
