"""Small builders and an independent NumPy reference forward for the JAX backend's tests."""
from __future__ import annotations

import numpy as np
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import task_from_dict


def make_task(layers: list[dict], *, optimizer: dict | None = None, clip: dict | None = None,
              backend: dict | None = None, batch_size: int = 8, dtype: str = "float32",
              init: str = "xavier_uniform", seed: int = 0):
    raw = {
        "task": {"name": "t"},
        "dataset": {"name": "synthetic"},
        "model": {"layers": layers, "init": init},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "training": {"batch_size": batch_size, "epochs": 1, "seed": seed, "dtype": dtype},
    }
    if clip:
        raw["clip"] = clip
    if backend:
        raw["backend"] = backend
    return task_from_dict(raw, "<test>")


def build(layers: list[dict], input_shape: tuple[int, ...], num_classes: int = 3,
          weights: dict | None = None, **task_kw):
    """``(trainer, task, info, canonical initial weights)`` for an inline model."""
    from fwbench_jax.backend import JaxBackend

    task = make_task(layers, **task_kw)
    info = analyze(task.model, input_shape, num_classes)
    if weights is None:
        weights = initial_weights(task.model, info, seed=1, dtype=task.training.dtype)
    trainer = JaxBackend().build(BuildRequest(task, info, weights, "cpu", num_classes))
    return trainer, task, info, weights


# -- independent NumPy reference (float64, canonical NCHW / OIHW) ----------------------------------

def np_conv(x, w, b, stride: int, pad: int):
    """Naive conv: x (N, C, H, W), w (O, C, k, k), b (O,) or None -> (N, O, Ho, Wo)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def np_pool(x, size: int, op):
    n, c, h, w = x.shape
    ho, wo = (h - size) // size + 1, (w - size) // size + 1
    x = x[:, :, :ho * size, :wo * size].reshape(n, c, ho, size, wo, size)
    return op(x, axis=(3, 5))


def relu(x):
    return np.maximum(x, 0.0)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def xent(logits, y):
    p = softmax(logits)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def mlp_grads(w, x, y):
    """Analytic gradients of flatten -> dense relu -> dense (logits) with mean cross-entropy."""
    x = x.reshape(len(x), -1)
    z1 = x @ w["1.weight"] + w["1.bias"]
    a1 = relu(z1)
    z2 = a1 @ w["2.weight"] + w["2.bias"]
    onehot = np.eye(z2.shape[1])[y]
    d2 = (softmax(z2) - onehot) / len(x)
    d1 = (d2 @ w["2.weight"].T) * (z1 > 0)
    grads = {"2.weight": a1.T @ d2, "2.bias": d2.sum(0), "1.weight": x.T @ d1, "1.bias": d1.sum(0)}
    return z2, xent(z2, y), grads


def linear_grads(w, x, y):
    """Logits, loss and gradients of a single dense layer ``"0"`` (softmax regression)."""
    z = x @ w["0.weight"] + w["0.bias"]
    d = (softmax(z) - np.eye(z.shape[1])[y]) / len(x)
    return z, xent(z, y), {"0.weight": x.T @ d, "0.bias": d.sum(0)}


def f64(weights: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
