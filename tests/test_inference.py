"""The inference scenario: the sweep's settings, its timing loop, percentiles, the merge of repeats
over processes, checkpoints that must match the model, and bad input refused before any cell."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fwbench.errors import SpecError
from fwbench.inference.records import merge_inference
from fwbench.inference.scenario import latency_summary, sample_batch, served_weights, time_calls
from fwbench.measure.repeats import merge_repeats
from fwbench.spec import MAX_INFERENCE_BATCH, load_task

TASKS = __import__("fwbench_tasks").__path__[0]


def _task(overrides=None):
    return load_task(f"{TASKS}/mlp_mnist.toml", {"scenario": "inference", **(overrides or {})})


def test_defaults_and_a_single_size_from_the_command_line():
    task = _task()
    assert task.task.scenario == "inference"
    assert task.inference.batch_sizes == (1, 8, 64, 256)
    assert _task({"inference.batch_sizes": 8}).inference.batch_sizes == (8,)  # --set ...=1,8 is a grid
    assert _task({"batch_sizes": [2, 4]}).inference.batch_sizes == (2, 4)


@pytest.mark.parametrize("sizes,fragment", [
    ([0], "[inference.batch_sizes[0]]: 0 is not a batch size"),
    ([1, -8], "[inference.batch_sizes[1]]: -8 is not a batch size"),
    ([1, MAX_INFERENCE_BATCH + 1], "is absurd for this sweep"),
    ([], "the list is empty"),
    ([8, 8], "batch size 8 is listed twice"),
    (["a"], "expected an integer"),
])
def test_bad_batch_sizes_name_the_key_and_the_fix(sizes, fragment):
    with pytest.raises(SpecError) as info:
        _task({"inference.batch_sizes": sizes})
    assert fragment in str(info.value)


def test_time_calls_reaches_both_minimums_and_times_the_first_call_apart():
    now = [0.0]
    calls = []

    def clock():
        return now[0]

    def call():  # the first call is slow (compilation), the others 2 ms
        calls.append(1)
        now[0] += 1.0 if len(calls) == 1 else 0.002

    first, times = time_calls(call, warmup=3, min_calls=10, min_time_s=0.1, max_calls=1000, clock=clock)
    assert first == pytest.approx(1.0)
    assert len(times) == 50  # 0.1 s of 2 ms calls outlasts min_calls = 10
    assert len(calls) == 1 + 3 + 50
    assert np.allclose(times, 0.002)
    _, capped = time_calls(call, warmup=0, min_calls=10, min_time_s=100.0, max_calls=20, clock=clock)
    assert len(capped) == 20


def test_latency_summary_percentiles_and_throughput():
    times = np.concatenate([np.full(98, 0.001), [0.010, 0.100]])
    row = latency_summary(times, batch=8)
    assert row["p50_s"] == pytest.approx(0.001)
    assert row["p99_s"] == pytest.approx(np.percentile(times, 99))
    assert row["p99_s"] > 0.01  # the tail is in p99, not in p50
    assert row["throughput_samples_per_s"] == pytest.approx(8000)
    assert row["calls"] == 100 and row["max_s"] == pytest.approx(0.1)


def test_sample_batch_cycles_real_samples():
    x = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    batch = sample_batch(x, 7)
    assert batch.shape == (7, 2)
    assert np.array_equal(batch[3], x[0]) and np.array_equal(batch[6], x[0])


def _repeat(p50s: list[float], p99s: list[float], repeat: int) -> dict:
    batches = [{"batch_size": b, "calls": 200, "p50_s": p50, "p90_s": p50 * 1.5, "p99_s": p99,
                "throughput_samples_per_s": b / p50} for b, p50, p99 in zip((1, 8), p50s, p99s)]
    return {"repeat": repeat, "status": "ok", "scenario": "inference", "warnings": [],
            "metrics": {"inference": {"batches": batches, "cold_start_s": 2.0 + repeat,
                                      "latency_p50_s": p50s[0], "latency_p99_s": p99s[0]}}}


def test_merge_gives_intervals_over_processes_that_say_what_they_cover():
    records = [_repeat([1e-3 * f, 4e-3 * f], [3e-3 * f, 9e-3 * f], i + 1) for i, f in enumerate((1.0, 1.1, 0.95))]
    merged = merge_repeats(records)
    m = merged["metrics"]
    row = m["inference"]["batches"][0]
    logs = np.log([1e-3, 1.1e-3, 0.95e-3])
    assert row["p50_s"] == pytest.approx(math.exp(logs.mean()))
    from scipy import stats

    # the repeats' standard error and the between-invocation spread (2%), in quadrature
    half = stats.t.ppf(0.975, 2) * math.sqrt(logs.var(ddof=1) / 3 + math.log1p(0.02) ** 2)
    assert row["p50_ci95"] == pytest.approx([math.exp(logs.mean() - half), math.exp(logs.mean() + half)])
    assert row["repeat_p99_s"] == pytest.approx([3e-3, 3.3e-3, 2.85e-3])
    assert "99th-percentile call latency of one process (200 calls each) across invocations: over 3 " \
        "processes" in row["p99_interval_covers"] and "spread of 2%" in row["p99_interval_covers"]
    assert row["within_run"]["p50_s"] == pytest.approx(1e-3)  # the first repeat's own figure
    assert m["latency_p50_s"] == pytest.approx(row["p50_s"]) and m["latency_batch"] == 1
    assert m["inference"]["cold_start_s"] == pytest.approx(4.0)  # the median of 3, 4 and 5 s
    assert [s["latency_p50_s"] for s in m["repeats"]] == pytest.approx([1e-3, 1.1e-3, 0.95e-3])
    assert m["interval"] == "repeats"


def test_merge_flags_a_p50_that_moves_between_processes():
    records = [_repeat([1e-3 * f, 4e-3], [3e-3, 9e-3], i + 1) for i, f in enumerate((1.0, 1.5, 0.7))]
    m = json.loads(json.dumps(records[0]["metrics"]))
    warnings = merge_inference(m, records)
    assert any("inference batch 1 p50: unstable between repeats" in w for w in warnings)
    assert not any("batch 8" in w for w in warnings)


def _info(task):
    from fwbench.model import analyze

    return analyze(task.model, (1, 28, 28), 10, task.source)


def test_served_weights_refuse_a_checkpoint_of_another_model(tmp_path):
    from fwbench.model import initial_weights
    from fwbench.records.checkpoints import save_checkpoint

    task = _task()
    info = _info(task)
    good = initial_weights(task.model, info, 3, "float32")
    path = save_checkpoint(tmp_path / "ok.npz", good, backend="numpy", task="mlp_mnist")
    weights, facts = served_weights(_task({"inference.weights": str(path)}), info)
    assert all(np.array_equal(weights[k], good[k]) for k in good) and facts["path"] == str(path)
    bad = dict(good, **{"2.weight": np.zeros((128, 5), np.float32)})
    bad_path = save_checkpoint(tmp_path / "bad.npz", bad, backend="numpy", task="other")
    with pytest.raises(SpecError) as err:
        served_weights(_task({"inference.weights": str(bad_path)}), info)
    text = str(err.value)
    assert "[inference.weights]" in text and "does not match this model" in text and "2.weight (128, 5)" in text
    assert "saved from 'other'" in text


@pytest.fixture
def mismatched_checkpoint(tmp_path):
    from fwbench.records.checkpoints import save_checkpoint

    return save_checkpoint(tmp_path / "cnn.npz", {"0.weight": np.zeros((4, 1, 3, 3), np.float32)},
                           backend="numpy", task="cnn_mnist")


BAD = [
    (["--set", "inference.batch_sizes=[0]"], "0 is not a batch size"),
    (["--set", "inference.batch_sizes=[1,-2]"], "-2 is not a batch size"),
    (["--set", "inference.batch_sizes=[1,10000000]"], "absurd"),
    (["--set", "inference.batch_sizes=[]"], "the list is empty"),
    (["--weights", "nowhere.npz"], "no such file"),
]


@pytest.mark.parametrize("extra,fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_inference_input_is_one_line_before_any_cell(bench, tmp_path, extra, fragment):
    result = bench("run", "-b", "numpy", "-t", "mlp_mnist", "--dataset", "digits", "--scenario", "inference",
                   "-o", str(tmp_path / "out"), *extra)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert fragment in line and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # refused before any cell started


def test_checkpoint_of_another_model_and_weights_without_scenario_are_refused(bench, tmp_path,
                                                                             mismatched_checkpoint):
    result = bench("run", "-b", "numpy", "-t", "mlp_mnist", "--dataset", "digits", "--scenario", "inference",
                   "--weights", str(mismatched_checkpoint), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "does not match this model" in line and "saved from 'cnn_mnist'" in line
    result = bench("run", "-b", "numpy", "-t", "mlp_mnist", "--weights", str(mismatched_checkpoint))
    assert result.returncode == 2 and "needs --scenario inference" in result.stderr
    result = bench("run", "-b", "numpy", "-t", "dense", "--scenario", "inference")
    assert result.returncode == 2 and "is a microbenchmark" in result.stderr


def test_inference_run_end_to_end_with_repeats(bench, tmp_path):
    """Two processes of the numpy MLP on the offline digits: a merged record with intervals, a table."""
    out = tmp_path / "out"
    result = bench("run", "-b", "numpy", "-t", "mlp_mnist", "--dataset", "digits", "--scenario", "inference",
                   "--repeat", "2", "--threads", "1", "--peak", "off", "-o", str(out),
                   "--set", "inference.batch_sizes=[1,16]", "--set", "inference.min_time_s=0.05",
                   "--set", "inference.min_calls=20")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Inference in run" in result.stdout and "p50 ms" in result.stdout
    from fwbench.records.results import load_records

    (record,) = [r for r in load_records(out) if r.get("status") == "ok"]
    m = record["metrics"]
    assert record["scenario"] == "inference" and m["repeats_n"] == 2
    rows = m["inference"]["batches"]
    assert [r["batch_size"] for r in rows] == [1, 16]
    for row in rows:
        assert row["p50_ci95"][0] <= row["p50_s"] <= row["p50_ci95"][1]
        assert row["p50_s"] <= row["p99_s"] and len(row["repeat_p50_s"]) == 2
        assert row["throughput_samples_per_s"] == pytest.approx(row["batch_size"] / row["p50_s"])
        assert not row["energy"]["available"] or row["energy"]["joules_per_unit"] > 0
    assert 0 < m["inference"]["cold_start_s"] < 120
    assert m["peak_host_bytes"] > 0 and record["params"] == record["params_expected"] == 64 * 128 + 128 + 1290


def test_compare_judges_p50_and_p99_latency_over_repeats():
    from fwbench.gate.compare import SLOWER, UNCHANGED, compare
    from record_samples import inference_sample

    base = inference_sample("torch", speed=1.0)
    same = inference_sample("torch", speed=1.0)
    slow = inference_sample("torch", speed=1 / 1.3)  # every call 30% slower
    rows = {r.metric: r for r in compare([base], [slow]).rows}
    assert rows["latency p50"].verdict == SLOWER and rows["latency p99"].verdict == SLOWER
    assert rows["latency p50"].change == pytest.approx(0.3, abs=0.01)
    assert rows["latency p50"].repeats == (3, 3)
    assert compare([base], [same]).rows and \
        {r.metric: r for r in compare([base], [same]).rows}["latency p50"].verdict == UNCHANGED
