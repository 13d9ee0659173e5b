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

from . import ops
from .backends import (BackendUnavailableError, available_backends, backend_status,
                       get_backend, get_backend_name, get_num_threads, set_backend,
                       set_num_threads, use_backend)
from .backends.runtime import set_flush_denormal
from . import datasets, initializers, losses, optimizers
from .callbacks import Callback, History
from .layers import Dense, Dropout, Layer
from .model import NonFiniteLossError, Sequential
from .optimizers import SGD, Adam
from .serialization import ModelFileError, load_model

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "available_backends", "backend_status", "get_backend",
    "get_backend_name", "get_num_threads", "ops", "set_backend", "set_flush_denormal",
    "set_num_threads", "use_backend", "__version__",
    # the layer API and training loop
    "Adam", "Callback", "Dense", "Dropout", "History", "Layer", "ModelFileError",
    "NonFiniteLossError", "SGD", "Sequential", "datasets", "initializers", "load_model",
    "losses", "optimizers",
]
