"""Run by tests/test_distributed.py under ``mpiexec -n 2``: a fastnn.sklearn fit, data parallel.

usage: sklearn_worker.py OUT.npz BACKEND SOLVER PATH
Fits MLPClassifier (tests/mpi/job.py's data, an L2 term of alpha 0.05, batch 16 a rank) through
the compiled loop (PATH "compiled") or the per-layer path ("per-layer"); rank 0 saves the
loss curve and the weights to OUT.npz. PATH "tol": rank 1's estimator has tol=10 (every rank
must raise the same ValueError naming tol).
"""

import sys
import warnings

import numpy as np

from fastnn import distributed, plan
from fastnn.sklearn import MLPClassifier

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from job import make_data, sklearn_classifier  # noqa: E402

out, backend, solver, path = sys.argv[1:5]
if path == "per-layer":
    plan.unsupported = lambda model: "the per-layer path (test)"
x, y, _, _ = make_data(256)
warnings.simplefilter("ignore")  # max_iter ends the fit (ConvergenceWarning)
model = sklearn_classifier(MLPClassifier, backend, solver, batch=16)
if path == "tol" and distributed.rank() == 1:
    model.set_params(tol=10.0)
model.fit(x, y)
if distributed.is_main():
    np.savez(out, size=distributed.size(), loss_curve=np.array(model.loss_curve_),
             **{f"weight_{i}": w for i, w in enumerate(model.coefs_ + model.intercepts_)})
