"""The backend imports and runs with NumPy alone, and registers through the plugin hook."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import fwbench_numpy
import pluggy
from fwbench import hookspecs
from fwbench.plugins import build_registry

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import fwbench_numpy
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights
    from fwbench.spec import task_from_dict
    from fwbench_numpy.backend import NumpyBackend

    raw = {"dataset": {"name": "synthetic"}, "optimizer": {"name": "adam", "lr": 0.01},
           "training": {"batch_size": 4, "epochs": 1},
           "model": {"layers": [
               {"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"},
               {"type": "batchnorm"}, {"type": "maxpool"}, {"type": "flatten"},
               {"type": "dropout", "rate": 0.5}, {"type": "dense", "units": 3}]}}
    task = task_from_dict(raw, "<subprocess>")
    info = analyze(task.model, (1, 4, 4), 3)
    backend = NumpyBackend()
    backend.configure(device="cpu", threads=1)
    trainer = backend.build(BuildRequest(task, info, initial_weights(task.model, info, 0), "cpu", 3))
    batch = trainer.to_device(np.ones((4, 1, 4, 4), np.float32), np.array([0, 1, 2, 0]))
    trainer.train_step(batch, 0.01)
    trainer.predict(batch)
    loaded = sorted(m for m in ("torch", "tensorflow", "jax", "jaxlib", "scipy") if m in sys.modules)
    print("LOADED", loaded)
""")


def test_numpy_backend_never_imports_a_framework():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout  # not even SciPy


def test_plugin_registers_the_backend():
    pm = pluggy.PluginManager("fwbench")
    pm.add_hookspecs(hookspecs)
    pm.register(fwbench_numpy, name="numpy")
    registry = build_registry(pm)
    assert type(registry.backends["numpy"]).__name__ == "NumpyBackend"
