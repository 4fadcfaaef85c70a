"""Merging a cell's repeats into one record, and the statistics across repeats (no processes)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from fwbench.measure.repeats import merge_repeats
from fwbench.measure.statistics import ratio_interval, repeat_interval, repeats_needed
from record_samples import conv2d_record, example_record


def _singles(step_times, **kw):
    out = []
    for i, step in enumerate(step_times, start=1):
        record = example_record("torch", step_time=step, noise=step / 50, seed=i, **kw)
        record["repeat"] = i
        out.append(record)
    return out


def test_repeat_interval_is_a_t_interval_on_logs():
    values = [0.010, 0.011, 0.0105, 0.0098]
    ci = repeat_interval(values)
    logs = np.log(values)
    assert ci.center == pytest.approx(math.exp(logs.mean()))
    half = 3.182446305284263 * logs.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert (ci.low, ci.high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert repeat_interval([0.01]).low is None


def test_ratio_interval_welch_and_paired():
    base, new = [1.0, 1.1, 0.9, 1.05], [1.1, 1.21, 0.99, 1.155]  # new = 1.1 x base, pair by pair
    paired = ratio_interval(base, new, paired=True)
    assert paired.ratio == pytest.approx(1.1) and paired.low == pytest.approx(1.1) and paired.p_value < 1e-9
    welch = ratio_interval(base, new)
    assert welch.ratio == pytest.approx(1.1) and welch.low < 1.0 < welch.high and welch.p_value > 0.05
    need = repeats_needed(welch, threshold=0.05)
    assert need is not None and need > 4


def test_merge_gives_the_headline_from_the_repeats_and_warns_on_their_spread():
    singles = _singles([0.010, 0.012, 0.009], warnings=["train step: varies within the run (CV 9.0% > 5%); ..."])
    merged = merge_repeats(singles)
    m = merged["metrics"]
    medians = [s["metrics"]["step_time_s"]["median"] for s in singles]
    assert m["step_time_s"]["median"] == pytest.approx(math.exp(np.log(medians).mean()))
    assert m["throughput_samples_per_s"] == pytest.approx(64 / m["step_time_s"]["median"])
    assert m["throughput_ci95"][0] < m["throughput_samples_per_s"] < m["throughput_ci95"][1]
    assert m["throughput_wide"] is True  # ±15% between processes: the interval is wide
    assert not any("varies within the run" in w for w in merged["warnings"])
    (unstable,) = [w for w in merged["warnings"] if "unstable between repeats" in w]
    assert "--repeat 6" in unstable and "--threads 1" in unstable
    steady = merge_repeats(_singles([0.010, 0.0101, 0.0099]))
    assert not any("unstable" in w for w in steady["warnings"]) and not steady["metrics"]["throughput_wide"]


def test_merge_of_microbenchmark_cases_over_repeats():
    singles = []
    for i, speed in enumerate((1.0, 1.1, 0.95), start=1):
        record = conv2d_record("numpy", speed=speed)
        record["repeat"] = i
        singles.append(record)
    merged = merge_repeats(singles)
    case, first = merged["metrics"]["cases"][0], singles[0]["metrics"]["cases"][0]
    medians = [s["metrics"]["cases"][0]["median_s"] for s in singles]
    assert case["repeat_median_s"] == medians and case["repeats_n"] == 3 and case["interval"] == "repeats"
    assert case["median_s"] == pytest.approx(math.exp(np.log(medians).mean()))
    assert case["ci95"][0] < case["median_s"] < case["ci95"][1]
    assert case["gflops"] == pytest.approx(first["gflops"] * first["median_s"] / case["median_s"])
    assert case["within_run"]["median_s"] == first["median_s"]


def test_the_report_and_the_table_show_the_repeats_and_mark_wide_intervals():
    from fwbench.report.tables import repeats_note, summary_groups
    from fwbench.run.display import results_table
    from rich.console import Console

    steady = example_record("torch", repeats=3, repeat_cv=0.005, seed=1)
    noisy = example_record("jax", repeats=3, repeat_cv=0.2, seed=2)
    single = example_record("numpy", seed=3)
    single["metrics"].update(interval="within-run only", repeats_n=1)
    assert repeats_note(steady) == "3 repeats"
    assert repeats_note(noisy) == "3 repeats · ⚠ wide"
    assert repeats_note(single) == "1 repeat: within-run CI only"
    notes = [cell["note"] for group in summary_groups([steady, noisy, single]) for row in group["rows"]
             for cell in row["cells"] if "CI" in cell["note"]]
    assert any(n.endswith("(3 repeats)") for n in notes) and any("wide" in n for n in notes)
    console = Console(width=250, record=True)
    console.print(results_table([steady, noisy, single]))
    text = console.export_text()
    assert "×3" in text and "⚠wide" in text and "×1 (within-run)" in text


def test_a_stall_every_8_units_is_seen_by_the_mean_and_the_best_span_not_by_the_median_or_best_window():
    from fwbench.measure.timing import SPAN_UNITS, best_span, summarize

    rng = np.random.default_rng(5)
    steady = 0.001 * (1 + 0.01 * rng.random(400))
    load = steady.copy()
    load[100:140] *= 3.0  # a neighbour slowed one stretch: the fastest span avoids it
    stalled = load.copy()
    stalled[::8] *= 3.0  # a pause of 2 units' cost every 8 units (2 in every span): +25% of the total time
    quiet, hit = summarize(load), summarize(stalled)
    assert hit["median"] == pytest.approx(quiet["median"], rel=0.01)
    assert hit["min"] == pytest.approx(quiet["min"], rel=0.01)
    assert hit["mean"] / quiet["mean"] > 1.2
    assert hit["best_span"] / quiet["best_span"] == pytest.approx(1 + 2 * 2 / SPAN_UNITS, rel=0.02)
    assert quiet["best_span"] == pytest.approx(steady.mean(), rel=0.01)
    assert best_span(np.ones(2 * SPAN_UNITS - 1)) is None
