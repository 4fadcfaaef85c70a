"""`bench tune`'s judgement outside the command: the report's "As written and at its best" section
and ``bench compare``'s summary, both from the records themselves (`fwbench.run.tuning.judge`)."""
from __future__ import annotations

import json

from fwbench.gate.compare import compare
from fwbench.gate.output import markdown
from fwbench.records.results import load_records, write_record
from fwbench.report import render
from fwbench.report.tuned import tuned_rows
from fwbench.run.tuning import is_tune_record, judge
from record_samples import example_record, tune_records


def _by_backend(rows):
    return {r["backend"]: r for r in rows}


def test_the_section_names_the_winner_its_speed_up_and_the_cells_that_stay_as_written():
    rows = _by_backend(tuned_rows(tune_records()))
    torch, numpy = rows["torch"], rows["numpy"]
    assert torch["written"] == "fp32 · eager · host" and torch["best"] == "fp32 · compiled · host"
    assert not torch["stays"] and torch["speedup"] == "1.65×" and torch["accuracy"] == "+0.10 points"
    assert torch["tried"] == 3 and "beyond both 95% intervals" in torch["why"]
    assert torch["written_ci"].startswith("95% CI ") and torch["best_ci"].startswith("95% CI ")
    assert numpy["stays"] and numpy["speedup"] == "1.00×" and numpy["best"] == "fp32 · host"
    assert "not faster beyond both intervals: the cell as written stays" in numpy["why"]


def test_a_faster_configuration_that_loses_accuracy_is_named_but_does_not_win():
    torch_only = [r for r in tune_records() if r["backend"] == "torch"
                  and r["overrides"].get("backend.execution") == "eager"]  # fp32 and the inaccurate bf16
    [entry] = judge(torch_only)
    assert entry["best"] is entry["as_written"]
    assert "bf16 · eager · host is faster but loses 2.00 points, beyond 0.5" in entry["why"]


def test_the_html_report_has_the_section_and_says_how_to_fill_it_without_tune_records():
    page = render(tune_records(), "html")
    section = page[page.index('id="tuned"'):page.index('id="inference"')]
    assert "fp32 · compiled · host" in section and "1.65×" in section and 'class="empty"' not in section
    plain = render([example_record("torch", "mlp_mnist")], "html")
    section = plain[plain.index('id="tuned"'):plain.index('id="inference"')]
    assert 'class="empty"' in section and "bench tune" in section


def test_the_tolerance_of_the_run_comes_from_its_tune_json_and_the_file_is_not_a_record(tmp_path):
    run = tmp_path / "run"
    for record in tune_records():
        write_record(record, run)
    # a tolerance of 3 points lets bf16 (2 points lower, fastest) win for torch
    (run / "tune.json").write_text(json.dumps([{"backend": "torch", "tolerance_points": 3.0}]))
    skipped: list[str] = []
    records = load_records(run, skipped)
    assert not skipped and len(records) == 5
    torch = _by_backend(tuned_rows(records))["torch"]
    assert torch["best"] == "bf16 · eager · host" and torch["tolerance"] == "3"


def test_compare_pairs_configurations_one_by_one_and_sums_up_each_side():
    base = tune_records()
    new = [dict(r, metrics=dict(r["metrics"])) for r in base]
    result = compare(base, new)
    cells = {row.cell for row in result.rows}
    assert len(cells) == 5  # one cell per configuration, never the as-written of one side with the best of the other
    assert any("backend.execution=compiled" in c for c in cells)
    assert [line.split(":")[0] for line in result.tuned] == ["BASE numpy mlp_mnist", "BASE torch mlp_mnist",
                                                            "NEW numpy mlp_mnist", "NEW torch mlp_mnist"]
    torch_line = next(line for line in result.tuned if line.startswith("BASE torch"))
    assert "at its best fp32 · compiled · host" in torch_line and "1.65×" in torch_line
    assert "at its best: as written" in next(line for line in result.tuned if line.startswith("BASE numpy"))
    assert "As written / at its best" in markdown(result)


def test_compare_of_plain_runs_has_no_tune_summary():
    plain = [example_record("torch", "mlp_mnist", repeats=3)]
    assert not any(map(is_tune_record, plain))
    assert compare(plain, plain).tuned == []
