"""Run by tests/test_distributed.py under ``mpiexec -n 2``: one data-parallel job per call.

usage: worker.py OUT.npz BACKEND OPTIMIZER ROWS BATCH EPOCHS [raise]
Trains the model of tests/mpi/job.py on its data and rank 0 saves the History and the final
weights to OUT.npz (through Sequential.save's rank-0 rule for the model file OUT.model.npz).
With "raise", rank 1's callback raises at its first epoch end.
"""

import sys

import numpy as np

import fastnn
from fastnn import distributed

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from job import make_data, make_model  # noqa: E402

out, backend, optimizer, rows, batch, epochs = sys.argv[1:7]
raise_on_rank_1 = len(sys.argv) > 7 and sys.argv[7] == "raise"
fastnn.set_backend(backend)
x, y, x_val, y_val = make_data(int(rows))
model = make_model(optimizer)


class Fail(fastnn.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if distributed.rank() == 1:
            raise RuntimeError("a callback failed on rank 1")


history = model.fit(x, y, epochs=int(epochs), batch_size=int(batch), seed=3, verbose=0,
                    validation_data=(x_val, y_val),
                    callbacks=[Fail()] if raise_on_rank_1 else None)
model.save(out + ".model.npz")
if distributed.is_main():
    np.savez(out, size=distributed.size(), threads=fastnn.get_num_threads()[backend]
             if backend != "numpy" else 1,
             **{f"history_{key}": np.array(value) for key, value in history.history.items()},
             **{f"weight_{i}": w for i, w in enumerate(model.get_weights())})
