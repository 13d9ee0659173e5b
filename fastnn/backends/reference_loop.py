"""The readable reference of ``train_steps``: the per-layer calls of Sequential's step.

The numpy backend's ``train_steps`` is :func:`train_steps` with its own kernels; the
compiled loops (kernels/train_impl.h, numba_kernels/train.py) are tested against it and
against the per-layer path. Each step calls the layers', the loss's, the metric's and the
optimizer's own methods on the plan's buffers, exactly as ``Sequential`` does step by step
(fastnn.workspace), so this loop adds no arithmetic of its own.
"""

from __future__ import annotations

import math

import numpy as np


class _Scratch:
    """The layers', loss's and metric's working memory for the plan's batch size."""

    def __init__(self, plan):
        model, batch = plan.model, plan.batch
        self.layers = [layer.make_scratch(batch, plan.dtype, True) for layer in model.layers]
        self.loss = model.loss.make_scratch(batch, model.output_units, plan.dtype)
        from .. import plan as plan_module
        metric = plan_module._metric(model)
        self.metric = (metric.make_scratch(batch, model.output_units, plan.dtype) if metric
                       else None)


def _rows(scratch, rows: int):
    """The first ``rows`` rows of a scratch array, or of each array of a tuple."""
    if isinstance(scratch, np.ndarray):
        return scratch[:rows]
    if isinstance(scratch, tuple):
        return tuple(_rows(item, rows) for item in scratch)
    return scratch


def _weight_squares(plan) -> float:
    """Sum of ``||W||^2`` over the plan's weight matrices (not the biases), float64."""
    from .. import plan as plan_module

    total = 0.0
    for row in plan.layer_ints:
        if row[plan_module.KIND] == plan_module.LAYER_DENSE:
            start = int(row[plan_module.WEIGHT])
            w = plan.params[start:start + int(row[plan_module.INPUTS] * row[plan_module.UNITS])]
            total += float(np.dot(w, w))
    return total


def train_steps(kernels, plan, order, first_step, steps, stats) -> int:
    """:meth:`fastnn.backends.contract.Backend.train_steps` with ``kernels`` (a backend module)."""
    from .. import plan as plan_module  # the plan's constants; no import cycle at load time

    model = plan.model
    scratch = plan.cache.get("reference")
    if scratch is None:
        scratch = plan.cache["reference"] = _Scratch(plan)
    layers, loss, optimizer = model.layers, model.loss, model.optimizer
    metric = plan_module._metric(model)
    batch, samples = plan.batch, plan.samples
    gather = bool(plan.config[plan_module.C_GATHER])
    epoch = int(plan.config[plan_module.C_EPOCH])
    mode = plan.config[plan_module.C_MODE]
    training = mode in (plan_module.MODE_TRAIN, plan_module.MODE_GRADIENTS)
    if mode == plan_module.MODE_APPLY:  # the update alone, from grads
        for _ in range(steps):
            optimizer.step(kernels)
            if hasattr(optimizer, "steps"):
                plan.config[plan_module.C_ADAM_STEP] = optimizer.steps
        return steps
    sources = (plan.x, plan.labels, plan.targets, plan.classes, plan.flags)
    buffers = (plan.x_batch, plan.labels_batch, plan.targets_batch, plan.classes_batch,
               plan.flags_batch)
    squares = None  # the L2 term's ||W||^2, folded into the update of the step before
    for s in range(steps):
        step = first_step + s
        start = step * batch
        rows = min(batch, samples - start)
        if gather:
            for source, buffer in zip(sources, buffers):
                if len(source):
                    kernels.take_rows(source, order[start:start + rows], buffer[:rows])
            x, labels, targets, classes, flags = (buffer[:rows] for buffer in buffers)
        else:
            x, labels, targets, classes, flags = sources
        plan.clock.epoch, plan.clock.step = epoch, step
        inputs = [x]
        for position, layer in enumerate(layers):
            out = plan.layer_output(position, rows)
            layer.forward(kernels, inputs[-1], out, _rows(scratch.layers[position], rows),
                          training)
            inputs.append(out)
        if mode == plan_module.MODE_PREDICT:  # the step's outputs, in its place in outputs
            plan.outputs[start:start + rows] = inputs[-1]
            continue
        outputs, grad = inputs[-1], plan.layer_output(len(layers) - 1, rows, gradient=True)
        value = loss(kernels, outputs, labels if labels.size else targets,
                     grad if training else None, _rows(scratch.loss, rows))
        if training and plan.hyper[plan_module.H_L2]:
            # the L2 term's loss (its gradient is the optimizer's step: Optimizer.compiled_terms)
            value += plan.hyper[plan_module.H_L2] / (2 * rows) * (
                _weight_squares(plan) if squares is None else squares)
        squares = None
        stats[s, 0], stats[s, 1] = value, 0
        if not math.isfinite(value) and training:
            plan.moving_in()
            return s
        if metric is not None:
            # the metric's truth: class labels, or 0/1 flags (targets above 0.5)
            stats[s, 1] = metric.count(kernels, outputs, flags if flags.size else targets,
                                       classes if classes.size else None,
                                       _rows(scratch.metric, rows))
        if not training:
            continue
        for position in range(len(layers) - 1, -1, -1):
            input_grad = plan.layer_output(position - 1, rows, gradient=True) if position \
                else None
            layers[position].backward(kernels, inputs[position], inputs[position + 1],
                                      plan.layer_output(position, rows, gradient=True),
                                      input_grad, _rows(scratch.layers[position], rows))
        if mode == plan_module.MODE_GRADIENTS:
            continue  # the gradients stay in grads (data-parallel training reduces them)
        optimizer.step(kernels)
        if hasattr(optimizer, "steps"):
            plan.config[plan_module.C_ADAM_STEP] = optimizer.steps
        if plan.hyper[plan_module.H_L2] and s + 1 < steps:
            squares = _weight_squares(plan)  # the compiled loops sum it here, in cache
    plan.moving_in()  # the batch norms updated their own moving statistics: the plan's copy
    return steps
