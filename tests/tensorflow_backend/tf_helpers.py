"""Helpers shared by the TensorFlow backend tests (a uniquely named module: `conftest` is not importable
reliably when several test folders each have one)."""
from __future__ import annotations


def make_task(layers, *, optimizer=None, clip=None, compile=True, dtype="float32", seed=0,
              batch_size=8):
    """A `TaskSpec` from a list of layer tables (TOML-shaped dicts)."""
    from fwbench.spec import task_from_dict

    raw = {
        "task": {"name": "tf_test"},
        "dataset": {"name": "synthetic"},
        "model": {"layers": list(layers), "init": "xavier_uniform"},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "training": {"batch_size": batch_size, "epochs": 1, "seed": seed, "dtype": dtype},
        "backend": {"compile": compile},
    }
    if clip:
        raw["clip"] = clip
    return task_from_dict(raw, "<tf test>")
