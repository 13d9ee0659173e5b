"""Jitted kernels of the Numba backend, by topic; :mod:`fastnn.backends.numba_backend`
is the module the registry loads and the only caller.

Importing this package picks Numba's threading layer (see "The backends in detail" in README.md),
so it must happen before any parallel kernel is compiled or loaded from cache.

Compiled kernels are cached in :func:`fastnn.cache.numba_cache_dir`, never beside these
sources (see :func:`_import_kernel_modules`); so every ``cache=True`` kernel of fastnn belongs
in this package (tests/test_cache.py fails for one elsewhere).

Every kernel is compiled with ``error_model="numpy"``: a division by zero gives
inf or nan as in NumPy, instead of Python's ZeroDivisionError check, whose
branch would also keep every loop with a division from vectorizing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

import numba

from ... import cache

#: Threading layer used unless NUMBA_THREADING_LAYER says otherwise. OpenMP is
#: safe when several Python threads launch kernels at once (the default
#: "workqueue" layer is not) and ships with Numba's Linux wheels (libgomp).
PREFERRED_THREADING_LAYER = "omp"

if "NUMBA_THREADING_LAYER" not in os.environ:
    has_omp = importlib.util.find_spec("numba.np.ufunc.omppool") is not None
    # "threadsafe" lets Numba pick TBB or OpenMP, whichever it has, never workqueue.
    numba.config.THREADING_LAYER = PREFERRED_THREADING_LAYER if has_omp else "threadsafe"


def _import_kernel_modules() -> None:
    """Import every kernel module while Numba's cache folder is fastnn's.

    Numba fixes where a ``cache=True`` kernel is cached when it is decorated (at import), from
    ``numba.config.CACHE_DIR``; set just for these imports, it leaves the cache of other jitted
    code in the process alone. Without it, Numba would write ``__pycache__`` beside these
    sources, inside the installed package, where ``pip uninstall`` does not look.
    """
    folder = str(cache.writable_folder(cache.numba_cache_dir()))  # or a temporary one
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = folder
    try:
        for module in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
            importlib.import_module(module.name)
    finally:
        numba.config.CACHE_DIR = saved


_import_kernel_modules()
