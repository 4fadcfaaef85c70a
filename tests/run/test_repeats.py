"""`bench run --repeat N`: repeats are fresh processes, interleaved, one record per cell, resumable per repeat."""
from __future__ import annotations

import re
from pathlib import Path

from fwbench.records.results import load_records

QUICK = ["--backend", "toy", "--task", "mlp_mnist", "--dataset", "digits", "--set", "epochs=1", "--no-progress"]


def run_dir(out: Path) -> Path:
    (run,) = [p.parent for p in out.glob("*/run.json")]
    return run


def test_repeats_run_interleaved_and_give_one_record_per_cell_with_a_repeat_interval(bench, tmp_path):
    out = tmp_path / "res"
    result = bench("run", *QUICK, "--set", "seed=1,2", "--repeat", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 cell(s) × 2 repeat(s), 4 process(es) to run" in result.stderr
    order = re.findall(r"seed=(\d) \(repeat (\d)/2\)", result.stderr)
    assert order == [("1", "1"), ("2", "1"), ("1", "2"), ("2", "2")]
    records = load_records(out)  # the single repeats in repeats/ are not loaded as cells
    assert len(records) == 2 and len(list((run_dir(out) / "repeats").glob("*.json"))) == 4
    for record in records:
        m = record["metrics"]
        assert m["interval"] == "repeats" and m["repeats_n"] == 2 and len(m["repeats"]) == 2
        assert [r["repeat"] for r in m["repeats"]] == [1, 2]
        medians = [r["median_step_s"] for r in m["repeats"]]
        step = m["step_time_s"]
        assert step["unit"] == "repeat" and step["raw"] == medians
        assert min(medians) <= step["median"] <= max(medians)  # the geometric mean of the repeats
        assert step["ci95_low"] <= step["median"] <= step["ci95_high"]
        low, high = m["throughput_ci95"]
        assert low <= m["throughput_samples_per_s"] <= high
        assert m["step_time_within_run_s"]["n"] >= 1  # the first repeat's windows, kept as a diagnostic
    logs = sorted(p.name for p in (run_dir(out) / "logs").iterdir())
    assert len(logs) == 4 and all(".r" in name for name in logs)


def test_one_repeat_says_its_interval_is_within_run_only(bench, tmp_path):
    out = tmp_path / "res"
    assert bench("run", *QUICK, "--repeat", "1", "--out", str(out)).returncode == 0
    (record,) = load_records(out)
    assert record["metrics"]["interval"] == "within-run only" and "repeats" not in record["metrics"]


def test_resume_runs_only_the_missing_repeats(bench, tmp_path):
    out = tmp_path / "res"
    assert bench("run", *QUICK, "--repeat", "2", "--out", str(out)).returncode == 0
    run = run_dir(out)
    (final,) = run.glob("toy*.json")
    final.unlink()  # as if interrupted during the last repeat
    (last,) = [p for p in (run / "repeats").glob("*.json") if '"repeat": 2' in p.read_text()]
    kept = {p.name: p.stat().st_mtime_ns for p in (run / "repeats").glob("*.json") if p != last}
    last.unlink()
    again = bench("run", *QUICK, "--repeat", "2", "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert "1 process(es) to run" in again.stderr and "(repeat 2/2)" in again.stderr
    assert "(repeat 1/2)" not in again.stderr
    assert all((run / "repeats" / name).stat().st_mtime_ns == t for name, t in kept.items())
    (record,) = load_records(out)
    assert [r["repeat"] for r in record["metrics"]["repeats"]] == [1, 2]


def test_a_failing_repeat_fails_its_cell_and_stops_its_repeats(bench, tmp_path):
    out = tmp_path / "res"
    result = bench("run", *QUICK, "--set", "backend.fault=exception,none", "--repeat", "2", "--out", str(out))
    assert result.returncode == 1
    records = {r["overrides"]["backend.fault"]: r for r in load_records(out)}
    assert records["exception"]["status"] == "failed"
    assert records["exception"]["error"].startswith("repeat 1/2: RuntimeError: toy backend: injected failure")
    assert records["none"]["status"] == "ok" and records["none"]["metrics"]["repeats_n"] == 2
    logs = [p.name for p in (run_dir(out) / "logs").iterdir() if "exception" in p.name]
    assert logs == [next(n for n in logs if n.endswith(".r1.log"))]  # repeat 2 never started


def test_bad_repeat_values_are_one_line_exit_2(bench, tmp_path):
    for value in ("0", "x", "-2"):
        result = bench("run", *QUICK, "--repeat", value, "--out", str(tmp_path / "res"))
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert "--repeat" in line and repr(value) in line
    result = bench("run", *QUICK, "--out", str(tmp_path / "res"), env={"FWBENCH_REPEAT": "zero"})
    assert result.returncode == 2 and "FWBENCH_REPEAT='zero'" in result.stderr
