"""Gradients, the documented optimizer rules, clipping, jit behaviour and dtypes of `JaxTrainer`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from fwbench.errors import SpecError
from jax_helpers import build, f64, linear_grads, mlp_grads, np_conv, softmax, xent

MLP = [{"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"},
       {"type": "dense", "units": 4, "activation": "softmax"}]
LINEAR = [{"type": "dense", "units": 3}]


def _data(n=6, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_loss_and_grads_of_an_mlp_match_analytic_gradients(layout):
    trainer, _, info, w = build(MLP, (2, 2, 3), num_classes=4, backend={"layout": layout})
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 2, 2, 3)).astype(np.float32), rng.integers(0, 4, 7)
    logits, loss, grads = trainer.loss_and_grads(trainer.to_device(x, y))
    ref_logits, ref_loss, ref_grads = mlp_grads(f64(w), x.astype(np.float64), y)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert set(grads) == {p.name for p in info.params if p.trainable}
    for name, g in ref_grads.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(trainer.get_weights()["1.weight"], w["1.weight"])  # no update


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_gradients_come_back_in_canonical_oihw_layout(layout):
    layers = [{"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1},
              {"type": "flatten"}, {"type": "dense", "units": 3}]
    trainer, _, _, w = build(layers, (2, 5, 5), backend={"layout": layout})
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(3, 2, 5, 5)).astype(np.float32), rng.integers(0, 3, 3)
    _, _, grads = trainer.loss_and_grads(trainer.to_device(x, y))
    w = f64(w)
    conv = np_conv(x, w["0.weight"], w["0.bias"], 2, 1)  # (3, 4, 3, 3)
    logits = conv.reshape(3, -1) @ w["2.weight"] + w["2.bias"]
    d_logits = (softmax(logits) - np.eye(3)[y]) / 3
    d_conv = (d_logits @ w["2.weight"].T).reshape(conv.shape)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    d_w = np.zeros_like(w["0.weight"])
    for i in range(3):
        for j in range(3):
            d_w[:, :, i, j] = np.einsum("nohw,nchw->oc", d_conv, padded[:, :, i:i + 5:2, j:j + 5:2])
    assert grads["0.weight"].shape == (4, 2, 3, 3)
    np.testing.assert_allclose(grads["0.weight"], d_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["0.bias"], d_conv.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)


# -- optimizers: the OptimizerSpec docstring, step by step in NumPy -------------------------------

def _reference(opt: dict, w: dict, x, y, lrs, clip: dict | None = None) -> dict:
    """The documented update rules applied by hand (float64)."""
    name, wd = opt["name"], opt.get("weight_decay", 0.0)
    mom, b1, b2 = opt.get("momentum", 0.9), opt.get("beta1", 0.9), opt.get("beta2", 0.999)
    alpha, eps = opt.get("alpha", 0.99), opt.get("eps", 1e-8)
    p = f64(w)
    slots = {k: {"b": np.zeros_like(v), "v": np.zeros_like(v), "m": np.zeros_like(v),
                 "s": np.full_like(v, opt.get("initial_accumulator", 0.0))} for k, v in p.items()}
    for t, lr in enumerate(lrs, start=1):
        g = linear_grads(p, x, y)[2]
        if clip and clip["kind"] == "norm":
            norm = np.sqrt(sum((v ** 2).sum() for v in g.values()))
            coef = clip["max"] / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_
            if coef < 1:
                g = {k: v * coef for k, v in g.items()}
        if clip and clip["kind"] == "value":
            g = {k: np.clip(v, -clip["max"], clip["max"]) for k, v in g.items()}
        for k in p:
            gk, st = g[k], slots[k]
            if name != "adamw":
                gk = gk + wd * p[k]
            if name == "sgd":
                p[k] = p[k] - lr * gk
            elif name == "momentum":
                st["b"] = mom * st["b"] + gk
                p[k] = p[k] - lr * st["b"]
            elif name == "nesterov":
                st["b"] = mom * st["b"] + gk
                p[k] = p[k] - lr * (gk + mom * st["b"])
            elif name == "rmsprop":
                st["v"] = alpha * st["v"] + (1 - alpha) * gk ** 2
                p[k] = p[k] - lr * gk / (np.sqrt(st["v"]) + eps)
            elif name == "adagrad":
                st["s"] = st["s"] + gk ** 2
                p[k] = p[k] - lr * gk / (np.sqrt(st["s"]) + eps)
            else:  # adam, adamw
                if name == "adamw":
                    p[k] = p[k] * (1 - lr * wd)
                st["m"] = b1 * st["m"] + (1 - b1) * gk
                st["v"] = b2 * st["v"] + (1 - b2) * gk ** 2
                m_hat, v_hat = st["m"] / (1 - b1 ** t), st["v"] / (1 - b2 ** t)
                p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.1},
    "sgd_l2": {"name": "sgd", "lr": 0.1, "weight_decay": 0.3},
    "momentum": {"name": "momentum", "lr": 0.1, "momentum": 0.8},
    "momentum_l2": {"name": "momentum", "lr": 0.1, "momentum": 0.8, "weight_decay": 0.3},
    "nesterov": {"name": "nesterov", "lr": 0.1, "momentum": 0.7},
    # a large eps tells "outside the square root" from "inside"
    "rmsprop": {"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 0.05},
    "adagrad": {"name": "adagrad", "lr": 0.1, "eps": 0.05},
    "adagrad_init": {"name": "adagrad", "lr": 0.1, "eps": 1e-3, "initial_accumulator": 0.5},
    "adam": {"name": "adam", "lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 0.05},
    "adam_default_eps": {"name": "adam", "lr": 0.01},
    "adam_l2": {"name": "adam", "lr": 0.01, "weight_decay": 0.5, "eps": 1e-3},
    "adamw": {"name": "adamw", "lr": 0.01, "weight_decay": 0.5, "eps": 1e-3},
}


@pytest.mark.parametrize("key", OPTIMIZERS)
def test_three_steps_follow_the_documented_update_rule(key):
    opt = OPTIMIZERS[key]
    x, y = _data()
    trainer, _, _, w = build(LINEAR, (5,), optimizer=opt, init="normal")
    w = {**w, "0.bias": np.array([0.3, -0.2, 0.1], np.float32)}  # nonzero: decay acts on biases too
    trainer.set_weights(w)
    batch = trainer.to_device(x, y)
    lrs = [opt["lr"], opt["lr"] * 0.5, opt["lr"] * 2]  # the step's lr, not the spec's, is used
    for lr in lrs:
        trainer.train_step(batch, lr)
    expect = _reference(opt, w, x.astype(np.float64), y, lrs)
    got = trainer.get_weights()
    moved = np.abs(expect["0.weight"] - w["0.weight"]).max()
    assert moved > 1e-3  # the test would notice a wrong rule
    for name in expect:
        np.testing.assert_allclose(got[name], expect[name], rtol=2e-5, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("clip", [{"kind": "norm", "max": 0.05}, {"kind": "norm", "max": 100.0},
                                  {"kind": "value", "max": 0.02}], ids=["norm", "norm_idle", "value"])
def test_clipping_acts_on_raw_gradients_before_weight_decay(clip):
    opt = {"name": "momentum", "lr": 0.5, "momentum": 0.5, "weight_decay": 0.2}
    x, y = _data(seed=3)
    trainer, _, _, w = build(LINEAR, (5,), optimizer=opt, clip=clip, init="normal")
    batch = trainer.to_device(x, y)
    for _ in range(2):
        trainer.train_step(batch, opt["lr"])
    expect = _reference(opt, w, x.astype(np.float64), y, [opt["lr"]] * 2, clip=clip)
    unclipped = _reference(opt, w, x.astype(np.float64), y, [opt["lr"]] * 2)
    if clip["max"] < 1:
        assert np.abs(expect["0.weight"] - unclipped["0.weight"]).max() > 1e-3
    got = trainer.get_weights()
    for name in expect:
        np.testing.assert_allclose(got[name], expect[name], rtol=2e-5, atol=2e-6, err_msg=name)


# -- the step itself ------------------------------------------------------------------------------

def test_train_step_returns_loss_and_correct_and_fetch_reads_them():
    x, y = _data(n=10, seed=4)
    trainer, _, _, w = build(LINEAR, (5,), optimizer={"name": "sgd", "lr": 0.1})
    batch = trainer.to_device(x, y)
    handles = [trainer.train_step(batch, 0.1) for _ in range(3)]
    trainer.sync(handles[-1])
    rows = trainer.fetch(handles)
    assert rows.shape == (3, 2) and rows.dtype == np.float64
    logits, loss, _ = linear_grads(f64(w), x.astype(np.float64), y)
    assert rows[0, 0] == pytest.approx(loss, rel=1e-5)
    assert rows[0, 1] == (logits.argmax(1) == y).sum()
    assert rows[2, 0] < rows[0, 0]
    assert trainer.fetch([]).shape == (0, 2)
    assert trainer.compile_info["mode"] == "jit" and trainer.compile_info["compile_s"] > 0
    assert trainer.peak_device_memory() is None  # CPU


def test_loss_falls_over_thirty_steps():
    rng = np.random.default_rng(5)
    centers = rng.normal(0, 2.0, size=(4, 12))
    y = rng.integers(0, 4, 64)
    x = (centers[y] + rng.normal(size=(64, 12))).reshape(64, 1, 3, 4).astype(np.float32)
    trainer, *_ = build(MLP, (1, 3, 4), num_classes=4, optimizer={"name": "adam", "lr": 0.01},
                        batch_size=64)
    batch = trainer.to_device(x, y)
    rows = trainer.fetch([trainer.train_step(batch, 0.01) for _ in range(30)])
    assert rows[-1, 0] < 0.3 * rows[0, 0]
    assert rows[-1, 1] > rows[0, 1]


def test_a_changing_learning_rate_never_recompiles():
    x, y = _data(seed=6)
    trainer, _, _, w = build(LINEAR, (5,), optimizer={"name": "sgd", "lr": 0.1})
    batch = trainer.to_device(x, y)
    trainer.train_step(batch, 0.0)
    np.testing.assert_array_equal(trainer.get_weights()["0.weight"], w["0.weight"])  # lr 0 used
    for lr in (0.1, 0.05, 1e-3, 0.3, 0.1 * 0.999):
        trainer.train_step(batch, lr)
    assert trainer.traces == 1 and trainer.compile_info["compilations"] == 1
    trainer.train_step(trainer.to_device(x[:4], y[:4]), 0.1)  # a new shape does compile
    assert trainer.traces == 2 and trainer.compile_info["compilations"] == 2


def test_eager_mode_matches_jit():
    opt = {"name": "momentum", "lr": 0.1}
    layers = [{"type": "dense", "units": 8, "activation": "tanh"}, {"type": "dense", "units": 3}]
    x, y = _data(seed=7)
    jitted, *_ = build(layers, (5,), optimizer=opt)
    eager, *_ = build(layers, (5,), optimizer=opt, backend={"compile": False})
    assert eager.compile_info["mode"] == "eager"
    for trainer in (jitted, eager):
        batch = trainer.to_device(x, y)
        for _ in range(2):
            trainer.train_step(batch, 0.1)
    a, b = jitted.get_weights(), eager.get_weights()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_each_step_draws_a_new_dropout_mask_from_the_seeded_key():
    layers = [{"type": "dense", "units": 32}, {"type": "dropout", "rate": 0.5}, {"type": "dense", "units": 3}]
    x, y = _data(seed=8)
    trainer, *_ = build(layers, (5,), seed=11)
    again, *_ = build(layers, (5,), seed=11)
    other_seed, *_ = build(layers, (5,), seed=12)
    batch = trainer.to_device(x, y)
    first = trainer.loss_and_grads(batch)[0]
    np.testing.assert_array_equal(trainer.loss_and_grads(batch)[0], first)  # no state change
    np.testing.assert_array_equal(again.loss_and_grads(again.to_device(x, y))[0], first)
    assert np.abs(other_seed.loss_and_grads(other_seed.to_device(x, y))[0] - first).max() > 1e-3
    eval_logits = trainer.predict(batch)
    trainer.train_step(batch, 0.0)  # weights unchanged, key advanced
    assert np.abs(trainer.loss_and_grads(batch)[0] - first).max() > 1e-3
    np.testing.assert_array_equal(trainer.predict(batch), eval_logits)


def test_a_bad_compile_option_names_the_fix():
    with pytest.raises(SpecError, match=r'compile = "xla"; expected one of: true, false'):
        build(LINEAR, (5,), backend={"compile": "xla"})
    with pytest.raises(SpecError, match="NHWC"):
        build(LINEAR, (5,), backend={"layout": "CHWN"})


FLOAT64_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, {helpers!r})
from jax_helpers import build, f64, mlp_grads
layers = [{{"type": "flatten"}}, {{"type": "dense", "units": 16, "activation": "relu"}},
          {{"type": "dense", "units": 4}}]
rng = np.random.default_rng(0)
x, y = rng.normal(size=(5, 1, 2, 3)), rng.integers(0, 4, 5)
single, *_ = build(layers, (1, 2, 3), num_classes=4, dtype="float32")
single.train_step(single.to_device(x, y), 0.1)  # compiled before x64 is switched on
trainer, _, _, w = build(layers, (1, 2, 3), num_classes=4, dtype="float64")
logits, loss, grads = trainer.loss_and_grads(trainer.to_device(x, y))
ref_logits, ref_loss, ref_grads = mlp_grads(f64(w), x, y)
trainer.train_step(trainer.to_device(x, y), 0.1)
after = trainer.get_weights()
single.train_step(single.to_device(x, y), 0.1)  # still works: a new executable under x64
out = {{
    "dtypes": sorted({{str(v.dtype) for v in after.values()}}),
    "logits_dtype": str(logits.dtype),
    "logit_err": float(np.abs(logits - ref_logits).max()),
    "loss_err": abs(loss - ref_loss),
    "grad_err": max(float(np.abs(grads[k] - ref_grads[k]).max()) for k in ref_grads),
    "float32_after_x64": sorted({{str(v.dtype) for v in single.get_weights().values()}}),
    "float32_logits": str(single.predict(single.to_device(x, y)).dtype),
}}
print(json.dumps(out))
"""


def test_float64_trains_in_double_precision():
    """In a subprocess: float64 turns on jax_enable_x64 for the whole process."""
    code = FLOAT64_SCRIPT.format(helpers=str(Path(__file__).parent))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dtypes"] == ["float64"] and out["logits_dtype"] == "float64"
    assert out["logit_err"] < 1e-12 and out["loss_err"] < 1e-12 and out["grad_err"] < 1e-12
    assert out["float32_after_x64"] == ["float32"] and out["float32_logits"] == "float32"


def test_xent_helper_is_the_mean_negative_log_likelihood():
    logits = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert xent(logits, np.array([0, 1])) == pytest.approx((np.log(2) + np.log(1 + np.e ** 2)) / 2)
