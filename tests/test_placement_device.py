"""``dataset.placement = "device"``: the split uploaded once and batches gathered on the device give
the very batches (and so the very losses) of the host path; refused where it cannot apply."""
from __future__ import annotations

import json

import pytest
from fwbench.datasets.pipeline import check_fits, epoch_batches, epoch_indices
from fwbench.errors import SpecError, UsageError
from fwbench.spec import load_task


def test_epoch_indices_are_the_order_of_epoch_batches():
    import numpy as np

    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    y = np.arange(25)
    for epoch in (0, 3):
        host = epoch_batches(x, y, 4, seed=7, epoch=epoch)
        idx = epoch_indices(25, 4, seed=7, epoch=epoch)
        assert len(host) == len(idx) == 6
        for (xb, yb), i in zip(host, idx, strict=True):
            np.testing.assert_array_equal(xb, x[i])
            np.testing.assert_array_equal(yb, y[i])


def test_placement_is_a_spec_key_refused_with_augmentation():
    assert load_task("tasks/mlp_mnist.toml", {"placement": "device"}).dataset.placement == "device"
    with pytest.raises(SpecError, match=r"dataset.placement.*did you mean 'device'"):
        load_task("tasks/mlp_mnist.toml", {"placement": "devcie"})
    with pytest.raises(SpecError, match=r"dataset.placement.*augment"):
        load_task("tasks/mlp_mnist.toml", {"placement": "device", "dataset.augment": ["hflip"]})


def test_a_split_that_does_not_fit_is_refused_in_one_line():
    check_fits(10, None, "GPU")
    check_fits(10, 20, "GPU")
    with pytest.raises(UsageError, match=r'placement = "host"') as err:
        check_fits(3 * 2**30, 2**30, "GPU")
    assert "\n" not in str(err.value) and "3.00 GiB" in str(err.value)


def _history(tmp_path, backends: str, bench) -> dict:
    proc = bench("run", "-b", backends, "-t", "mlp_mnist", "--dataset", "digits", "--profile", "quick",
                 "--set", "placement=host,device", "--set", "epochs=2", "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {}
    for path in (tmp_path / "out").glob("*/*.json"):
        record = json.loads(path.read_text())
        if "overrides" in record:
            assert record["status"] == "ok", record.get("error")
            key = (record["backend"], record["overrides"]["placement"])
            out[key] = ([row["train_loss"] for row in record["metrics"]["history"]],
                        record["metrics"]["placement"])
    return out


def test_numpy_device_placement_trains_on_the_same_batches(bench, tmp_path):
    out = _history(tmp_path, "numpy", bench)
    assert out[("numpy", "device")][1] == "device"
    assert out[("numpy", "device")][0] == out[("numpy", "host")][0]


@pytest.mark.slow
def test_framework_device_placement_trains_on_the_same_batches(bench, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    out = _history(tmp_path, "torch,jax", bench)
    for backend in ("torch", "jax"):
        host, device = out[(backend, "host")][0], out[(backend, "device")][0]
        assert device == pytest.approx(host, rel=1e-6), backend
