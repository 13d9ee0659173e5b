"""Sequential: a stack of layers with Keras' compile / fit / evaluate / predict.

Data is checked once per call (:mod:`fastnn.inputs`, the loss's target
checks); the steps then call backend kernels on preallocated buffers
(:class:`fastnn.workspace.Workspace`). The backend is looked up once per step,
so it may change between epochs (e.g. from a callback) or between ``fit`` and
``predict``. Where the plan supports the model (:func:`fastnn.plan.unsupported`),
``fit``, ``evaluate`` and ``train_on_batch`` run chunks of steps in one backend
call (the contract's ``train_steps``): the compiled training loop.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import precision as precision_module
from . import counter_rng, distributed, inputs
from . import losses as losses_module
from . import optimizers as optimizers_module
from . import plan as plan_module
from .backends import get_backend, get_backend_name
from .backends.contract import FLOAT_DTYPES
from . import sample_weights
from .callbacks import Callback, CallbackList, History, callback_list
from .layers import Layer, checked_weight
from .metrics import MetricSet, Totals, metric_names
from .normalization import fuse_activations
from .progress import EpochBar
from .validation import flag, seed_value
from .workspace import Workspace

#: Rows per batch of ``evaluate`` and ``predict`` by default: results do not depend on it;
#: it bounds the memory of the activations.
INFERENCE_BATCH = 1024
#: Seconds of training per call of the compiled loop: the progress bar and callbacks see
#: the epoch advance about ten times a second.
CHUNK_SECONDS = 0.1


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


#: Model-ready (x, targets, metric labels or None, row weights or None).
Data = Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]
Schedule = List[Tuple[Workspace, Optional[np.ndarray], int]]


def _input_units(input_dim) -> int:
    """Sequential.build's input_dim as a count of features: an int >= 1, or a shape (None, n)
    or (n,) as Keras' ``build(input_shape)`` takes."""
    value = input_dim
    if isinstance(value, (tuple, list)) and len(value) in (1, 2) and (
            len(value) == 1 or value[0] is None):
        value = value[-1]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"input_dim: expected a positive int or a shape (None, n), got "
                         f"{input_dim!r}")
    return int(value)


