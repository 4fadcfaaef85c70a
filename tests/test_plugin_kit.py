"""The plugin kit (`fwbench.testing`): it passes the toy backend as its CI runs it, and fails
backends that break the contract (a kit that cannot fail would prove nothing)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest


def test_the_kit_passes_the_partial_toy_backend_as_its_ci_runs_it(toy_site, tmp_path):
    """`pytest --fwbench-backend toy` (entry point `pytest11`, no test paths: the kit alone)."""
    env = {**os.environ, "PYTHONPATH": str(toy_site), "FWBENCH_DATA_DIR": str(tmp_path / "data"),
           "FWBENCH_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--fwbench-backend", "toy", "-rA", "-p", "no:cacheprovider"],
                          check=False, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for name in ("conformance[mlp_mnist]", "weights[mlp_mnist]", "params[mlp_mnist]", "sync",
                 "fault:crash-in-build", "fault:unsupported"):
        assert f"PASSED fwbench-kit[toy]::{name}" in out, name
    # every shipped conv task is declined: skipped with the backend's reason, never failed
    assert "SKIPPED [6]" in out and "not applicable: conv2d, maxpool layers" in out
    assert "6 passed, 9 skipped" in out
    # the declined optimizers of a supported task are listed, the rest of its checks passed
    assert "skipped: rule:rmsprop (not applicable: the rmsprop optimizer" in out


@pytest.fixture
def toy(toy_site, monkeypatch):
    """The toy package imported in this process, and a way to register variants of its backend."""
    monkeypatch.syspath_prepend(str(toy_site))
    import fwbench_toy
    from fwbench.plugins import get_registry
    from fwbench.testing import checks

    def register(backend):
        monkeypatch.setitem(get_registry().backends, backend.name, backend)
        checks.configured.cache_clear()
        return backend

    yield fwbench_toy, register
    checks.configured.cache_clear()


def test_the_kit_fails_a_wrong_parameter_count_and_a_set_weights_that_does_nothing(toy):
    fwbench_toy, register = toy
    from fwbench.testing.checks import KitFailure, NotApplicable, check_params, check_weights

    class MiscountingTrainer(fwbench_toy.ToyTrainer):
        def num_trainable(self):
            return super().num_trainable() - 10  # forgets the last bias

        def set_weights(self, weights):
            pass

    class Miscounting(fwbench_toy.ToyBackend):
        name = "kit_miscounting"

        def build(self, request):
            super().build(request)
            return MiscountingTrainer(request)

    register(Miscounting())
    with pytest.raises(KitFailure, match="num_trainable\\(\\) is 101760, the spec's model has 101770"):
        check_params("kit_miscounting", "mlp_mnist")
    with pytest.raises(KitFailure, match="after set_weights, get_weights returns other values"):
        check_weights("kit_miscounting", "mlp_mnist")
    with pytest.raises(NotApplicable, match="not applicable: conv2d"):
        check_params("kit_miscounting", "cnn_mnist")
    register(fwbench_toy.ToyBackend())
    assert check_params("toy", "mlp_mnist") == "101770 trainable parameters"  # the same check passes


class _StreamTrainer:
    """Mixin: each step runs later on one worker thread (a device stream) and takes >= 50 ms."""

    def __init__(self, request, honest: bool):
        super().__init__(request)
        self.stream, self.honest, self.pending = ThreadPoolExecutor(max_workers=1), honest, None

    def train_step(self, batch, lr):
        def work():
            threading.Event().wait(0.05)
            return super(_StreamTrainer, self).train_step(batch, lr)

        self.pending = self.stream.submit(work)
        return self.pending

    def sync(self, handle=None):
        if self.honest and (handle or self.pending) is not None:
            (handle or self.pending).result()

    def fetch(self, handles):
        return np.asarray([[float(v) for v in h.result()] for h in handles])


@pytest.mark.parametrize("honest", [True, False], ids=["sync-waits", "sync-returns-at-once"])
def test_the_sync_audit_fails_a_sync_that_does_not_wait(toy, honest):
    fwbench_toy, register = toy
    from fwbench.testing.checks import KitFailure, check_sync

    class Trainer(_StreamTrainer, fwbench_toy.ToyTrainer):
        pass

    class Streaming(fwbench_toy.ToyBackend):
        name = "kit_streaming"

        def build(self, request):
            super().build(request)
            return Trainer(request, honest)

    register(Streaming())
    # mlp_mnist: 19.5 MFLOP per step of 32; a step of >= 50 ms is < 0.4 GFLOP/s, a step that only
    # queues its work "runs" at > 4 GFLOP/s; the given peak of 1 GFLOP/s (x2 margin) parts them.
    if honest:
        assert "GFLOP/s at best vs a peak of 1.0" in check_sync("kit_streaming", "mlp_mnist", 1.0)
    else:
        with pytest.raises(KitFailure, match="faster than the machine can compute"):
            check_sync("kit_streaming", "mlp_mnist", 1.0)
