"""Frontend x engine: which API a cell was written in (raw framework, Keras, Flax) and which
engine ran it (TensorFlow, JAX, PyTorch, NumPy).

A raw backend is its own engine and knows nothing of this. A frontend subclasses `Frontend`: it
names the engines it runs on (`Frontend.engine_names`, registered raw backends), is bound to one
of them per cell (`Frontend.for_options`) and configures it through that raw backend
(`engine_backend`). The core asks any backend through the functions below (`engines_of`,
`label_of`, `identity_of`...), so a raw backend carries none of these members. This module also
reads frontend and engine back from records, old ones included (before frontends, every backend
was raw and its own engine), and expands a frontend into the engines `bench check` covers.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .backend import Availability, Backend
from .records.record import RAW


class Frontend(Backend):
    """An API that runs on engines (Keras on TensorFlow, JAX or PyTorch; Flax on JAX).

    A subclass sets `engine_names` and implements `engine` (the engine this instance is bound to)
    and `for_options` (a copy bound to a cell's ``[backend]`` table, engine included); it reaches
    its engine only through `engine_backend`. The rest has defaults: `engines` (each engine's raw
    backend's availability), `conformance_variants` (one per installed engine), the label
    ``name[engine]``, `identity` and `native_differences` (none).
    """

    #: The engines it runs on: names of registered raw backends, the default first.
    engine_names: tuple[str, ...] = ()
    #: "exact" (the suite's conventions) or "native" (the frontend's own formulas), if it has modes.
    mode: str | None = None

    @property
    def frontend(self) -> str:
        """The API's name, in records as ``frontend``: the backend's own name."""
        return self.name

    @property
    @abstractmethod
    def engine(self) -> str:
        """The engine this instance is bound to (one of `engine_names`)."""

    @abstractmethod
    def for_options(self, options: dict[str, Any], source: str = "<spec>") -> Frontend:
        """A copy bound to a task's ``[backend]`` table (its engine, its mode); cheap, no import.

        Called when a run is planned (raise `fwbench.errors.SpecError` for a bad value, before any
        cell starts), by `bench check` and in the cell process before `configure`.
        """

    @property
    def label(self) -> str:
        """``keras[jax]``: where one frontend runs on several engines."""
        return f"{self.name}[{self.engine}]"

    def engines(self) -> dict[str, Availability]:
        """Each engine of `engine_names` and whether it is installed (its raw backend's answer)."""
        return {name: engine_backend(name).availability() for name in self.engine_names}

    def conformance_variants(self) -> list[dict[str, Any]]:
        """``[backend]`` tables `bench check` checks, each in its own process: one per installed
        engine (``{"engine": ...}``), or just the defaults for a frontend of one engine."""
        if len(self.engine_names) < 2:
            return [{}]
        return [{"engine": name} for name, found in self.engines().items() if found.ok]

    def identity(self) -> dict[str, Any]:
        """``frontend``, ``engine``, their versions and the mode, for every record."""
        out = {"frontend": self.frontend, "frontend_version": self.version(), "engine": self.engine,
               "engine_version": engine_backend(self.engine).version()}
        return out if self.mode is None else {**out, "backend_mode": self.mode}

    def native_differences(self, task, quantity: str) -> list[str]:
        """For `bench check` in native mode: the conventions that explain a differing ``quantity``
        (a `bench check` quantity such as ``step:adam``, see `rule_of_check`); none by default."""
        return []


# -- the core's questions, for any backend ------------------------------------------------------

def is_frontend(backend: Backend) -> bool:
    return isinstance(backend, Frontend)


def frontend_name(backend: Backend) -> str:
    """``"raw"`` for a raw backend, else the frontend's name (``"keras"``)."""
    return backend.frontend if isinstance(backend, Frontend) else RAW


def engines_of(backend: Backend) -> dict[str, Availability]:
    """``{engine: availability}``: a frontend's engines; ``{name: availability}`` for a raw backend."""
    return backend.engines() if isinstance(backend, Frontend) else {backend.name: backend.availability()}


def conformance_variants_of(backend: Backend) -> list[dict[str, Any]]:
    """The ``[backend]`` tables `bench check` checks: ``[{}]`` for a raw backend."""
    return backend.conformance_variants() if isinstance(backend, Frontend) else [{}]


def label_of(backend: Backend) -> str:
    """``keras[jax]`` for a bound frontend, the backend's name for a raw one."""
    return backend.label if isinstance(backend, Frontend) else backend.name


def identity_of(backend: Backend) -> dict[str, Any]:
    """``frontend``, ``engine``, their versions (and a frontend's mode) for every record; call it
    after `configure` (it asks the versions)."""
    if isinstance(backend, Frontend):
        return backend.identity()
    return {"frontend": RAW, "frontend_version": None, "engine": backend.name, "engine_version": backend.version()}


def bind(backend: Backend, options: dict[str, Any], source: str = "<spec>") -> Backend:
    """``backend`` bound to a task's ``[backend]`` table: a frontend's `Frontend.for_options`
    (raises `fwbench.errors.SpecError` for a bad value); a raw backend as it is (its options are
    checked against its declarations, `fwbench.options`)."""
    return backend.for_options(options, source) if isinstance(backend, Frontend) else backend


def native_differences_of(backend: Backend, task, quantity: str) -> list[str]:
    """The conventions that explain a differing quantity in a frontend's native mode; none for raw."""
    return backend.native_differences(task, quantity) if isinstance(backend, Frontend) else []


def engine_backend(name: str) -> Backend:
    """The registered raw backend of engine ``name``: a frontend configures its engine through it
    (threads, devices, precision exactly as for the raw engine) instead of importing its plugin.

    Raises:
        fwbench.errors.UnknownNameError: no backend of that name is registered.
    """
    from .plugins import get_registry

    return get_registry().get_backend(name)


def runs_on_engine(backend, overrides: dict[str, Any]) -> bool:
    """Whether a cell of ``backend`` belongs in a ``backend.engine`` grid: always without one;
    with one, only when the engine is one ``backend`` runs on (raw jax runs only on jax), so
    ``-b jax,torch,keras --set backend.engine=jax,torch`` gives the frontend x engine grid."""
    engine = overrides.get("backend.engine")
    return engine is None or str(engine).lower() in engines_of(backend)


def engines_text(backend) -> str:
    """``tensorflow ✓, jax ✓, torch ✗ (pip install ...)`` for `bench list backends`."""
    parts = []
    for engine, availability in engines_of(backend).items():
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
