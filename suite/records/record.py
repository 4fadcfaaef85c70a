"""The record of one cell as a schema: `Record`, `Metrics`, `Environment`, their JSON form, migrations.

A record is what a cell leaves behind (``results/<run_id>/<cell_id>.json``), written by the worker
(or by the driver for a process that died), merged over repeats (`fwbench.measure.repeats`), read by the
report and the comparison. Everything else in fwbench passes it around as the plain dict
`Record.to_json` returns; this module is the one place that says what the dict holds:

* `new_record` is the one constructor (the worker, the driver's failed records, the repeat merge
  and the test fixtures use it), so every record has every field;
* `Record.from_json` reads any earlier version through `MIGRATIONS` and refuses a malformed
  ``schema_version`` with one line naming the file (`RecordError`, exit 2);
* metric keys are named once, here (`THROUGHPUT`, `STEP_TIME`...), instead of string-matched.

Versions (``schema_version``; bump it and add a migration when a field changes):

1. fwbench 0.1.0 up to the declared options: fields were added over time without a bump
   (``frontend``/``engine``, ``compile_info``, ``params_expected``, ``started_at``...), and the merged
   record of several repeats kept its first repeat's ``_path``.
2. every top-level field is present (`RECORD_FIELDS`, None when unknown); ``_path`` (where the file
   was read from) is never written; a one-repeat record says its interval is within-run only
   (``metrics.interval``, ``metrics.repeats_n``), as records since repeats were added do.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

SCHEMA_VERSION = 2
STATUSES = ("ok", "failed", "skipped", "timeout")

# -- metric keys (``record["metrics"][KEY]``) ------------------------------------------------------
TEST_ACCURACY = "test_accuracy"
THROUGHPUT = "throughput_samples_per_s"          # samples/s: batch / headline step time
THROUGHPUT_CI = "throughput_ci95"                # [low, high] samples/s
THROUGHPUT_MEAN = "throughput_mean_samples_per_s"
THROUGHPUT_BEST = "throughput_best_samples_per_s"  # over each repeat's fastest window
THROUGHPUT_BEST_CI = "throughput_best_ci95"
STEP_TIME = "step_time_s"                        # {n, median, ci95_low, ci95_high, cv, unit, raw...}
STEP_TIME_WITHIN_RUN = "step_time_within_run_s"  # the first repeat's own window statistics
FIRST_STEP = "first_step_s"                      # the first step (tracing, compilation), apart
COMPILE = "compile_s"
PEAK_HOST = "peak_host_bytes"
PEAK_DEVICE = "peak_device_bytes"
REPEATS = "repeats"                              # one summary per repeat, shape (n,)
REPEATS_N = "repeats_n"
INTERVAL = "interval"                            # "repeats" or "within-run only"
CASES = "cases"                                  # microbenchmark cases, one dict each
EPOCHS = "epochs_run"
THROUGHPUT_TOTAL = "throughput_total_samples_per_s"  # batch / mean step: the whole run, stalls included
THROUGHPUT_SPAN = "throughput_span_samples_per_s"    # batch / the fastest span of steps
THROUGHPUT_WIDE = "throughput_wide"              # True when the repeats' interval is wide
CONVERGENCE = "convergence"                      # optimizer microbenchmarks: {optimizer: losses}
ENERGY = "energy"                                # training: {available, joules, ...} or why none
# inference records (``bench run --scenario inference``, `fwbench.inference`)
INFERENCE = "inference"                          # {batches: [one row per batch size], cold_start_s...}
LATENCY_BATCH = "latency_batch"                  # the batch size the latency headline is of
LATENCY_P50 = "latency_p50_s"
LATENCY_P99 = "latency_p99_s"
THROUGHPUT_BATCH = "throughput_batch"            # the batch size the throughput headline is of
INFERENCE_THROUGHPUT = "inference_throughput_samples_per_s"
COLD_START = "cold_start_s"                      # process start to the first answer
ENERGY_PER_SAMPLE = "energy_j_per_sample"        # {batch size: joules per sample}
#: The headline numbers of ``metrics["inference"]`` repeated at the top of ``metrics``.
INFERENCE_HEADLINE = (LATENCY_BATCH, LATENCY_P50, LATENCY_P99, THROUGHPUT_BATCH, INFERENCE_THROUGHPUT,
                      COLD_START, ENERGY_PER_SAMPLE)

#: ``metrics.interval`` of a record whose interval comes from one process.
WITHIN_RUN_ONLY = "within-run only"


class RecordError(UsageError):
    """A file that claims to be a record but cannot be read as one (exit 2, one line)."""


def _split(cls, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra", "given"}
    return ({k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names})


def _section_json(section) -> dict[str, Any]:
    """A `Metrics` or `Environment` as JSON: the named fields that were given or are set, then ``extra``."""
    named = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
             if f.name not in ("extra", "given")}
    return {**{k: v for k, v in named.items() if v is not None or k in section.given}, **section.extra}


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """``record["metrics"]``: the named fields below, and any other metric in ``extra``.

    A field that is None and was not read from the JSON (``given``) is left out of the JSON form.
    """

    test_accuracy: float | None = None
    throughput_samples_per_s: float | None = None
    throughput_ci95: list[float] | None = None
    throughput_best_samples_per_s: float | None = None
    throughput_best_ci95: list[float] | None = None
    step_time_s: dict[str, Any] | None = None
    first_step_s: float | None = None
    compile_s: float | None = None
    peak_host_bytes: int | None = None
    peak_device_bytes: int | None = None
    repeats: list[dict[str, Any]] | None = None
    repeats_n: int | None = None
    interval: str | None = None
    cases: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # named keys read

    def to_json(self) -> dict[str, Any]:
        return _section_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Metrics:
        named, extra = _split(cls, data or {})
        return cls(**named, extra=extra, given=frozenset(named))


@dataclass(frozen=True, kw_only=True)
class Environment:
    """``record["env"]``: the machine and software a cell ran on (`fwbench.records.environment.collect`).

    ``threads`` is the thread count the cell was given; ``cpu`` ``{model, logical_cores, ...}``;
    ``backend`` the facts its ``configure`` returned; anything else (BLAS, git, versions) in ``extra``.
    """

    fwbench: str | None = None
    threads: int | None = None
    cpu: dict[str, Any] | None = None
    backend: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # named keys read

    def to_json(self) -> dict[str, Any]:
        return _section_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Environment:
        named, extra = _split(cls, data or {})
        return cls(**named, extra=extra, given=frozenset(named))


@dataclass(frozen=True, kw_only=True)
class Record:
    """One cell's outcome. ``extra`` keeps the optional fields (``traceback``, ``data``, ``log``,
    ``repeat``, ``repeat_records``, ``configure_s``...) as written."""

    schema_version: int = SCHEMA_VERSION  # first in the JSON form (kw_only: order is free)
    run_id: str | None
    cell_id: str | None
    backend: str | None
    task: str | None
    device: str | None
    backend_version: str | None = None
    dataset: str | None = None
    synthetic_data: bool | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    frontend: str | None = None
    engine: str | None = None
    frontend_version: str | None = None
    engine_version: str | None = None
    status: str = "failed"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    params: int | None = None
    params_expected: int | None = None
    metrics: Metrics = field(default_factory=Metrics)
    config: dict[str, Any] = field(default_factory=dict)
    env: Environment = field(default_factory=Environment)
    compile_info: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None  # the policy in force (training.precision): fp32, tf32, bf16, fp16
    started_at: str | None = None
    finished_at: str | None = None
    wall_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (a plain dict), every field present; ``_path`` is never part of it."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                value = getattr(self, f.name)
                out[f.name] = value.to_json() if isinstance(value, Metrics | Environment) else value
        out.update((k, v) for k, v in self.extra.items() if k not in out and k != "_path")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<record>") -> Record:
        """A record of any version up to `SCHEMA_VERSION`, migrated to the current one.

        Raises:
            RecordError: ``schema_version`` missing, not an integer, below 1 or above this version.
        """
        data = migrate(data, source)
        named, extra = _split(cls, data)
        named["metrics"] = Metrics.from_json(named.get("metrics"))
        named["env"] = Environment.from_json(named.get("env"))
        for key in ("overrides", "config", "compile_info"):
            named[key] = named.get(key) or {}
        named["warnings"] = list(named.get("warnings") or [])
        for key in ("run_id", "cell_id", "backend", "task", "device"):
            named.setdefault(key, None)
        return cls(**named, extra=extra)


#: Every top-level field a version-2 record holds, in order.
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record) if f.name != "extra")


def new_record(**fields: Any) -> dict[str, Any]:
    """The one constructor: a current-version record dict with every field (None/empty when not
    given); keys that are not fields of `Record` are kept as optional ones (``log``, ``repeat``...)."""
    named, extra = _split(Record, fields)
    named.pop("schema_version", None)
    for key in ("run_id", "cell_id", "backend", "task", "device"):
        named.setdefault(key, None)
    named["metrics"] = Metrics.from_json(named.get("metrics"))
    named["env"] = Environment.from_json(named.get("env"))
    for key in ("overrides", "config", "compile_info"):
        named[key] = named.get(key) or {}
    return Record(**named, extra=extra).to_json()


def schema_version(data: dict[str, Any], source: str = "<record>") -> int:
    """The record's ``schema_version``, checked.

    Raises:
        RecordError: missing, not an integer or below 1 (one line naming ``source``).
    """
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecordError(f"{source}: schema_version {version!r} is not a record version (an integer from 1 "
                          f"to {SCHEMA_VERSION}); fix the field or move the file out of the folder")
    return version


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: every top-level field present, no stored ``_path``, one-repeat intervals said."""
    out = {key: data.get(key) for key in RECORD_FIELDS if key not in ("metrics", "env")}
    out.update({k: v for k, v in data.items() if k not in out})
    out.pop("_path", None)
    metrics = dict(data.get("metrics") or {})
    if (metrics.get(STEP_TIME) or metrics.get(CASES)) and INTERVAL not in metrics:
        metrics[INTERVAL], metrics[REPEATS_N] = WITHIN_RUN_ONLY, 1
    out["metrics"], out["env"] = metrics, dict(data.get("env") or {})
    out["schema_version"] = 2
    return out


