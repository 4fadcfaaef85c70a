"""Short trainings: the loss falls, fetch/sync work, float64 and torch.compile run."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fwbench.errors import SpecError

from .helpers import make_trainer

MLP = [
    {"type": "flatten"},
    {"type": "dense", "units": 16, "activation": "relu"},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


def _teacher_batches(shape, n_batches, n=32, seed=0, dtype=np.float32):
    """Batches labelled by a fixed random linear teacher: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(int(np.prod(shape)), 3))
    out = []
    for _ in range(n_batches):
        x = rng.normal(size=(n, *shape))
        out.append((x.astype(dtype), (x.reshape(n, -1) @ teacher).argmax(1).astype(np.int64)))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_falls_on_a_small_synthetic_problem(dtype):
    layers = [
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "relu"},
        {"type": "batchnorm"},
        {"type": "dropout", "rate": 0.1},
        *MLP,
    ]
    trainer, _, _ = make_trainer(
        layers, (2, 4, 4), optimizer={"name": "adam", "lr": 0.01}, dtype=dtype
    )
    batches = [
        trainer.to_device(x, y) for x, y in _teacher_batches((2, 4, 4), 10, dtype=np.dtype(dtype))
    ]
    handles = [trainer.train_step(batches[i % 10], 0.01) for i in range(30)]
    trainer.sync(handles[-1])
    stats = trainer.fetch(handles)
    assert stats.shape == (30, 2) and stats.dtype == np.float64
    assert np.all((stats[:, 1] >= 0) & (stats[:, 1] <= 32)) and np.all(
        stats[:, 1] == np.round(stats[:, 1])
    )
    assert stats[-5:, 0].mean() < 0.6 * stats[:5, 0].mean()
    assert stats[-5:, 1].mean() > stats[:5, 1].mean()
    assert all(w.dtype == np.dtype(dtype) for w in trainer.get_weights().values())


def test_train_step_returns_device_tensors_and_fetch_matches_them():
    trainer, _, _ = make_trainer(MLP, (4,), optimizer={"name": "sgd", "lr": 0.1})
    ((x, y),) = _teacher_batches((4,), 1, n=8)
    b = trainer.to_device(x, y)
    logits_before = trainer.predict(b)
    h = trainer.train_step(b, 0.1)
    assert all(isinstance(t, torch.Tensor) and not t.requires_grad for t in h)
    loss, correct = trainer.fetch([h])[0]
    shifted = logits_before - logits_before.max(1, keepdims=True)
    expected = -np.mean(shifted[np.arange(8), y] - np.log(np.exp(shifted).sum(1)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert correct == (logits_before.argmax(1) == y).sum()
    assert trainer.fetch([]).shape == (0, 2)
    assert trainer.peak_device_memory() is None
    assert trainer.compile_info["mode"] == "eager"


def test_unknown_compile_value_names_the_choices():
    with pytest.raises(SpecError, match=r'compile = "graph"; expected one of: false, true, "eager", "default"'):
        make_trainer(MLP, (4,), backend={"compile": "graph"})


def test_compile_true_trains_like_eager():
    """Cold inductor cache: ~30 s on the 2-core dev box (the first step); warm: ~3 s."""
    opt = {"name": "adam", "lr": 0.01}
    batches = _teacher_batches((4,), 3, n=8)
    start = time.perf_counter()
    # the second pair has other weights and reuses the compiled graph: parameters are graph
    # inputs, not constants, so it must still follow its own eager twin
    for seed in (0, 1):
        eager, _, _ = make_trainer(MLP, (4,), optimizer=opt, seed=seed)
        compiled, _, _ = make_trainer(
            MLP, (4,), optimizer=opt, seed=seed, backend={"compile": True}
        )
        assert compiled.compile_info["mode"] == "torch.compile"
        for i in range(4):
            x, y = batches[i % 3]
            he = eager.train_step(eager.to_device(x, y), 0.01)
            hc = compiled.train_step(compiled.to_device(x, y), 0.01)
        np.testing.assert_allclose(compiled.fetch([hc]), eager.fetch([he]), rtol=1e-4)
        for name, w in eager.get_weights().items():
            np.testing.assert_allclose(
                compiled.get_weights()[name], w, rtol=1e-4, atol=1e-5, err_msg=f"{name} seed {seed}"
            )
    print(
        f"compile=true: 2 trainers x 4 steps incl. compiling: {time.perf_counter() - start:.1f} s"
    )


def test_compile_failure_names_the_way_out(monkeypatch):
    import fwbench_torch.trainer as trainer_module

    def broken_compile(fn, **options):
        def run(*args):
            raise RuntimeError("C++ compile error\ndetails")

        return run

    monkeypatch.setattr(trainer_module.torch, "compile", broken_compile)
    trainer, _, _ = make_trainer(MLP, (4,), backend={"compile": True})
    ((x, y),) = _teacher_batches((4,), 1, n=8)
    with pytest.raises(
        trainer_module.TorchCompileError, match=r"C\+\+ compile error.*backend\.compile=false"
    ):
        trainer.train_step(trainer.to_device(x, y), 0.1)


def test_compile_without_a_cxx_compiler_fails_at_build(monkeypatch):
    import fwbench_torch.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "find_cxx", lambda: None)
    with pytest.raises(trainer_module.TorchCompileError, match="C\\+\\+ compiler"):
        make_trainer(MLP, (4,), backend={"compile": True})
