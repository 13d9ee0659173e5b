"""Jitted kernels of the Numba backend, by topic; :mod:`fastnn.backends.numba_backend`
is the module the registry loads and the only caller.

Importing this package picks Numba's threading layer (see NUMBA.md beside it),
so it must happen before any parallel kernel is compiled or loaded from cache.

Every kernel is compiled with ``error_model="numpy"``: a division by zero gives
inf or nan as in NumPy, instead of Python's ZeroDivisionError check, whose
branch would also keep every loop with a division from vectorizing.
"""

from __future__ import annotations

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
