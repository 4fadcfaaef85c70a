"""Registration, lazy imports and `JaxBackend.configure` (in subprocesses: it sets process env)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from fwbench.registry import Registry


def _run(code: str, env: dict | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                         env={**clean, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_importing_the_plugin_and_backend_does_not_import_jax():
    code = ("import sys, fwbench_jax, fwbench_jax.backend\n"
            "from fwbench.registry import Registry\n"
            "r = Registry(); fwbench_jax.fwbench_register_backends(r); b = r.backends['jax']\n"
            "b.availability(); b.version()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'optax')))")
    assert _run(code) == "[]"


def test_hook_registers_the_jax_backend():
    import fwbench_jax

    registry = Registry()
    fwbench_jax.fwbench_register_backends(registry)
    backend = registry.get_backend("jax")
    assert backend.requires == ("jax", "optax") and backend.extra == "jax"
    assert backend.availability().ok
    assert backend.version() == __import__("jax").__version__


def test_configure_single_thread_cpu_sets_env_before_jax_import():
    code = ("import json, os, sys\n"
            "from fwbench_jax.backend import JaxBackend\n"
            "facts = JaxBackend().configure(device='cpu', threads=1)\n"
            "import jax\n"
            "facts['env'] = {k: os.environ.get(k) for k in ('XLA_FLAGS', 'JAX_PLATFORMS', "
            "'XLA_PYTHON_CLIENT_PREALLOCATE')}\n"
            "facts['precision'] = str(jax.config.jax_default_matmul_precision)\n"
            "print(json.dumps(facts))")
    facts = json.loads(_run(code, env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}))
    assert facts["jax_initialized_before_configure"] is False
    assert facts["env"]["JAX_PLATFORMS"] == "cpu"
    assert facts["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    flags = facts["env"]["XLA_FLAGS"].split()
    # the user's flags are kept; no "intra_op_parallelism_threads" (not an XLA flag: a no-op without
    # "--", a fatal "Unknown flag in XLA_FLAGS" with it)
    assert flags == ["--xla_cpu_enable_fast_math=false", "--xla_cpu_multi_thread_eigen=false"]
    assert facts["flags_in_force"]["XLA_FLAGS"] == facts["env"]["XLA_FLAGS"]
    assert facts["platform"] == "cpu" and len(facts["devices"]) >= 1
    assert facts["threads"] == 1 and "affinity" in facts["thread_cap"]
    assert facts["precision"] == "highest"
    assert facts["jaxlib"] == importlib.metadata.version("jaxlib")


def test_configure_reports_when_jax_started_too_early():
    code = ("import json, jax\n"
            "jax.devices()\n"
            "from fwbench_jax.backend import JaxBackend\n"
            "print(json.dumps(JaxBackend().configure(device='cpu', threads=2)))")
    facts = json.loads(_run(code))
    assert facts["jax_initialized_before_configure"] is True
    assert facts["XLA_FLAGS"] == "" and facts["threads"] == 2


def test_xla_flags_only_pin_threads_for_a_single_thread():
    from fwbench_jax.backend import _xla_flags

    assert _xla_flags("", 4) == ""
    assert _xla_flags("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", 2) == ""
    assert _xla_flags("--a=1", 1) == "--a=1 --xla_cpu_multi_thread_eigen=false"


def test_device_auto_resolves_without_starting_jax_so_configure_comes_first():
    """The worker's order for ``--device auto``: ask for a GPU, then configure. JAX must not have
    started its backends before configure, or XLA_FLAGS / JAX_PLATFORMS come too late."""
    code = ("import json\n"
            "from fwbench_jax.backend import JaxBackend, _backends_initialized\n"
            "from fwbench.run.worker import resolve_device\n"
            "b = JaxBackend()\n"
            "device = resolve_device(b, 'auto')\n"
            "started = _backends_initialized()\n"
            "facts = b.configure(device=device, threads=1)\n"
            "print(json.dumps({'device': device, 'started': started, 'facts': facts}))")
    out = json.loads(_run(code))
    assert out["started"] is False and out["facts"]["jax_initialized_before_configure"] is False
    assert out["facts"]["flags_in_force"]["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
    import jax

    assert out["device"] == ("gpu" if any(d.platform == "gpu" for d in jax.devices()) else "cpu")


def test_to_device_returns_only_once_the_upload_is_done(monkeypatch):
    """``device_put`` is asynchronous: `JaxTrainer.to_device` must wait for it (the suite times
    the copies as host_copy_s, then starts the clock)."""
    import jax
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights
    from fwbench.plugins import get_registry
    from fwbench.spec import load_task
    from fwbench_jax import trainer as jax_trainer

    task = load_task(get_registry().get_task_file("mlp_mnist"))
    info = analyze(task.model, (1, 28, 28), 10)
    trainer = jax_trainer.JaxTrainer(BuildRequest(task, info, initial_weights(task.model, info, 0), "cpu", 10))
    events = []
    put, wait = jax.device_put, jax.block_until_ready
    monkeypatch.setattr(jax_trainer.jax, "device_put", lambda *a, **k: events.append("put") or put(*a, **k))
    monkeypatch.setattr(jax_trainer.jax, "block_until_ready",
                        lambda tree: events.append(("wait", id(tree))) or wait(tree))
    x, y = np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)
    batch = trainer.to_device(x, y)
    assert events[0] == "put" and events[-1][0] == "wait"
    assert all(a.is_ready() for a in jax.tree.leaves(batch))


def test_gpu_available_is_false_without_a_gpu():
    import jax
    from fwbench_jax.backend import JaxBackend

    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    assert JaxBackend().gpu_available() is has_gpu
