"""Plugin registration, lazy torch import and the configure facts."""

from __future__ import annotations

import subprocess
import sys

import pluggy
import pytest

torch = pytest.importorskip("torch")

from fwbench import hookspecs
from fwbench.plugins import build_registry


def test_importing_the_plugin_does_not_import_torch():
    code = (
        "import sys, fwbench_torch, fwbench_torch.backend; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_hook_registers_the_torch_backend():
    import fwbench_torch

    pm = pluggy.PluginManager("fwbench")
    pm.add_hookspecs(hookspecs)
    pm.register(fwbench_torch, name="torch")
    backend = build_registry(pm).get_backend("torch")
    assert (backend.name, backend.requires, backend.extra) == ("torch", ("torch",), "torch")
    assert backend.availability().ok
    assert backend.version() == torch.__version__
    assert backend.gpu_available() == torch.cuda.is_available()


def test_configure_sets_threads_and_full_fp32_precision():
    from fwbench_torch.backend import TorchBackend

    threads = torch.get_num_threads()  # leave the test process as it was
    facts = TorchBackend().configure(device="cpu", threads=threads)
    assert facts["threads"] == threads == torch.get_num_threads()
    assert facts["torch_version"] == torch.__version__
    assert facts["matmul_allow_tf32"] is False and facts["cudnn_allow_tf32"] is False
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert "device_name" not in facts  # on the CPU the core names it (fwbench.records.environment.backend_facts)
    assert "cudnn_benchmark" in facts and "deterministic_algorithms" in facts


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_configure_gpu_without_cuda_names_the_fix():
    from fwbench.errors import DeviceError
    from fwbench_torch.backend import TorchBackend

    with pytest.raises(DeviceError, match="--device cpu"):
        TorchBackend().configure(device="gpu", threads=torch.get_num_threads())
