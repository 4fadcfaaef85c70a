"""The plugin loads without TensorFlow; `configure` sets threads, devices and TF32."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

tf = pytest.importorskip("tensorflow")


def test_importing_the_plugin_and_registering_does_not_import_tensorflow():
    code = textwrap.dedent("""
        import os, sys
        import pluggy
        import fwbench_tensorflow, fwbench_tensorflow.backend
        from fwbench import hookspecs
        from fwbench.plugins import build_registry
        pm = pluggy.PluginManager("fwbench")
        pm.add_hookspecs(hookspecs)
        pm.register(fwbench_tensorflow, name="tensorflow")
        backend = build_registry(pm).get_backend("tensorflow")
        assert backend.availability().ok, backend.availability()
        assert backend.version()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "2"]


def test_entry_point_names_the_plugin():
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="fwbench")}
    assert points.get("tensorflow") == "fwbench_tensorflow"


def test_backend_metadata(backend):
    assert (backend.name, backend.requires, backend.extra) == ("tensorflow", ("tensorflow",), "tensorflow")
    assert backend.version() == tf.__version__
    assert isinstance(backend.gpu_available(), bool)


def test_configure_sets_threads_and_precision(configured):
    backend, facts = configured
    assert facts["version"] == tf.__version__
    assert facts["intra_op_threads"] == tf.config.threading.get_intra_op_parallelism_threads() == 1
    assert facts["inter_op_threads"] == tf.config.threading.get_inter_op_parallelism_threads() == 1
    assert facts["tf32"] is False and not tf.config.experimental.tensor_float_32_execution_enabled()
    assert {"device_name", "cuda_build", "cuda_version", "cudnn_version", "xla"} <= facts.keys()
    assert backend.configure(device="cpu", threads=1)["intra_op_threads"] == 1  # same: no-op


def test_configure_after_start_names_the_fix(configured):
    backend, _ = configured
    float(tf.constant(1.0) + 1.0)  # the runtime is running now
    with pytest.raises(RuntimeError, match="configure"):
        backend.configure(device="cpu", threads=3)


def test_gpu_request_without_gpu_names_the_fix(backend):
    from fwbench.errors import DeviceError

    if backend.gpu_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="--device cpu"):
        backend.configure(device="gpu", threads=1)
