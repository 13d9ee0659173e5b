"""Optimizers: SGD and Adam, each step a few backend kernel calls.

An optimizer is bound to a model's parameters once (:meth:`Optimizer.bind`
allocates its state beside each parameter); :meth:`Optimizer.step` then
updates every parameter in place from its gradient buffer. A model keeps its
parameters back to back in one buffer and its gradients in another, so small
parameters next to each other share one kernel call (see :func:`kernel_calls`).
Hyperparameters are attributes read at every step, so
``optimizer.lr = 0.001`` (or Keras' name, ``optimizer.learning_rate``) between
epochs takes effect at once. Setting one checks the value as the constructor
does (ValueError or TypeError naming it).

An optimizer belongs to one model (:meth:`Optimizer.attach`): its state lies
beside that model's parameters, so compiling one optimizer object into a second
model raises ValueError, as Keras does, instead of silently stepping the wrong
model.
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from .validation import positive_number


def _probability(name: str, value) -> float:
    value = positive_number(name, value, allow_zero=True)
    if value >= 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value}")
    return value


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]  # ~1.3 us: what _SPANS saves


#: storage_span's answers: id of each array -> (a weak reference to each array, its dtype,
#: and the span's element range in their base, or None). A view's base and data never change
#: while it lives, so an answer holds while every array is still the one referred to (ids are
#: reused only after death) and has its dtype (assigning ``array.dtype`` reinterprets it in
#: place); its shape may change only to one of the same bytes. fit, predict, evaluate and
#: train_on_batch ask four times per call, about 24 addresses: 30 us of a 100 us predict.
_SPANS: Dict[Tuple[int, ...], tuple] = {}
_SPANS_MOST = 256  # answers kept (cleared past it: most belong to dead models)


def storage_span(arrays: Sequence[np.ndarray]) -> Optional[np.ndarray]:
    """One 1-D array over all of ``arrays`` when they are C-contiguous views lying back to
    back, in order, in one 1-D buffer (as a built Model keeps them); else None."""
    if not arrays:
        return None
    key = tuple(map(id, arrays))
    known = _SPANS.get(key)
    if known is not None and all(ref() is array and array.dtype is dtype
                                 for ref, array, dtype in zip(known[0], arrays, known[1])):
        span = known[2]
    else:
        span = _find_span(arrays)
        _remember_span(key, arrays, span)
    return None if span is None else arrays[0].base[span[0]:span[1]]


def _remember_span(key: Tuple[int, ...], arrays: Sequence[np.ndarray],
                   span: Optional[Tuple[int, int]]) -> None:
    try:
        refs = tuple(weakref.ref(array) for array in arrays)
    except TypeError:  # not ndarrays: nothing to remember
        return
    if len(_SPANS) >= _SPANS_MOST:
        _SPANS.clear()
    _SPANS[key] = (refs, tuple(array.dtype for array in arrays), span)


def _find_span(arrays: Sequence[np.ndarray]) -> Optional[Tuple[int, int]]:
    """storage_span's element range in the base of ``arrays``, or None."""
    base = getattr(arrays[0], "base", None)
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    origin, dtype = _address(base), base.dtype
    start = position = _address(arrays[0]) - origin
    for array in arrays:
        if (getattr(array, "base", None) is not base or array.dtype != dtype
                or not array.flags.c_contiguous or _address(array) - origin != position):
            return None
        position += array.nbytes
    return start // base.itemsize, position // base.itemsize


def views_into(storage: np.ndarray, shapes: Sequence[tuple]) -> List[np.ndarray]:
    """Arrays of ``shapes`` lying back to back, in order, in the 1-D ``storage`` (views: what
    :func:`storage_span` joins again)."""
    views, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        views.append(storage[offset:offset + size].reshape(shape))
        offset += size
    return views


#: Arrays joined into one kernel call hold fewer numbers than this together. Below it the
#: kernels run on one thread (they split from 32768 numbers on in numba, 65536 in C), so a
#: join changes no thread's share of a large array: each thread updates the rows of the
#: weights that it reads in the next forward pass (the split of the C GEMM's K), and a share
#: moved to the other core would be read from its cache.
JOIN_LIMIT = 1 << 15


