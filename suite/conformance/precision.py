"""Conformance under a reduced-precision policy (``bench check --set precision=bf16|fp16``).

Both sides run the same policy (`fwbench.precision`): the candidate its own (autocast, dtype
policies, compute dtypes), the reference NumPy backend the policy's rounding done by hand
(`fwbench_numpy.precision`), from the same float32 canonical weights, on the same batch, dropout
off. Two faithful implementations still differ: one may round twice where the other rounds once
(a bias added after the rounded product), or reduce in the compute dtype where the other
accumulates in float32 (a bias gradient summed over batch and pixels). The tolerances are the
error bounds of that freedom, from the unit roundoff ``u`` of the compute dtype:

* forward (``<p>:logits``, ``<p>:train logits``, ``<p>:loss``), normwise:
  ``||c - r|| <= FORWARD_FACTOR * L * u * ||r||`` with ``L`` the layers on the longest path (each
  may add one rounding of relative size ``u`` to every element);
* gradients (``<p>:grad:<name>``), normwise: ``GRAD_FACTOR * (2 L + log2 M) * u``: the backward
  pass adds its own L roundings, and a reduction of ``M`` terms (batch x output pixels of a layer)
  in the compute dtype adds ``log2 M`` roundings (pairwise summation);
* ``<p>:step``: three steps of the task's optimizer; every array's change against the
  reference's, normwise, within the gradient bound. That bound holds for a step linear in the
  gradient, so an adaptive rule's eps is raised to `LINEAR_EPS_FACTOR` times the reference's
  largest first gradient, its learning rates by as much (`linearised`): ``g / (sqrt(v) + eps)``
  would otherwise weigh every
  element alike, and the absolute error of a reduction in the compute dtype, small against the
  large elements, becomes of the order of the small elements' own steps (TensorFlow's fp16 conv
  kernel gradient, 2e-2 off normwise within a bound of 2.6e-2, gave a 7e-2 Adam step). The rule
  itself is ``rule:``'s; this checks the policy's mechanics (loss scale, skipped steps, float32
  master weights).

What these bounds catch: a policy that computes coarser than it claims (bf16 for fp16: ``u`` eight
times larger), gradients left scaled or unscaled twice (a factor of the loss scale), non-finite
values, a step skipped or applied twice. What they cannot: an implementation that computes *more*
precisely than the policy (fp32, or fp16 for bf16) is within the bound; run ``bench run --set
precision=…`` to see the speed it then does not have.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

from ..backend import Unsupported, precision_availability
from ..layers import Conv2D
from ..model import analyze
from ..precision import Policy, of_task
from .checks import (
    BATCH,
    Check,
    Side,
    _forward,
    _put,
    _task_lrs,
    batches,
    conditioned,
    iter_checks,
    skipped_check,
    task_input,
)
from .checks import main as _main
from .variants import ADAPTIVE

FORWARD_FACTOR = 2.0
GRAD_FACTOR = 2.0
STEPS = 3
#: ``<p>:step``: an adaptive rule's eps >= this x the largest gradient element (`linearised`)
LINEAR_EPS_FACTOR = 100.0


def depth(info) -> int:
    """Layers on the longest path of an analysed model (a residual block: its body, + 1)."""
    def count(items) -> int:
        return sum(1 + count(li.children) for li in items)
    return max(1, count(info.layers))


def reduction_length(info, batch: int) -> int:
    """The longest reduction of a weight gradient: ``batch x`` output pixels of a conv2d layer."""
    pixels = [math.prod(li.out_shape[1:]) for li in info.walk() if isinstance(li.layer, Conv2D)]
    return batch * max(pixels, default=1)


def tolerances(pol: Policy, info, batch: int) -> tuple[float, float]:
    """``(forward rtol, gradient rtol)``, normwise, for policy ``pol`` on model ``info``."""
    u, layers = pol.unit_roundoff, depth(info)
    return (FORWARD_FACTOR * layers * u,
            GRAD_FACTOR * (2 * layers + math.log2(reduction_length(info, batch))) * u)


def normwise(reference, candidate, rtol: float) -> tuple[float, float, bool]:
    """``(max abs error, ||c - r|| / ||r||, passed)``; NaN or a shape mismatch fails."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return np.inf, np.inf, False
    diff = candidate - reference
    if not np.isfinite(diff).all():
        return np.inf, np.inf, False
    norm = float(np.linalg.norm(reference))
    rel = float(np.linalg.norm(diff)) / norm if norm else (0.0 if not diff.any() else np.inf)
    return float(np.abs(diff).max(initial=0.0)), rel, rel <= rtol