class Sequential:
    """Layers applied in order: ``Sequential([Dense(8, "relu", input_dim=2), Dense(2, "softmax")])``.

    dtype: float32 (default) or float64, the dtype of every parameter and
    activation; inputs are converted to it; Keras' policy name "mixed_bfloat16" means
    float32 with ``matmul_precision="bfloat16"``. seed: None or an int >= 0 (NumPy's
    seed; TypeError or ValueError otherwise), seeds the weights (when not given,
    ``fit(seed=...)`` does, else they are random). matmul_precision: "float32",
    "bfloat16" or None (default: follow :func:`fastnn.get_matmul_precision`), the
    precision of the layers' GEMMs (:mod:`fastnn.precision`); kept in saved models.
    A float64 model refuses "bfloat16" (ValueError).
    """

    def __init__(self, layers: Optional[Sequence[Layer]] = None, dtype="float32",
                 seed: Optional[int] = None, matmul_precision: Optional[str] = None):
        if isinstance(dtype, str) and dtype in precision_module.ALIASES:
            dtype, matmul_precision = "float32", precision_module.ALIASES[dtype]
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
        self.dtype = dtype
        self.matmul_precision = None if matmul_precision is None else \
            precision_module.resolve(matmul_precision, dtype, "matmul_precision")
        self.seed = seed_value("seed", seed)
        self.layers: List[Layer] = []
        self.loss: Optional[losses_module.Loss] = None
        self.optimizer: Optional[optimizers_module.Optimizer] = None
        self.metrics: List[str] = []
        self.built = False
        #: Set True (e.g. by a callback) to end ``fit`` after the current batch; ``fit``
        #: sets it False as it starts (Keras' protocol).
        self.stop_training = False
        #: The History of the last ``fit`` (None before any).
        self.history: Optional[History] = None
        #: Train with the backends' compiled loop (``train_steps``) where the plan supports
        #: the model (fastnn.plan.unsupported); False runs the per-layer path, the reference.
        self.compiled_loop = True
        self._batch_plans: Dict[int, Any] = {}
        #: Steps per ``train_steps`` call that fit's compiled loop reached, per (backend name,
        #: batch size): the next epoch, and the next ``fit``, start there instead of at one
        #: step (a fit of 1024 XOR steps made 6 calls, growing 1, 4, 16, ..., each ~10 us of
        #: Python, when every fit started again at one step).
        self._chunk_steps: Dict[Tuple[str, int], int] = {}
        self._batch_clock = counter_rng.StepClock()
        self._batch_seed: Optional[int] = None
        self._batches_trained = 0
        for layer in layers or ():
            self.add(layer)

    def __getstate__(self) -> Dict[str, Any]:
        """The model's state for ``copy.deepcopy``, without train_on_batch's kept plans: they
        hold a backend's pointers into this model's buffers (cffi objects, which cannot be
        copied: deepcopy raised TypeError after a train_on_batch), and a copy builds its own
        on use."""
        state = dict(self.__dict__)
        state["_batch_plans"] = {}
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """A copy's state (``copy.deepcopy``, pickle): its optimizer made its own, and its
        parameters and gradients put back into one buffer each, with the optimizer bound to
        them and its state (momentum, Adam's moments and step count) as copied. deepcopy
        copies each parameter, a view into the model's buffer, as an array of its own: the
        copy's optimizer then stepped arrays no layer used (fit left the copy's weights as
        they were) and the compiled loop did not run it."""
        self.__dict__.update(state)
        if self.optimizer is not None:
            self.optimizer.attach(self)
        if self.built:
            saved = self.optimizer.state() if self.loss is not None else None
            self._share_parameter_storage()
            self._bind_training()
            if saved is not None:
                self.optimizer.load_state(saved)

    # -- structure -----------------------------------------------------------

    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected a fastnn layer (Dense, Activation, "
                            f"BatchNormalization, Dropout), got {type(layer).__name__}")
        if self.built:
            raise ValueError("layer: the model is already built; add layers before using it")
        self.layers.append(layer)

    @property
    def input_dim(self) -> Optional[int]:
        return self.layers[0].input_dim if self.layers else None

    @property
    def output_units(self) -> int:
        return self.layers[-1].units

    def build(self, input_dim=None, seed: Optional[int] = None) -> None:
        """Create the weights for ``input_dim`` inputs (the first layer's ``input_dim`` if
        None): a positive int, or Keras' ``input_shape`` form ``(None, n)`` (or ``(n,)``).
        ``fit``/``predict`` call this on first use; ``seed`` applies when the model has none.
        Raises ValueError naming ``input_dim`` for anything else."""
        if input_dim is not None:
            input_dim = _input_units(input_dim)
        if self.built:
            return
        if not self.layers:
            raise ValueError("model: has no layers; add some first")
        input_dim = input_dim or self.input_dim
        if input_dim is None:
            raise ValueError("input_dim: unknown; give input_dim= to the first layer, or call "
                             "fit or predict, which take it from x")
        for layer in self.layers[:-1]:
            if getattr(layer, "activation", None) == "softmax":
                raise ValueError("activation: softmax is only supported on the output layer")
        rng = np.random.default_rng(self.seed if self.seed is not None else seed)
        units = input_dim
        for position, layer in enumerate(self.layers):
            if layer.input_dim is not None and layer.input_dim != units:
                raise ValueError(f"input_dim: layer {position} expects {layer.input_dim} inputs "
                                 f"but receives {units}")
            layer.matmul_precision = self.matmul_precision
            layer.build(units, self.dtype, rng)
            units = layer.units
        fuse_activations(self.layers)
        self._share_parameter_storage()
        self.built = True
        self._bind_training()

    def _share_parameter_storage(self) -> None:
        """Move every layer's parameters into one buffer, and their gradients into another,
        back to back in layer order, so that the optimizer updates small neighbouring
        parameters in one kernel call (optimizers.kernel_calls)."""
        params = [param for layer in self.layers for param in layer.params]
        total, shapes = sum(param.size for param in params), [param.shape for param in params]
        self._parameter_storage = np.empty(total, self.dtype)
        self._gradient_storage = np.zeros(total, self.dtype)
        param_views = optimizers_module.views_into(self._parameter_storage, shapes)
        grad_views = optimizers_module.views_into(self._gradient_storage, shapes)
        for view, param in zip(param_views, params):
            view[...] = param
        first = 0
        for layer in self.layers:
            end = first + len(layer.params)
            layer.adopt_storage(param_views[first:end], grad_views[first:end])
            first = end

    def compile(self, optimizer: Union[str, optimizers_module.Optimizer] = "sgd",
                loss: Union[str, losses_module.Loss, None] = None,
                metrics: Optional[Sequence[str]] = None) -> None:
        """Choose the optimizer ("sgd", "adam" or an object), the loss and metrics."""
        if loss is None:
            raise ValueError(f"loss: required; one of {sorted(losses_module.LOSSES)}")
        optimizer = optimizers_module.get(optimizer)
        loss, metrics = losses_module.get(loss), metric_names(metrics)
        output = self.layers[-1] if self.layers else None
        if output is not None:  # check the output/loss/metrics before changing anything
            loss.check_output_activation(getattr(output, "activation", "identity"),
                                         output.units)
            if metrics and output.units is not None:
                MetricSet(metrics, loss, output)
        optimizer.attach(self)  # an optimizer belongs to one model
        if self.optimizer is not None and self.optimizer is not optimizer:
            self.optimizer.detach(self)
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics
        self._bind_training()

    def _bind_training(self) -> None:
        """Fit the output layer to the loss and give the optimizer the parameters."""
        if self.loss is None or not self.layers:
            return
        output = self.layers[-1]
        activation = getattr(output, "activation", "identity")
        self.loss.check_output_activation(activation, getattr(output, "units", None))
        if hasattr(output, "defer_activation"):  # Dense, Activation
            output.defer_activation(activation == self.loss.fused_activation)
        self._batch_plans = {}  # train_on_batch's plans point at the optimizer's state
        if not self.built:
            return
        self.optimizer.bind([p for layer in self.layers for p in layer.params],
                            [g for layer in self.layers for g in layer.grads])

    def _require_compiled(self) -> None:
        if self.loss is None:
            raise ValueError("model: not compiled; call compile(optimizer, loss) first")

    # -- data ----------------------------------------------------------------

    def _features(self, argument: str, x, seed: Optional[int] = None) -> np.ndarray:
        if not self.layers:
            raise ValueError("model: has no layers; add some first")
        x = inputs.features(argument, x, self.dtype, self.input_dim)
        self.build(x.shape[1], seed)
        return x

    def _compiled(self, data: Data, parallel=None) -> bool:
        """Whether the compiled loop runs this model on ``data``: the plan supports the
        model, no row weights, and, given ``parallel`` (evaluation under MPI, whose sums
        are reduced across the ranks on the per-layer path), a single process."""
        return (self.compiled_loop and parallel is None and data[3] is None
                and plan_module.unsupported(self) is None)

    def _metric_set(self) -> Optional[MetricSet]:
        return MetricSet(self.metrics, self.loss, self.layers[-1]) if self.metrics else None

    def _prepare(self, x, y, names=("x", "y", "sample_weight"), seed: Optional[int] = None,
                 sample_weight=None, class_weight=None) -> Data:
        """Checked model-ready ``(x, targets, metric labels or None, weights or None)``."""
        x = self._features(names[0], x, seed)
        targets = self.loss.targets(y, self.output_units, self.dtype, names[1])
        inputs.same_length(names[1], targets, len(x))
        weights = sample_weights.row_weights(sample_weight, class_weight, targets,
                                             self.output_units, self.dtype, names[2])
        metric_set = self._metric_set()
        labels = metric_set.labels_from_targets(targets) if metric_set else None
        return x, targets, labels, weights

    def _schedule(self, data: Data, batch: int, training: bool, order: np.ndarray,
                  loss: Optional[losses_module.Loss]) -> Schedule:
        """The steps of one pass over ``data``: (workspace, rows of data to load, first row).

        Batches are rows ``order[start:start + batch]`` of ``data``, over all of ``order``
        (every row of the data, or a rank's shard under MPI); the views stay valid when
        ``order`` is rewritten in place. A single full batch of every row reads the data in
        place. ``loss`` None (predict) makes workspaces without loss or metric buffers.
        """
        samples = len(order)
        metric_set = self._metric_set() if loss is not None else None

        def workspace(rows: int, bind_data: bool = False) -> Workspace:
            return Workspace(self.layers, loss, metric_set, rows, self.dtype, training, data,
                             bind_data)

        if batch >= samples and samples == len(data[0]):
            return [(workspace(samples, bind_data=True), None, 0)]
        full, remainder = workspace(batch), samples % batch
        last = workspace(remainder) if remainder else None
        return [(full if start + batch <= samples else last,
                 order[start:start + batch], start) for start in range(0, samples, batch)]

    # -- training ------------------------------------------------------------

    def fit(self, x, y, epochs: int = 1, batch_size: Optional[int] = 32, shuffle: bool = True,
            validation_data: Optional[Tuple[Any, ...]] = None, validation_split: float = 0.0,
            verbose: int = 1, seed: Optional[int] = None,
            callbacks: Optional[Sequence[Callback]] = None, class_weight=None,
            sample_weight=None) -> History:
        """Train for ``epochs`` passes over (x, y); returns the per-epoch History.

        x: (N, features), converted to the model's dtype. y: what the loss
        expects: integer labels (N,) for sparse_categorical_crossentropy,
        probability (usually one-hot) rows (N, C) for categorical_crossentropy,
        values (N, M) for mse and binary_crossentropy.
        batch_size: rows per step; None means all N (full-batch gradient
        descent), 1 plain stochastic gradient descent. shuffle: True or False
        (TypeError otherwise), a new order of the rows every epoch, from ``seed`` (None or
        an int >= 0, as Sequential's). validation_data: (x_val, y_val) or
        (x_val, y_val, sample_weight_val). validation_split: the last
        ``N - floor(N * (1 - validation_split))`` rows (before shuffling) are held
        out for validation, Keras' arithmetic; ValueError when that leaves either
        part empty. verbose: 0 silent, 1 a progress bar per epoch on a terminal
        (one line per epoch otherwise), 2 one line per epoch (see fastnn.progress).
        callbacks: :class:`fastnn.callbacks.Callback` objects (the Keras
        protocol: ``model.stop_training = True`` ends training after the current
        batch). class_weight: {class: weight}; sample_weight: (N,) weights >= 0
        (not both; see :mod:`fastnn.sample_weights`).
        Under MPI (``mpiexec``; see :mod:`fastnn.distributed`) every rank trains on its shard
        of each epoch's rows at ``batch_size`` rows a step, with gradients averaged across
        ranks, and History holds the global figures.
        """
        self._require_compiled()
        epochs = inputs.count("epochs", epochs, 1)
        shuffle = flag("shuffle", shuffle)
        seed = seed_value("seed", seed)
        _check_verbose(verbose)
        split = inputs.fraction("validation_split", validation_split)
        comm = distributed.current()
        parallel = distributed.DataParallel(comm) if comm is not None else None
        if parallel is not None:  # one data order and one start on every rank
            parallel.meet("fit")
            seed = parallel.shared_seed(seed)
            verbose = verbose if comm.rank == 0 else 0
        build_seed, train_seed = np.random.SeedSequence(seed).spawn(2)
        data = self._prepare(x, y, seed=None if seed is None else build_seed,
                             sample_weight=sample_weight, class_weight=class_weight)
        validation = None
        if validation_data is not None:
            if split:
                raise ValueError("validation_split: give validation_data or validation_split, "
                                 "not both")
            validation = self._validation_data(validation_data)
        elif split:
            data, validation = _split_off(data, split)
            if class_weight is not None:  # as Keras: class_weight weighs the training rows only
                validation = validation[:3] + (None,)
        if parallel is not None:  # the same data, model and arguments on every rank
            parallel.check_fit(self, data, validation, epochs=epochs, batch_size=batch_size,
                               shuffle=shuffle)
        dropout_seed = int(train_seed.spawn(1)[0].generate_state(1, np.uint64)[0])
        if parallel is not None:  # each rank its own masks
            dropout_seed = parallel.dropout_seed(dropout_seed)
        rng = np.random.default_rng(train_seed)
        clock = counter_rng.StepClock()
        for position, layer in enumerate(self.layers):
            layer.set_random(dropout_seed, position, clock)
        permutation = np.arange(len(data[0]))
        if parallel is not None:
            parallel.broadcast_model(self)
            order = np.empty(parallel.local_rows(len(permutation)), np.int64)
            parallel.shard(permutation, order)
            if validation:
                validation = _rows_of(validation, parallel.validation_rows(len(validation[0])))
        else:
            order = permutation
        samples = len(order)
        batch = inputs.batch_size(batch_size, samples)
        plan = schedule = None
        if self._compiled(data):  # under MPI: gradients, their Allreduce, the update
            plan = plan_module.build(self, data, batch, dropout_seed, clock, rows=samples)
            steps = plan.steps
        else:
            schedule = self._schedule(data, batch, True, order, self.loss)
            steps = len(schedule)
        # a full batch's mean ignores the order, unless it is a shard of a new permutation
        shuffled = shuffle and (steps > 1 or parallel is not None)
        history = History()
        hooks = callback_list(callbacks, self, {"epochs": epochs, "steps": steps,
                                                "verbose": verbose}, history)
        evaluate_validation = (self._evaluator(validation, INFERENCE_BATCH, hooks, parallel)
                               if validation is not None else None)
        self.stop_training = False
        hooks.on_train_begin()
        logs = None
        for epoch in range(epochs):
            hooks.on_epoch_begin(epoch)
            if parallel is not None:  # a stop on any rank is every rank's (DataParallel)
                self.stop_training = parallel.any_rank(self.stop_training)
            if shuffled:
                rng.shuffle(permutation)
                if parallel is not None:
                    parallel.shard(permutation, order)
            clock.epoch = epoch
            logs = None
            totals = Totals(self._metric_set())
            bar = EpochBar(epoch, epochs, samples, totals.logs, verbose) if verbose else None
            try:
                if plan is not None:
                    self._train_epoch_compiled(plan, order, totals, bar, epoch, hooks,
                                               parallel)
                else:
                    self._train_epoch(schedule, totals, bar, epoch, hooks, clock, parallel)
                if parallel is not None:
                    parallel.broadcast_buffers(self)
                logs = totals.reduced(parallel).logs()
                if evaluate_validation is not None:
                    val_logs = evaluate_validation()
                    logs.update({f"val_{key}": value for key, value in val_logs.items()})
            finally:
                if bar is not None:
                    bar.close(totals.logs() if logs is None else logs)
            hooks.on_epoch_end(epoch, logs)
            if parallel is not None:
                self.stop_training = parallel.any_rank(self.stop_training)
            if self.stop_training:
                break
        hooks.on_train_end(logs)
        return history

    def _validation_data(self, validation_data) -> Data:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3)):
            raise ValueError("validation_data: expected a pair (x_val, y_val) or a triple "
                             "(x_val, y_val, sample_weight_val)")
        weights = validation_data[2] if len(validation_data) == 3 else None
        return self._prepare(validation_data[0], validation_data[1],
                             names=("validation_data[0]", "validation_data[1]",
                                    "validation_data[2]"), sample_weight=weights)

    def _train_epoch(self, schedule: Schedule, totals: Totals, bar: Optional[EpochBar],
                     epoch: int, hooks: CallbackList, clock: counter_rng.StepClock,
                     parallel: Optional[distributed.DataParallel] = None) -> None:
        """One pass of per-layer training steps, summing the loss and metrics into ``totals``
        (the path of models the compiled loop does not support, and its reference); ends
        early when ``stop_training`` is set. Batch hooks run only when a callback has them.
        parallel: under MPI, the gradients of each step are averaged across the ranks
        before the update, and a non-finite loss on any rank stops every rank."""
        optimizer_step = self.optimizer.step
        metric_set = totals.metric_set
        batch_hooks = hooks.batch_hooks("train")
        for step, (workspace, rows, _) in enumerate(schedule):
            if batch_hooks:
                hooks.on_train_batch_begin(step, {})
            backend = get_backend()
            clock.step = step
            # A diverging step ends in NonFiniteLossError, as on the compiled loop; the numpy
            # backend's overflow warnings on the way would only precede it.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if rows is not None:
                    workspace.load_rows(backend, rows)
                workspace.forward(backend, True)
                loss = workspace.loss_value(backend, True)
                if not (math.isfinite(loss) if parallel is None
                        else parallel.loss_is_finite(loss)):
                    raise _non_finite(loss, epoch, step, len(schedule))
                if metric_set is not None:
                    workspace.count_metrics(backend, totals.sums)
                workspace.backward(backend)
                if parallel is not None:
                    parallel.average_gradients(self._gradient_storage)
                optimizer_step(backend)
            totals.loss_sum += loss * workspace.batch
            totals.samples += workspace.batch
            if bar is not None:
                bar.advance(workspace.batch)
            if batch_hooks:
                hooks.on_train_batch_end(step, totals.logs())
                if parallel is not None:
                    self.stop_training = parallel.any_rank(self.stop_training)
            if self.stop_training:
                break

    def _train_epoch_compiled(self, plan, order: np.ndarray, totals: Totals,
                              bar: Optional[EpochBar], epoch: int,
                              hooks: Optional[CallbackList],
                              parallel: Optional[distributed.DataParallel] = None) -> None:
        """One pass of training steps through the backend's ``train_steps``, in chunks of
        about CHUNK_SECONDS (one step per chunk, with the hooks around it, when a callback
        has per-batch hooks); ends early when ``stop_training`` is set. Under MPI
        (``parallel``) each step's gradients are averaged across the ranks before its update."""
        step, stats = 0, plan.stats
        batch_hooks = hooks is not None and hooks.batch_hooks("train")
        chunks = self.__dict__.setdefault("_chunk_steps", {})  # (a model pickled before it)
        key = (get_backend_name(), plan.batch)
        # under MPI a stop set before the epoch ends it after one step on every rank (the
        # chunks, timed, differ between ranks)
        one_step = batch_hooks or (parallel is not None and self.stop_training)
        chunk = 1 if one_step else chunks.get(key, 1)
        while step < plan.steps:
            count = min(chunk, plan.steps - step)
            if batch_hooks:
                hooks.on_train_batch_begin(step, {})
            backend = get_backend()
            plan.refresh(epoch)
            began = time.perf_counter()
            try:
                if parallel is None:
                    done = backend.train_steps(plan, order, step, count, stats[step:step + count])
                else:
                    done = parallel.train_steps(backend, plan, order, step, count,
                                                stats[step:step + count])
            finally:
                plan.finish()
            elapsed = time.perf_counter() - began
            rows = plan.rows_in(step, step + done)
            # the loss of all the epoch's steps so far, summed at once: the chunks follow the
            # clock, and a sum per chunk made loss_ and the batch logs differ in the last bits
            # from run to run (and from the epoch's figure)
            totals.loss_sum = plan.loss_sum(0, step + done)
            if totals.sums:  # the one metric the plan counts (plan.unsupported)
                totals.sums[0] += float(stats[step:step + done, 1].sum())
            totals.samples += rows
            if bar is not None:
                bar.advance(rows)
            if done < count:
                raise _non_finite(float(stats[step + done, 0]), epoch, step + done, plan.steps)
            step += done
            if batch_hooks:
                hooks.on_train_batch_end(step - 1, totals.logs())
                if parallel is not None:
                    self.stop_training = parallel.any_rank(self.stop_training)
            elif not one_step:
                chunk = max(1, min(4 * count, int(count * CHUNK_SECONDS / max(elapsed, 1e-6))))
                chunks[key] = chunk  # the next epoch (and fit) starts at the size reached
            if self.stop_training:
                break

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None,
                       return_dict: bool = False
                       ) -> Union[float, List[float], Dict[str, float]]:
        """One gradient step on the batch (x, y) as given (no shuffling), as in Keras.

        Returns the batch's loss before the step, or ``[loss, *metrics]`` when compiled
        with metrics, or a dict when ``return_dict``. sample_weight, class_weight: as in
        :meth:`fit`. Dropout masks follow a count of the calls. Raises NonFiniteLossError
        (weights unchanged) when the loss is not finite.
        """
        self._require_compiled()
        data = self._prepare(x, y, sample_weight=sample_weight, class_weight=class_weight)
        rows = len(data[0])
        if self._batch_seed is None:
            self._batch_seed = int(np.random.SeedSequence(self.seed).generate_state(
                1, np.uint64)[0])
        clock, step = self._batch_clock, self._batches_trained
        for position, layer in enumerate(self.layers):
            layer.set_random(self._batch_seed, position, clock)
        totals = Totals(self._metric_set())
        if self._compiled(data):
            plan = self._batch_plans.get(rows)
            if plan is None:
                plan = plan_module.build(self, _owned(data), rows, self._batch_seed, clock)
                self._batch_plans = {rows: plan}
            plan.load(data)
            clock.step = 0  # the plan's one step; the count goes in as the epoch
            self._train_epoch_compiled(plan, np.arange(rows), totals, None, step, None)
        else:
            schedule = self._schedule(data, rows, True, np.arange(rows), self.loss)
            clock.epoch = step
            self._train_epoch(schedule, totals, None, step, callback_list(None, self, {}),
                              clock)
        self._batches_trained += 1
        logs = totals.logs()
        if return_dict:
            return logs
        return logs["loss"] if not self.metrics else list(logs.values())

    # -- inference -----------------------------------------------------------

    def _evaluator(self, data: Data, batch: int, hooks: Optional[CallbackList] = None,
                   parallel: Optional[distributed.DataParallel] = None
                   ) -> Callable[[], Dict[str, float]]:
        """A function giving the logs of ``data`` evaluated in batches of ``batch`` rows:
        the backends' compiled loop in evaluation mode where it runs the model and no
        callback has per-batch test hooks, else the per-layer path (with the hooks, and
        summed over the ranks under MPI)."""
        if not self._compiled(data, parallel) or (hooks is not None
                                                  and hooks.batch_hooks("test")):
            schedule = (self._schedule(data, batch, False, np.arange(len(data[0])), self.loss)
                        if len(data[0]) else None)
            return lambda: self._evaluate_schedule(schedule, hooks, parallel)
        plan = plan_module.build(self, data, batch, 0, counter_rng.StepClock(),
                                 plan_module.MODE_EVALUATE)
        order = np.arange(len(data[0]))

        def evaluate() -> Dict[str, float]:
            if hooks is not None:
                hooks.on_test_begin()
            plan.refresh(0)
            get_backend().train_steps(plan, order, 0, plan.steps, plan.stats)
            totals = Totals(self._metric_set())
            totals.loss_sum = plan.loss_sum(0, plan.steps)
            if totals.sums:
                totals.sums[0] = float(plan.stats[:, 1].sum())
            totals.samples = plan.samples
            logs = totals.logs()
            if hooks is not None:
                hooks.on_test_end(logs)
            return logs
        return evaluate

    def _predicts_compiled(self) -> bool:
        """Whether ``predict`` runs on the compiled loop: a compiled model the plan supports,
        in a single process (under MPI every rank predicts on the per-layer path)."""
        return (self.compiled_loop and self.loss is not None and distributed.current() is None
                and plan_module.unsupported(self) is None)

    def _predict_compiled(self, x: np.ndarray, batch: int, hooks: CallbackList) -> np.ndarray:
        """``predict``'s outputs of the checked ``x`` in batches of ``batch`` rows from the
        backend's compiled loop (plan.MODE_PREDICT): the last layer's outputs, then its
        deferred softmax or sigmoid as on the per-layer path (Dense.finish_outputs)."""
        plan = plan_module.build_predict(self, x, batch)
        hooks.on_predict_begin()
        plan.refresh(0)
        backend = get_backend()
        backend.train_steps(plan, np.arange(len(x)), 0, plan.steps, plan.stats)
        output = self.layers[-1]
        if hasattr(output, "finish_outputs"):  # Dense, Activation
            output.finish_outputs(backend, plan.outputs)
        hooks.on_predict_end()
        return plan.outputs

    def _evaluate_schedule(self, schedule: Optional[Schedule],
                           hooks: Optional[CallbackList] = None,
                           parallel: Optional[distributed.DataParallel] = None
                           ) -> Dict[str, float]:
        """The loss and metrics over ``schedule`` (None: no rows here), summed over the
        ranks under MPI."""
        totals = Totals(self._metric_set())
        batch_hooks = hooks is not None and hooks.batch_hooks("test")
        if hooks is not None:
            hooks.on_test_begin()
        for step, (workspace, rows, _) in enumerate(schedule or ()):
            if batch_hooks:
                hooks.on_test_batch_begin(step, {})
            backend = get_backend()
            if rows is not None:
                workspace.load_rows(backend, rows)
            workspace.forward(backend, False)
            totals.loss_sum += workspace.loss_value(backend, False) * workspace.batch
            totals.samples += workspace.batch
            if totals.metric_set is not None:
                workspace.count_metrics(backend, totals.sums)
            if batch_hooks:
                hooks.on_test_batch_end(step, totals.logs())
        logs = totals.reduced(parallel).logs()
        if hooks is not None:
            hooks.on_test_end(logs)
        return logs

    def evaluate(self, x, y, batch_size: Optional[int] = INFERENCE_BATCH,
                 return_dict: bool = False, sample_weight=None,
                 callbacks: Optional[Sequence[Callback]] = None,
                 verbose: int = 0) -> Union[float, List[float], Dict[str, float]]:
        """Mean loss (and metrics) on (x, y), without training.

        Returns the loss, or ``[loss, *metrics]`` when compiled with metrics, or
        a dict when ``return_dict``. batch_size bounds memory only (None: all rows).
        sample_weight: (N,) weights >= 0 of each row's loss (the loss is then
        ``sum_i w_i loss_i / N``, as Keras). callbacks: their ``on_test_*`` hooks run.
        verbose: accepted as Keras' (0, 1, 2); evaluate prints nothing.
        """
        self._require_compiled()
        _check_verbose(verbose)
        data = self._prepare(x, y, sample_weight=sample_weight)
        batch = inputs.batch_size(batch_size, len(data[0]))
        hooks = callback_list(callbacks, self, {"steps": -(-len(data[0]) // batch),
                                                "verbose": verbose})
        logs = self._evaluator(data, batch, hooks)()
        if return_dict:
            return logs
        return logs["loss"] if not self.metrics else list(logs.values())

    def predict(self, x, batch_size: Optional[int] = INFERENCE_BATCH,
                callbacks: Optional[Sequence[Callback]] = None, verbose: int = 0) -> np.ndarray:
        """Outputs (N, units) of the model's dtype: probabilities for a softmax or sigmoid
        output. batch_size bounds memory only (None: all rows at once). callbacks: their
        ``on_predict_*`` hooks run (``on_predict_batch_end`` gets the batch's outputs).
        verbose: accepted as Keras' (0, 1, 2); predict prints nothing."""
        _check_verbose(verbose)
        x = self._features("x", x)
        batch = inputs.batch_size(batch_size, len(x))
        hooks = callback_list(callbacks, self, {"steps": -(-len(x) // batch),
                                                "verbose": verbose})
        batch_hooks = hooks.batch_hooks("predict")
        if not batch_hooks and self._predicts_compiled():
            return self._predict_compiled(x, batch, hooks)
        result = np.empty((len(x), self.output_units), self.dtype)
        schedule = self._schedule((x, None, None, None), batch, False, np.arange(len(x)), None)
        output = self.layers[-1]
        hooks.on_predict_begin()
        for step, (workspace, rows, start) in enumerate(schedule):
            if batch_hooks:
                hooks.on_predict_batch_begin(step, {})
            backend = get_backend()
            if rows is not None:
                workspace.load_rows(backend, rows)
            outputs = result[start:start + workspace.batch]
            outputs[...] = workspace.forward(backend, False)
            if hasattr(output, "finish_outputs"):  # Dense, Activation
                output.finish_outputs(backend, outputs)
            if batch_hooks:
                hooks.on_predict_batch_end(step, {"outputs": outputs})
        hooks.on_predict_end()
        return result

    def predict_classes(self, x, batch_size: Optional[int] = INFERENCE_BATCH) -> np.ndarray:
        """int64 class of each row: the argmax of the outputs, or output > 0.5 for a
        single output (binary classification)."""
        outputs = self.predict(x, batch_size)
        if outputs.shape[1] == 1:
            return (outputs[:, 0] > 0.5).astype(np.int64)
        return outputs.argmax(axis=1)

    # -- weights -------------------------------------------------------------

    def get_weights(self) -> List[np.ndarray]:
        """Copies of every weight, layer by layer (Dense: kernel (K, M), bias (M,);
        BatchNormalization: gamma, beta, moving mean, moving variance (M,) each)."""
        return [param.copy() for layer in self.layers for param in layer.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace every weight (as :meth:`get_weights` lists them); all are checked before
        any is changed."""
        params = [param for layer in self.layers for param in layer.weights]
        if not self.built:
            raise ValueError("weights: the model is not built yet; build it or fit it first")
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(f"weights: expected {len(params)} arrays, got {len(weights)}")
        checked = [checked_weight(f"weights[{position}]", value, param)
                   for position, (param, value) in enumerate(zip(params, weights))]
        for param, value in zip(params, checked):
            param[...] = value  # in place: the optimizer keeps its references

    def _layer_sizes(self) -> Optional[List[Tuple[Layer, int, int]]]:
        """(layer, input size, output size) of each layer; None while the input size is not
        known. Known from the first layer's input_dim before the weights exist."""
        units = self.input_dim
        if units is None or not self.layers:
            return None
        sizes = []
        for layer in self.layers:
            output = layer.output_units(units)
            sizes.append((layer, units, output))
            units = output
        return sizes

    def count_params(self) -> int:
        """How many numbers the weights hold, trainable or not (Keras' count_params); known
        once the input size is (as in Keras, before the weights are created when the first
        layer has input_dim)."""
        sizes = self._layer_sizes()
        if sizes is None:
            raise ValueError("model: the input size is not known yet; give input_dim= to the "
                             "first layer, or call build, fit or predict")
        return sum(layer.parameter_count(inputs) for layer, inputs, _ in sizes)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Print each layer's output shape and parameter count, and the total."""
        sizes = self._layer_sizes()
        if sizes is None:
            print_fn("Sequential (not built: the input size is not known yet)")
            return
        rows = [(f"{position}: {layer.describe()}", f"(None, {output})",
                 layer.parameter_count(inputs))
                for position, (layer, inputs, output) in enumerate(sizes)]
        width = max(len(row[0]) for row in rows) + 2
        lines = [f"Sequential ({self.dtype}, {self.input_dim} inputs)",
                 f"{'Layer':<{width}}{'Output shape':<16}{'Params':>10}"]
        lines += [f"{name:<{width}}{shape:<16}{count:>10,}" for name, shape, count in rows]
        total = sum(row[2] for row in rows)
        frozen = sum(layer.non_trainable_count(inputs) for layer, inputs, _ in sizes)
        lines += [f"Total params: {total:,}", f"Trainable params: {total - frozen:,}",
                  f"Non-trainable params: {frozen:,}"]
        if not self.built:
            lines.append("(weights not created yet: build, fit or predict creates them)")
        print_fn("\n".join(lines))

    def save(self, path) -> None:
        """Architecture, compile settings, weights and the optimizer's state in one .npz
        file (no pickle), written atomically with the mode a plain ``open`` gives (and
        an overwritten file's mode kept); see :mod:`fastnn.files`. Under MPI
        (:mod:`fastnn.distributed`) only rank 0 writes: every rank holds the same model."""
        from .serialization import save_model
        if not distributed.is_main():  # under MPI, rank 0 alone writes (all hold the same)
            return
        save_model(self, path)

    def save_weights(self, path) -> None:
        """Like :meth:`save` without the optimizer's state: what ``load_weights`` (or
        ``load_model``) reads back. Under MPI only rank 0 writes."""
        from .serialization import save_model
        if not distributed.is_main():
            return
        save_model(self, path, include_optimizer=False)

    def load_weights(self, path) -> None:
        """Set the weights from a file saved by :meth:`save` of the same architecture;
        on any error the model is left unchanged."""
        from .serialization import read_weights_for
        self.set_weights(read_weights_for(self, path))


def _check_verbose(verbose) -> None:
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")


def _split_off(data: Data, fraction: float) -> Tuple[Data, Data]:
    """The first rows for training and the last for validation, Keras' arithmetic:
    training keeps ``floor(N * (1 - fraction))`` rows (keras.utils' train_validation_split)."""
    samples = len(data[0])
    cut = int(math.floor(samples * (1.0 - fraction)))
    if cut == 0 or cut == samples:
        raise ValueError(f"validation_split: {fraction} of {samples} samples leaves "
                         f"{samples - cut} for validation and {cut} for training; give more "
                         f"data or another validation_split")

    return _rows_of(data, slice(0, cut)), _rows_of(data, slice(cut, None))


def _owned(data: Data) -> Data:
    """Copies of the arrays of ``data`` (labels that are the targets stay one array)."""
    x, targets, labels, weights = (None if array is None else array.copy() for array in data)
    return x, targets, (targets if data[2] is data[1] else labels), weights


def _non_finite(loss: float, epoch: int, step: int, steps: int) -> "NonFiniteLossError":
    return NonFiniteLossError(
        f"loss is {loss} at epoch {epoch + 1}, step {step + 1} of {steps} (counting from 1); "
        f"the weights are left as before this step. Lower the learning rate, or check the "
        f"data for extreme values")


def _rows_of(data: Data, rows: slice) -> Data:
    """The given rows of model-ready data, contiguous; sparse labels stay shared."""
    x, targets, labels, weights = (None if array is None else np.ascontiguousarray(array[rows])
                                   for array in data)
    return x, targets, (targets if data[2] is data[1] else labels), weights