def kernel_calls(params: Sequence[np.ndarray], grads: Sequence[np.ndarray]):
    """The kernel calls of one step: runs of consecutive parameters that lie back to back,
    with their gradients, and hold fewer than :data:`JOIN_LIMIT` numbers together share one
    call over their span; every other parameter has a call of its own. Each call costs about
    0.8 us of Python and cffi: the training step of a 2-8-2 network took 19.0 us with a call
    per array and 16.4 us with one call. Returns ``[(first, end, param, grad)]``: parameters
    ``first..end-1`` and the arrays the call takes."""
    calls, first = [], 0
    while first < len(params):
        end, size = first + 1, params[first].size
        while (end < len(params) and size + params[end].size < JOIN_LIMIT
               and storage_span(params[first:end + 1]) is not None
               and storage_span(grads[first:end + 1]) is not None):
            size += params[end].size
            end += 1
        if end - first == 1:
            calls.append((first, end, params[first], grads[first]))
        else:
            calls.append((first, end, storage_span(params[first:end]),
                          storage_span(grads[first:end])))
        first = end
    return calls


def _zeros_for(params: Sequence[np.ndarray], calls):
    """Zeroed state for ``params``: (one array per parameter, one per kernel call, one flat
    array over all or None), the former views into the latter. When the parameters lie back
    to back in one buffer, so does their state, in one flat array (what a compiled training
    loop updates in one pass: see fastnn.plan)."""
    span = storage_span(params)
    whole = None if span is None else np.zeros_like(span)
    per_param: List[Optional[np.ndarray]] = [None] * len(params)
    per_call = []
    for first, end, param, _ in calls:
        if whole is None:
            storage = np.zeros_like(param)
        else:
            offset = (_address(param) - _address(span)) // param.itemsize
            storage = whole[offset:offset + param.size].reshape(param.shape)
        per_param[first:end] = views_into(storage.reshape(-1),
                                          [params[index].shape for index in range(first, end)])
        per_call.append(storage)
    return per_param, per_call, whole


class _Hyperparameter:
    """An optimizer's hyperparameter: read as a plain attribute (kept under ``_<stored>``),
    and on every assignment, the constructor's included, checked by ``check(name, value)``,
    which names the attribute in its TypeError or ValueError; a refused value leaves the old
    one. ``stored`` lets an alias (Keras' ``learning_rate``) share another's value."""

    def __init__(self, check, doc: str, stored: Optional[str] = None):
        self.check, self.__doc__, self.stored = check, doc, stored

    def __set_name__(self, owner, name: str) -> None:
        self.name = name
        self.slot = f"_{self.stored or name}"

    def __get__(self, optimizer, owner=None):
        return self if optimizer is None else getattr(optimizer, self.slot)

    def __set__(self, optimizer, value) -> None:
        setattr(optimizer, self.slot, self.check(self.name, value))


def _non_negative(name: str, value) -> float:
    return positive_number(name, value, allow_zero=True)


