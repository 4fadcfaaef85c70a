"""The TensorFlow backend plugin: registers `TensorflowBackend` under the name ``tensorflow``.

Importing this package never imports TensorFlow (``bench list`` must work where it is missing):
`backend` imports it inside methods, and ``model``/``optim``/``trainer`` (which import it at the
top) are only imported by `TensorflowBackend.build`.

TensorFlow's C++ INFO and WARNING logs are hidden (``TF_CPP_MIN_LOG_LEVEL=2``, set only if the
user has not set it); ERROR and FATAL logs and every Python exception stay visible. The one
"oneDNN custom operations are on" line is printed by absl before that variable is read and cannot
be silenced from here.
"""
from __future__ import annotations

import os

from fwbench.hookspecs import hookimpl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@hookimpl
def fwbench_register_backends(register):
    """Offer the ``tensorflow`` backend (available when TensorFlow is installed)."""
    from .backend import TensorflowBackend

    register.backend(TensorflowBackend())
