"""optax transformations for ``nnx.Optimizer``, with the step's learning rate as an argument.

``nnx.Optimizer.update(model, grads, learning_rate=lr)`` passes ``learning_rate`` on to the
transformation (`with_learning_rate_argument`), which builds its chain around that traced value:
a schedule never recompiles the ``nnx.jit`` step. Exact mode reuses the raw jax backend's chains
(`fwbench_jax.optim.Optimizer`: the suite's rules); native mode uses optax's stock optimizers.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import optax
from fwbench.spec import ClipSpec, OptimizerSpec


def native_chain(spec: OptimizerSpec, clip: ClipSpec) -> Callable[[float], optax.GradientTransformation]:
    """``lr -> `` the optax chain a Flax user writes: clip, L2 (``add_decayed_weights``; adamw
    decays inside ``optax.adamw``), then ``optax.<name>``."""

    def make(lr):
        head = []
        if clip.kind == "norm":
            head.append(optax.clip_by_global_norm(clip.max))
        elif clip.kind == "value":
            head.append(optax.clip(clip.max))
        name = spec.name
        if spec.weight_decay and name != "adamw":
            head.append(optax.add_decayed_weights(spec.weight_decay))
        if name == "sgd":
            rule = optax.sgd(lr)
        elif name in ("momentum", "nesterov"):
            rule = optax.sgd(lr, momentum=spec.momentum, nesterov=name == "nesterov")
        elif name == "rmsprop":
            rule = optax.rmsprop(lr, decay=spec.alpha, eps=spec.eps)
        elif name == "adagrad":
            rule = optax.adagrad(lr, eps=spec.eps)
        elif name == "adamw":
            rule = optax.adamw(lr, b1=spec.beta1, b2=spec.beta2, eps=spec.eps, weight_decay=spec.weight_decay)
        else:
            rule = optax.adam(lr, b1=spec.beta1, b2=spec.beta2, eps=spec.eps)
        return optax.chain(*head, rule)

    return make


def exact_chain(spec: OptimizerSpec, clip: ClipSpec) -> Callable[[float], optax.GradientTransformation]:
    from fwbench_jax.optim import Optimizer

    return Optimizer(spec, clip).transform


def with_learning_rate_argument(make: Callable[[float], optax.GradientTransformation],
                                initial_lr: float) -> optax.GradientTransformationExtraArgs:
    """A transformation whose ``update`` takes ``learning_rate=`` (its state never depends on it)."""

    def init(params):
        return make(initial_lr).init(params)

    def update(updates, state, params=None, *, learning_rate, **_extra):
        return make(learning_rate).update(updates, state, params)

    return optax.GradientTransformationExtraArgs(init, update)


@functools.lru_cache(maxsize=32)
def make_transform(spec: OptimizerSpec, clip: ClipSpec, exact: bool) -> optax.GradientTransformationExtraArgs:
    """The optax transform of the spec (the learning rate an argument of ``update``).

    Cached: equal specs get the same (stateless) transform object, so two trainers of one spec have
    equal NNX graph definitions and share the compiled steps instead of compiling their own.
    """
    make = exact_chain(spec, clip) if exact else native_chain(spec, clip)
    return with_learning_rate_argument(make, float(spec.lr))
