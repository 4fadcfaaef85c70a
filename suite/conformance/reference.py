"""Independent references for `fwbench.conformance.checks`: closed-form optimizer steps, finite differences.

The NumPy backend is the float64 reference of the cross-backend checks, so checking it against
itself proves nothing. What it is checked against instead lives here and shares no code with it:

* `probe_steps`: the exact trajectory of a softmax-regression probe (``flatten -> dense``, no
  kinks, every gradient element non-zero) under any `OptimizerSpec` / `ClipSpec` / learning rates,
  written straight from the formulas of `fwbench.spec.OptimizerSpec` and `ClipSpec`.
* `directional_fd`: central finite differences of a trainer's loss along a random direction, the
  check of a hand-written backward.
"""
from __future__ import annotations

import math

import numpy as np

from ..spec import ClipSpec, OptimizerSpec

#: `ClipSpec` norm rule: ``g *= min(1, max / (norm + 1e-6))`` (``torch.nn.utils.clip_grad_norm_``).
CLIP_NORM_EPS = 1e-6


def probe_gradients(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray):
    """Gradients of the mean softmax cross-entropy of ``logits = x @ weight + bias``.

    Args:
        weight: ``(F, K)``; bias: ``(K,)``; x: ``(N, F)`` (flattened, C-major); y: ``(N,)`` ints.
    Returns:
        ``(d weight (F, K), d bias (K,))``.
    """
    logits = x @ weight + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return x.T @ p, p.sum(axis=0)


def clip(grads: list[np.ndarray], spec: ClipSpec) -> list[np.ndarray]:
    """`ClipSpec` on raw gradients (before weight decay)."""
    if spec.kind == "norm":
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        coef = min(1.0, spec.max / (norm + CLIP_NORM_EPS))
        return [g * coef for g in grads]
    if spec.kind == "value":
        return [np.clip(g, -spec.max, spec.max) for g in grads]
    return list(grads)


class ClosedForm:
    """The update rules of `OptimizerSpec`, one array at a time, in plain float64 NumPy."""

    def __init__(self, spec: OptimizerSpec, shapes: list[tuple[int, ...]]):
        self.spec, self.t = spec, 0
        start = spec.initial_accumulator if spec.name == "adagrad" else 0.0
        self.a = [np.full(s, start) for s in shapes]  # momentum buffer / v / sum of squares / m
        self.b = [np.zeros(s) for s in shapes]  # adam's v

    def step(self, params: list[np.ndarray], grads: list[np.ndarray], lr: float) -> list[np.ndarray]:
        s, out = self.spec, []
        self.t += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            if s.name != "adamw":
                g = g + s.weight_decay * p
            if s.name == "sgd":
                p = p - lr * g
            elif s.name in ("momentum", "nesterov"):
                self.a[i] = s.momentum * self.a[i] + g
                p = p - lr * (g + s.momentum * self.a[i] if s.name == "nesterov" else self.a[i])
            elif s.name == "rmsprop":
                self.a[i] = s.alpha * self.a[i] + (1 - s.alpha) * g * g
                p = p - lr * g / (np.sqrt(self.a[i]) + s.eps)
            elif s.name == "adagrad":
                self.a[i] = self.a[i] + g * g
                p = p - lr * g / (np.sqrt(self.a[i]) + s.eps)
            else:  # adam, adamw
                if s.name == "adamw":
                    p = p * (1 - lr * s.weight_decay)
                self.a[i] = s.beta1 * self.a[i] + (1 - s.beta1) * g
                self.b[i] = s.beta2 * self.b[i] + (1 - s.beta2) * g * g
                m_hat = self.a[i] / (1 - s.beta1 ** self.t)
                v_hat = self.b[i] / (1 - s.beta2 ** self.t)
                p = p - lr * m_hat / (np.sqrt(v_hat) + s.eps)
            out.append(p)
        return out


def probe_steps(weight: np.ndarray, bias: np.ndarray, batches, lrs, optimizer: OptimizerSpec,
                clip_spec: ClipSpec) -> dict[str, np.ndarray]:
    """The probe's parameters after one step per ``(x, y)`` batch (x ``(N, ...)``, flattened here)
    with learning rates ``lrs``: ``{"0.weight": (F, K), "0.bias": (K,)}`` after `probe_layers`."""
    params = [np.asarray(weight, np.float64), np.asarray(bias, np.float64)]
    rule = ClosedForm(optimizer, [p.shape for p in params])
    for (x, y), lr in zip(batches, lrs):
        grads = probe_gradients(*params, np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y))
        params = rule.step(params, clip(list(grads), clip_spec), float(lr))
    return {"1.weight": params[0], "1.bias": params[1]}


def directional_fd(loss_at, weights: dict[str, np.ndarray], name: str, rng: np.random.Generator,
                   rel_step: float = 1e-6) -> tuple[float, np.ndarray]:
    """Central difference of ``loss_at(weights)`` along a random unit direction in array ``name``.

    The step is ``rel_step * max(1, |weights[name]|_2)``: rounding contributes about
    ``1e-16 * loss / step`` and a ReLU kink inside the step at most one element's share.
    Returns ``(fd slope, direction)``; compare the slope with ``grad[name] . direction``.
    """
    direction = rng.normal(size=weights[name].shape)
    direction /= np.linalg.norm(direction) or 1.0
    h = rel_step * max(1.0, float(np.linalg.norm(weights[name])))
    plus, minus = dict(weights), dict(weights)
    plus[name] = weights[name] + h * direction
    minus[name] = weights[name] - h * direction
    return (loss_at(plus) - loss_at(minus)) / (2 * h), direction
