"""Cross-backend conformance: same weights + same batch → same logits, loss, gradients and updates.

The reference is the NumPy backend in float64. What each check compares, and why (the reasoning
behind every tolerance is in ``docs/conformance.md``):

* ``logits``, ``train logits``, ``loss``: the candidate in float32 against the reference in
  float64, eval and train mode, from the canonical initial weights (dropout off, BatchNorm on
  batch statistics). A forward pass is continuous in its inputs, so float32 rounding stays small.
* ``grad:<name>``: one train-mode backward, both sides in **float64**. A gradient is discontinuous
  at every ReLU/max-pool kink: in float32 a pre-activation within rounding of 0 legitimately takes
  the other branch and moves one element by a whole ``dy``; in float64 that needs a value within
  1e-16 of the kink. The reference itself is checked against central finite differences
  (``fd:<name>``) instead, as comparing it with itself could not fail.
* ``rule:<optimizer>``, ``rule:clip-*``, ``rule:lr-per-step``, ``rule:task``: each backend's
  optimizer, clipping and learning-rate plumbing on a softmax-regression probe (``flatten ->
  dense``) whose gradients are well conditioned and identical everywhere, against the closed-form
  trajectory of `fwbench.conformance.reference` (every backend, the reference included).
* ``step:<variant>`` (`STEP_VARIANTS`): the same rules end to end on the task's model (every
  parameter, BatchNorm state), both sides in float64, with adaptive rules' eps raised to `fwbench.conformance.variants.CONDITIONED_EPS` so that rounding noise in a (near-)zero gradient
  cannot be turned into a full step; the exact eps is what ``rule:`` checks.
* ``curve`` and ``logits after curve``: 20 steps with the task's own optimizer (eps conditioned
  likewise), schedule and clipping, float64 on both sides; the eval logits after them. With a
  train split (`CheckData`, the fuzzer) every step of the task's epochs on it.
* ``dropout:grad``, ``dropout:step`` (a model with dropout above 0): the same, with the dropout
  layers in place and both sides given the same masks (`fwbench.conformance.dropout`).

Multi-step checks drop the bias of a conv/dense layer that feeds a BatchNorm (`without_gauge_biases`):
its exact gradient is 0, so every backend's value is rounding noise that adaptive rules and weight
decay amplify; the exact trajectory keeps it at 0, so dropping it changes nothing else.
Each backend is checked in its own process (``python -m fwbench.conformance.checks BACKEND``), which
prints one JSON line per task as it finishes; each (backend, task) stands alone: an exception in
one task fails that task only, a task the backend declines (`Backend.supports`, or
`fwbench.backend.Unsupported` from ``build``) is listed as skipped, and a process that dies keeps
the tasks it finished and is started again for the rest. Input shapes and class counts come from
the dataset registry, so a dataset added by a plugin is checked at its own shape.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

import numpy as np

from ..backend import BuildRequest, Unsupported
from ..frontends import bind, label_of, native_differences_of
from ..layers import Dense, Flatten
from ..model import analyze, initial_weights
from ..spec import OPTIMIZERS, ClipSpec, OptimizerSpec, TaskSpec
from .compare import ATOL, RTOL, Check, compare, compare_updates, skipped_check, worst
from .rounding import ROUNDING_FACTOR, STEP_PROBE_SEEDS, probed, step_slack
from .variants import (
    BATCH,
    _put,
    conditioned,
    deterministic,
    without_gauge_biases,  # noqa: F401 - re-exported (tests, callers)
)

SELF_RTOL, SELF_ATOL = 1e-2, 1e-3  # the reference's float32 path against its float64 path
GRAD_RTOL, GRAD_ATOL = 1e-6, 1e-10  # float64 against float64 (atol relative to the largest gradient)
FD_RTOL, FD_ATOL = 1e-5, 1e-7  # finite differences: |fd - g.d| <= FD_RTOL * |g| + FD_ATOL (|d| = 1)
FD_STEPS = (1e-6, 1e-7, 1e-8)  # relative steps tried in turn (see _finite_difference_checks)
FD_BASES = 4  # jittered points the steps are tried at before a gradient fails (ditto)
FD_SEED = 0  # the jitter's and directions' generator
RULE_RTOL = 1e-8  # closed form against float64: relative to the largest update of each array
STEP_RTOL, STEP_ATOL = 1e-6, 1e-12  # float64 end to end: relative to the largest update
CURVE_RTOL = 1e-6  # float64 losses over CURVE_STEPS
#: ... plus an absolute floor: a memorised sample's cross-entropy, log(1 + e) with e ~ 1e-12, is
#: rounded to ~1e-16 absolute (the reference may say exactly 0), never to 1e-6 of itself.
CURVE_ATOL = 1e-12
AFTER_RTOL, AFTER_ATOL = 1e-5, 1e-7  # float64 eval logits after the curve
#: End-to-end ``step:`` variants: each rule's formula is checked exactly by ``rule:``; these check
#: that every parameter and its state get it (buffers, L2 and decoupled decay, clipping, lr).
STEP_VARIANTS = ("task", "momentum", "adam", "adamw", "clip-norm", "clip-value", "lr-per-step")
STEPS = 3
CURVE_STEPS = 20
REFERENCE = "numpy"


def task_input(task: TaskSpec, registry=None) -> tuple[tuple[int, ...], int]:
    """The input shape ``(C, H, W)`` and class count of ``task``'s dataset, from the registry."""
    if registry is None:
        from ..plugins import get_registry

        registry = get_registry()
    dataset = registry.get_dataset(task.dataset.name)
    shape = tuple(task.dataset.shape) if task.dataset.name == "synthetic" and task.dataset.shape else dataset.input_shape
    classes = len(task.dataset.classes) or dataset.num_classes  # `dataset.classes`: a subset, relabelled
    return tuple(shape), classes


