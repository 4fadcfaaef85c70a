"""Registration, lazy imports and `JaxBackend.configure` (in subprocesses: it sets process env)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

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
    assert flags == ["--xla_cpu_enable_fast_math=false", "--xla_cpu_multi_thread_eigen=false",
                     "intra_op_parallelism_threads=1"]  # the user's flags are kept
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
    assert _xla_flags("--a=1", 1) == "--a=1 --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def test_gpu_available_is_false_without_a_gpu():
    import jax
    from fwbench_jax.backend import JaxBackend

    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    assert JaxBackend().gpu_available() is has_gpu
