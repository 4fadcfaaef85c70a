"""The record as a schema (`fwbench.records.record`): one constructor, versions, migrations of old records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fwbench.cli import main
from fwbench.records.record import (
    RECORD_FIELDS,
    SCHEMA_VERSION,
    STEP_TIME,
    THROUGHPUT,
    WITHIN_RUN_ONLY,
    Metrics,
    Record,
    RecordError,
    migrate,
    new_record,
)
from fwbench.records.results import load_records, read_record, write_record
from record_samples import example_record

#: One merged record of 2 repeats written by fwbench before the schema (version 1), by
#: ``bench run -b numpy -t mlp_mnist --dataset digits --profile quick --repeat 2``; host and paths anonymised.
V1_RUN = Path(__file__).parent / "fixtures" / "records_v1"
V1_FILE = next(V1_RUN.rglob("numpy__*.json"))


def test_a_version_1_record_loads_migrated():
    raw = json.loads(V1_FILE.read_text())
    assert raw["schema_version"] == 1 and "repeats/" in raw["_path"]  # v1 stored its first repeat's path
    (record,) = load_records(V1_RUN)
    assert record["schema_version"] == SCHEMA_VERSION == 2
    assert set(RECORD_FIELDS) <= set(record)
    assert record["_path"] == str(V1_FILE)  # where it was read from, not the stale stored one
    assert record["metrics"][THROUGHPUT] == raw["metrics"][THROUGHPUT]
    assert record["metrics"]["repeats_n"] == 2 and len(record["metrics"]["repeats"]) == 2
    assert record["env"]["threads"] == 1 and record["data"] == raw["data"]  # optional fields kept


def test_migration_fills_missing_fields_of_an_older_v1_record():
    old = {"schema_version": 1, "run_id": "r", "cell_id": "c", "backend": "torch", "task": "t", "device": "cpu",
           "status": "ok", "metrics": {STEP_TIME: {"median": 0.01}, THROUGHPUT: 3200.0}, "log": "x.log"}
    new = migrate(old)
    assert old["schema_version"] == 1  # the input is left alone
    assert new["schema_version"] == 2 and new["frontend"] is None and new["compile_info"] is None
    assert new["metrics"]["interval"] == WITHIN_RUN_ONLY and new["metrics"]["repeats_n"] == 1
    record = Record.from_json(old)
    assert record.compile_info == {} and record.extra == {"log": "x.log"}
    assert record.metrics.throughput_samples_per_s == 3200.0


def test_new_record_has_every_field_and_keeps_extra_ones():
    record = new_record(run_id="r", cell_id="c", backend="numpy", task="t", device="cpu", log="a.log",
                        metrics={THROUGHPUT: 10.0, "custom": [1, 2]})
    assert list(record)[:len(RECORD_FIELDS)] == list(RECORD_FIELDS)
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "failed"
    assert record["log"] == "a.log" and record["metrics"] == {THROUGHPUT: 10.0, "custom": [1, 2]}
    assert record["warnings"] == [] and record["env"] == {}


def test_json_round_trip_keeps_given_nones_and_drops_the_read_path():
    sample = example_record("torch", repeats=3, seed=4)
    again = Record.from_json({**sample, "_path": "/somewhere.json"}).to_json()
    assert "_path" not in again
    assert again["metrics"] == sample["metrics"] and again["env"] == sample["env"]
    assert Metrics.from_json({"peak_device_bytes": None}).to_json() == {"peak_device_bytes": None}


def test_write_record_never_stores_where_a_record_was_read_from(tmp_path):
    path = write_record({**example_record("numpy"), "_path": "/elsewhere/x.json"}, tmp_path)
    assert "_path" not in json.loads(path.read_text())
    assert read_record(path)["_path"] == str(path)


@pytest.mark.parametrize("version", ["2", 0, 2.0, None, True])
def test_a_malformed_schema_version_is_one_line_exit_2(version, tmp_path, capsys):
    bad = {**example_record("numpy"), "schema_version": version}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RecordError, match="bad.json: schema_version"):
        read_record(tmp_path / "bad.json")
    assert main(["report", str(tmp_path), "--format", "md", "-o", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json: schema_version" in err and "Traceback" not in err


def test_a_newer_record_is_skipped_with_a_note(tmp_path):
    (tmp_path / "new.json").write_text(json.dumps({**example_record("numpy"), "schema_version": 99}))
    notes: list[str] = []
    assert load_records(tmp_path, notes) == [] and "upgrade fwbench" in notes[0]


def test_a_version_1_run_reports_and_compares(tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(V1_RUN, old)
    assert main(["report", str(old), "--format", "md", "-o", str(tmp_path / "report.md")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "numpy" in text and "mlp_mnist" in text
    new = tmp_path / "new"
    write_record(example_record("numpy", "mlp_mnist", dataset="digits", step_time=0.0001, repeats=3,
                                repeat_cv=0.01, seed=2), new)
    capsys.readouterr()
    code = main(["compare", str(old), str(new), "--format", "md"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "numpy · mlp_mnist · digits · cpu" in out  # paired and judged, not refused
    assert "throughput (samples/s)" in out and "2/3" in out  # 2 repeats of the old run, 3 new
    assert "not comparable" not in out.lower()
