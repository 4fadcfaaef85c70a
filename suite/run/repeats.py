"""The records of single repeats, kept in ``<run_dir>/repeats/`` as each one ends.

They are what ``--resume`` reuses (a repeat with an ok record is not run again) and what the cell's
one record is merged from (`fwbench.measure.repeats.merge_repeats`). `fwbench.records.results.record_paths` leaves
this folder out, so loading a run gives one record per cell.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..records.results import read_record, write_record

FOLDER = "repeats"


class RepeatStore:
    """Repeat records by cell id, read once from disk and kept up to date as repeats end."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / FOLDER
        self._by_cell: dict[str, list[dict]] = defaultdict(list)
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.json")):
                record = read_record(path)
                if record and record.get("cell_id"):
                    self._by_cell[record["cell_id"]].append(record)

    def add(self, cell, record: dict) -> None:
        record["_path"] = str(write_record(record, self.folder))
        self._by_cell[cell.cell_id].append(record)

    def records(self, cell_id: str) -> list[dict]:
        """One record per repeat of ``cell_id`` (an ok one if any, then the latest), by repeat number."""
        best: dict[int, dict] = {}
        for record in self._by_cell.get(cell_id, []):
            key = int(record.get("repeat") or 1)
            rank = (record.get("status") == "ok", str(record.get("finished_at") or ""))
            old = best.get(key)
            if old is None or rank >= (old.get("status") == "ok", str(old.get("finished_at") or "")):
                best[key] = record
        return [best[k] for k in sorted(best)]

    def has_ok(self, cell_id: str, repeat: int) -> bool:
        return any(int(r.get("repeat") or 1) == repeat and r.get("status") == "ok"
                   for r in self._by_cell.get(cell_id, []))