#: ``{version: function}`` turning a record of that version into one of the next.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(data: dict[str, Any], source: str = "<record>") -> dict[str, Any]:
    """``data`` brought to `SCHEMA_VERSION` (a new dict; ``data`` is left as it is).

    Raises:
        RecordError: a malformed ``schema_version``, or one newer than this fwbench.
    """
    version = schema_version(data, source)
    if version > SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version {version} is newer than this fwbench understands "
                          f"({SCHEMA_VERSION}); upgrade fwbench to read it")
    data = dict(data)
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version = data["schema_version"]
    return data


# -- who ran a record: frontend x engine (old records included: before frontends, every backend was
# raw and its own engine) ---------------------------------------------------------------------------

#: The frontend of a raw backend (a framework's own API), as records say it.
RAW = "raw"


def frontend_of(record: dict[str, Any]) -> str:
    return record.get("frontend") or RAW


def engine_of(record: dict[str, Any]) -> str:
    """The engine of a record: its ``engine`` field, else a Keras override, else the backend."""
    if record.get("engine"):
        return str(record["engine"])
    engine = (record.get("overrides") or {}).get("backend.engine")
    return str(engine) if engine else str(record.get("backend"))


def backend_label(record: dict[str, Any]) -> str:
    """``keras[jax]`` for a frontend on an engine, the backend's name for a raw one."""
    frontend = frontend_of(record)
    return str(record.get("backend")) if frontend == RAW else f"{record.get('backend')}[{engine_of(record)}]"
