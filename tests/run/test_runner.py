"""The runner through the real CLI: an outside plugin listed and run, faults become records, resume."""
from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import pytest
from fwbench.records.results import load_records, load_results

QUICK = ["--task", "mlp_mnist", "--dataset", "digits", "--set", "epochs=2", "--no-progress"]


def run_dir(out: Path) -> Path:
    (run,) = [p.parent for p in out.glob("*/run.json")]
    return run


def test_outside_plugin_is_listed_and_runs(bench, tmp_path):
    listed = bench("list", "backends")
    assert listed.returncode == 0
    assert "toy" in listed.stdout and "available" in listed.stdout
    out = tmp_path / "res"
    result = bench("run", "--backend", "toy", *QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr
    (record,) = load_records(out)
    assert record["status"] == "ok" and record["backend"] == "toy"
    assert record["params"] == record["params_expected"] == 64 * 128 + 128 + 128 * 10 + 10
    m = record["metrics"]
    assert m["epochs_run"] == 2 and len(m["history"]) == 2 and 0.0 <= m["test_accuracy"] <= 1.0
    assert m["throughput_samples_per_s"] > 0 and m["step_time_s"]["n"] >= 1 and m["steps"] > 10
    assert record["env"]["threads"] >= 1 and record["env"]["blas"]
    assert record["config"]["optimizer"]["name"] == "adam"
    assert "toy" in result.stdout and "Results of run" in result.stdout


@pytest.mark.parametrize("fault,status,fragment", [
    ("exception", "failed", "RuntimeError: toy backend: injected failure"),
    ("sigkill", "failed", "killed by SIGKILL"),
    ("segfault", "failed", "killed by SIGSEGV"),
    ("exit", "failed", "exited with code 3"),
])
def test_a_crashing_cell_becomes_a_failed_record_and_the_run_goes_on(bench, tmp_path, fault, status, fragment):
    out = tmp_path / "res"
    result = bench("run", "--backend", "toy", *QUICK, "--set", f"backend.fault={fault},none", "--out", str(out))
    assert result.returncode == 1
    records = {r["overrides"]["backend.fault"]: r for r in load_records(out)}
    assert records[fault]["status"] == status and fragment in records[fault]["error"]
    assert records["none"]["status"] == "ok"  # the cell after the crash still ran
    assert "Traceback" not in result.stderr


def test_a_hanging_cell_times_out(bench, tmp_path):
    out = tmp_path / "res"
    result = bench("run", "--backend", "toy", *QUICK, "--set", "backend.fault=hang,none", "--timeout", "20",
                   "--out", str(out))
    assert result.returncode == 1
    records = {r["overrides"]["backend.fault"]: r for r in load_records(out)}
    assert records["hang"]["status"] == "timeout" and "timed out after 20 s" in records["hang"]["error"]
    assert records["none"]["status"] == "ok"


def test_a_cell_over_its_memory_limit_fails_cleanly(bench, tmp_path):
    out = tmp_path / "res"
    result = bench("run", "--backend", "toy", *QUICK, "--set", "backend.fault=memory", "--memory-limit", "1500",
                   "--out", str(out))
    assert result.returncode == 1
    (record,) = load_records(out)
    assert record["status"] == "failed"
    assert "MemoryError" in record["error"] or "SIGKILL" in record["error"]


def test_resume_skips_finished_cells(bench, tmp_path):
    out = tmp_path / "res"
    first = bench("run", "--backend", "toy", *QUICK, "--set", "seed=1,2", "--out", str(out))
    assert first.returncode == 0
    run = run_dir(out)
    (second_cell,) = run.glob("*seed=2.json")
    (first_cell,) = run.glob("*seed=1.json")
    second_cell.unlink()  # as if the run was interrupted before its second cell
    before = first_cell.stat().st_mtime_ns
    second = bench("run", "--backend", "toy", *QUICK, "--set", "seed=1,2", "--out", str(out), "--resume")
    assert second.returncode == 0, second.stderr
    assert "2 cell(s) × 1 repeat(s), 1 process(es) to run" in second.stderr
    assert first_cell.stat().st_mtime_ns == before and second_cell.exists()
    assert len(load_records(out)) == 2


def test_two_runs_into_one_folder_do_not_clobber(bench, tmp_path):
    out = tmp_path / "res"
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        bench("run", "--backend", "toy", *QUICK, "--out", str(out)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results)
    records = load_records(out)
    assert len(records) == 2 and len({r["run_id"] for r in records}) == 2


def test_records_load_into_pandas_and_corrupt_files_are_skipped(bench, tmp_path, caplog):
    out = tmp_path / "res"
    assert bench("run", "--backend", "toy", *QUICK, "--out", str(out)).returncode == 0
    (run_dir(out) / "broken.json").write_text('{"schema_version": 1, "status": "ok", ')
    (run_dir(out) / "asv-like.json").write_text('{"results": {}}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped files are a log line, never a Python warning
        frame = load_results(out)
    (line,) = [r.getMessage() for r in caplog.records]  # one short line for all skipped files
    assert "skipping" in line and "and 1 more" in line and "\n" not in line
    assert list(frame["backend"]) == ["toy"] and frame.loc[0, "params"] == 9_610
    assert {"test_accuracy", "throughput_samples_per_s", "step_time_median"} <= set(frame.columns)


def test_run_manifest_lists_cells(bench, tmp_path):
    out = tmp_path / "res"
    assert bench("run", "--backend", "toy", *QUICK, "--set", "lr=0.1,0.01", "--out", str(out)).returncode == 0
    manifest = json.loads((run_dir(out) / "run.json").read_text())
    assert len(manifest["cells"]) == 2 and manifest["threads"] >= 1
