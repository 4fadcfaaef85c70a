"""One vocabulary of execution modes (``backend.execution``): declared per backend, refused at plan
time where a backend lacks the mode, mapped to each framework's own mechanism."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench import execution
from fwbench.plugins import get_registry


def test_a_backend_declares_only_modes_of_the_vocabulary():
    with pytest.raises(ValueError):
        execution.option(("eager", "jit"), "eager", "")
    with pytest.raises(ValueError):
        execution.option(("eager",), "compiled", "")
    registry = get_registry()
    for name in ("torch", "tensorflow", "jax", "keras", "flax"):
        options = {o.name: o for o in registry.get_backend(name).declared_options}
        assert set(options["execution"].choices) <= set(execution.MODES), name
    # NumPy runs eagerly only and declares no option: --set backend.execution=… is refused for it
    assert "execution" not in {o.name for o in registry.get_backend("numpy").declared_options}
    assert execution.requested({"execution": "Compiled"}) == "compiled"
    assert execution.requested({}) is None


def test_a_mode_the_backend_lacks_exits_2_before_any_cell(bench):
    proc = bench("run", "-b", "torch", "-t", "mlp_mnist", "--set", "backend.execution=graph")
    assert proc.returncode == 2
    assert "execution" in proc.stderr and '"compiled+cudagraphs"' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.framework
def test_torch_and_jax_map_the_vocabulary_onto_their_own_switches():
    pytest.importorskip("torch")
    from fwbench_torch.trainer import compile_mode

    assert compile_mode({"execution": "eager", "compile": True}) is None  # execution decides
    assert compile_mode({"execution": "compiled"}) == "default"
    assert compile_mode({"execution": "compiled+cudagraphs"}) == "reduce-overhead"
    assert compile_mode({"compile": True}) == "default"
    pytest.importorskip("jax")
    from fwbench_jax.options import jax_options
    from fwbench_tensorflow.options import compile_mode as tf_compile_mode

    assert jax_options({"execution": "eager"}, "<t>")[0] is False
    assert jax_options({"execution": "compiled", "compile": False}, "<t>")[0] is True
    assert jax_options({"compile": False}, "<t>")[0] is False
    assert tf_compile_mode({"execution": "graph", "compile": True}) == "graph"
    assert tf_compile_mode({"compile": False}) == "eager"


@pytest.mark.framework
def test_the_functional_flax_step_trains_exactly_like_the_nnx_jit_step():
    pytest.importorskip("flax")
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights
    from fwbench.spec import task_from_dict

    backend = get_registry().get_backend("flax")
    backend.configure(device="cpu", threads=1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 16)
    out = {}
    for step in ("nnx.jit", "functional"):
        task = task_from_dict({
            "task": {"name": "t"}, "dataset": {"name": "synthetic"},
            # a padded conv: its padding must be hashable, the functional step's graph is a static argument
            "model": {"layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"},
                                 {"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"},
                                 {"type": "dense", "units": 3}]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"batch_size": 16, "epochs": 1}, "backend": {"step": step}}, "<t>")
        info = analyze(task.model, (1, 4, 4), 3)
        trainer = backend.for_options(task.backend).build(
            BuildRequest(task, info, initial_weights(task.model, info, 0), "cpu", 3))
        batch = trainer.to_device(x, y)
        losses = trainer.fetch([trainer.train_step(batch, 0.01) for _ in range(4)])[:, 0]
        out[step] = losses, trainer.get_weights(), trainer.compile_info["step"]
    np.testing.assert_allclose(out["functional"][0], out["nnx.jit"][0], rtol=1e-6)
    for key, value in out["nnx.jit"][1].items():
        np.testing.assert_allclose(out["functional"][1][key], value, rtol=1e-5, atol=1e-7, err_msg=key)
    assert out["functional"][2].startswith("jax.jit") and out["nnx.jit"][2].startswith("nnx.jit")
    assert not np.allclose(out["functional"][0][0], out["functional"][0][-1])  # it trained