@dataclass(frozen=True, kw_only=True)
class CheckData:
    """The noise the checks feed (standard normal inputs, random labels).

    The default, for shipped tasks: batches of `BATCH` samples, a fresh batch for every step, and
    epochs of `STEPS` steps for the schedule. `of` (the spec fuzzer) takes the spec's own batch
    size and, when ``dataset.train_limit`` is set, a train split of that many samples less the
    validation split: the curve walks it epoch after epoch in the input pipeline's order (full
    batches, the last partial batch dropped as training drops it,
    `fwbench.datasets.pipeline.epoch_indices`), the schedule counts its steps per epoch as
    `fwbench.training.train` does, and the logits after the curve are evaluated over the whole
    split in batches of the batch size, the last one partial (`~fwbench.datasets.pipeline.eval_batches`).
    """

    batch_size: int = BATCH
    train_samples: int | None = None

    @classmethod
    def of(cls, task: TaskSpec) -> CheckData:
        limit, split = task.dataset.train_limit, task.dataset.validation_split
        samples = None if limit is None else limit - round(limit * split)
        if samples is not None and samples < task.training.batch_size:
            samples = None  # no full batch: the spec could not train (refused at plan time)
        return cls(batch_size=task.training.batch_size, train_samples=samples)

    @property
    def steps_per_epoch(self) -> int:
        return self.train_samples // self.batch_size if self.train_samples else STEPS

    def curve_steps(self, task: TaskSpec, default: int) -> int:
        """Every step of ``task``'s training on the split, or ``default`` without one."""
        return self.steps_per_epoch * task.training.epochs if self.train_samples else default


#: Scale of the offsets `offset_zero_parameters` gives zero-initialised parameters.
ZERO_OFFSET = 1e-3
#: A ReLU input this close to 0 but not 0 is rounding noise of an exact zero (float64 noise is
#: ~1e-16 of the O(1) terms summed; a genuine value this small has odds ~1e-12 per element).
NOISE_TIE = 1e-12


