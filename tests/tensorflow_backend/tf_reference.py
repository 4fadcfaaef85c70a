"""An independent NumPy forward pass in the canonical layout (NCHW, OIHW), float64, and the
small test models of the TensorFlow backend tests.

Written from the rules in `fwbench.layers`, without looking at any framework: loops over kernel
offsets, explicit padding, C-major flatten.
"""
from __future__ import annotations

import numpy as np
from fwbench import layers as L


def conv2d(x, w, b, stride, pad):
    """``x`` (N, C, H, W), ``w`` (O, C, kh, kw) -> (N, O, Ho, Wo), symmetric zero padding."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def pool(x, size, stride, reduce):
    _, _, h, w = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    windows = [x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
               for i in range(size) for j in range(size)]
    return reduce(np.stack(windows), axis=0)


def activate(x, name, alpha=0.01):
    if name == "relu":
        return np.maximum(x, 0)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x


def batchnorm(x, w, path, eps, training):
    """Normalise over every axis but 1; train mode uses the biased batch variance."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = w[f"{path}.running_mean"], w[f"{path}.running_var"]
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return xhat * w[f"{path}.gamma"].reshape(shape) + w[f"{path}.beta"].reshape(shape)


def forward(layers, x, w, *, training=False, prefix=""):
    """Logits of canonical ``x`` through spec ``layers`` (no dropout: only for rate-0 or eval)."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    x = np.asarray(x, np.float64)
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        path = f"{prefix}{i}"
        act = getattr(layer, "activation", "linear")
        if not prefix and i == last and act == "softmax":
            act = "linear"  # folded into the loss
        if isinstance(layer, L.Dense):
            x = activate(x @ w[f"{path}.weight"] + w.get(f"{path}.bias", 0.0), act)
        elif isinstance(layer, L.Conv2D):
            x = activate(conv2d(x, w[f"{path}.weight"], w.get(f"{path}.bias"), layer.stride,
                                layer.pad), act)
        elif isinstance(layer, L.AvgPool):
            x = pool(x, layer.size, layer.step, np.mean)
        elif isinstance(layer, L.MaxPool):
            x = pool(x, layer.size, layer.step, np.max)
        elif isinstance(layer, L.GlobalAvgPool):
            x = x.mean(axis=(2, 3))
        elif isinstance(layer, L.Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(layer, L.BatchNorm):
            x = batchnorm(x, w, path, layer.eps, training)
        elif isinstance(layer, L.Activation):
            x = activate(x, layer.fn, layer.alpha)
        elif isinstance(layer, L.Dropout):
            assert not training or layer.rate == 0.0, "the reference has no dropout RNG"
        elif isinstance(layer, L.Residual):
            body = forward(layer.layers, x, w, training=training, prefix=f"{path}.body.")
            if f"{path}.shortcut.weight" in w:
                stride = x.shape[2] // body.shape[2]
                skip = conv2d(x, w[f"{path}.shortcut.weight"], w[f"{path}.shortcut.bias"], stride, 0)
            else:
                skip = x
            x = activate(body + skip, layer.activation)
        else:
            raise NotImplementedError(layer.kind)
    return x


def softmax_xent(logits, y):
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    dlogits = p.copy()
    dlogits[np.arange(len(y)), y] -= 1
    return loss, dlogits / len(y)


# Test models (TOML-shaped layer tables)

MLP = [{"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"},
       {"type": "dense", "units": 5, "activation": "softmax"}]
# Stride 2 with padding 1 on H = 8 (TF's "SAME" would pad 0 above, 1 below: must be explicit)
# and on W = 7 (symmetric), then a C > 1 flatten whose order must be C-major.
CONV = [{"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same",
         "activation": "relu"},
        {"type": "conv2d", "filters": 6, "kernel": 3, "padding": 1, "activation": "tanh"},
        {"type": "maxpool", "size": 2},
        {"type": "conv2d", "filters": 5, "kernel": 1, "activation": "leaky_relu"},
        {"type": "flatten"},
        {"type": "dense", "units": 3}]
RESNET = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "use_bias": False},
          {"type": "batchnorm"},
          {"type": "activation", "fn": "relu"},
          {"type": "residual", "layers": [
              {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "padding": "same",
               "use_bias": False},
              {"type": "batchnorm", "momentum": 0.2},
              {"type": "activation", "fn": "relu"},
              {"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "use_bias": False},
              {"type": "batchnorm"}]},
          {"type": "residual", "layers": [
              {"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same"},
              {"type": "activation", "fn": "sigmoid"}]},
          {"type": "avgpool", "size": 2},
          {"type": "global_avg_pool"},
          {"type": "dropout", "rate": 0.5},
          {"type": "dense", "units": 3, "activation": "softmax"}]


def randomize(weights, rng):
    """Every array random (BN running stats positive), so no zero bias or unit gamma hides a bug."""
    out = {}
    for name, value in weights.items():
        r = rng.normal(size=value.shape) * (0.5 if name.endswith("weight") else 0.2)
        if name.endswith(("running_var", "gamma")):
            r = rng.uniform(0.5, 1.5, size=value.shape)
        out[name] = r.astype(value.dtype)
    return out
