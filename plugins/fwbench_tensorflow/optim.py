"""Gradient clipping and the spec's optimizers, written out in TF ops on slot variables.

The update rules are exactly those of `fwbench.spec.OptimizerSpec` (PyTorch's conventions:
epsilon outside the square root, Adam bias correction on ``m`` and ``v``, Adagrad starting at
``initial_accumulator``, L2 added to the gradient, decoupled decay for AdamW). Keras' built-in
optimizers differ (epsilon-hat Adam, epsilon inside the RMSprop square root, Adagrad starting at
0.1), and so do the fused ``ResourceApply*`` kernels for Adam and RMSprop, so the updates are
plain element-wise ops that XLA fuses into one loop per parameter.

The learning rate is a scalar tensor argument of every update, so a schedule that changes it
every step never retraces the step function.
"""
from __future__ import annotations

import tensorflow as tf
from fwbench.spec import ClipSpec, OptimizerSpec

#: Slot variables of each optimizer, one of each per parameter.
SLOTS: dict[str, tuple[str, ...]] = {
    "sgd": (), "momentum": ("momentum",), "nesterov": ("momentum",), "rmsprop": ("square_avg",),
    "adagrad": ("sum",), "adam": ("m", "v"), "adamw": ("m", "v"),
}


#: PyTorch's ``clip_grad_norm_`` guard, which the suite's reference (NumPy backend) follows too.
CLIP_NORM_EPS = 1e-6


def clip_gradients(grads: list[tf.Tensor], clip: ClipSpec) -> list[tf.Tensor]:
    """Clip raw gradients (before weight decay is added).

    ``norm``: multiply every gradient by ``min(1, max / (norm + 1e-6))``, ``norm`` being the L2
    norm of all gradients together (PyTorch's rule; `tf.clip_by_global_norm` divides by
    ``max(norm, max)`` instead, a relative difference of about ``1e-6 / norm``). ``value``: clamp
    each element to ``[-max, max]``. ``none``: unchanged.
    """
    if clip.kind == "norm":
        norm = tf.linalg.global_norm(grads)
        coef = tf.minimum(clip.max / (norm + CLIP_NORM_EPS), 1.0)
        return [g * coef for g in grads]
    if clip.kind == "value":
        return [tf.clip_by_value(g, -clip.max, clip.max) for g in grads]
    return list(grads)


class Optimizer:
    """One of the spec's optimizers over a fixed list of variables.

    Slots are created next to their parameter (call under the model's ``tf.device``), zeros except
    Adagrad's sum, which starts at ``initial_accumulator``. ``iterations`` counts applied steps.

    Args:
        spec: the task's optimizer spec (name, hyper-parameters, weight decay).
        params: the trainable variables, in the order gradients will be given.
    """

    def __init__(self, spec: OptimizerSpec, params: list[tf.Variable]):
        if spec.name not in SLOTS:
            raise ValueError(f"the tensorflow backend has no optimizer {spec.name!r}; "
                             f"expected one of: {', '.join(SLOTS)}")
        self.spec, self.params = spec, list(params)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        start = spec.initial_accumulator if spec.name == "adagrad" else 0.0
        self.slots: dict[str, list[tf.Variable]] = {
            slot: [tf.Variable(tf.fill(p.shape, tf.constant(start, p.dtype)), trainable=False,
                               name=f"{p.name.split(':')[0]}/{slot}") for p in self.params]
            for slot in SLOTS[spec.name]}

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        """One step: ``grads`` (clipped, one per parameter), ``lr`` a scalar of the params' dtype."""
        spec = self.spec
        step = self.iterations.assign_add(1)
        t = tf.cast(step, lr.dtype)  # counts from 1
        if spec.name in ("adam", "adamw"):
            bias1 = 1.0 - tf.pow(tf.constant(spec.beta1, lr.dtype), t)
            bias2 = 1.0 - tf.pow(tf.constant(spec.beta2, lr.dtype), t)
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if spec.weight_decay and spec.name != "adamw":
                g = g + spec.weight_decay * p  # L2
            slots = [self.slots[name][i] for name in SLOTS[spec.name]]
            if spec.name == "sgd":
                p.assign_sub(lr * g)
            elif spec.name in ("momentum", "nesterov"):
                (buf,) = slots
                b = spec.momentum * buf + g
                buf.assign(b)
                p.assign_sub(lr * (g + spec.momentum * b if spec.name == "nesterov" else b))
            elif spec.name == "rmsprop":
                (sq,) = slots
                v = spec.alpha * sq + (1.0 - spec.alpha) * tf.square(g)
                sq.assign(v)
                p.assign_sub(lr * g / (tf.sqrt(v) + spec.eps))
            elif spec.name == "adagrad":
                (acc,) = slots
                s = acc + tf.square(g)
                acc.assign(s)
                p.assign_sub(lr * g / (tf.sqrt(s) + spec.eps))
            else:  # adam, adamw
                m_slot, v_slot = slots
                m = spec.beta1 * m_slot + (1.0 - spec.beta1) * g
                v = spec.beta2 * v_slot + (1.0 - spec.beta2) * tf.square(g)
                m_slot.assign(m)
                v_slot.assign(v)
                update = lr * (m / bias1) / (tf.sqrt(v / bias2) + spec.eps)
                if spec.name == "adamw" and spec.weight_decay:
                    p.assign(p * (1.0 - lr * spec.weight_decay) - update)  # decoupled decay
                else:
                    p.assign_sub(update)
