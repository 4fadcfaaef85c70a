"""The Keras 3 backend plugin: registers `KerasBackend` (Keras is imported lazily, in the cell).

Keras is a *frontend*: the same model code runs on an *engine* chosen by ``KERAS_BACKEND``.
Options in a task's ``[backend]`` table (or ``--set backend.KEY=VALUE``):

* ``engine``: ``"tensorflow"`` (default), ``"jax"`` or ``"torch"``; a list makes a grid
  (``--set backend.engine=tensorflow,jax,torch``). Set in the cell process before Keras loads.
* ``mode``: ``"exact"`` (default) subclasses Keras' optimizers and BatchNormalization so every
  update follows the suite's conventions (`fwbench.layers`, `fwbench.spec.OptimizerSpec`) and
  ``bench check`` passes; ``"native"`` uses Keras' own classes with the spec's hyperparameters and
  Keras' formulas (`fwbench_keras.conventions` lists where they differ).
* ``compile``: ``"auto"`` (default, Keras' own choice: XLA on TensorFlow and JAX, eager on
  torch), ``true`` or ``false``: the ``jit_compile`` given to ``model.compile``.
"""
from __future__ import annotations

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_backends(register):
    from .backend import KerasBackend

    register.backend(KerasBackend())
