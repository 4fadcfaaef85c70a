"""Frontend x engine: which API a cell was written in (raw framework, Keras, Flax) and which
engine ran it (TensorFlow, JAX, PyTorch, NumPy).

Backends say it themselves (`fwbench.backend.Backend.identity`, written into every record); this
module reads it back from records, old ones included (before frontends, every backend was raw
and its own engine), and expands a frontend into the engines `bench check` covers.
"""
from __future__ import annotations

from typing import Any

from .errors import UsageError

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


def runs_on_engine(backend, overrides: dict[str, Any]) -> bool:
    """Whether a cell of ``backend`` belongs in a ``backend.engine`` grid: always without one;
    with one, only when the engine is one ``backend`` runs on (raw jax runs only on jax), so
    ``-b jax,torch,keras --set backend.engine=jax,torch`` gives the frontend x engine grid."""
    engine = overrides.get("backend.engine")
    return engine is None or str(engine).lower() in backend.engines()


def backend_options(items: list[str]) -> dict[str, Any]:
    """``["backend.mode=native"]`` -> ``{"mode": "native"}``; only ``backend.*`` keys."""
    from .spec import parse_value

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("backend.") or len(key) <= len("backend."):
            raise UsageError(f"bad --set {item!r}: bench check takes backend options only, "
                             "e.g. --set backend.mode=native or --set backend.engine=jax")
        options[key[len("backend."):]] = parse_value(value.strip())
    return options


def check_variants(registry, backends: list[str], items: list[str]) -> list[tuple[str, dict]]:
    """Each backend with each option table to check: the given options, on every installed engine
    of a frontend unless ``backend.engine`` is given. Options are validated here (exit 2)."""
    options = backend_options(items)
    out = []
    for name in backends:
        backend = registry.get_backend(name)
        variants = [{}] if "engine" in options else backend.conformance_variants()
        for variant in variants:
            table = {**variant, **options}
            if table:
                backend.for_options(table, "--set")  # raises SpecError for an unknown value
            out.append((name, table))
    return out


def engines_text(backend) -> str:
    """``tensorflow ✓, jax ✓, torch ✗ (pip install ...)`` for `bench list backends`."""
    parts = []
    for engine, availability in backend.engines().items():
        parts.append(f"{engine} ✓" if availability.ok else f"{engine} ✗")
    return ", ".join(parts)
