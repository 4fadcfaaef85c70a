"""get_weights / set_weights in canonical names and layouts, dtypes, errors that name the fix."""
from __future__ import annotations

import numpy as np
import pytest
from numpy_helpers import make_task, make_trainer

LAYERS = [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same", "use_bias": False},
    {"type": "batchnorm"},
    {"type": "residual", "layers": [
        {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1},
    ]},
    {"type": "global_avg_pool"},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_and_canonical_names(dtype):
    trainer, info, initial = make_trainer(make_task(LAYERS, dtype=dtype), (2, 6, 6), 3)
    got = trainer.get_weights()
    assert list(got) == [p.name for p in info.params]  # canonical names and order
    assert "1.running_var" in got and "2.shortcut.weight" in got
    for name, value in initial.items():
        assert got[name].dtype == np.dtype(dtype) and got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value)

    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.standard_normal((4, 2, 6, 6)), rng.integers(0, 3, 4))
    trainer.train_step(batch, 0.1)
    trained = trainer.get_weights()
    assert not np.array_equal(trained["0.weight"], initial["0.weight"])
    assert not np.array_equal(trained["1.running_mean"], initial["1.running_mean"])
    logits = trainer.predict(batch)

    trained["0.weight"][...] = 0  # get_weights returns copies
    assert not np.all(trainer.get_weights()["0.weight"] == 0)

    trainer.set_weights(initial)
    np.testing.assert_array_equal(trainer.get_weights()["1.running_mean"], initial["1.running_mean"])
    trainer.set_weights(trainer.get_weights())
    trainer.set_weights({k: v for k, v in zip(got, map(np.copy, got.values()))})
    fresh, _, _ = make_trainer(make_task(LAYERS, dtype=dtype), (2, 6, 6), 3)
    np.testing.assert_array_equal(trainer.predict(batch), fresh.predict(batch))
    assert not np.allclose(logits, fresh.predict(batch))


def test_set_weights_casts_dtype_and_keeps_storage():
    trainer, _, initial = make_trainer(make_task(LAYERS, dtype="float32"), (2, 6, 6), 3)
    storage = trainer.model.flat_params
    trainer.set_weights({k: v.astype(np.float64) + 1 for k, v in initial.items()})
    assert trainer.model.flat_params is storage
    assert trainer.get_weights()["4.bias"].dtype == np.float32
    np.testing.assert_allclose(trainer.get_weights()["4.bias"], initial["4.bias"] + 1)


def test_set_weights_errors_name_the_problem():
    trainer, _, initial = make_trainer(make_task(LAYERS), (2, 6, 6), 3)
    missing = dict(initial)
    del missing["1.running_var"]
    with pytest.raises(KeyError, match="1.running_var"):
        trainer.set_weights(missing)
    with pytest.raises(KeyError, match="bogus"):
        trainer.set_weights({**initial, "bogus": np.zeros(1)})
    with pytest.raises(ValueError, match=r"0.weight.*expected \(3, 2, 3, 3\)"):
        trainer.set_weights({**initial, "0.weight": np.zeros((3, 3, 2, 3))})
