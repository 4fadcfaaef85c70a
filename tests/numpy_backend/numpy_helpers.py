"""Shared helpers of the NumPy backend tests: finite differences, spec building, layout changes."""
from __future__ import annotations

import numpy as np
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import task_from_dict

#: Sample shapes of the datasets the shipped tasks use.
DATASET_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def nchw_to_internal(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> the backend's (C, H, W, N)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def internal_to_nchw(x: np.ndarray) -> np.ndarray:
    """(C, H, W, N) -> (N, C, H, W)."""
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Norm-wise relative error ``|a - b| / (|a| + |b|)`` (0 when both are 0)."""
    a, b = np.ravel(a), np.ravel(b)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def numeric_grad(f, arr: np.ndarray, h: float = 1e-6, max_entries: int = 150,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the scalar ``f()`` w.r.t. entries of ``arr`` (perturbed in place).

    Returns ``(flat indices, derivatives)``; at most ``max_entries`` entries, chosen at random.
    """
    flat = arr.reshape(-1)
    assert np.shares_memory(flat, arr), "numeric_grad needs a contiguous array"
    idx = np.arange(flat.size)
    if flat.size > max_entries:
        idx = np.sort((rng or np.random.default_rng(0)).choice(flat.size, max_entries, replace=False))
    out = np.empty(idx.size)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        out[k] = (plus - minus) / (2 * h)
    return idx, out


def check_layer_gradients(layer, x: np.ndarray, *, training: bool = True, before_forward=None,
                          seed: int = 0, tol: float = 1e-6) -> dict[str, float]:
    """Finite-difference check of a layer's input and parameter gradients (float64).

    The scalar is ``sum(forward(x) * r)`` with a fixed random ``r``; ``before_forward()`` runs
    before every forward (e.g. to reseed a dropout mask). Returns the relative errors by name and
    asserts each is <= ``tol``.
    """
    rng = np.random.default_rng(seed)
    prep = before_forward or (lambda: None)
    prep()
    y = layer.forward(x, training)
    r = rng.standard_normal(y.shape)

    def scalar() -> float:
        prep()
        return float(np.sum(layer.forward(x, training) * r))

    prep()
    layer.forward(x, training)
    dx = layer.backward(r.copy())
    analytic = {"x": None if dx is None else dx.copy()}
    analytic.update({name: g.copy() for name, g in layer.grads.items()})
    errors = {}
    targets = {"x": x, **layer.params}
    for name, arr in targets.items():
        if analytic[name] is None:
            continue
        idx, num = numeric_grad(scalar, arr, rng=rng)
        errors[name] = rel_error(analytic[name].reshape(-1)[idx], num)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{layer}: relative gradient errors above {tol}: {bad}"
    return errors


def make_task(layers: list[dict], *, optimizer: dict | None = None, dtype: str = "float64",
              batch_size: int = 4, clip: dict | None = None, extra: dict | None = None):
    """A validated `TaskSpec` for a synthetic dataset with the given ``[[model.layers]]``."""
    raw = {
        "task": {"name": "t"},
        "dataset": {"name": "synthetic"},
        "model": {"layers": layers, "init": "he_normal"},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "training": {"batch_size": batch_size, "epochs": 1, "dtype": dtype},
    }
    if clip:
        raw["clip"] = clip
    raw.update(extra or {})
    return task_from_dict(raw, "<test>")


def make_trainer(task, input_shape, num_classes: int, seed: int = 0):
    """A `NumpyTrainer` for ``task`` loaded with the suite's canonical initial weights."""
    from fwbench_numpy.trainer import NumpyTrainer

    info = analyze(task.model, input_shape, num_classes)
    weights = initial_weights(task.model, info, seed, task.training.dtype)
    return NumpyTrainer(BuildRequest(task, info, weights, "cpu", num_classes)), info, weights
