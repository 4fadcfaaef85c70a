"""Optimizers: each a `step(lr)` that updates parameters in place from their gradients.

The rules are exactly those of `fwbench.spec.OptimizerSpec` (PyTorch's conventions). ``g`` is the
gradient after clipping, ``wd`` the weight decay, ``t`` the step count from 1::

    L2 (all but adamw): g = g + wd * p
    sgd:       p -= lr * g
    momentum:  b = momentum * b + g;               p -= lr * b                (b starts at 0)
    nesterov:  b = momentum * b + g;               p -= lr * (g + momentum * b)
    rmsprop:   v = alpha * v + (1 - alpha) * g^2;  p -= lr * g / (sqrt(v) + eps)
    adagrad:   s = s + g^2  (s starts at initial_accumulator);  p -= lr * g / (sqrt(s) + eps)
    adam:      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
               p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    adamw:     p *= 1 - lr * wd   (decoupled, no L2), then the adam update

Epsilon is always added *outside* the square root. Adam evaluates its denominator as
``sqrt(v) / sqrt(1 - b2^t) + eps`` and its step as ``lr / (1 - b1^t)``, as PyTorch does.

The optimizers never modify the gradients they are given (L2 decay goes into a scratch buffer) and
allocate nothing per step: state and two scratch arrays per parameter are made up front. The trainer
hands them its parameters as one flat array, so a step is a dozen NumPy calls whatever the model.
"""
from __future__ import annotations

import math

import numpy as np
from fwbench.spec import OptimizerSpec


class Optimizer:
    """Base: holds ``params``/``grads`` (parallel lists of arrays) and the step count ``t``.

    Args:
        params: arrays updated in place.
        grads: their gradients, same shapes (read, never written).
        spec: the hyper-parameters (``spec.lr`` is ignored: `step` receives the learning rate).
    """

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], spec: OptimizerSpec):
        if len(params) != len(grads) or any(p.shape != g.shape for p, g in zip(params, grads)):
            raise ValueError("params and grads must be parallel lists of arrays of equal shapes")
        self.params, self.grads, self.spec = params, grads, spec
        self.t = 0
        self._scratch = [(np.empty_like(p), np.empty_like(p)) for p in params]

    def _zeros(self, fill: float = 0.0) -> list[np.ndarray]:
        return [np.full_like(p, fill) for p in self.params]

    def _decayed(self, i: int) -> np.ndarray:
        """``g + wd * p`` in scratch (or ``g`` itself when there is no L2 decay)."""
        wd = self.spec.weight_decay
        if wd == 0.0:
            return self.grads[i]
        out = self._scratch[i][0]
        np.multiply(self.params[i], wd, out=out)
        np.add(out, self.grads[i], out=out)
        return out

    def step(self, lr: float) -> None:
        """One update of every parameter with learning rate ``lr``."""
        self.t += 1
        for i in range(len(self.params)):
            self._update(i, float(lr))

    def _update(self, i: int, lr: float) -> None:
        raise NotImplementedError

    def _step_scaled_by(self, i: int, g, acc, tmp, lr: float) -> None:
        """``p -= lr * g / (sqrt(acc) + eps)`` (eps outside the root), using ``tmp`` as scratch."""
        np.sqrt(acc, out=tmp)
        tmp += self.spec.eps
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        self.params[i] -= tmp


class SGD(Optimizer):
    """``p -= lr * g``."""

    def _update(self, i, lr):
        g, tmp = self._decayed(i), self._scratch[i][1]
        np.multiply(g, lr, out=tmp)
        self.params[i] -= tmp


class Momentum(Optimizer):
    """Heavy ball: ``b = momentum * b + g``; ``p -= lr * b``."""

    def __init__(self, params, grads, spec):
        super().__init__(params, grads, spec)
        self.buf = self._zeros()

    def _update(self, i, lr):
        g, tmp, b = self._decayed(i), self._scratch[i][1], self.buf[i]
        b *= self.spec.momentum
        b += g
        np.multiply(b, lr, out=tmp)
        self.params[i] -= tmp


