"""Result records: one immutable JSON file per cell, written atomically; loaded into pandas.

Layout: ``<out>/<run_id>/<cell_id>.json`` plus ``<out>/<run_id>/run.json`` (the run's manifest).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .record import SCHEMA_VERSION, STATUSES, STEP_TIME, Record, schema_version  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

#: JSON files of a run folder that are not records: the run's manifest, `bench tune`'s judgement.
NOT_RECORDS = ("run.json", "tune.json")
#: Columns of `load_results` besides the flattened metrics.
INDEX_COLUMNS = ("run_id", "cell_id", "backend", "task", "device", "dataset", "status")


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _finite(obj):
    """JSON has no NaN/Infinity: store them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(_finite(json.loads(json.dumps(record, default=_json_default))), indent=1,
                      sort_keys=False)


def write_record(record: dict[str, Any], directory: str | Path) -> Path:
    """Write ``record`` as ``<directory>/<cell_id>.json`` atomically, never over an existing file.

    The text goes to a temporary file in the same folder, is flushed to disk, then hard-linked
    into place (which fails rather than clobbering); a second record for the same cell gets a
    numbered name. On any error (disk full...) the temporary file is removed and nothing partial
    is left behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = dumps({k: v for k, v in record.items() if k != "_path"})  # where it was read from: not data
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        base = safe_name(record.get("cell_id") or "cell")
        for attempt in range(1000):
            final = directory / (f"{base}.json" if attempt == 0 else f"{base}.{attempt}.json")
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                continue
        raise FileExistsError(f"too many records named {base} in {directory}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)
    return keep.strip("._")[:180] or "cell"


def read_record(path: str | Path, skipped: list[str] | None = None) -> dict[str, Any] | None:
    """One record, migrated to the current schema, or None if it is unreadable (the reason, naming
    the file, goes to ``skipped``).

    Raises:
        fwbench.records.record.RecordError: a record whose ``schema_version`` is malformed (exit 2).
    """
    path = Path(path)
    note = (skipped if skipped is not None else []).append
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        note(f"skipping {path}: not a readable record ({exc.__class__.__name__}: {exc})")
        return None
    if not isinstance(record, dict) or "schema_version" not in record or "status" not in record:
        note(f"skipping {path}: not an fwbench record (no schema_version/status)")
        return None
    if schema_version(record, str(path)) > SCHEMA_VERSION:  # a malformed one: RecordError, exit 2
        note(f"skipping {path}: schema_version {record['schema_version']} is newer than this "
             f"fwbench understands ({SCHEMA_VERSION}); upgrade fwbench")
        return None
    record = Record.from_json(record, str(path)).to_json()  # older versions migrated (fwbench.records.record)
    record["_path"] = str(path)
    return record


def record_paths(paths: Iterable[str | Path], skipped: list[str] | None = None) -> list[Path]:
    """Expand folders (recursively) into their ``*.json`` records, skipping `NOT_RECORDS`."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.json")
                            if q.name not in NOT_RECORDS and not q.name.startswith(".tmp-")
                            and "asv" not in q.relative_to(p).parts[:1]
                            and "repeats" not in q.relative_to(p).parts[:-1])  # single repeats of a cell
        elif p.exists():
            found.append(p)
        elif skipped is not None:
            skipped.append(f"skipping {p}: no such file or folder")
    return found


def load_records(paths: Iterable[str | Path] | str | Path = "results",
                 skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every readable record under ``paths``.

    Files that are not records are appended to ``skipped`` (one message each); without that list
    they are summed up in one short log line on stderr, not a warning per file.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    notes: list[str] = []
    records = [r for r in (read_record(p, notes) for p in record_paths(paths, notes)) if r is not None]
    if skipped is not None:
        skipped.extend(notes)
    elif notes:
        more = f" and {len(notes) - 1} more" if len(notes) > 1 else ""
        log.warning("fwbench: %s%s", notes[0], more)
    return records


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One row: identity columns, scalar metrics, step-time stats, a few env facts."""
    from .record import engine_of

    metrics = record.get("metrics") or {}
    row = {k: record.get(k) for k in INDEX_COLUMNS}
    row.update(params=record.get("params"), error=record.get("error"),
               backend_version=record.get("backend_version"),
               frontend=record.get("frontend") or "raw", engine=engine_of(record),
               frontend_version=record.get("frontend_version"), engine_version=record.get("engine_version"),
               overrides=json.dumps(record.get("overrides") or {}, sort_keys=True),
               profile=record.get("profile"), synthetic_data=record.get("synthetic_data"),
               warnings=len(record.get("warnings") or []), wall_s=record.get("wall_s"),
               finished_at=record.get("finished_at"))
    for key, value in metrics.items():
        if isinstance(value, int | float | str | bool) or value is None:
            row[key] = value
    for key, value in (metrics.get(STEP_TIME) or {}).items():
        if key != "raw" and isinstance(value, int | float):
            row[f"step_time_{key}"] = value
    env = record.get("env") or {}
    row["threads"] = env.get("threads")
    row["cpu"] = (env.get("cpu") or {}).get("model")
    row["path"] = record.get("_path")
    return row


def load_results(paths: Iterable[str | Path] | str | Path = "results"):
    """All readable records under ``paths`` as a pandas DataFrame, one row per cell.

    Files that are not records are skipped and summed up in one line on stderr.
    """
    import pandas as pd

    return pd.DataFrame([flatten(r) for r in load_records(paths)])
