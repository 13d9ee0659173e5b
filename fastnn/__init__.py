"""fastnn: compiled kernels for training neural networks fast on the CPU.

Kernels run on one of three interchangeable backends (``numpy``, the
reference; ``numba``; ``c``), chosen by ``FASTNN_BACKEND``, :func:`set_backend`
or the :func:`use_backend` context manager.

On top of the kernels, a Keras-like layer API trains MLPs::

    model = fastnn.Sequential([fastnn.Dense(64, "relu", input_dim=64),
                               fastnn.Dense(10, "softmax")])
    model.compile(fastnn.SGD(lr=0.1, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=32)
"""

#: The version, written here only (pyproject.toml reads it; ``fastnn --version`` prints it).
__version__ = "0.1.0"

# First, before NumPy loads OpenBLAS and before libgomp loads: the waits of idle threads
# (fastnn.backends.runtime).
from .backends import runtime as _runtime  # noqa: E402,F401
from . import ops  # noqa: E402  (after __version__, which modules may read while importing)
from .backends import (BackendUnavailableError, available_backends, backend_status,
                       get_backend, get_backend_name, get_num_threads, set_backend,
                       set_num_threads, use_backend)
from .backends.runtime import set_flush_denormal
from . import datasets, initializers, losses, optimizers
from .callbacks import Callback, History
from .layers import Activation, Dense, Dropout, Layer
from .normalization import BatchNormalization
from .model import NonFiniteLossError, Sequential
from .optimizers import SGD, Adam
from .precision import get_matmul_precision, matmul_precision, set_matmul_precision
from .serialization import ModelFileError, load_model

__all__ = [
    "BackendUnavailableError", "available_backends", "backend_status", "get_backend",
    "get_backend_name", "get_num_threads", "ops", "set_backend", "set_flush_denormal",
    "set_num_threads", "use_backend", "__version__",
    # bfloat16 matmul precision
    "get_matmul_precision", "matmul_precision", "set_matmul_precision",
    # the layer API and training loop
    "Activation", "Adam", "BatchNormalization", "Callback", "Dense", "Dropout", "History", "Layer", "ModelFileError",
    "NonFiniteLossError", "SGD", "Sequential", "datasets", "initializers", "load_model",
    "losses", "optimizers",
]
