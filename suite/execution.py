"""One vocabulary of execution modes across backends: the ``[backend] execution`` option.

=========================  ===================================================================
``eager``                  op by op, as the framework runs without any compiler
``graph``                  a traced graph without a whole-step compiler (TensorFlow's tf.function
                           without XLA; Keras' ``jit_compile=False`` on TensorFlow)
``compiled``               the whole step compiled (torch.compile, XLA: tf.function(jit_compile),
                           jax.jit, Keras ``jit_compile=True``, Flax's jitted step)
``compiled+cudagraphs``    compiled and replayed as CUDA graphs (torch.compile "reduce-overhead";
                           a GPU only)
=========================  ===================================================================

A backend declares the modes it has with `option` (so ``--set backend.execution=graph`` on torch
exits 2 at plan time, naming the modes torch has) and maps each one to its own mechanism; when
``execution`` is given it decides over the backend's older ``compile`` option. How each backend
maps the vocabulary: ``docs/execution.md``.
"""
from __future__ import annotations

from typing import Any

from .options import Option

MODES = ("eager", "graph", "compiled", "compiled+cudagraphs")
KEY = "execution"


def option(choices: tuple[str, ...], default: str, how: str) -> Option:
    """The ``execution`` option of a backend that has the modes ``choices`` (a subset of `MODES`)."""
    unknown = set(choices) - set(MODES)
    if unknown or default not in choices:  # a bug in a backend, not user input
        raise ValueError(f"execution modes {sorted(unknown)} are not in {MODES}, or {default!r} not offered")
    return Option(KEY, default=default, choices=choices,
                  help=f"execution mode ({', '.join(choices)}): {how}")


def requested(table: dict[str, Any]) -> str | None:
    """The mode a task's ``[backend]`` table asks for (lower case), or None (the backend's default)."""
    value = table.get(KEY)
    return None if value is None else str(value).lower()
