"""`bench compare BASE NEW`: verdicts from a significance test plus a threshold, and the exit code."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fwbench.compare import (
    IMPROVED,
    NOT_COMPARABLE,
    REGRESSED,
    UNCHANGED,
    compare,
    markdown,
    parse_alpha,
    parse_threshold,
)
from fwbench.errors import UsageError
from fwbench.report.samples import example_record
from fwbench.results import write_record
from fwbench.timing import summarize


def _verdicts(result, metric: str = "throughput (samples/s)") -> dict[str, str]:
    return {row.cell: row.verdict for row in result.rows if row.metric == metric}


def _one(result, metric: str = "throughput (samples/s)"):
    (row,) = [r for r in result.rows if r.metric == metric]
    return row


def test_a_20_percent_slowdown_with_tight_repeats_is_a_regression():
    base = [example_record("torch", step_time=0.010, noise=0.0001, seed=1)]
    new = [example_record("torch", step_time=0.012, noise=0.0001, seed=2)]
    result = compare(base, new, threshold=0.05, alpha=0.01)
    row = _one(result)
    assert row.verdict == REGRESSED
    assert row.change == pytest.approx(0.010 / 0.012 - 1, abs=0.01)  # throughput -16.7%
    assert row.p_value < 1e-6
    assert row.better == "higher"
    assert result.regressed


def test_noise_within_the_threshold_is_unchanged():
    base = [example_record("torch", step_time=0.0100, noise=0.0001, seed=1)]
    new = [example_record("torch", step_time=0.0102, noise=0.0001, seed=2)]  # 2% slower: significant but small
    result = compare(base, new, threshold=0.05)
    assert _one(result).verdict == UNCHANGED
    assert not result.regressed


def _with_raw(record: dict, raw: list[float]) -> dict:
    stats = summarize(raw)
    record["metrics"]["step_time_s"] = stats
    record["metrics"]["throughput_samples_per_s"] = 64 / stats["median"]
    return record


def test_a_large_change_that_is_not_significant_is_unchanged():
    # 4 repeats a side: even perfectly separated samples give p = 2/70 > alpha
    base = [_with_raw(example_record("torch"), [0.010, 0.014, 0.008, 0.012])]
    new = [_with_raw(example_record("torch"), [0.016, 0.018, 0.015, 0.020])]
    row = _one(compare(base, new, threshold=0.05, alpha=0.01))
    assert row.change == pytest.approx(0.011 / 0.017 - 1)
    assert row.p_value == pytest.approx(2 / 70)
    assert row.verdict == UNCHANGED and "not significant" in row.reason
    assert _one(compare(base, new, threshold=0.05, alpha=0.05)).verdict == REGRESSED


def test_an_improvement_is_improved():
    base = [example_record("jax", step_time=0.010, noise=0.0001, seed=1)]
    new = [example_record("jax", step_time=0.008, noise=0.0001, seed=2)]
    result = compare(base, new)
    assert _one(result).verdict == IMPROVED
    assert not result.regressed


def test_single_valued_metrics_use_the_threshold_and_their_direction():
    base = [example_record("torch", accuracy=0.90, peak_host_bytes=400 * 2**20, compile_s=1.0)]
    new = [example_record("torch", accuracy=0.80, peak_host_bytes=300 * 2**20, compile_s=1.02)]
    result = compare(base, new, threshold=0.05)
    assert _one(result, "test accuracy").verdict == REGRESSED  # higher is better, it fell 11%
    assert _one(result, "peak host memory").verdict == IMPROVED  # lower is better, it fell 25%
    assert _one(result, "compile time").verdict == UNCHANGED  # +2% < 5%
    assert not [r for r in result.rows if r.metric == "peak device memory"]  # absent on both sides: not listed
    assert result.regressed


def test_missing_failed_and_rawless_cells_are_not_comparable():
    base = [example_record("torch", "mlp_mnist"), example_record("jax", "mlp_mnist"),
            example_record("torch", "cnn_mnist"), example_record("jax", "cnn_mnist")]
    rawless = example_record("jax", "cnn_mnist")
    rawless["metrics"]["step_time_s"].pop("raw")
    new = [example_record("torch", "mlp_mnist"),
           example_record("jax", "mlp_mnist", status="failed", error="RuntimeError: boom"),
           rawless,
           example_record("numpy", "mlp_mnist")]  # cnn torch missing in NEW, numpy missing in BASE
    result = compare(base, new)
    reasons = {(r.cell, r.metric): (r.verdict, r.reason) for r in result.rows}
    assert reasons[("torch · cnn_mnist · digits · cpu", "(cell)")] == (NOT_COMPARABLE, "missing in NEW")
    assert reasons[("numpy · mlp_mnist · digits · cpu", "(cell)")] == (NOT_COMPARABLE, "missing in BASE")
    verdict, reason = reasons[("jax · mlp_mnist · digits · cpu", "(cell)")]
    assert verdict == NOT_COMPARABLE and "failed in NEW" in reason and "boom" in reason
    verdict, reason = reasons[("jax · cnn_mnist · digits · cpu", "throughput (samples/s)")]
    assert verdict == NOT_COMPARABLE and "no raw repeats in NEW" in reason
    assert reasons[("torch · mlp_mnist · digits · cpu", "throughput (samples/s)")][0] == UNCHANGED
    assert not result.regressed


def test_a_failed_cell_without_dataset_pairs_with_its_base_cell():
    base = [example_record("torch", "mlp_mnist", overrides={}, dataset="mnist")]
    base[0]["overrides"] = {}
    failed = example_record("torch", "mlp_mnist", status="timeout", error="killed after 10 s")
    failed.update(dataset=None, overrides={})
    result = compare(base, [failed])
    (row,) = result.rows
    assert row.verdict == NOT_COMPARABLE and "timeout in NEW" in row.reason


def test_cells_pair_by_overrides():
    base = [example_record("torch", overrides={"optimizer.lr": 0.1}, step_time=0.01, noise=1e-4, seed=1),
            example_record("torch", overrides={"optimizer.lr": 0.01}, step_time=0.02, noise=1e-4, seed=2)]
    new = [example_record("torch", overrides={"optimizer.lr": 0.01}, step_time=0.02, noise=1e-4, seed=3),
           example_record("torch", overrides={"optimizer.lr": 0.1}, step_time=0.01, noise=1e-4, seed=4)]
    assert set(_verdicts(compare(base, new)).values()) == {UNCHANGED}


def test_markdown_table_for_a_pull_request():
    base = [example_record("torch", step_time=0.010, noise=0.0001, seed=1)]
    new = [example_record("torch", step_time=0.012, noise=0.0001, seed=2)]
    text = markdown(compare(base, new))
    assert text.startswith("### fwbench compare: ❌ regression")
    assert "| cell | metric | better | base | new | change | p | verdict |" in text
    assert "🔴 regressed" in text and "↑ higher" in text and "↓ lower" in text


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("2.5%", 0.025), ("10", 0.10), (" 0% ", 0.0)])
def test_threshold_parsing(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5x", "-1%", "", "%", "nan", "five"])
def test_bad_thresholds_are_usage_errors(text):
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(text)


def test_bad_alpha_is_a_usage_error():
    assert parse_alpha("0.05") == 0.05
    for text in ("0", "1", "x"):
        with pytest.raises(UsageError, match="--alpha"):
            parse_alpha(text)


# ---------------------------------------------------------------------------------------------
# The command line: exit codes
# ---------------------------------------------------------------------------------------------

def _write(folder: Path, records: list[dict]) -> Path:
    for r in records:
        write_record(r, folder)
    return folder


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwbench.cli", "compare", *args], capture_output=True,
                          text=True, check=False, cwd=cwd, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_exit_codes(tmp_path):
    base = _write(tmp_path / "base", [example_record("torch", step_time=0.010, noise=0.0001, seed=1),
                                      example_record("jax", "cnn_mnist")])
    slow = _write(tmp_path / "slow", [example_record("torch", step_time=0.012, noise=0.0001, seed=2)])
    same = _write(tmp_path / "same", [example_record("torch", step_time=0.0101, noise=0.0001, seed=3)])

    regressed = _bench(str(base), str(slow), cwd=tmp_path)
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    assert "regressed" in regressed.stdout and "not comparable" in regressed.stdout  # jax cnn missing in NEW

    fine = _bench(str(base), str(same), "--format", "md", cwd=tmp_path)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert fine.stdout.startswith("### fwbench compare: ✅ no regression")

    strict = _bench(str(base), str(same), "--strict", cwd=tmp_path)
    assert strict.returncode == 1  # the missing jax cell counts under --strict

    only_accuracy = _bench(str(base), str(slow), "--metric", "test_accuracy", cwd=tmp_path)
    assert only_accuracy.returncode == 0 and "throughput" not in only_accuracy.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--threshold", "5x"], "--threshold '5x'"),
    (["--alpha", "2"], "--alpha '2'"),
    (["--metric", "speed"], "--metric 'speed'"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    base = _write(tmp_path / "base", [example_record("torch")])
    result = _bench(str(base), str(base), *args, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bench: error: ") and fragment in line


def test_cli_missing_folder_is_exit_2(tmp_path):
    base = _write(tmp_path / "base", [example_record("torch")])
    result = _bench(str(base), str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "NEW" in line and "nope" in line and "no such file or folder" in line