class Nesterov(Momentum):
    """``b = momentum * b + g``; ``p -= lr * (g + momentum * b)``."""

    def _update(self, i, lr):
        g, tmp, b = self._decayed(i), self._scratch[i][1], self.buf[i]
        mom = self.spec.momentum
        b *= mom
        b += g
        np.multiply(b, mom, out=tmp)
        tmp += g
        tmp *= lr
        self.params[i] -= tmp


class RMSprop(Optimizer):
    """``v = alpha * v + (1 - alpha) * g^2``; ``p -= lr * g / (sqrt(v) + eps)``."""

    def __init__(self, params, grads, spec):
        super().__init__(params, grads, spec)
        self.v = self._zeros()

    def _update(self, i, lr):
        g, tmp, v = self._decayed(i), self._scratch[i][1], self.v[i]
        alpha = self.spec.alpha
        v *= alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1 - alpha
        v += tmp
        self._step_scaled_by(i, g, v, tmp, lr)


class AdaGrad(Optimizer):
    """``s = s + g^2`` (from ``initial_accumulator``); ``p -= lr * g / (sqrt(s) + eps)``."""

    def __init__(self, params, grads, spec):
        super().__init__(params, grads, spec)
        self.s = self._zeros(spec.initial_accumulator)

    def _update(self, i, lr):
        g, tmp, s = self._decayed(i), self._scratch[i][1], self.s[i]
        np.multiply(g, g, out=tmp)
        s += tmp
        self._step_scaled_by(i, g, s, tmp, lr)


class Adam(Optimizer):
    """Adam with bias correction by the step count ``t`` (L2 decay added to ``g``)::

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    decoupled = False

    def __init__(self, params, grads, spec):
        super().__init__(params, grads, spec)
        self.m = self._zeros()
        self.v = self._zeros()

    def _update(self, i, lr):
        spec, p = self.spec, self.params[i]
        if self.decoupled:
            g = self.grads[i]
            p *= 1.0 - lr * spec.weight_decay
        else:
            g = self._decayed(i)
        tmp, m, v = self._scratch[i][1], self.m[i], self.v[i]
        b1, b2 = spec.beta1, spec.beta2
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        step_size = lr / (1 - b1 ** self.t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1 - b2 ** self.t)
        tmp += spec.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * wd`` first, then the Adam update."""

    decoupled = True


OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {
    "sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "rmsprop": RMSprop,
    "adagrad": AdaGrad, "adam": Adam, "adamw": AdamW,
}


def make_optimizer(spec: OptimizerSpec, params: list[np.ndarray], grads: list[np.ndarray]) -> Optimizer:
    """The optimizer named by ``spec.name``."""
    try:
        cls = OPTIMIZER_CLASSES[spec.name]
    except KeyError:
        raise ValueError(f"unknown optimizer {spec.name!r}; expected one of: "
                         f"{', '.join(OPTIMIZER_CLASSES)}") from None
    return cls(params, grads, spec)


# ------------------------------------------------------------------------------------------------
# Gradient clipping (on raw gradients, before any weight decay)
# ------------------------------------------------------------------------------------------------

#: Added to the global norm before dividing, as in ``torch.nn.utils.clip_grad_norm_``.
CLIP_NORM_EPS = 1e-6


def clip_by_global_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale every gradient by ``max_norm / (norm + 1e-6)`` when that is < 1 (PyTorch's rule);
    ``norm`` is the L2 norm of all gradients together. Returns the norm before clipping."""
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (total + CLIP_NORM_EPS)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total


def clip_by_value(grads: list[np.ndarray], limit: float) -> None:
    """Clamp every gradient element to ``[-limit, limit]``."""
    for g in grads:
        np.clip(g, -limit, limit, out=g)
