"""Independent NumPy references (float64) for the layers, the loss and its gradients.

Written from the canonical layout in `fwbench.layers` only, without looking at torch: dense weight
``(in, out)``, conv weight OIHW with symmetric zero padding, NCHW activations.
"""

from __future__ import annotations

import numpy as np


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, in) @ (in, out) + (out,)``."""
    return x @ w + b


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    """Naive cross-correlation. x ``(N, C, H, W)``, w ``(O, C, k, k)`` -> ``(N, O, Ho, Wo)``."""
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out if b is None else out + b[None, :, None, None]


def maxpool(x: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size`` x ``size`` max pooling (stride = size, floor)."""
    n, c, h, w = x.shape
    ho, wo = h // size, w // size
    x = x[:, :, : ho * size, : wo * size].reshape(n, c, ho, size, wo, size)
    return x.max(axis=(3, 5))


def batchnorm_eval(x, gamma, beta, mean, var, eps):
    """Per channel (axis 1) with running statistics."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(
        shape
    ) + beta.reshape(shape)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits ``(N, K)`` and labels ``(N,)``."""
    return float(-np.mean(np.log(softmax(z)[np.arange(len(y)), y])))


def dlogits(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the mean cross-entropy with respect to the logits: ``(softmax - onehot) / N``."""
    p = softmax(z)
    p[np.arange(len(y)), y] -= 1.0
    return p / len(y)


def linear_softmax_grads(x, y, w, b):
    """Gradients of the mean cross-entropy of ``x @ w + b``: ``(dW (in, out), db (out,))``."""
    dz = dlogits(dense(x, w, b), y)
    return x.T @ dz, dz.sum(axis=0)
