"""Frontend x engine: which API a cell was written in (raw framework, Keras, Flax) and which
engine ran it (TensorFlow, JAX, PyTorch, NumPy).

Backends say it themselves (`fwbench.backend.Backend.identity`, written into every record); this
module reads it back from records, old ones included (before frontends, every backend was raw
and its own engine), and expands a frontend into the engines `bench check` covers.
"""
from __future__ import annotations

from typing import Any

RAW = "raw"


def frontend_of(record: dict[str, Any]) -> str:
    return record.get("frontend") or RAW


def engine_backend(name: str):
    """The registered raw backend of engine ``name``: a frontend configures its engine through it
    (threads, devices, precision exactly as for the raw engine) instead of importing its plugin.

    Raises:
        fwbench.errors.UnknownNameError: no backend of that name is registered.
    """
    from .plugins import get_registry

    return get_registry().get_backend(name)


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


def engines_text(backend) -> str:
    """``tensorflow ✓, jax ✓, torch ✗ (pip install ...)`` for `bench list backends`."""
    parts = []
    for engine, availability in backend.engines().items():
        parts.append(f"{engine} ✓" if availability.ok else f"{engine} ✗")
    return ", ".join(parts)


def rule_of_check(quantity: str) -> dict[str, str] | None:
    """The update rule a `bench check` quantity exercises, for a frontend's native mode to name the
    conventions behind a difference: ``{}`` for the task's own rule (``step:task``, ``rule:task``,
    the curve), ``{"optimizer": ..., "clip": ...}`` for a variant (``step:adam``,
    ``rule:clip-norm``...), None for the model itself (logits, loss, gradients must agree)."""
    if quantity in ("curve", "logits after curve"):
        return {}
    kind, _, what = quantity.partition(":")
    if kind not in ("step", "rule"):
        return None
    if what == "task":
        return {}
    if what in ("clip-norm", "clip-value"):
        return {"optimizer": "sgd", "clip": what.split("-")[1]}
    if what == "lr-per-step":
        return {"optimizer": "momentum", "clip": "none"}
    return {"optimizer": what, "clip": "none"}