def check_precision(name: str, task, candidate, reference, pol: Policy, device: str = "cpu") -> list:
    """Every reduced-precision check of one task: the candidate against the reference, same policy."""
    support = precision_availability(candidate, task, device)
    if not support.ok:
        return [skipped_check(candidate.name, name, pol.name, support.reason)]
    shape, classes = task_input(task)
    if candidate.name == reference.name:  # not against itself: its values are the policy's values
        return _reference_rounding(name, task, candidate, pol, shape, classes)
    ref = Side(reference, task, shape, classes, "float32")
    cand = Side(candidate, task, shape, classes, "float32", device)
    info = analyze(task.model, shape, classes, task.source)
    fwd_rtol, grad_rtol = tolerances(pol, info, BATCH)
    data = batches(shape, classes, STEPS)
    checks: list = []

    def add(quantity, result, rtol):
        note = "" if result[2] else f"normwise error above {rtol:.2e} (u = {pol.unit_roundoff:.2e})"
        checks.append(Check(candidate.name, name, f"{pol.name}:{quantity}", *result, note))

    try:
        expected, got = _forward(ref, data[0], "float32"), _forward(cand, data[0], "float32")
    except Unsupported as exc:
        return [skipped_check(candidate.name, name, pol.name, str(exc))]
    for i, quantity in enumerate(("logits", "train logits", "loss")):
        add(quantity, normwise(expected[i], got[i], fwd_rtol), fwd_rtol)

    r, c = ref.build(), cand.build()
    _, _, r_grads = r.loss_and_grads(_put(r, data[0], "float32"))
    _, _, c_grads = c.loss_and_grads(_put(c, data[0], "float32"))
    for key in sorted(r_grads):
        got = c_grads.get(key, np.full(1, np.nan))
        if not np.isfinite(r_grads[key]).all():  # fp16: the scaled gradient overflows at this scale
            both = not np.isfinite(np.asarray(got, np.float64)).all()
            checks.append(Check(candidate.name, name, f"{pol.name}:grad:{key}", np.nan, np.nan, both,
                                "overflows at the initial loss scale on both sides (the step is skipped)"
                                if both else "the reference overflows at this loss scale, the candidate not"))
            continue
        add(f"grad:{key}", normwise(r_grads[key], got, grad_rtol), grad_rtol)

    optimizer, gain = linearised(conditioned(task.optimizer), r_grads)
    r, w0 = ref.build_with_weights(True, optimizer=optimizer)
    c = cand.build(True, optimizer=optimizer)
    for batch, lr in zip(data, _task_lrs(task, STEPS), strict=True):
        r.sync(r.train_step(_put(r, batch, "float32"), lr * gain))
        c.sync(c.train_step(_put(c, batch, "float32"), lr * gain))
    rw, cw = r.get_weights(), c.get_weights()
    results = [normwise(rw[k] - w0[k], np.asarray(cw.get(k, np.full(1, np.nan))) - w0[k], grad_rtol)
               for k in rw if np.any(rw[k] != w0[k])]
    worst = max(results, key=lambda t: (not t[2], t[1])) if results else (0.0, 0.0, True)
    add("step", worst, grad_rtol)
    return checks


def linearised(opt, grads: dict[str, np.ndarray]):
    """``(opt, lr gain)``: ``opt`` with an adaptive rule's eps at least `LINEAR_EPS_FACTOR` times the
    largest finite element ``G`` of ``grads``, and the factor ``eps / G`` the learning rates are
    multiplied by: the steps are then ``lr * g / G`` within a few percent, linear in the gradient
    as the ``<p>:step`` bound assumes, and as large as the rule's own (~lr), so that float32
    master weights round them no more than usual. A factor of the loss scale still shows in full."""
    top = max((float(np.abs(g[np.isfinite(g)]).max(initial=0.0)) for g in map(np.asarray, grads.values())),
              default=0.0)
    if opt.name not in ADAPTIVE or top == 0.0:
        return opt, 1.0
    eps = max(opt.eps, LINEAR_EPS_FACTOR * top)
    return dataclasses.replace(opt, eps=eps), eps / top


def _reference_rounding(name, task, reference, pol: Policy, shape, classes) -> list:
    """The reference under a mixed policy: its logits and (scaled) weight gradients must be
    exactly representable in the compute dtype: they are rounded there."""
    if not pol.mixed:
        return []
    import ml_dtypes

    low = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[pol.compute_dtype]
    trainer = Side(reference, task, shape, classes, "float32").build()
    logits, _, grads = trainer.loss_and_grads(_put(trainer, batches(shape, classes, 1)[0], "float32"))
    checks = []
    # fp16: what is rounded is the scaled gradient (the scale is a power of two: exact)
    scale = np.float32(getattr(getattr(trainer, "loss_scale", None), "scale", 1.0))
    rounded = {k: g for k, g in grads.items() if not k.endswith((".gamma", ".beta"))}  # BN: float32
    for label, value in [("logits", logits), *((f"grad:{k}", g * scale) for k, g in sorted(rounded.items()))]:
        value = np.asarray(value, np.float32)
        finite = value[np.isfinite(value)]  # an overflow (inf) is a float16 value: the step is skipped
        off = np.abs(finite.astype(low).astype(np.float32) - finite)
        ok = bool(not np.isnan(value).any() and not off.any())
        checks.append(Check(reference.name, name, f"{pol.name}:rounding {label}", float(off.max(initial=0.0)),
                            0.0, ok, "" if ok else f"not rounded to {pol.compute_dtype}"))
    return checks


def check_one(name: str, task, candidate, reference, device: str = "cpu", rule_cache=None) -> list:
    """`fwbench.conformance.checks.check_one` for a task under a reduced-precision policy: standing alone
    (an exception is one failed row naming it)."""
    try:
        return check_precision(name, task, candidate, reference, of_task(task), device)
    except Unsupported as exc:
        return [skipped_check(candidate.name, name, "task", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a backend's error is a failed check, not a crash
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return [Check(candidate.name, name, "task", np.nan, np.nan, False, f"raised {text}")]


def iter_precision_checks(backend_name: str, task_names: list[str] | None = None, device: str = "cpu",
                          options: dict | None = None, precision: str = "bf16"):
    """`fwbench.conformance.checks.iter_checks` under ``precision``, in this process."""
    return iter_checks(backend_name, task_names, device, options, precision, check_one)


def main(argv: list[str]) -> int:
    """The check process of ``bench check --set precision=…`` (`fwbench.conformance.checks.main`'s arguments)."""
    return _main(argv, check=check_one)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
