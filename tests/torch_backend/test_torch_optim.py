"""Gradients, optimizer updates and clipping against hand-written NumPy."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fwbench.backend import Unsupported
from fwbench_torch.optim import choose_impl

from . import reference as ref
from .helpers import batch, make_trainer

LINEAR = [{"type": "dense", "units": 3}]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_mlp_loss_and_grads_match_analytic_gradients(dtype, tol):
    layers = [{"type": "dense", "units": 6, "activation": "relu"}, {"type": "dense", "units": 4}]
    trainer, w, _ = make_trainer(layers, (5,), dtype=dtype)
    x, y = batch((5,), 7, 4, dtype=np.dtype(dtype))
    logits, loss, grads = trainer.loss_and_grads(trainer.to_device(x, y))

    x, w = x.astype(np.float64), {k: v.astype(np.float64) for k, v in w.items()}
    pre = ref.dense(x, w["0.weight"], w["0.bias"])
    h = ref.relu(pre)
    z = ref.dense(h, w["1.weight"], w["1.bias"])
    dz = ref.dlogits(z, y)
    dh = dz @ w["1.weight"].T * (pre > 0)
    expected = {
        "1.weight": h.T @ dz,
        "1.bias": dz.sum(0),
        "0.weight": x.T @ dh,
        "0.bias": dh.sum(0),
    }

    np.testing.assert_allclose(logits, z, rtol=tol, atol=tol)
    assert loss == pytest.approx(ref.cross_entropy(z, y), rel=tol, abs=tol)
    assert set(grads) == set(expected)
    for name, g in expected.items():
        assert grads[name].shape == g.shape, name
        np.testing.assert_allclose(grads[name], g, rtol=tol, atol=tol, err_msg=name)


def _numpy_optimizer(name: str, hp: dict):
    """The OptimizerSpec docstring's update rules, one parameter array at a time."""
    state: dict[str, dict[str, np.ndarray]] = {}

    def step(key: str, p: np.ndarray, g: np.ndarray, lr: float, t: int) -> np.ndarray:
        s = state.setdefault(key, {})
        wd = hp["weight_decay"]
        if name == "adamw":
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        if name == "sgd":
            return p - lr * g
        if name in ("momentum", "nesterov"):
            s["b"] = hp["momentum"] * s.get("b", 0.0) + g
            return p - lr * (s["b"] if name == "momentum" else g + hp["momentum"] * s["b"])
        if name == "rmsprop":
            s["v"] = hp["alpha"] * s.get("v", 0.0) + (1 - hp["alpha"]) * g**2
            return p - lr * g / (np.sqrt(s["v"]) + hp["eps"])
        if name == "adagrad":
            s["s"] = s.get("s", hp["initial_accumulator"]) + g**2
            return p - lr * g / (np.sqrt(s["s"]) + hp["eps"])
        b1, b2 = hp["beta1"], hp["beta2"]
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
        return p - lr * (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + hp["eps"])

    return step


@pytest.mark.parametrize("impl", ["auto", "foreach"])
@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw"]
)
def test_optimizer_steps_follow_documented_rules(name, impl):
    hp = {
        "name": name,
        "lr": 0.1,
        "momentum": 0.8,
        "beta1": 0.7,
        "beta2": 0.9,
        "alpha": 0.85,
        "eps": 1e-3,
        "initial_accumulator": 0.25,
        "weight_decay": 0.05,
    }
    trainer, w, _ = make_trainer(
        LINEAR, (4,), optimizer=hp, dtype="float64", backend={"optimizer_impl": impl}
    )
    assert trainer.compile_info["optimizer"] == choose_impl(name, "cpu", impl)
    update = _numpy_optimizer(name, hp)
    p = {k: v.copy() for k, v in w.items()}
    for t, lr in enumerate([0.1, 0.05, 0.2], start=1):  # a new lr every step, state carried over
        x, y = batch((4,), 6, 3, seed=t, dtype=np.float64)
        trainer.train_step(trainer.to_device(x, y), lr)
        gw, gb = ref.linear_softmax_grads(x, y, p["0.weight"], p["0.bias"])
        p = {
            "0.weight": update("w", p["0.weight"], gw, lr, t),
            "0.bias": update("b", p["0.bias"], gb, lr, t),
        }
        got = trainer.get_weights()
        for k in p:
            np.testing.assert_allclose(
                got[k], p[k], rtol=1e-10, atol=1e-12, err_msg=f"{k} step {t}"
            )


def _one_clipped_sgd_step(clip: dict, wd: float = 0.1):
    trainer, w, _ = make_trainer(
        LINEAR,
        (4,),
        optimizer={"name": "sgd", "lr": 1.0, "weight_decay": wd},
        clip=clip,
        dtype="float64",
    )
    x, y = batch((4,), 6, 3, dtype=np.float64)
    x *= 10.0  # large gradients so clipping acts
    trainer.train_step(trainer.to_device(x, y), 1.0)
    grads = dict(
        zip(
            ("0.weight", "0.bias"),
            ref.linear_softmax_grads(x, y, w["0.weight"], w["0.bias"]),
            strict=True,
        )
    )
    return trainer.get_weights(), w, grads


def test_clip_by_global_norm_before_weight_decay():
    got, w, grads = _one_clipped_sgd_step({"kind": "norm", "max": 0.5})
    norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
    assert norm > 0.5
    scale = 0.5 / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_'s convention
    for k in w:
        np.testing.assert_allclose(
            got[k], w[k] - (scale * grads[k] + 0.1 * w[k]), rtol=1e-10, atol=1e-12
        )


def test_clip_by_value_before_weight_decay():
    got, w, grads = _one_clipped_sgd_step({"kind": "value", "max": 0.05})
    assert max(np.abs(g).max() for g in grads.values()) > 0.05
    for k in w:
        expected = w[k] - (np.clip(grads[k], -0.05, 0.05) + 0.1 * w[k])
        np.testing.assert_allclose(got[k], expected, rtol=1e-10, atol=1e-12)


def test_fused_is_rejected_where_torch_has_none():
    with pytest.raises(Unsupported, match="no fused 'rmsprop'"):
        choose_impl("rmsprop", "cpu", "fused")
    assert choose_impl("adagrad", "cuda", "auto") == "foreach"
    assert choose_impl("adam", "cuda", "auto") == "fused"
