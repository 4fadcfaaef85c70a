"""The regression gate's cases, replayed: no pass without evidence, one logic on the interval, Holm over
the rows, like with like, `bench ab` output that round-trips, and bad input that ends in one line."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fwbench.gate.ab import merge_blocks
from fwbench.gate.compare import (
    ENV_CHANGED,
    FAILED,
    INCONCLUSIVE,
    NO_EVIDENCE,
    NOT_COMPARABLE,
    REGRESSED,
    SLOWER,
    UNCHANGED,
    compare,
)
from fwbench.gate.verdicts import decide
from fwbench.measure.statistics import holm_levels, ratio_interval, repeats_needed
from fwbench.records.results import write_record
from record_samples import example_record

THROUGHPUT = "throughput (samples/s)"


def _rec(backend="numpy", *, step=0.010, n=5, seed=1, cv=0.01, **kw):
    return example_record(backend, "mlp_mnist", step_time=step, noise=step / 100, repeats=n, repeat_cv=cv,
                          seed=seed, **kw)


def _rows(result, cell_metric=None):
    return {r.metric: r for r in result.rows}


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwbench.cli", *args], capture_output=True, text=True,
                          check=False, cwd=cwd, timeout=300, env={**os.environ, "COLUMNS": "250"})


def _write(folder: Path, records: list[dict]) -> Path:
    for r in records:
        write_record(r, folder)
    return folder


# ---------------------------------------------------------------------------------------------
# The first list, replayed through the command line
# ---------------------------------------------------------------------------------------------

def test_one_repeat_in_new_with_doubled_steps_and_30_points_less_accuracy_fails(tmp_path):
    base = _write(tmp_path / "base", [_rec(n=3, accuracy=0.90)])
    new = _write(tmp_path / "new", [_rec(n=1, step=0.020, seed=2, accuracy=0.60)])
    done = _bench("compare", str(base), str(new), cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert "regressed: numpy · mlp_mnist" in done.stdout and "exact: deterministic" in done.stdout
    assert "no evidence: numpy · mlp_mnist · digits · cpu · throughput" in done.stdout
    rows = _rows(compare([_rec(n=3, accuracy=0.90)], [_rec(n=1, step=0.020, seed=2, accuracy=0.60)]))
    assert rows["test accuracy"].verdict == REGRESSED and rows["test accuracy"].change == pytest.approx(-1 / 3)
    assert rows[THROUGHPUT].verdict == NO_EVIDENCE and "1 repeat(s) in NEW" in rows[THROUGHPUT].reason


def test_an_ok_record_without_metrics_in_new_fails_and_the_flag_relaxes_it(tmp_path):
    empty = example_record("numpy", "mlp_mnist")
    empty["metrics"] = {}
    base = _write(tmp_path / "base", [_rec()])
    new = _write(tmp_path / "new", [empty])
    done = _bench("compare", str(base), str(new), cwd=tmp_path)
    assert done.returncode == 1 and "no evidence" in done.stdout and "no throughput in NEW" in done.stdout
    relaxed = _bench("compare", str(base), str(new), "--allow-no-evidence", cwd=tmp_path)
    assert relaxed.returncode == 0, relaxed.stdout


def test_a_base_with_a_timed_out_repeat_cannot_judge_and_fails(tmp_path):
    # `bench run --repeat 3` whose repeat 2 timed out: the cell's record is that failure
    timed = example_record("numpy", "mlp_mnist", status="timeout", error="repeat 2/3: killed after 60 s")
    base = _write(tmp_path / "base", [timed])
    new = _write(tmp_path / "new", [_rec()])
    done = _bench("compare", str(base), str(new), cwd=tmp_path)
    assert done.returncode == 1 and "not comparable" in done.stdout and "timeout in BASE" in done.stdout
    (row,) = compare([timed], [_rec()]).rows
    assert row.verdict == NOT_COMPARABLE and "cannot judge" in row.reason


def test_bench_ab_refuses_one_repeat_before_building_anything(tmp_path):
    done = _bench("ab", "HEAD~1", "HEAD", "-b", "numpy", "--repeat", "1", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("bench: error: --repeat 1: bench ab needs at least 2 blocks")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_bad_block_timeout_is_one_line_exit_2(tmp_path, value):
    done = _bench("ab", "HEAD~1", "HEAD", "--block-timeout", value, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "--block-timeout" in line and value in line


@pytest.mark.parametrize("version", ['"1"', "null", "1.5", "true"])
def test_a_malformed_schema_version_is_one_line_exit_2(tmp_path, version):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "r.json").write_text(json.dumps({**example_record("numpy"), "schema_version": json.loads(version)}))
    done = _bench("compare", str(folder), str(folder), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "r.json: schema_version" in done.stderr and "not a record version" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("bench: error: ")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Deterministic metrics, displayed values, labels
# ---------------------------------------------------------------------------------------------

def test_a_deterministic_metric_is_judged_exactly_at_any_n():
    same = _rows(compare([_rec(n=1, accuracy=0.9)], [_rec(n=1, seed=2, accuracy=0.9)]))["test accuracy"]
    assert same.verdict == UNCHANGED and same.reason.startswith("exact")
    small = _rows(compare([_rec(n=2, accuracy=0.9)], [_rec(n=4, seed=2, accuracy=0.905)]))["test accuracy"]
    assert small.verdict == UNCHANGED and "within ±5%" in small.reason  # +0.56% < half the threshold
    worse = _rows(compare([_rec(n=2, accuracy=0.9)], [_rec(n=2, seed=2, accuracy=0.85)]))["test accuracy"]
    assert worse.verdict == REGRESSED  # -5.6%: beyond half of 5%


def test_base_and_new_show_the_statistic_of_the_change():
    row = _rows(compare([_rec(step=0.010, seed=1)], [_rec(step=0.0125, seed=2)], paired=True))[THROUGHPUT]
    base, new = (float(x.replace(",", "")) for x in (row.base, row.new))
    assert new / base - 1 == pytest.approx(row.change, abs=2e-4)  # to the printed digits
    assert row.level is not None and f"{row.level * 100:.4g}%" in __import__(
        "fwbench.gate.output", fromlist=["ratio_text"]).ratio_text(row)


def test_repeats_needed_lets_the_degrees_of_freedom_grow():
    rng = np.random.default_rng(3)
    base = np.exp(0.02 * rng.standard_normal(3))
    new = base * 0.94 * np.exp(0.02 * rng.standard_normal(3))
    ratio = ratio_interval(base, new, 0.99)
    need = repeats_needed(ratio, 0.03, 0.99, margin_log=math.log1p(0.015))
    from scipy import stats

    distance = abs(math.log(ratio.ratio)) - math.log1p(0.015)

    def half(n):  # t quantile at Welch's df scaled with n, standard error falling as 1/sqrt(n)
        return stats.t.ppf(0.995, ratio.df * (n - 1) / 2) * ratio.se_log * math.sqrt(3 / n)
    assert half(need) <= distance < half(need - 1) or need == 4
    frozen = math.ceil(3 * (stats.t.ppf(0.995, ratio.df) * ratio.se_log / distance) ** 2)
    assert need < frozen  # the old projection kept the t quantile of the current df


# ---------------------------------------------------------------------------------------------
# One logic on the interval; Holm over the rows
# ---------------------------------------------------------------------------------------------

def test_holm_levels_step_down():
    assert holm_levels([0.01, 0.04, 0.03, 0.005], 0.05) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    assert holm_levels([0.5], 0.01) == [0.01]


def test_a_change_below_half_the_threshold_is_rarely_called_and_twice_the_threshold_is_found():
    rng = np.random.default_rng(7)
    n, sd, sims = 8, 0.015, 400

    def slower_rate(true_change: float) -> float:
        called = 0
        for _ in range(sims):
            drift = sd * rng.standard_normal(n)
            base = np.exp(drift + sd * rng.standard_normal(n))
            new = np.exp(drift + sd * rng.standard_normal(n) + math.log1p(true_change))
            (judged,) = decide([(ratio_interval(base, new, 0.99, paired=True), "lower", True)], 0.03, 0.01)
            called += judged.verdict == SLOWER
        return called / sims
    assert slower_rate(0.015) <= 0.01 + 0.015  # at most alpha (with Monte Carlo slack)
    assert slower_rate(0.06) >= 0.9


def test_holm_holds_the_family_wise_rate_over_many_rows():
    rng = np.random.default_rng(11)
    alarms = 0
    for _ in range(200):
        family = []
        for _ in range(12):  # 4 cells x 3 metrics, no change anywhere
            base, new = np.exp(0.02 * rng.standard_normal(8)), np.exp(0.02 * rng.standard_normal(8))
            family.append((ratio_interval(base, new, 0.99, paired=True), "lower", True))
        alarms += any(j.verdict == SLOWER for j in decide(family, 0.0, 0.05))
    assert alarms / 200 <= 0.05 + 0.03


# ---------------------------------------------------------------------------------------------
# Like with like
# ---------------------------------------------------------------------------------------------

def test_throughput_is_compared_in_samples_per_second_and_a_batch_change_is_flagged():
    base = _rec(step=0.010, seed=1, batch_size=64)
    new = _rec(step=0.020, seed=2, batch_size=128)  # twice the batch, twice the time: the same samples/s
    result = compare([base], [new], paired=True)
    rows = _rows(result)
    assert rows[THROUGHPUT].verdict in (UNCHANGED, INCONCLUSIVE) and abs(rows[THROUGHPUT].change) < 0.03
    assert rows["(settings)"].verdict == ENV_CHANGED and "batch size 64 → 128" in rows["(settings)"].reason
    assert rows["(settings)"] in result.failing()
    assert not compare([base], [new], paired=True, allow_env_change=True).failing()


def test_threads_cpu_and_device_differences_are_flagged():
    base, new = _rec(seed=1), _rec(seed=2)
    new["env"]["threads"] = 2
    new["env"]["cpu"]["model"] = "Other CPU"
    base["env"]["threads"] = 1
    (row,) = [r for r in compare([base], [new]).rows if r.metric == "(settings)"]
    assert "threads 1 → 2" in row.reason and "CPU model Example CPU 3000 → Other CPU" in row.reason


# ---------------------------------------------------------------------------------------------
# bench ab output round-trips
# ---------------------------------------------------------------------------------------------

def _blocks(step: float, missing: int, seed: int) -> dict[int, list[dict]]:
    drift = [1.0, 1.3, 0.8, 1.2, 0.9, 1.1, 1.25, 0.85]  # the machine's speed per block, shared by both sides
    out = {}
    for i, d in enumerate(drift, start=1):
        if i == missing:
            continue
        one = example_record("numpy", "mlp_mnist", step_time=step * d, noise=step * d / 200, seed=seed * 100 + i)
        one["finished_at"] = f"2026-01-01T12:00:{i:02d}+00:00"
        out[i] = [one]
    return out


def test_ab_pairs_by_block_index_when_a_block_is_missing_on_each_side(tmp_path):
    base, new = merge_blocks(_blocks(0.010, 3, 1)), merge_blocks(_blocks(0.0105, 6, 2))
    assert [r["block"] for r in base[0]["metrics"]["repeats"]] == [1, 2, 4, 5, 6, 7, 8]
    assert base[0]["finished_at"] == "2026-01-01T12:00:08+00:00"  # the last repeat's time
    row = _rows(compare(base, new, 0.03, 0.01, ["throughput"], paired=True))[THROUGHPUT]
    assert row.repeats == (6, 6) and row.verdict == SLOWER and row.change == pytest.approx(1 / 1.05 - 1, abs=0.003)
    # `bench compare OUT/base OUT/new` reads the merged cells (not the blocks) and pairs them the same way
    for name, records, blocks in (("base", base, _blocks(0.010, 3, 1)), ("new", new, _blocks(0.0105, 6, 2))):
        for block, singles in blocks.items():
            _write(tmp_path / name / "blocks" / f"block{block:03d}" / "run", singles)
        for r in records:
            write_record({**r, "ab": {**r["ab"], "side": name}}, tmp_path / name / "cells")
    done = _bench("compare", str(tmp_path / "base"), str(tmp_path / "new"), "--metric", "throughput",
                  "--threshold", "3%", cwd=tmp_path)
    assert done.returncode == 1 and "paired by block" in done.stdout and "6/6" in done.stdout, done.stdout


def test_a_timed_out_block_makes_the_cells_it_did_not_finish_time_out():
    blocks = _blocks(0.010, 3, 1)
    (merged,) = merge_blocks(blocks, timed_out={3: 30.0})
    assert merged["status"] == "timeout" and "block 3 ran past --block-timeout 30 s" in merged["error"]
    (row,) = compare([merge_blocks(_blocks(0.010, 0, 1))[0]], [merged], paired=True).rows
    assert row.verdict == FAILED


def test_two_blocks_at_a_holm_level_give_a_finite_answer_not_an_overflow():
    base, new = [1.0, 5.0], [5.0, 1.0]  # 1 degree of freedom, first steps 5x apart, a row among many
    ratio = ratio_interval(base, new, 0.99, paired=True)
    (judged,) = decide([(ratio, "lower", True)], 0.03, 0.01 / 14)
    assert judged.verdict == INCONCLUSIVE and "no change below +999% could be detected" in judged.reason
