"""The per-cell progress line says where a record's warnings are, and promises nothing the table drops."""
from __future__ import annotations

import io

from fwbench.run.cell import Cell
from fwbench.run.display import RunDisplay
from rich.console import Console


def _line(repeats: int) -> str:
    out = io.StringIO()
    cell = Cell(run_id="r", backend="numpy", task="mlp_mnist", task_path="tasks/mlp_mnist.toml",
                repeats=repeats, repeat=1)
    display = RunDisplay(1, console=Console(file=out, width=200), enabled=False)
    display.finished(cell, {"status": "ok", "warnings": ["train step: varies within the run"]})
    return out.getvalue()


def test_a_single_process_cell_points_to_the_table():
    assert "1 warning(s), listed below the table" in _line(repeats=1)


def test_a_repeat_points_to_its_own_record_since_the_table_judges_all_repeats_again():
    line = _line(repeats=3)
    assert "below the table" not in line
    assert "1 note(s) on this repeat" in line and "repeats/" in line
