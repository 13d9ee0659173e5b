"""Build of the C backend's extension (everything else is in pyproject.toml).

The extension is optional: when the compiler is missing or the build fails, the package
still installs, and the reason is written to fastnn/_c/BUILD_ERROR.txt, which
fastnn.backends.c_backend reports as why backend "c" is unavailable (see ``fastnn info``,
and the warning on first use in fastnn.backends).

The failure is also printed as a framed warning on stderr. pip shows a build's output only
with ``pip install -v`` or when the build fails (pypa/pip#6634), so the warning is written to
the terminal (/dev/tty) as well when there is one: a user who runs ``pip install .`` at a
prompt sees it.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

BUILD_ERROR_FILE = "BUILD_ERROR.txt"


def warn_loudly(reason: str) -> None:
    """Print the failure framed on stderr, and on the terminal when there is one."""
    rule = "!" * 78
    message = (f"\n{rule}\nWARNING: fastnn's C backend was not built; fastnn installs without it "
               f"and uses\nthe slower numba backend.\nReason: {reason}\nInstall a C compiler "
               f"with OpenMP (e.g. gcc) and reinstall to get it.\n{rule}\n")
    print(message, file=sys.stderr, flush=True)
    if sys.stderr.isatty():  # already on the terminal
        return
    try:
        with open("/dev/tty", "w") as terminal:
            terminal.write(message)
    except OSError:  # no terminal (CI, a pipe, Windows): stderr is all there is
        pass


class OptionalBuildExt(build_ext):
    """build_ext that records a failure instead of failing the installation."""

    def finalize_options(self):
        super().finalize_options()
        # Always compile: the flags (CC, FASTNN_EXTRA_CFLAGS) may differ from
        # the build left in build/, which distutils would otherwise reuse as up to date.
        self.force = True

    def run(self):
        # setuptools clears self.inplace inside run() and copies the result afterwards.
        self._into_source = bool(self.inplace or getattr(self, "editable_mode", False))
        self._failed = set()
        super().run()

    def copy_extensions_to_source(self):
        """The in-place copy (editable installs) of the extensions that did build."""
        all_extensions = self.extensions
        self.extensions = [ext for ext in all_extensions if ext.name not in self._failed]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = all_extensions

    def _package_dirs(self, ext):
        """Where the extension lands: the build tree, and the source tree when in place."""
        dirs = [Path(self.get_ext_fullpath(ext.name)).parent]
        if getattr(self, "_into_source", False):
            package = ".".join(ext.name.split(".")[:-1])
            dirs.append(Path(self.get_finalized_command("build_py").get_package_dir(package)))
        return dirs

    def build_extension(self, ext):
        dirs = self._package_dirs(ext)
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the package pure Python
            compiler = " ".join(getattr(self.compiler, "compiler_so", None) or ["?"])
            reason = (f"the C extension failed to build: {type(exc).__name__}: {exc} "
                      f"(compiler: {compiler})")
            warn_loudly(reason)
            self._failed.add(ext.name)
            for directory in dirs:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / BUILD_ERROR_FILE).write_text(reason + "\n")
                # An extension left from an earlier build would no longer match the sources.
                stale = directory / Path(self.get_ext_filename(ext.name)).name
                if stale.exists():
                    stale.unlink()
        else:
            for directory in dirs:
                (directory / BUILD_ERROR_FILE).unlink(missing_ok=True)


setup(
    cffi_modules=["kernels/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
