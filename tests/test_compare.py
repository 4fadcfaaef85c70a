"""`bench compare BASE NEW`: verdicts from a significance test plus a threshold, and the exit code."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fwbench.errors import UsageError
from fwbench.gate.compare import (
    FAILED,
    FASTER,
    IMPROVED,
    INCONCLUSIVE,
    NO_EVIDENCE,
    NOT_COMPARABLE,
    REGRESSED,
    SLOWER,
    UNCHANGED,
    compare,
    markdown,
    parse_alpha,
    parse_threshold,
)
from fwbench.records.results import write_record
from record_samples import example_record

THROUGHPUT = "throughput (samples/s)"


def _one(result, metric: str = THROUGHPUT):
    (row,) = [r for r in result.rows if r.metric == metric]
    return row


def _rec(backend="torch", task="mlp_mnist", *, step=0.010, cv=0.01, n=5, seed=1, **kw):
    return example_record(backend, task, step_time=step, noise=step / 100, repeats=n, repeat_cv=cv, seed=seed, **kw)


def test_a_20_percent_slowdown_over_tight_repeats_is_slower_with_its_interval():
    row = _one(compare([_rec(step=0.010, seed=1)], [_rec(step=0.012, seed=2)], threshold=0.05, alpha=0.01))
    assert row.verdict == SLOWER and row.better == "higher"
    assert row.change == pytest.approx(0.010 / 0.012 - 1, abs=0.02)  # throughput about -17%
    low, high = row.ci
    assert low < row.change + 1 < high < 0.95  # the whole 99% interval is below 1 - threshold here
    assert row.p_value < 1e-3 and row.repeats == (5, 5)


def test_a_small_change_whose_interval_lies_within_the_threshold_is_unchanged():
    base, new = [_rec(step=0.0100, cv=0.004, n=6, seed=1)], [_rec(step=0.0101, cv=0.004, n=6, seed=2)]
    row = _one(compare(base, new, paired=True))  # one interleaved invocation, as `bench ab`
    assert row.verdict == UNCHANGED
    assert 0.95 <= row.ci[0] and row.ci[1] <= 1.05
    # two separate invocations: the between-invocation spread keeps the interval wider than ±5%
    across = _one(compare(base, new))
    assert across.verdict == INCONCLUSIVE and across.ci[0] < 0.95 and "could detect" in across.reason


def test_noisy_repeats_are_inconclusive_and_say_what_they_could_detect_and_how_many_repeats_would_decide():
    base, new = [_rec(step=0.010, cv=0.08, n=3, seed=1)], [_rec(step=0.0108, cv=0.08, n=3, seed=2)]
    row = _one(compare(base, new, threshold=0.05, paired=True))
    assert row.verdict == INCONCLUSIVE
    assert row.needed is not None and row.needed > 3 and f"about {row.needed} repeats a side" in row.reason
    assert row.mde is not None and row.mde > 0.05 and f"could detect ±{row.mde:.1%} or more" in row.reason
    result = compare(base, new, paired=True)
    assert not result.regressed and not result.failing() and result.failing("inconclusive")


def test_an_improvement_is_faster():
    row = _one(compare([_rec("jax", step=0.010, seed=1)], [_rec("jax", step=0.008, seed=2)]))
    assert row.verdict == FASTER and row.change > 0.2


def test_one_repeat_gives_no_interval_across_runs_and_no_evidence_fails():
    result = compare([_rec(n=1, seed=1)], [_rec(n=1, step=0.02, seed=2)])
    row = _one(result)
    assert row.verdict == NO_EVIDENCE and "--repeat 3" in row.reason
    assert row in result.failing()
    assert row not in compare([_rec(n=1, seed=1)], [_rec(n=1, step=0.02, seed=2)], allow_no_evidence=True).failing()


def test_shared_drift_is_removed_by_pairing_the_interleaved_repeats():
    drift = [1.0, 1.15, 0.9, 1.2, 0.95, 1.1]  # the machine's speed, shared by each A, B pair
    base = _rec(step=0.010, cv=0.0, n=6, seed=1)
    new = _rec(step=0.0106, cv=0.0, n=6, seed=2)
    for record in (base, new):
        for rep, d in zip(record["metrics"]["repeats"], drift, strict=True):
            rep["median_step_s"] *= d * (1 + 0.002 * (rep["repeat"] % 2))
    assert _one(compare([base], [new], paired=False)).verdict == INCONCLUSIVE
    paired = _one(compare([base], [new], paired=True))
    assert paired.verdict == SLOWER and paired.change == pytest.approx(0.010 / 0.0106 - 1, abs=0.005)


def test_non_speed_metrics_are_judged_over_repeats_in_their_own_direction():
    base = [_rec(accuracy=0.90, peak_host_bytes=400 * 2**20, seed=1)]
    new = [_rec(accuracy=0.80, peak_host_bytes=300 * 2**20, seed=2)]
    result = compare(base, new, threshold=0.05)
    assert _one(result, "test accuracy").verdict == REGRESSED  # higher is better, it fell 11%
    assert _one(result, "peak host memory").verdict == IMPROVED  # lower is better, it fell 25%
    assert not [r for r in result.rows if r.metric == "peak device memory"]  # absent on both sides
    assert result.regressed


def test_a_cell_ok_in_base_and_failed_or_missing_in_new_is_a_regression():
    base = [_rec("torch", "mlp_mnist"), _rec("jax", "mlp_mnist"), _rec("torch", "cnn_mnist"),
            example_record("jax", "cnn_mnist", status="failed", error="boom in base")]
    new = [_rec("torch", "mlp_mnist", seed=3),
           example_record("jax", "mlp_mnist", status="failed", error="RuntimeError: boom"),
           _rec("jax", "cnn_mnist", seed=4),
           _rec("numpy", "mlp_mnist")]  # torch cnn missing in NEW, numpy new in NEW
    result = compare(base, new)
    reasons = {(r.cell, r.metric): (r.verdict, r.reason) for r in result.rows}
    assert reasons[("torch · cnn_mnist · digits · cpu", "(cell)")] == (FAILED, "ok in BASE, missing in NEW")
    verdict, reason = reasons[("jax · mlp_mnist · digits · cpu", "(cell)")]
    assert verdict == FAILED and "failed in NEW" in reason and "boom" in reason
    assert reasons[("numpy · mlp_mnist · digits · cpu", "(cell)")][0] == NOT_COMPARABLE
    assert reasons[("jax · cnn_mnist · digits · cpu", "(cell)")][0] == NOT_COMPARABLE  # failed in BASE
    regressions = {"torch · cnn_mnist · digits · cpu", "jax · mlp_mnist · digits · cpu"}
    unjudged = {"numpy · mlp_mnist · digits · cpu", "jax · cnn_mnist · digits · cpu"}
    assert result.regressed and {r.cell for r in result.failing()} == regressions | unjudged  # no evidence fails
    relaxed = compare(base, new, allow_no_evidence=True)
    assert {r.cell for r in relaxed.failing()} == regressions


def test_a_record_compared_with_itself_is_unchanged():
    record = _rec(cv=0.1, n=3)
    result = compare([record], [record])
    assert {r.verdict for r in result.rows} == {UNCHANGED} and not result.failing("inconclusive")


def test_a_failed_cell_without_dataset_pairs_with_its_base_cell():
    base = [_rec(dataset="mnist")]
    base[0]["overrides"] = {}
    failed = example_record("torch", "mlp_mnist", status="timeout", error="killed after 10 s")
    failed.update(dataset=None, overrides={})
    (row,) = compare(base, [failed]).rows
    assert row.verdict == FAILED and "timeout in NEW" in row.reason


def test_cells_pair_by_overrides():
    base = [_rec(overrides={"optimizer.lr": 0.1}, step=0.01, seed=1),
            _rec(overrides={"optimizer.lr": 0.01}, step=0.02, seed=2)]
    new = [_rec(overrides={"optimizer.lr": 0.01}, step=0.02, seed=3),
           _rec(overrides={"optimizer.lr": 0.1}, step=0.01, seed=4)]
    assert {r.verdict for r in compare(base, new).rows if r.metric == THROUGHPUT} <= {UNCHANGED, INCONCLUSIVE}
    assert not compare(base, new).regressed


def test_runs_of_different_tasks_share_no_cell_and_are_refused():
    with pytest.raises(UsageError, match="share no cell"):
        compare([_rec(task="mlp_mnist")], [_rec(task="cnn_mnist")])


def test_markdown_table_for_a_pull_request():
    text = markdown(compare([_rec(step=0.010, seed=1)], [_rec(step=0.012, seed=2)]))
    assert text.startswith("### fwbench compare: ❌ regression")
    assert "| cell | metric | better | base | new | change [CI, level] | p | repeats | verdict |" in text
    assert "🔴 slower" in text and "↑ higher" in text and "↓ lower" in text and "| 5/5 |" in text


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("2.5%", 0.025), ("0.05", 0.05), (" 0% ", 0.0),
                                        ("0.0005", 0.0005), ("0.05%", 0.0005)])
def test_threshold_parsing_a_percentage_or_a_fraction(text, value):
    assert parse_threshold(text) == pytest.approx(value)


def test_the_threshold_is_printed_as_parsed():
    result = compare([_rec(seed=1)], [_rec(seed=2)], threshold=parse_threshold("0.0005"))
    result.threshold_text = "0.0005"
    assert "threshold 0.05% from '0.0005'" in result.summary()


@pytest.mark.parametrize("text", ["5x", "-1%", "", "%", "nan", "five", "5", "10"])
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
    base = _write(tmp_path / "base", [_rec(step=0.010, seed=1), _rec("jax", "cnn_mnist")])
    slow = _write(tmp_path / "slow", [_rec(step=0.013, seed=2), _rec("jax", "cnn_mnist", seed=5)])
    same = _write(tmp_path / "same", [_rec(step=0.0100, cv=0.003, n=6, seed=3), _rec("jax", "cnn_mnist", seed=6)])
    broken = _write(tmp_path / "broken", [_rec(step=0.0100, seed=3),
                                         example_record("jax", "cnn_mnist", status="failed", error="Boom")])
    noisy = _write(tmp_path / "noisy", [_rec(step=0.0104, cv=0.1, n=3, seed=7), _rec("jax", "cnn_mnist", seed=8)])

    itself = _bench(str(base), str(base), cwd=tmp_path)
    assert itself.returncode == 0 and re.search(r"no regression: 0 slower, \d+ unchanged, 0 inconclusive",
                                                itself.stdout)

    regressed = _bench(str(base), str(slow), cwd=tmp_path)  # 23% slower
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr
    assert "slower: torch · mlp_mnist" in regressed.stdout

    failed = _bench(str(base), str(broken), cwd=tmp_path)
    assert failed.returncode == 1 and "failed: jax · cnn_mnist" in failed.stdout and "Boom" in failed.stdout

    fine = _bench(str(base), str(same), "--format", "md", cwd=tmp_path)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert fine.stdout.startswith("### fwbench compare: ✅ no regression")

    unsure = _bench(str(base), str(noisy), "--metric", "throughput", cwd=tmp_path)
    assert unsure.returncode == 0 and "inconclusive" in unsure.stdout
    assert _bench(str(base), str(noisy), "--metric", "throughput", "--fail-on", "inconclusive",
                  cwd=tmp_path).returncode == 1

    only_accuracy = _bench(str(base), str(slow), "--metric", "test_accuracy", cwd=tmp_path)
    assert only_accuracy.returncode == 0 and "throughput" not in only_accuracy.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--threshold", "5x"], "--threshold '5x'"),
    (["--alpha", "2"], "--alpha '2'"),
    (["--metric", "speed"], "--metric 'speed'"),
    (["--fail-on", "never"], "--fail-on"),
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
