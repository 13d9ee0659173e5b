"""Run by tests/test_distributed.py under ``mpiexec -n 2``: one data-parallel job per call.

usage: worker.py OUT.npz BACKEND OPTIMIZER ROWS BATCH EPOCHS [raise | per-layer | compare]
Trains the model of tests/mpi/job.py on its data and rank 0 saves the History, the final
weights and the steps the compiled loop ran split around the Allreduce to OUT.npz (through
Sequential.save's rank-0 rule for the model file OUT.model.npz). With "raise", rank 1's
callback raises at its first epoch end; with "mismatch" rank 1 trains on 8 rows more than
rank 0 (every rank must raise the same ValueError); with "stop-epoch" rank 1's callback sets
stop_training at the end of the first epoch, with "stop-batch" after its third step (every
rank must stop there); with "absent" rank 1 returns without calling fit (rank 0 must end
the job once FASTNN_MPI_TIMEOUT has passed); with "per-layer" the per-layer path trains
(compiled_loop False); with "compare" both train, the per-layer run's figures saved under
names prefixed "per_layer_".
"""

import sys

import numpy as np

import fastnn
from fastnn import distributed

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from job import make_data, make_model  # noqa: E402

out, backend, optimizer, rows, batch, epochs = sys.argv[1:7]
option = sys.argv[7] if len(sys.argv) > 7 else ""
fastnn.set_backend(backend)
x, y, x_val, y_val = make_data(int(rows) + (8 if option == "mismatch" and
                                            distributed.rank() == 1 else 0))

# count the steps that ran as gradients call, Allreduce, apply call
split_steps = [0]
train_steps = distributed.DataParallel.train_steps


def counted(self, *args):
    done = train_steps(self, *args)
    split_steps[0] += done
    return done


distributed.DataParallel.train_steps = counted


class Fail(fastnn.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if distributed.rank() == 1:
            raise RuntimeError("a callback failed on rank 1")


class StopOnRank1(fastnn.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if distributed.rank() == 1 and option == "stop-epoch":
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if distributed.rank() == 1 and option == "stop-batch" and batch == 2:
            self.model.stop_training = True


def train(compiled: bool, prefix: str = "") -> dict:
    model = make_model(optimizer)
    model.compiled_loop = compiled
    split_steps[0] = 0
    history = model.fit(x, y, epochs=int(epochs), batch_size=int(batch), seed=3, verbose=0,
                        validation_data=(x_val, y_val),
                        callbacks=[Fail()] if option == "raise" else
                        [StopOnRank1()] if option.startswith("stop") else None)
    if not prefix:
        model.save(out + ".model.npz")
    return {f"{prefix}split_steps": split_steps[0],
            **{f"{prefix}history_{key}": np.array(value)
               for key, value in history.history.items()},
            **{f"{prefix}weight_{i}": w for i, w in enumerate(model.get_weights())}}


if option == "absent" and distributed.rank() == 1:
    sys.exit(0)
results = train(option != "per-layer")
if option == "compare":
    results.update(train(False, "per_layer_"))
if distributed.is_main():
    np.savez(out, size=distributed.size(), threads=fastnn.get_num_threads()[backend]
             if backend != "numpy" else 1, **results)
