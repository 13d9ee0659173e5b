"""Jitted kernels of the Numba backend, by topic; :mod:`fastnn.backends.numba_backend`
is the module the registry loads and the only caller.

Importing this package picks Numba's threading layer (see "The backends in detail" in README.md),
so it must happen before any parallel kernel is compiled or loaded from cache.

Every kernel is compiled with ``error_model="numpy"``: a division by zero gives
inf or nan as in NumPy, instead of Python's ZeroDivisionError check, whose
branch would also keep every loop with a division from vectorizing.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os

import numba

#: Threading layer used unless NUMBA_THREADING_LAYER says otherwise. OpenMP is
#: safe when several Python threads launch kernels at once (the default
#: "workqueue" layer is not) and ships with Numba's Linux wheels (libgomp).
PREFERRED_THREADING_LAYER = "omp"

if "NUMBA_THREADING_LAYER" not in os.environ:
    has_omp = importlib.util.find_spec("numba.np.ufunc.omppool") is not None
    # "threadsafe" lets Numba pick TBB or OpenMP, whichever it has, never workqueue.
    numba.config.THREADING_LAYER = PREFERRED_THREADING_LAYER if has_omp else "threadsafe"


def _drop_stale_cache() -> None:
    """Delete Numba's cached kernels beside these sources when any source changed.

    Numba checks a cached function against its own file only, but the kernels
    inline helpers from the sibling modules: after an edit of scalar_math.py,
    say, the cached gemm.py kernels would keep running the old helper. A digest
    of all the sources, kept beside the cache, catches that. (Only the default
    cache location is checked; with NUMBA_CACHE_DIR, clear that by hand.)
    """
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(here, "*.py"))):
        with open(path, "rb") as source:
            digest.update(source.read())
    cache = os.path.join(here, "__pycache__")
    stamp = os.path.join(cache, "numba_kernels_sources.sha256")
    try:
        with open(stamp) as file:
            if file.read() == digest.hexdigest():
                return
    except OSError:
        pass
    try:
        for cached in glob.glob(os.path.join(cache, "*.nb[ic]")):
            os.remove(cached)
        os.makedirs(cache, exist_ok=True)
        with open(stamp, "w") as file:
            file.write(digest.hexdigest())
    except OSError:  # a read-only install: Numba caches elsewhere then
        pass


_drop_stale_cache()