def offset_zero_parameters(weights: dict[str, np.ndarray], info) -> dict[str, np.ndarray]:
    """``weights`` with every parameter that starts at exactly 0 (biases, BatchNorm's beta) moved
    by ~`ZERO_OFFSET` (seeded, sorted order), for the float64 gradient, step and curve checks of
    a spec with noise ties (`has_noise_ties`).

    At zero biases a feature that is 0 in exact arithmetic (a global average of a BatchNorm's
    output over one sample, a residual sum of such) meets a ReLU at its kink as rounding noise of
    either sign (~1e-17) that each framework's summation order decides: the gradient then differs
    by a whole element between correct backends. Offset biases put such pre-activations ~1e-3 from
    the kink; both sides get the same weights."""
    rng = np.random.default_rng(3)
    out = dict(weights)
    for p in sorted(info.params, key=lambda p: p.name):
        w = out[p.name]
        if not p.is_state and not np.any(w):
            out[p.name] = (ZERO_OFFSET * rng.standard_normal(w.shape)).astype(w.dtype)
    return out


def has_noise_ties(ref: Side, batch) -> bool:
    """Whether the reference, from the canonical float64 weights, feeds a ReLU or leaky ReLU an
    input within `NOISE_TIE` of 0 but not 0 on ``batch`` (`NumpyTrainer.kink_margin`). Exact zeros
    do not count: every framework computes them alike, and the kink convention (``relu'(0) = 0``,
    slope alpha for leaky ReLU) must then agree, so those specs keep their canonical weights."""
    trainer = ref.build()
    if not hasattr(trainer, "kink_margin"):
        return False
    return trainer.kink_margin(_put(trainer, batch, "float64")) < NOISE_TIE


class Side:
    """One backend at one dtype, able to build fresh trainers for variants of a task; with
    ``offset_zeros``, from weights whose zero parameters are offset (`offset_zero_parameters`)."""

    def __init__(self, backend, task: TaskSpec, shape, num_classes: int, dtype: str, device: str = "cpu",
                 batch_size: int = BATCH, offset_zeros: bool = False):
        self.backend, self.task, self.shape, self.num_classes, self.dtype = backend, task, shape, num_classes, dtype
        self.device, self.batch_size, self.offset_zeros = device, batch_size, offset_zeros

    def build(self, gauge_free: bool = False, **changes):
        trainer, _ = self.build_with_weights(gauge_free, **changes)
        return trainer

    def build_with_weights(self, gauge_free: bool = False, **changes):
        task = deterministic(self.task, self.dtype, gauge_free, self.batch_size, **changes)
        info = analyze(task.model, self.shape, self.num_classes, task.source)
        weights = initial_weights(task.model, info, task.training.seed, self.dtype)
        if self.offset_zeros:
            weights = offset_zero_parameters(weights, info)
        return self.backend.build(BuildRequest(task, info, weights, self.device, self.num_classes)), weights


def batches(shape, num_classes: int, n: int, seed: int = 0, batch_size: int = BATCH):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(batch_size, *shape)), rng.integers(0, num_classes, batch_size)) for _ in range(n)]


