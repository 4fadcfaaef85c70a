"""The inference check of ``bench check``: eval-mode outputs against the NumPy float64 reference.

Where the training checks run the model without dropout and with untouched BatchNorm statistics,
this one serves the task's own model as ``--scenario inference`` does: dropout layers in place
(they must be the identity at eval) and BatchNorm running statistics moved away from their initial
0 and 1 (seeded), so that a backend normalising with batch statistics, or ignoring the running ones,
fails. One batch of `BATCH` samples, candidate in float32 against the reference in float64, with the
forward pass's float32 tolerance (`fwbench.conformance.checks.RTOL`/`ATOL` plus 10x the reference's own
float32 error, as for ``logits``). Quantity: ``inference`` (one per task and backend).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import BuildRequest, Unsupported

QUANTITY = "inference"
BATCH = 8


def served_task(task):
    """``task`` in the inference scenario (what `Backend.supports` is asked about)."""
    return dataclasses.replace(task, task=dataclasses.replace(task.task, scenario="inference"))


def eval_weights(task, info, dtype: str, seed: int = 7) -> dict[str, np.ndarray]:
    """The canonical initial weights with every BatchNorm's running mean in ``[-0.5, 0.5]`` and
    running variance in ``[0.5, 2]`` (seeded), so that eval mode has statistics of its own."""
    from ..model import initial_weights

    weights = initial_weights(task.model, info, task.training.seed, dtype)
    rng = np.random.default_rng(seed)
    for name in sorted(weights):
        if name.endswith(".running_mean"):
            weights[name] = rng.uniform(-0.5, 0.5, weights[name].shape).astype(dtype)
        elif name.endswith(".running_var"):
            weights[name] = rng.uniform(0.5, 2.0, weights[name].shape).astype(dtype)
    return weights


def _logits(backend, task, shape, classes, x, dtype: str, device: str) -> np.ndarray:
    from ..model import analyze

    task = dataclasses.replace(task, training=dataclasses.replace(task.training, dtype=dtype))
    info = analyze(task.model, shape, classes, task.source)
    trainer = backend.build(BuildRequest(task, info, eval_weights(task, info, dtype), device, classes))
    fed = trainer.to_device(x.astype(dtype), np.zeros(len(x), np.int64))
    out = np.asarray(trainer.predict(fed), np.float64)
    trainer.sync()
    return out


def inference_logits(task, candidate, reference, shape, classes, device: str = "cpu"):
    """``(reference float64, reference float32, candidate float32)`` eval-mode logits ``(BATCH,
    classes)`` of the served ``task`` on one seeded batch; a str (the reason) where the candidate
    declines to serve it (`Backend.supports`, or `Unsupported` from its build).
    `fwbench.conformance.checks.check_one` turns them into the ``inference`` row."""
    served = served_task(task)
    support = candidate.supports(served)
    if not support.ok:
        return support.reason
    x = np.random.default_rng(11).normal(size=(BATCH, *shape))
    try:
        exact = _logits(reference, served, shape, classes, x, "float64", "cpu")
        rounded = _logits(reference, served, shape, classes, x, "float32", "cpu")
        got = _logits(candidate, served, shape, classes, x, "float32", device)
    except Unsupported as exc:
        return str(exc)
    return exact, rounded, got
