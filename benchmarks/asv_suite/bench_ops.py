"""A conv2d pass per backend (3→32 channels, 3x3, 32x32, batch 128) through the backend's own Ops."""
from __future__ import annotations

import numpy as np

from .cells import BACKENDS, backend_or_skip


class ConvPass:
    params = (BACKENDS, ["forward", "forward_backward"])
    param_names = ["backend", "pass"]
    timeout = 300

    def setup(self, backend, pass_):
        ops = backend_or_skip(backend).ops("cpu", "float32")  # NotImplementedError = skipped
        rng = np.random.default_rng(0)
        x = rng.normal(size=(128, 3, 32, 32)).astype(np.float32)
        w = rng.normal(size=(32, 3, 3, 3)).astype(np.float32)
        dy = rng.normal(size=(128, 32, 32, 32)).astype(np.float32)
        self.ops, self.op = ops, ops.conv2d(x, w, dy, stride=1, pad=1, pass_=pass_)
        self.ops.sync(self.op())  # compile / first call outside the timing

    def time_conv_pass(self, backend, pass_):
        self.ops.sync(self.op())