def split_batches(data: CheckData, shape, num_classes: int, steps: int, seed: int):
    """A train split of ``data.train_samples`` noise samples ``(x, y)`` and the first ``steps``
    batches of its epochs, in the input pipeline's order (``seed``: the task's): ``(batches, split)``."""
    from ..datasets.pipeline import epoch_indices

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(data.train_samples, *shape)), rng.integers(0, num_classes, data.train_samples)
    order = [idx for epoch in range(-(-steps // data.steps_per_epoch))
             for idx in epoch_indices(data.train_samples, data.batch_size, seed, epoch)]
    return [(x[idx], y[idx]) for idx in order[:steps]], (x, y)


def _task_lrs(task: TaskSpec, n: int, steps_per_epoch: int = STEPS, total: int | None = None) -> list[float]:
    """The learning rates of the first ``n`` steps of ``task``'s schedule, as `fwbench.training.train`
    computes them for ``steps_per_epoch`` and ``total`` steps (default ``n``). By default epochs are
    `STEPS` steps long, so a curve crosses epoch boundaries, where step/exponential schedules act."""
    from ..schedules import make_schedule

    lr = make_schedule(task.schedule, task.optimizer.lr, steps_per_epoch, n if total is None else total)
    return [float(lr(i)) for i in range(n)]


def _rule_variants(task: TaskSpec, full: bool, lrs: list[float] | None = None) -> dict[str, dict]:
    """Optimizer/clip/learning-rate variants: ``{name: {"optimizer", "clip", "lrs"}}`` (``lrs``:
    the task's first `STEPS`, `_task_lrs` by default)."""
    variants = {"task": {"optimizer": task.optimizer, "clip": task.clip, "lrs": lrs or _task_lrs(task, STEPS)}}
    if not full:
        return variants
    none = ClipSpec()
    for opt in OPTIMIZERS:
        variants[opt] = {"optimizer": OptimizerSpec(name=opt, lr=0.01, weight_decay=0.01), "clip": none}
    variants["clip-norm"] = {"optimizer": OptimizerSpec(name="sgd", lr=0.1), "clip": ClipSpec(kind="norm", max=0.05)}
    variants["clip-value"] = {"optimizer": OptimizerSpec(name="sgd", lr=0.1), "clip": ClipSpec(kind="value", max=1e-3)}
    variants["lr-per-step"] = {"optimizer": OptimizerSpec(name="momentum", lr=0.1), "clip": none,
                               "lrs": [0.1, 0.03, 0.001]}
    for v in variants.values():
        v.setdefault("lrs", [v["optimizer"].lr] * STEPS)
    return variants


def check_task(name: str, task: TaskSpec, candidate_backend, reference_backend, full: bool = True,
               curve_steps: int = CURVE_STEPS, rule_cache: dict | None = None,
               device: str = "cpu", data: CheckData | None = None) -> list[Check]:
    """Every check of one task for one backend, the candidate on ``device`` (the reference always
    on the CPU, float64). ``full=False`` (the spec fuzzer) checks only the task's own
    optimizer/clipping in ``rule:``/``step:``, not every optimizer. ``rule_cache`` (a dict kept
    across the tasks of one run) reuses ``rule:`` results of identical probes. ``data``: the
    batch size and train split (`CheckData`; default: `BATCH`-sample batches, ``curve_steps``
    steps); with a train split the curve is every step of the task's epochs on it."""
    plan = data or CheckData()
    bs = plan.batch_size
    shape, classes = task_input(task)
    is_reference = candidate_backend.name == reference_backend.name
    ref = Side(reference_backend, task, shape, classes, "float64", batch_size=bs)
    cand = Side(candidate_backend, task, shape, classes, "float32", device, bs)
    curve_steps = plan.curve_steps(task, curve_steps)
    lrs = _task_lrs(task, curve_steps, plan.steps_per_epoch)
    step_lrs = None  # rule:task and step:task: the schedule's first STEPS steps
    if plan.train_samples:
        curve, split = split_batches(plan, shape, classes, curve_steps, task.training.seed)
        data = batches(shape, classes, STEPS, batch_size=bs)  # the forward, gradient and step checks'
        step_lrs = _task_lrs(task, STEPS, plan.steps_per_epoch, curve_steps)
    else:
        data = batches(shape, classes, max(STEPS, curve_steps), batch_size=bs)
        curve, split = data[:curve_steps], None
    checks: list[Check] = []
    # gradients, steps and the curve: float64; zero parameters offset where the canonical weights
    # put rounding noise at a ReLU kink (`has_noise_ties`, `offset_zero_parameters`)
    offset = not is_reference and has_noise_ties(ref, data[0])
    ref64 = Side(reference_backend, task, shape, classes, "float64", batch_size=bs, offset_zeros=offset)
    cand64 = Side(candidate_backend, task, shape, classes, "float64", device, bs, offset_zeros=offset)

    def add(quantity, result, note=""):
        checks.append(Check(candidate_backend.name, name, quantity, *result, note))

    exact = _forward(ref, data[0], "float64")
    rounded = _forward(Side(reference_backend, task, shape, classes, "float32", batch_size=bs), data[0], "float32")
    x, y = data[0]
    nudged = (x * (1 + np.float32(2.0 ** -23) * np.random.default_rng(1).choice([-1, 1], x.shape)), y)
    reordered = _forward(Side(reference_backend, task, shape, classes, "float32", batch_size=bs), nudged,
                         "float32", order=np.arange(bs)[::-1], probe_rounding=True)
    got = rounded if is_reference else _forward(cand, data[0], "float32")
    for i, quantity in enumerate(("logits", "train logits", "loss")):
        # float32 rounding of an ill-conditioned forward (BN of a feature with a tiny spread)
        # legitimately exceeds RTOL: allow 10x the spread between two float32 evaluations of the
        # reference (the batch in another order, inputs and every layer's output moved by one
        # float32 ulp: an exactly constant BatchNorm feature has no spread to reorder, yet another
        # framework's mean is an ulp off it, amplified by 1/sqrt(eps)), and for other backends 10x
        # the reference's own float32 error.
        # The reference's own float32 path cannot borrow that bound from itself: it gets the loose
        # SELF_RTOL/SELF_ATOL (a wrong cast or a half-precision path fails; rounding does not).
        spread = np.abs(reordered[i] - rounded[i])
        if is_reference:
            add(quantity, compare(exact[i], got[i], SELF_RTOL, SELF_ATOL + ROUNDING_FACTOR * spread))
        else:
            spread = np.maximum(spread, np.abs(rounded[i] - exact[i]))
            add(quantity, compare(exact[i], got[i], RTOL, ATOL + ROUNDING_FACTOR * spread))

    if is_reference:
        checks += _finite_difference_checks(name, candidate_backend, ref, data[0])
    else:
        r, c = ref64.build(), cand64.build()
        _, _, r_grads = r.loss_and_grads(_put(r, data[0], "float64"))
        _, _, c_grads = c.loss_and_grads(_put(c, data[0], "float64"))
        scale = max((float(np.abs(g).max(initial=0.0)) for g in r_grads.values()), default=1.0)
        for key in sorted(r_grads):
            add(f"grad:{key}", compare(r_grads[key], c_grads.get(key, np.full(1, np.nan)),
                                       GRAD_RTOL, GRAD_ATOL * max(scale, 1.0)))

    checks += _rule_checks(name, task, candidate_backend, shape, classes, data, full, rule_cache, step_lrs)
    if is_reference:  # float64 against the same float64 code could not fail: not counted
        return checks

    for label, v in _rule_variants(task, full, step_lrs).items():
        if label not in STEP_VARIANTS:
            continue
        changes = {"optimizer": conditioned(v["optimizer"]), "clip": v["clip"]}
        try:
            c = cand64.build(True, **changes)
        except Unsupported as exc:  # e.g. an optimizer the backend does not have
            checks.append(skipped_check(candidate_backend.name, name, f"step:{label}", str(exc)))
            continue
        r, w0 = ref64.build_with_weights(True, **changes)
        probes = [probed(ref64.build(True, **changes), seed) for seed in STEP_PROBE_SEEDS]  # see below
        for batch, step_lr in zip(data[:STEPS], v["lrs"]):
            for trainer in (r, *probes, c):
                trainer.sync(trainer.train_step(_put(trainer, batch, "float64"), step_lr))
        rw, cw = r.get_weights(), c.get_weights()
        # An update made of rounding noise (a dense layer after a BatchNorm of exactly constant
        # features: its inputs are 0 in exact arithmetic, ~1e-13 in every framework's) has nothing
        # to be relative to: allow 10x what the rounding probe moves the reference's steps.
        slack = step_slack(rw, probes)
        add(f"step:{label}", worst([compare_updates(w0[k], rw[k], cw.get(k, np.full(1, np.nan)), STEP_RTOL,
                                                    STEP_ATOL, slack[k]) for k in rw]))

    from .dropout import dropout_checks

    checks += dropout_checks(name, task, candidate_backend, reference_backend, shape, classes, data[:STEPS],
                             step_lrs or _task_lrs(task, STEPS), device, (GRAD_RTOL, GRAD_ATOL, STEP_RTOL, STEP_ATOL))

    changes = {"optimizer": conditioned(task.optimizer)}
    r, c = ref64.build(True, **changes), cand64.build(True, **changes)
    r_handles = [r.train_step(_put(r, b, "float64"), lr) for b, lr in zip(curve, lrs)]
    c_handles = [c.train_step(_put(c, b, "float64"), lr) for b, lr in zip(curve, lrs)]
    c.sync()
    add("curve", compare(r.fetch(r_handles)[:, 0], c.fetch(c_handles)[:, 0], CURVE_RTOL, CURVE_ATOL))
    add("logits after curve", compare(_eval_logits(r, curve[0], split, bs), _eval_logits(c, curve[0], split, bs),
                                      AFTER_RTOL, AFTER_ATOL))
    return checks


def _eval_logits(trainer, batch, split, batch_size: int) -> np.ndarray:
    """Eval logits of ``batch``, or with a train ``split``, of all of it in batches of
    ``batch_size``, the last one partial (as `fwbench.training.evaluate` feeds them)."""
    from ..datasets.pipeline import eval_batches

    parts = eval_batches(*split, batch_size) if split else [batch]
    return np.concatenate([np.asarray(trainer.predict(_put(trainer, b, "float64")), np.float64) for b in parts])


def _forward(side: Side, batch, dtype: str, order=None, probe_rounding: bool = False):
    """``(eval logits (N, K), train logits (N, K), loss (1,))`` of a fresh trainer on ``batch``,
    its samples fed in ``order`` (and the logits put back in the original order); with
    ``probe_rounding``, under the reference's rounding probe (`NumpyTrainer.probe_rounding`: every
    layer's output one ulp off, BatchNorm statistics summed sequentially), where the trainer has one."""
    x, y = batch
    order = np.arange(len(y)) if order is None else order
    back = np.argsort(order)
    trainer = probed(side.build()) if probe_rounding else side.build()
    fed = _put(trainer, (x[order], y[order]), dtype)
    logits = np.asarray(trainer.predict(fed), np.float64)[back]
    train_logits, loss, _ = trainer.loss_and_grads(fed)
    return logits, np.asarray(train_logits, np.float64)[back], np.array([float(loss)])


def _finite_difference_checks(name, backend, ref: Side, batch) -> list[Check]:
    """``fd:<name>``: the reference's gradient along a random direction of each array against a
    central difference of its loss.

    The weights are jittered first (1e-2 of each array's scale): at the canonical init a zero bias
    meets a ReLU-zeroed input exactly at the kink (``relu'(0) = 0`` by convention, while a central
    difference there measures 1/2). A kink inside the step is still likely where tiny activations
    crowd around zero (thousands of pre-activations within 1e-3 of it, amplified by a BatchNorm of
    a near-constant feature), so a failure is retried with 10x and 100x smaller steps, then at up to
    ``FD_BASES`` freshly jittered points: kinks sit elsewhere at each, a wrong gradient fails at all.
    Rounding stays below ``1e-16 * loss / step`` ~ 1e-8, under ``FD_ATOL``. Every draw comes from
    one seeded generator in sorted array order, so a check is the same in every process.
    """
    from .reference import directional_fd

    trainer, canonical = ref.build_with_weights()
    rng = np.random.default_rng(FD_SEED)
    x = _put(trainer, batch, "float64")
    trainable = sorted(trainer.loss_and_grads(x)[2])
    canonical = {k: np.asarray(v, np.float64) for k, v in canonical.items()}

    def jittered():
        weights = dict(canonical)
        for key in trainable:
            scale = max(float(np.std(weights[key])), 0.1)
            weights[key] = weights[key] + 1e-2 * scale * rng.normal(size=weights[key].shape)
        trainer.set_weights(weights)
        return weights, trainer.loss_and_grads(x)[2]

    def loss_at(w):
        trainer.set_weights(w)
        return float(trainer.loss_and_grads(x)[1])

    bases = [jittered()]
    checks = []
    for key in trainable:
        result = (np.inf, np.inf, False)
        for attempt in range(FD_BASES):
            if attempt == len(bases):
                bases.append(jittered())
            weights, grads = bases[attempt]
            norm = float(np.linalg.norm(grads[key]))
            for rel_step in FD_STEPS:
                slope, direction = directional_fd(loss_at, weights, key, rng, rel_step)
                err = abs(slope - float(np.sum(grads[key] * direction)))
                result = (err, err / max(norm, 1e-300), err <= FD_RTOL * norm + FD_ATOL)
                if result[2]:
                    break
            if result[2]:
                break
        checks.append(Check(backend.name, name, f"fd:{key}", *result))
    return checks


def probe_task(task: TaskSpec, classes: int) -> TaskSpec:
    """The task with a ``flatten -> dense(classes)`` model (no kinks; see `_rule_checks`)."""
    layers = (Flatten(), Dense(units=classes))
    model = dataclasses.replace(task.model, layers=layers, frozen=(), init_from=None)
    return dataclasses.replace(task, model=model)


def _rule_checks(name, task, backend, shape, classes, data, full, cache: dict | None = None,
                 lrs: list[float] | None = None) -> list[Check]:
    """``rule:<variant>``: the backend's update rule on a softmax-regression probe, float64,
    against the closed-form trajectory (`fwbench.conformance.reference.probe_steps`)."""
    from .reference import probe_steps

    probe = probe_task(task, classes)
    side = Side(backend, probe, shape, classes, "float64", batch_size=len(data[0][1]))
    checks = []
    for label, v in _rule_variants(task, full, lrs).items():
        key = (backend.name, shape, classes, len(data[0][1]), probe.model.init, probe.training.seed, repr(v))
        if cache is not None and key in cache:  # the same probe and variant as an earlier task's
            checks.append(Check(backend.name, name, f"rule:{label}", *cache[key]))
            continue
        try:
            trainer, w0 = side.build_with_weights(optimizer=v["optimizer"], clip=v["clip"])
        except Unsupported as exc:  # e.g. an optimizer the backend does not have
            checks.append(skipped_check(backend.name, name, f"rule:{label}", str(exc)))
            continue
        for batch, lr in zip(data[:STEPS], v["lrs"]):
            trainer.sync(trainer.train_step(_put(trainer, batch, "float64"), lr))
        got = trainer.get_weights()
        want = probe_steps(w0["1.weight"], w0["1.bias"], data[:STEPS], v["lrs"], v["optimizer"], v["clip"])
        result = worst([compare_updates(w0[k], want[k], got.get(k, np.full(1, np.nan)), RULE_RTOL, 1e-15)
                        for k in want])
        if cache is not None:
            cache[key] = result
        checks.append(Check(backend.name, name, f"rule:{label}", *result))
    return checks


def check_backend(backend_name: str, task_names: list[str] | None = None, device: str = "cpu",
                  options: dict | None = None, precision: str = "fp32") -> list[Check]:
    """Run every check for one backend in this process (use `run_checks` for process isolation)."""
    return [check for _, checks in iter_checks(backend_name, task_names, device, options, precision)
            for check in checks]


def iter_checks(backend_name: str, task_names: list[str] | None = None, device: str = "cpu",
                options: dict | None = None, precision: str = "fp32", check=None):
    """``(task, checks)`` for each task in turn (default: every training task), in this process,
    the candidate on ``device``.

    ``options``: a ``[backend]`` table for the backend (a frontend's engine and mode), see
    `fwbench.frontends.bind`; checks are labelled with the bound backend's label (`label_of`).
    ``precision``: the tasks' ``training.precision``; ``check``: the function that checks one
    (backend, task), `check_one` by default (`fwbench.conformance.precision` passes its own).
    """
    from ..plugins import get_registry
    from ..spec import load_task

    registry = get_registry()
    candidate = bind(registry.get_backend(backend_name), options or {}, "bench check")
    reference = registry.get_backend(REFERENCE)
    candidate.configure(device=device, threads=1)
    if reference is not candidate:
        reference.configure(device="cpu", threads=1)
    rule_cache: dict = {}  # identical rule probes across tasks are checked once
    for name in task_names or training_tasks(registry):
        overrides = {"training.precision": precision} if precision != "fp32" else None
        task = with_backend_options(load_task(registry.get_task_file(name), overrides), options)
        found = (check or check_one)(name, task, candidate, reference, device, rule_cache)
        for row in found:
            row.backend = label_of(candidate)
        yield name, _native_differences(candidate, task, found)


def with_backend_options(task: TaskSpec, options: dict | None) -> TaskSpec:
    """``task`` with ``options`` in its ``[backend]`` table, where the candidate's trainer reads them
    (as in a `bench run` cell); the reference takes no options and ignores the table."""
    if not options:
        return task
    return dataclasses.replace(task, backend={**task.backend, **options})


def _native_differences(backend, task: TaskSpec, checks: list[Check]) -> list[Check]:
    """In a frontend's native mode (``backend.mode = "native"``) a differing quantity is listed
    with the conventions that explain it (`fwbench.frontends.Frontend.native_differences`) instead of failing."""
    for check in checks:
        if not check.passed and not check.skipped:
            reasons = native_differences_of(backend, task, check.quantity)
            if reasons:
                check.passed = True
                check.note = "differs in native mode: " + "; ".join(reasons)
    return checks


def training_tasks(registry) -> list[str]:
    """The registered tasks of the training family (the ones `bench check` checks), sorted."""
    from ..spec import load_task

    return [name for name in sorted(registry.task_files)
            if load_task(registry.get_task_file(name)).task.family == "train"]


def check_one(name: str, task: TaskSpec, candidate, reference, device: str = "cpu",
              rule_cache: dict | None = None, **check_task_args) -> list[Check]:
    """Every check of one (backend, task), standing alone: a declined task is one skipped row, an
    exception one failed row naming it; neither stops the other tasks. ``check_task_args`` go to
    `check_task` (the fuzzer's ``full``, ``curve_steps``, ``data``)."""
    return _training_checks(name, task, candidate, reference, device, rule_cache, check_task_args) + \
        _inference_check(name, task, candidate, reference, device)


def _training_checks(name, task, candidate, reference, device, rule_cache, check_task_args) -> list[Check]:
    support = candidate.supports(task)
    if not support.ok:
        return [skipped_check(candidate.name, name, "task", support.reason)]
    try:
        return check_task(name, task, candidate, reference, rule_cache=rule_cache, device=device,
                          **check_task_args)
    except Unsupported as exc:
        return [skipped_check(candidate.name, name, "task", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a backend's error is a failed check, not a crash
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return [Check(candidate.name, name, "task", np.nan, np.nan, False, f"raised {text}")]


def _inference_check(name, task, candidate, reference, device) -> list[Check]:
    """``inference``: eval-mode logits of the served model, float32 (`fwbench.conformance.inference`)."""
    from .inference import QUANTITY, inference_logits

    try:
        found = inference_logits(task, candidate, reference, *task_input(task), device)
    except Exception as exc:  # noqa: BLE001 - as above
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return [Check(candidate.name, name, QUANTITY, np.nan, np.nan, False, f"raised {text}")]
    if isinstance(found, str):
        return [skipped_check(candidate.name, name, QUANTITY, found)]
    exact, rounded, got = found
    result = (compare(exact, got, SELF_RTOL, SELF_ATOL) if candidate.name == reference.name  # its float32 path
              else compare(exact, got, RTOL, ATOL + ROUNDING_FACTOR * np.abs(rounded - exact)))
    # a passing check carries no note: `bench check` shows a passing note as a native-mode explanation
    return [Check(candidate.name, name, QUANTITY, *result, "" if result[2] else "(eval mode, float32, dropout in "
                  "place, BatchNorm running statistics set)")]


def main(argv: list[str], check=None) -> int:
    """The check process: one JSON line ``{"task", "checks"}`` per task, as each finishes
    (``check``: see `iter_checks`)."""
    device, options, precision = "cpu", {}, "fp32"
    if "--precision" in argv:
        at = argv.index("--precision")
        precision, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    if "--device" in argv:
        at = argv.index("--device")
        device, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    if "--options" in argv:
        at = argv.index("--options")
        options, argv = json.loads(argv[at + 1]), argv[:at] + argv[at + 2:]
    backend_name, *tasks = argv
    for name, checks in iter_checks(backend_name, tasks or None, device, options, precision, check):
        print(json.dumps({"task": name, "checks": [dataclasses.asdict(c) for c in checks]}, default=float),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
