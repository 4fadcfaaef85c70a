"""``dropout:grad`` and ``dropout:step``: the task's dropout layers at their own rates, the
candidate and the reference given the same masks.

Every other check runs dropout at rate 0 (`fwbench.conformance.checks.deterministic`): each
framework draws its masks from its own generator, so two correct backends never agree on a
train-mode pass with dropout. These two checks hand both sides the same keep masks through a
check-only seam, ``Trainer.use_dropout_masks(keep)``: ``keep`` maps each dropout layer's path to a
bool array ``(N, *sample)`` in canonical layout (``(N, C, H, W)`` or ``(N, features)``), and every
following train-mode forward uses it instead of drawing, still scaling the kept values by
``1 / (1 - rate)`` itself. What they check is therefore everything but the generator: the scaling
(a keep probability taken for a drop rate fails), where the mask applies (layout, residual
bodies), the gradient through it, and that eval mode ignores it (``logits`` and ``inference``
already check eval mode with the layers in place). The masks' distribution is not checked.

A backend without the seam (the Keras and Flax frontends: their masks come from the engine's
dropout layer) is listed as skipped for these checks, never failed.
"""
from __future__ import annotations

import numpy as np

from ..layers import Dropout, Layer, Residual
from ..model import analyze, initial_weights
from .compare import Check, compare, compare_updates, skipped_check, worst
from .rounding import STEP_PROBE_SEEDS, probed, step_slack
from .variants import _put, conditioned, deterministic, without_gauge_biases

QUANTITIES = ("dropout:grad", "dropout:step")
SEAM = "use_dropout_masks"


def has_dropout(layers: tuple[Layer, ...]) -> bool:
    """Whether a dropout layer with a rate above 0 is among ``layers`` (residual bodies included)."""
    return any((isinstance(layer, Dropout) and layer.rate > 0)
               or (isinstance(layer, Residual) and has_dropout(layer.layers)) for layer in layers)


def keep_masks(info, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A keep mask ``(batch_size, *sample)`` for each dropout layer of ``info``, P(keep) = 1 - rate."""
    return {li.path: rng.random((batch_size, *li.in_shape)) >= li.layer.rate
            for li in info.walk() if isinstance(li.layer, Dropout) and li.layer.rate > 0}


def dropout_checks(name, task, candidate, reference, shape, classes, data, lrs, device, tolerances) -> list:
    """The two checks, float64 on both sides, on ``data`` (the `STEPS` batches of the step checks)
    with the learning rates ``lrs``; ``tolerances``: ``(grad rtol, grad atol, step rtol, step atol)``
    as for ``grad:`` and ``step:``."""
    from ..backend import BuildRequest, Unsupported

    if not has_dropout(task.model.layers):
        return []
    grad_rtol, grad_atol, step_rtol, step_atol = tolerances
    bs = len(data[0][1])
    # dropout kept, gauge biases dropped (as for `step:`), the task's optimizer with eps conditioned
    spec = deterministic(task, "float64", batch_size=bs, layers=without_gauge_biases(task.model.layers),
                         optimizer=conditioned(task.optimizer))
    info = analyze(spec.model, shape, classes, spec.source)
    weights = initial_weights(spec.model, info, spec.training.seed, "float64")

    def build(backend, where):
        return backend.build(BuildRequest(spec, info, dict(weights), where, classes))

    try:
        c = build(candidate, device)
    except Unsupported as exc:
        return [skipped_check(candidate.name, name, q, str(exc)) for q in QUANTITIES]
    if not hasattr(c, SEAM):
        reason = f"{candidate.name}'s trainer has no {SEAM} (it draws its own masks; docs/conformance.md)"
        return [skipped_check(candidate.name, name, q, reason) for q in QUANTITIES]
    r = build(reference, "cpu")
    rng = np.random.default_rng([spec.training.seed, 21])
    checks = []

    masks = keep_masks(info, bs, rng)
    r.use_dropout_masks(masks)
    c.use_dropout_masks(masks)
    r_logits, _, r_grads = r.loss_and_grads(_put(r, data[0], "float64"))
    c_logits, _, c_grads = c.loss_and_grads(_put(c, data[0], "float64"))
    scale = max((float(np.abs(g).max(initial=0.0)) for g in r_grads.values()), default=1.0)
    results = [compare(r_logits, c_logits, grad_rtol, grad_atol * max(scale, 1.0))]
    results += [compare(r_grads[k], c_grads.get(k, np.full(1, np.nan)), grad_rtol, grad_atol * max(scale, 1.0))
                for k in sorted(r_grads)]
    checks.append(Check(candidate.name, name, "dropout:grad", *worst(results)))

    # as for `step:`: 10x the spread of the reference's steps under its rounding probe is allowed,
    # for updates made of rounding noise (`fwbench.conformance.checks.check_task`)
    probes = [probed(build(reference, "cpu"), seed) for seed in STEP_PROBE_SEEDS]
    for batch, lr in zip(data, lrs):
        masks = keep_masks(info, bs, rng)
        for trainer in (r, *probes, c):
            trainer.use_dropout_masks(masks)
            trainer.sync(trainer.train_step(_put(trainer, batch, "float64"), lr))
    rw, cw = r.get_weights(), c.get_weights()
    slack = step_slack(rw, probes)
    checks.append(Check(candidate.name, name, "dropout:step", *worst(
        [compare_updates(weights[k], rw[k], cw.get(k, np.full(1, np.nan)), step_rtol, step_atol, slack[k])
         for k in rw])))
    return checks

