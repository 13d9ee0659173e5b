"""Build of the C backend's extensions (everything else is in pyproject.toml).

Two extensions, both optional: ``fastnn._c._kernels``, the kernels through cffi
(kernels/build_ffi.py), and ``fastnn._c._fastcall``, the C call entry of a plain matmul
(kernels/build_fastcall.py). When the compiler is missing or a build fails, the package
still installs, and the reason is written to fastnn/_c/BUILD_ERROR.txt (the kernels: backend
"c" is then unavailable, see ``fastnn info`` and the warning on first use in fastnn.backends)
or fastnn/_c/FASTCALL_BUILD_ERROR.txt (the call entry: backend "c" then calls every kernel
through cffi), which fastnn.backends.c_backend reports.

The failure is also printed as a framed warning on stderr. pip shows a build's output only
with ``pip install -v`` or when the build fails (pypa/pip#6634), so the warning is written to
the terminal (/dev/tty) as well when there is one: a user who runs ``pip install .`` at a
prompt sees it.
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _load(path: str):
    """A module of kernels/ by its path (kernels/ is not a package)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, Path(__file__).parent / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FASTCALL = _load("kernels/build_fastcall.py")
#: Compiles an extension's sources on every core (the three instruction-set copies of the
#: kernels: ~40 s instead of ~74 on two cores).
PARALLEL_COMPILE = _load("kernels/parallel_compile.py")
#: The objects of earlier builds of this tree, by what made them (kernels/parallel_compile.py):
#: a reinstall with the same compiler, flags and sources links them instead of compiling.
OBJECT_CACHE = PARALLEL_COMPILE.object_cache(Path(__file__).resolve().parent)

#: Per extension: the file its build failure is written to, and what the failure costs.
OPTIONAL = {
    "fastnn._c._kernels": (
        "BUILD_ERROR.txt",
        "fastnn's C backend was not built; fastnn installs without it and uses\nthe slower "
        "numba backend."),
    FASTCALL.MODULE_NAME: (
        "FASTCALL_BUILD_ERROR.txt",
        "fastnn's C call entry (kernels/fastcall) was not built; backend c calls its\n"
        "kernels through cffi, about 0.5 us slower per call (small matmuls)."),
}


def warn_loudly(what: str, reason: str) -> None:
    """Print the failure framed on stderr, and on the terminal when there is one."""
    rule = "!" * 78
    message = (f"\n{rule}\nWARNING: {what}\nReason: {reason}\nInstall a C compiler "
               f"with OpenMP (e.g. gcc) and NumPy, and reinstall to get it.\n{rule}\n")
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
        # The object cache (OBJECT_CACHE) then skips the compiler when nothing changed.
        self.force = True

    def run(self):
        # setuptools clears self.inplace inside run() and copies the result afterwards.
        self._into_source = bool(self.inplace or getattr(self, "editable_mode", False))
        self._failed = set()
        super().run()

    def build_extensions(self):
        PARALLEL_COMPILE.install(self.compiler, OBJECT_CACHE)
        super().build_extensions()

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
        error_file, what = OPTIONAL[ext.name]
        try:
            if ext.name == FASTCALL.MODULE_NAME:
                FASTCALL.add_numpy_include(ext)  # no NumPy: this extension alone fails
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the package pure Python
            compiler = " ".join(getattr(self.compiler, "compiler_so", None) or ["?"])
            reason = (f"the C extension {ext.name} failed to build: {type(exc).__name__}: "
                      f"{exc} (compiler: {compiler})")
            warn_loudly(what, reason)
            self._failed.add(ext.name)
            for directory in dirs:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / error_file).write_text(reason + "\n")
                # An extension left from an earlier build would no longer match the sources.
                stale = directory / Path(self.get_ext_filename(ext.name)).name
                if stale.exists():
                    stale.unlink()
        else:
            for directory in dirs:
                (directory / error_file).unlink(missing_ok=True)


setup(
    cffi_modules=["kernels/build_ffi.py:ffibuilder"],
    ext_modules=[FASTCALL.extension()],
    cmdclass={"build_ext": OptionalBuildExt},
)
