"""The Flax backend plugin: registers `FlaxBackend` (flax, jax and optax are imported lazily).

Flax NNX modules, an optax optimizer in ``nnx.Optimizer``, one ``nnx.jit`` train step: the
idiomatic JAX frontend. Options in a task's ``[backend]`` table (or ``--set backend.KEY=VALUE``):

* ``mode``: ``"exact"`` (default): the suite's update rules (the same optax chains as the raw
  ``jax`` backend) and a BatchNorm with the suite's running-variance rule; ``"native"``: optax's
  stock optimizers (``optax.adam``, ``optax.rmsprop``...) and ``nnx.BatchNorm``
  (`fwbench_flax.conventions` lists where they differ).
"""
from __future__ import annotations

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_backends(register):
    from .backend import FlaxBackend

    register.backend(FlaxBackend())
