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

A backend may implement only part of the vocabulary. It declines a task in `Backend.supports`
(cheap, before the framework is imported) or by raising `Unsupported` from `Backend.build`; the
cell is then recorded as ``skipped`` ("not applicable: <reason>"), never as a failure. The whole
contract, with every convention, is in ``docs/plugins.md``.

A frontend (an API that runs on several engines: Keras, Flax) subclasses
`fwbench.frontends.Frontend`, which adds its engines, its label ``name[engine]`` and its binding
to a cell's options; a raw backend has none of those.
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
    from .options import Option
    from .spec import TaskSpec


class Unsupported(NotImplementedError):
    """Raised by a backend for a task (or a part of one) it does not implement.

    Raise it from `Backend.build` (or `Backend.ops`) with a message naming what is missing, e.g.
    ``raise Unsupported("conv2d layers")``: the suite records the cell as skipped, not failed, and
    `bench check` lists the task as skipped. Any other exception is a crash (a failed record).
    """


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

    @property
    def compile_info(self) -> dict[str, Any]:
        """Facts for the record: ``{"mode": "eager"|"jit"|"xla"|"compile", ...}``.

        Each trainer has its own dict (assign ``self.compile_info = {...}`` in ``__init__``, or
        update it in place); the suite copies it into the record after training.
        """
        return self.__dict__.setdefault("_compile_info", {})

    @compile_info.setter
    def compile_info(self, value: dict[str, Any]) -> None:
        self.__dict__["_compile_info"] = dict(value)

    @abstractmethod
    def to_device(self, x: np.ndarray, y: np.ndarray) -> Any:
        """Move one batch to the device; convert layout here. Not timed.

        ``x``: ``(N, C, H, W)`` (or ``(N, features)``) C-contiguous, dtype ``task.training.dtype``
        (float32 or float64), already normalised; ``y``: ``(N,)`` int64 class indices.

        The batch must be on the device when this returns, or at the latest when `sync` with no
        handle returns (the suite calls it after an epoch's copies): it times the copies as
        ``host_copy_s`` and only then starts the clock. JAX's ``device_put`` is asynchronous and
        its ``block_until_ready`` on the state does not wait for it: its trainer waits here; torch's
        pinned ``non_blocking`` copies are waited for by ``torch.cuda.synchronize`` in `sync`."""

    def upload(self, x: np.ndarray, y: np.ndarray) -> Any:
        """``dataset.placement = "device"``: the whole training split on the device, once, before
        the first epoch (timed as ``host_copy_s``); ``x``, ``y`` as in `to_device`. The default
        declines (the cell is skipped). Refuse a split that will not fit in device memory with
        `fwbench.datasets.pipeline.check_fits` (one line, naming the fix)."""
        raise Unsupported("dataset.placement = device (this backend has no Trainer.upload)")

    def take(self, resident: Any, index: np.ndarray) -> Any:
        """A batch for `train_step`: rows ``index`` (``(batch,)`` int64) of `upload`'s split,
        gathered on the device (outside the timed region, like `to_device`)."""
        raise Unsupported("dataset.placement = device (this backend has no Trainer.take)")

    @abstractmethod
    def train_step(self, batch: Any, lr: float) -> Any:
        """Forward, loss, backward, clipping and one optimizer step with learning rate ``lr``.

        ``batch`` is what `to_device` returned. Returns a handle to ``(mean loss, number of
        correct predictions)``, any object: the suite passes it to `sync` before reading the clock
        and, at the end of the epoch, a list of them to `fetch`. Do not convert it to Python
        numbers here (that syncs the device inside the step); the default `fetch` accepts any
        handle that iterates to two numbers, e.g. a tuple of 0-d device arrays.
        """

    @abstractmethod
    def predict(self, batch: Any) -> np.ndarray:
        """Logits ``(N, classes)`` in eval mode (no dropout, BatchNorm running statistics), as a host
        NumPy array: the device work is done when it returns (the inference scenario times it so)."""

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
        """Block until the device has finished the work behind ``handle`` (or all work).

        The suite calls it before every clock read. A backend whose steps run asynchronously
        (GPU, XLA dispatch) must wait here; the default (nothing to wait for) suits eager CPU code.
        """

    def fetch(self, handles: list[Any]) -> np.ndarray:
        """``(len(handles), 2)`` float64: loss and correct count of each train step."""
        return np.asarray([[float(v) for v in h] for h in handles], dtype=np.float64)

    def loss_and_grads(self, batch: Any) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """Logits ``(N, classes)``, mean loss and every trainable gradient, train mode, no update.

        Gradients are NumPy arrays keyed by canonical name in the canonical layout (those of
        `get_weights`, trainable ones only), of the loss before clipping and weight decay. Used by
        ``bench check``, ``fwbench.testing`` and the ``record_grad_norms`` option; a backend without
        it is listed as "loss_and_grads not implemented" there and runs everything else.
        """
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
    #: What `gpu_available` looked at, for the error of ``--device gpu`` when it sees no GPU,
    #: e.g. ``"torch.cuda.is_available()"``.
    gpu_check: str = "the framework's device list"

    #: The keys its ``[backend]`` table may hold (`fwbench.options.Option`): checked by the core when
    #: a run is planned (unknown key or value → exit 2), listed by ``bench list backends --options``.
    declared_options: tuple[Option, ...] = ()

    #: The precision policies (``training.precision``, `fwbench.precision`) this backend implements;
    #: a cell asking for another one is skipped with its reason. Default: float32 only.
    precisions: tuple[str, ...] = ("fp32",)

    def availability(self) -> Availability:
        """Cheap check (no framework import): are the required modules installed?"""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if not missing:
            return Availability(True)
        hint = f"pip install 'fwbench[{self.extra}]'" if self.extra else f"pip install {' '.join(missing)}"
        return Availability(False, f"{', '.join(missing)} not installed — install with: {hint}")

    def supports(self, task: Any) -> Availability:
        """Whether this backend implements ``task`` (default: yes).

        ``task`` is a `fwbench.spec.TaskSpec` (training) or a `fwbench.micro.spec.BenchSpec`
        (microbenchmark; check ``task.task.family``). Cheap and import-free like `availability`:
        it runs before `configure`. ``Availability(False, "conv2d layers")`` makes the cell
        ``skipped`` with "not applicable: conv2d layers". Raising `Unsupported` from `build` does
        the same for what only the build can tell.
        """
        return Availability(True)

    def has_ops(self) -> bool:
        """Whether this backend has microbenchmark ops (`ops`), without importing them.

        The default looks for the module ``ops`` in the backend's package; a backend that
        overrides `ops` should override this too.
        """
        if type(self).ops is not Backend.ops:
            return True
        package = type(self).__module__.rpartition(".")[0]
        try:
            return bool(package) and importlib.util.find_spec(f"{package}.ops") is not None
        except (ImportError, ValueError):
            return False

    @abstractmethod
    def version(self) -> str:
        """The framework's version string."""

    def gpu_available(self) -> bool:
        """Whether this backend can see a GPU. Asked before `configure` for ``--device auto``: a
        framework whose settings must precede its start (JAX's ``XLA_FLAGS``) answers without
        starting its devices in this process (in a child process)."""
        return False

    @abstractmethod
    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """Called once per cell process before any other framework work: set threads, device
        options (memory growth, preallocation, TF32 off...). Returns facts for ``env``."""

    @abstractmethod
    def build(self, request: BuildRequest) -> Trainer:
        """Build model and optimizer from ``request.task``, loaded with ``request.weights``."""

    def release_caches(self) -> None:
        """Drop what the framework keeps for the models built so far in this process (compiled
        programs, traced graphs, global layer state). A cell builds one model and needs none of
        this; a process that builds hundreds (``bench check --random``) calls it between specs, or
        its memory grows by ~100 MB a spec. Default: nothing to drop."""

    def ops(self, device: str, dtype: str, options: dict[str, Any] | None = None) -> Ops:
        """Single-operation microbenchmarks (`fwbench.ops.Ops`) on ``device`` in ``dtype``.

        Called after `configure`. The default imports the module ``ops`` of this backend's own
        package (``type(self).__module__`` minus its last part, + ``.ops``) and returns its
        ``make_ops(self, device, dtype, options=options)``; ``options`` is the task's
        ``[backend]`` table (``compile``...).

        Raises:
            Unsupported: the backend has no such module (its microbenchmark cells are skipped).
        """
        module_name = type(self).__module__
        package = module_name.rpartition(".")[0] or module_name
        target = f"{package}.ops"
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name not in (target, package):
                raise  # ops.py exists but imports something missing: show that error
            raise Unsupported(
                f"backend {self.name!r} has no microbenchmark ops; add an ops.py with "
                f"make_ops(backend, device, dtype, options=None) to the package {package!r} "
                "(see fwbench.ops)") from None
        if not hasattr(module, "make_ops"):
            raise Unsupported(f"backend {self.name!r}: {target} has no make_ops(backend, device, "
                                      "dtype, options=None); add it (see fwbench.ops)")
        return module.make_ops(self, device, dtype, options=dict(options or {}))


def precision_availability(backend: Any, task: Any, device: str | None = None) -> Availability:
    """Whether ``backend`` implements ``task``'s precision on ``device`` (cheap, import-free).

    A backend lists its policies in ``precisions``; tf32 exists only on a GPU.
    """
    from .precision import DEFAULT, of_task

    pol = of_task(task)
    offered = tuple(getattr(backend, "precisions", (DEFAULT,)) or (DEFAULT,))
    if pol.name not in offered:
        return Availability(False, f"precision {pol.name} (the {backend.name} backend implements: "
                                   f"{', '.join(offered)})")
    if pol.gpu_only and device == "cpu":
        return Availability(False, f"precision {pol.name} on the CPU (TensorFloat-32 is a GPU matmul "
                                   "mode; use fp32, bf16 or fp16 there)")
    return Availability(True)
