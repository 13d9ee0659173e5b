"""Run by tests/test_distributed.py under ``mpiexec -n 2``: a data-parallel fit of a model with
a batch norm; each rank saves its moving statistics and its predictions.

usage: batchnorm_worker.py OUT BACKEND PATH
PATH "compiled" or "per-layer". Rank r writes OUT.r.npz.
"""

import sys

import numpy as np

import fastnn
from fastnn import SGD, BatchNormalization, Dense, Sequential, distributed, plan

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from job import make_data  # noqa: E402

out, backend, path = sys.argv[1:4]
if path == "per-layer":
    plan.unsupported = lambda model: "the per-layer path (test)"
fastnn.set_backend(backend)
x, y, x_val, y_val = make_data(256)
model = Sequential([Dense(16, input_dim=12), BatchNormalization(), Dense(3, "softmax")], seed=5)
model.compile(SGD(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x, y, epochs=2, batch_size=16, seed=3, verbose=0,
                    validation_data=(x_val, y_val))
norm = model.layers[1]
np.savez(f"{out}.{distributed.rank()}.npz", size=distributed.size(),
         moving_mean=norm.moving_mean, moving_variance=norm.moving_variance,
         predictions=model.predict(x_val), val_loss=np.array(history["val_loss"]))
