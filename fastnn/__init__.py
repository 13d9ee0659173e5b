"""fastnn: compiled kernels for training neural networks fast on the CPU.

Kernels run on one of three interchangeable backends (``numpy``, the
reference; ``numba``; ``c``), chosen by ``FASTNN_BACKEND``, :func:`set_backend`
or the :func:`use_backend` context manager.
"""

from . import ops
from .backends import (BackendUnavailableError, available_backends, backend_status,
                       get_backend, get_backend_name, get_num_threads, set_backend,
                       set_num_threads, use_backend)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "available_backends", "backend_status", "get_backend",
    "get_backend_name", "get_num_threads", "ops", "set_backend", "set_num_threads",
    "use_backend", "__version__",
]
