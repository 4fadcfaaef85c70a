"""The backend plugin contract.

A backend is two small classes. `Backend` describes a framework (is it installed, which devices,
how to set threads) and builds a `Trainer` for one task. The suite owns everything else: data,
shuffling, the learning-rate schedule, the epoch loop, early stopping, timing, metrics. That keeps
the comparison fair: every backend is timed by the same code around the same calls.

Data handed to a trainer is always the canonical layout (see `fwbench.layers`): images
``x`` float ``(N, C, H, W)``, labels ``y`` int64 ``(N,)``. A backend that prefers NHWC converts
inside `Trainer.to_device`, which the suite calls outside every timed region.

Microbenchmarks (conv2d, dense, pooling, batchnorm and optimizer-step tasks) use a third object,
`fwbench.ops.Ops`: single operations prepared outside the timed region. A backend provides it
without touching this contract: put a module ``ops.py`` next to the backend's module (in the same
package) with ``make_ops(backend, device, dtype, options=None) -> Ops``; `Backend.ops` finds it.
Override `Backend.ops` instead if the module lives elsewhere.
"""
from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import ModelInfo
    from .ops import Ops
    from .spec import TaskSpec


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __str__(self) -> str:
        return "available" if self.ok else f"unavailable: {self.reason}"


@dataclass(frozen=True)
class BuildRequest:
    """Everything a backend needs to build a model: the resolved spec, its analysis, the weights."""

    task: TaskSpec
    info: ModelInfo
    weights: dict[str, np.ndarray]  # canonical names and layouts, dtype = task.training.dtype
    device: str  # "cpu" or "gpu" (resolved, never "auto")
    num_classes: int


class Trainer(ABC):
    """One model + optimizer on one device. Created by `Backend.build`, driven by the suite."""

    #: Facts for the record: {"mode": "eager"|"jit"|"xla"|"compile", ...}.
    compile_info: dict[str, Any] = {}

    @abstractmethod
    def to_device(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Move one batch (canonical layout) to the device; convert layout here. Not timed."""

    @abstractmethod
    def train_step(self, batch: Any, lr: float) -> Any:
        """Forward, loss, backward, clipping and one optimizer step with learning rate ``lr``.

        Returns a handle to ``(mean loss, number of correct predictions)`` on the device; the suite
        passes it to `sync` before reading the clock and to `fetch` at the end of the epoch.
        """

    @abstractmethod
    def predict(self, batch: Any) -> np.ndarray:
        """Logits ``(N, classes)`` in eval mode (no dropout, BatchNorm running statistics)."""

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Every parameter and state array by canonical name, canonical layout, as NumPy copies."""

    @abstractmethod
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load canonical weights (the inverse of `get_weights`)."""

    @abstractmethod
    def num_trainable(self) -> int:
        """Trainable parameter count, counted by the framework itself."""

    def sync(self, handle: Any = None) -> None:
        """Block until the device has finished the work behind ``handle`` (or all work)."""

    def fetch(self, handles: list[Any]) -> np.ndarray:
        """``(len(handles), 2)`` float64: loss and correct count of each train step."""
        return np.asarray([[float(v) for v in h] for h in handles], dtype=np.float64)

    def loss_and_grads(self, batch: Any) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """Logits, mean loss and every trainable gradient (canonical names/layouts), train mode,
        no update. Used by the conformance checks; optional for third-party backends."""
        raise NotImplementedError

    def peak_device_memory(self) -> int | None:
        """Peak bytes allocated on the device (GPU) since the trainer was built, or None on CPU."""
        return None


class Backend(ABC):
    """A framework. Subclasses must import their framework lazily (inside methods)."""

    #: Registry name, e.g. "torch".
    name: str = ""
    #: Import names that must be present, e.g. ("torch",).
    requires: tuple[str, ...] = ()
    #: The pip extra that installs them, e.g. "torch" → ``pip install 'fwbench[torch]'``.
    extra: str = ""
    description: str = ""
    #: The API a user writes: "raw" (the framework's own) or a frontend such as "keras" or "flax".
    frontend: str = "raw"

    # -- frontend x engine (see fwbench.frontends) ------------------------------------------------
    def for_options(self, options: dict[str, Any], source: str = "<spec>") -> Backend:
        """This backend bound to a task's ``[backend]`` table; cheap (no framework import).

        Called when a run is planned (to refuse bad options before any cell starts: raise
        `fwbench.errors.SpecError`) and in the cell process before `configure` (a frontend picks
        its engine here). The default ignores the options and returns ``self``.
        """
        return self

    @property
    def label(self) -> str:
        """Name shown where one backend has several engines (``keras[jax]``)."""
        return self.name

    def identity(self) -> dict[str, Any]:
        """``frontend``, ``engine`` and their versions, for every record."""
        return {"frontend": self.frontend, "frontend_version": None, "engine": self.name,
                "engine_version": self.version()}

    def engines(self) -> dict[str, Availability]:
        """The engines this backend can run on and whether each is installed."""
        return {self.name: self.availability()}

    def conformance_variants(self) -> list[dict[str, Any]]:
        """``[backend]`` option tables `bench check` checks, each in its own process."""
        return [{}]

    def availability(self) -> Availability:
        """Cheap check (no framework import): are the required modules installed?"""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if not missing:
            return Availability(True)
        hint = f"pip install 'fwbench[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
        return Availability(False, f"{', '.join(missing)} not installed — install with: {hint}")

    @abstractmethod
    def version(self) -> str:
        """The framework's version string."""

    def gpu_available(self) -> bool:
        """Whether this backend can see a GPU (imports the framework)."""
        return False

    @abstractmethod
    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """Called once per cell process before any other framework work: set threads, device
        options (memory growth, preallocation, TF32 off...). Returns facts for ``env``."""

    @abstractmethod
    def build(self, request: BuildRequest) -> Trainer:
        """Build model and optimizer from ``request.task``, loaded with ``request.weights``."""

    def has_ops(self) -> bool:
        """Whether this backend offers microbenchmark ops (`ops`), without importing anything."""
        if type(self).ops is not Backend.ops:
            return True
        package = type(self).__module__.rpartition(".")[0]
        return bool(package) and importlib.util.find_spec(f"{package}.ops") is not None

    def ops(self, device: str, dtype: str, options: dict[str, Any] | None = None) -> Ops:
        """Single-operation microbenchmarks (`fwbench.ops.Ops`) on ``device`` in ``dtype``.

        Called after `configure`. The default imports the module ``ops`` of this backend's own
        package (``type(self).__module__`` minus its last part, + ``.ops``) and returns its
        ``make_ops(self, device, dtype, options=options)``; ``options`` is the task's
        ``[backend]`` table (``compile``...).

        Raises:
            NotImplementedError: the backend has no such module.
        """
        module_name = type(self).__module__
        package = module_name.rpartition(".")[0] or module_name
        target = f"{package}.ops"
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name not in (target, package):
                raise  # ops.py exists but imports something missing: show that error
            raise NotImplementedError(
                f"backend {self.name!r} has no microbenchmark ops; add an ops.py with "
                f"make_ops(backend, device, dtype, options=None) to the package {package!r} "
                "(see fwbench.ops)") from None
        if not hasattr(module, "make_ops"):
            raise NotImplementedError(f"backend {self.name!r}: {target} has no make_ops(backend, device, "
                                      "dtype, options=None); add it (see fwbench.ops)")
        return module.make_ops(self, device, dtype, options=dict(options or {}))
