"""The JAX backend plugin: registers `JaxBackend` (jax and optax are imported lazily).

Options in a task's ``[backend]`` table (or ``--set backend.KEY=VALUE``):

* ``compile``: ``true`` (default) = one ``jax.jit`` train step, AOT-compiled at its first call;
  ``false`` = no jit (op-by-op dispatch).
* ``layout``: ``"NHWC"`` (default; channels-last, converted once at load and in ``to_device``)
  or ``"NCHW"`` (the canonical layout as is). Weights, gradients and ``flatten`` order are
  canonical either way.
"""
from __future__ import annotations

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_backends(register):
    from .backend import JaxBackend

    register.backend(JaxBackend())