class Optimizer:
    """The base class of optimizers (SGD, Adam).

    Sequential.compile accepts an Optimizer object or one of the names "sgd"
    and "adam" (default settings). A subclass allocates its state in bind and
    updates the parameters in step; both are internal (called by Sequential).
    """

    name = ""

    def __init__(self, lr: float, weight_decay: float):
        self.lr = lr
        self.weight_decay = weight_decay
        self._owner: Optional[weakref.ref] = None

    lr = _Hyperparameter(positive_number, """The learning rate; setting it checks the value
        (a finite number > 0: TypeError for a non-number, ValueError otherwise, naming lr).""")
    learning_rate = _Hyperparameter(positive_number, """Keras' name for lr; setting it checks
        the value (a finite number > 0).""", stored="lr")
    weight_decay = _Hyperparameter(_non_negative, """The L2 penalty; setting it checks the
        value (a finite number >= 0).""")

    def __getstate__(self) -> Dict[str, Any]:
        """The state for copy.deepcopy and pickle, without the owning model: a copy belongs
        to no model until one is compiled with it (or, inside a copied Sequential, to that
        copy: Sequential.__setstate__)."""
        state = dict(self.__dict__)
        state["_owner"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Optimizers pickled before the hyperparameters became checked properties kept
        # them in the instance dict under their public names.
        for name in ("lr", "weight_decay", "momentum", "beta1", "beta2", "eps"):
            if name in state:
                state[f"_{name}"] = state.pop(name)
        self.__dict__.update(state)

    def attach(self, model) -> None:
        """Internal, called by Sequential.compile: make this optimizer the model's.

        Raises ValueError when another live model owns it: the optimizer's state
        (momentum, Adam's moments and step count) follows one model's parameters,
        and sharing it would step whichever model was built last. Give each model
        its own, e.g. type(opt)(**opt.get_config()) or a name like "sgd".
        """
        owner = self._owner() if self._owner is not None else None
        if owner is not None and owner is not model:
            raise ValueError(
                f"optimizer: this {type(self).__name__} object is already compiled into "
                f"another model; an optimizer belongs to one model (its state follows that "
                f"model's parameters). Give this model its own: "
                f"{type(self).__name__}(**optimizer.get_config()) or the name {self.name!r}")
        self._owner = weakref.ref(model)

    def detach(self, model) -> None:
        """Internal, called by Sequential.compile: release the optimizer from the model
        (when the model is recompiled with another one)."""
        if self._owner is not None and self._owner() is model:
            self._owner = None

    def bind(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Internal, called by Sequential: track params (updated in place) and their
        gradient buffers; reset the state."""
        raise NotImplementedError

    def step(self, backend) -> None:
        """Internal, called by Sequential.fit: update every bound parameter from its
        gradient, with the given backend."""
        raise NotImplementedError

    #: The compiled training loop's description of a subclass that computes a fastnn
    #: optimizer's step with the terms of :meth:`compiled_terms` (fastnn.plan reads it): the
    #: fastnn class whose step runs. Read from the class's own body only, never inherited.
    compiled_as: Optional[type] = None

    def compiled_terms(self) -> Tuple[float, bool]:
        """Internal, read by fastnn.plan with compiled_as: (l2, eps_uncorrected).
        l2: scikit-learn's alpha, l2 / rows * W added to each weight matrix's gradient (not
        the biases') and l2 / (2 rows) * ||W||^2 to the step's loss; eps_uncorrected: Adam
        adds eps to sqrt(v) (scikit-learn's form) instead of to sqrt(v_hat). fastnn's own
        optimizers: (0, False)."""
        return 0.0, False

    def flat_state(self) -> Optional[tuple]:
        """Internal, called by fastnn.plan: the state as two flat arrays parallel to the flat
        parameters (SGD: the velocity,
        or an empty array without momentum, then an empty array; Adam: m and v), or None
        when the parameters were not bound as one buffer."""
        raise NotImplementedError

    def state(self) -> Dict[str, np.ndarray]:
        """Copies of the state kept beside the parameters, by name (what a saved model
        stores, so that training resumes where it stopped)."""
        raise NotImplementedError

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        """Restore the state() of an optimizer bound to parameters of the same shapes.
        Everything is checked before anything changes; ValueError names what does not fit."""
        current = self.state()
        if set(state) != set(current):
            raise ValueError(f"optimizer state: expected {sorted(current)}, got {sorted(state)}")
        for name, value in state.items():
            value = np.asarray(value)
            if value.shape != current[name].shape or value.dtype.kind not in "iuf":
                raise ValueError(f"optimizer state {name!r}: expected shape "
                                 f"{current[name].shape} numbers, got {value.shape} "
                                 f"{value.dtype}")
            if not np.isfinite(value).all():
                raise ValueError(f"optimizer state {name!r}: expected finite numbers")
        self._restore({name: np.asarray(value) for name, value in state.items()})

    def _restore(self, state: Dict[str, np.ndarray]) -> None:
        """Copy the checked ``state`` in."""
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments, JSON-safe (state is not included)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum, Nesterov and weight decay
    (torch.optim.SGD); the name "sgd" in compile gives SGD() with these defaults.

    lr: the learning rate, a finite number > 0 (default 0.01).
    momentum: in [0, 1) (default 0, plain SGD).
    nesterov: Nesterov momentum (needs momentum > 0).
    weight_decay: L2 penalty added to the gradient, >= 0 (default 0).

    Each step, for each parameter p with gradient grad:
        g = grad + weight_decay * p
        with momentum: v = momentum * v + g, then g = v (Nesterov: g = g + momentum * v)
        p = p - lr * g
    Raises ValueError naming the argument for a value out of range.
    """

    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.nesterov = False
        self.momentum = momentum
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum requires momentum > 0")
        self.nesterov = bool(nesterov)
        self._slots: List[tuple] = []
        self._steps: List[tuple] = []  # (param, grad, velocity) per kernel call
        self._flat: Optional[tuple] = None

    @property
    def momentum(self) -> float:
        """Setting it checks the value (a number in [0, 1), > 0 with Nesterov)."""
        return self._momentum

    @momentum.setter
    def momentum(self, value) -> None:
        value = _probability("momentum", value)
        if value == 0 and self.nesterov:
            raise ValueError("momentum: Nesterov momentum requires momentum > 0, got 0.0")
        self._momentum = value

    def bind(self, params, grads):
        calls = kernel_calls(params, grads)
        empty = np.zeros(0, params[0].dtype if params else np.float32)
        if self.momentum:
            velocities, call_velocities, whole = _zeros_for(params, calls)
            self._flat = None if whole is None else (whole, empty)
        else:
            velocities, call_velocities = [None] * len(params), [None] * len(calls)
            self._flat = (empty, empty) if storage_span(params) is not None else None
        self._slots = list(zip(params, grads, velocities))
        self._steps = [(param, grad, velocity)
                       for (_, _, param, grad), velocity in zip(calls, call_velocities)]

    def flat_state(self):
        return self._flat

    def state(self):
        return {f"velocity_{index}": velocity.copy()
                for index, (_, _, velocity) in enumerate(self._slots) if velocity is not None}

    def _restore(self, state):
        for index, (_, _, velocity) in enumerate(self._slots):
            if velocity is not None:
                velocity[...] = state[f"velocity_{index}"]

    def step(self, backend):
        sgd_step = backend.sgd_step
        lr, momentum, nesterov, decay = self.lr, self.momentum, self.nesterov, self.weight_decay
        for param, grad, velocity in self._steps:
            sgd_step(param, grad, velocity, lr, momentum, nesterov, decay)

    def get_config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with PyTorch's defaults (torch.optim.Adam) and L2 weight
    decay; the name "adam" in compile gives Adam() with these defaults.

    lr: the learning rate, a finite number > 0 (default 0.001).
    beta1, beta2: decay rates of the first and second moment estimates, in [0, 1)
        (defaults 0.9 and 0.999).
    eps: added to the square root of the second moment, > 0 (default 1e-8).
    weight_decay: L2 penalty added to the gradient, >= 0 (default 0).

    Raises ValueError naming the argument for a value out of range.
    """

    name = "adam"

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.steps = 0
        self._slots: List[tuple] = []
        self._steps: List[tuple] = []  # (param, grad, m, v) per kernel call
        self._flat: Optional[tuple] = None

    beta1 = _Hyperparameter(_probability, "Setting it checks the value (a number in [0, 1)).")
    beta2 = _Hyperparameter(_probability, "Setting it checks the value (a number in [0, 1)).")
    eps = _Hyperparameter(positive_number,
                          "Setting it checks the value (a finite number > 0).")

    def bind(self, params, grads):
        self.steps = 0
        calls = kernel_calls(params, grads)
        first_moments, call_first_moments, m_whole = _zeros_for(params, calls)
        second_moments, call_second_moments, v_whole = _zeros_for(params, calls)
        self._flat = None if m_whole is None else (m_whole, v_whole)
        self._slots = list(zip(params, grads, first_moments, second_moments))
        self._steps = [(param, grad, m, v) for (_, _, param, grad), m, v
                       in zip(calls, call_first_moments, call_second_moments)]

    def flat_state(self):
        return self._flat

    def state(self):
        state = {"steps": np.array(self.steps)}
        for index, (_, _, m, v) in enumerate(self._slots):
            state[f"m_{index}"], state[f"v_{index}"] = m.copy(), v.copy()
        return state

    def _restore(self, state):
        steps = int(state["steps"])
        if steps < 0:
            raise ValueError(f"optimizer state 'steps': expected a count >= 0, got {steps}")
        self.steps = steps
        for index, (_, _, m, v) in enumerate(self._slots):
            m[...], v[...] = state[f"m_{index}"], state[f"v_{index}"]

    def step(self, backend):
        self.steps += 1
        adam_step, step = backend.adam_step, self.steps
        lr, beta1, beta2, eps, decay = self.lr, self.beta1, self.beta2, self.eps, self.weight_decay
        for param, grad, m, v in self._steps:
            adam_step(param, grad, m, v, lr, beta1, beta2, eps, decay, step)

    def get_config(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}


OPTIMIZERS: Dict[str, Type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam)}


def get(identifier: Union[str, Optimizer]) -> Optimizer:
    """The optimizer named identifier ("sgd" or "adam", default settings; any case), or the
    Optimizer object itself. Raises ValueError for another name."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    raise ValueError(f"optimizer: unknown optimizer {identifier!r}; expected an Optimizer or "
                     f"one of {sorted(OPTIMIZERS)}")


def from_config(name: str, config: Dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer saved by Optimizer.get_config."""
    return OPTIMIZERS[get(name).name](**config)
