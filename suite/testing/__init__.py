"""``fwbench.testing``: the pytest plugin a backend package runs in its own CI.

    pytest --fwbench-backend mybackend            # the kit alone (no test paths given)
    pytest tests/ --fwbench-backend mybackend     # the package's own tests and the kit

fwbench registers this plugin through the ``pytest11`` entry point, so installing fwbench is
enough; without the entry point, add ``-p fwbench.testing``. Without ``--fwbench-backend`` it
does nothing. For each backend named it adds these tests (the checks are in `.checks`):

* ``conformance[TASK]``: `bench check` on every registered training task: logits, loss,
  gradients, optimizer steps and a short training curve against the NumPy float64 reference;
* ``weights[TASK]``: canonical names, shapes, dtype, the exact initial weights, a set/get round trip;
* ``params[TASK]``: the trainable parameter count of the spec;
* ``sync``: a step timed with a sync after it and with one sync after many; sync returns, and no
  timing beats the machine's measured peak (``--fwbench-peak GFLOPS`` gives it instead);
* ``fault:crash-in-build``: an exception in build becomes a failed record with its traceback;
* ``fault:unsupported``: a task the backend declines becomes a skipped record with its reason.

A task the backend declines (`Backend.supports`, or `fwbench.backend.Unsupported` from build)
makes its tests *skipped*, with the reason. ``--fwbench-task NAME`` (repeatable) limits the tasks.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest

OPTION = "--fwbench-backend"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("fwbench", "fwbench backend kit (fwbench.testing)")
    group.addoption(OPTION, action="append", default=[], metavar="NAME",
                    help="check this registered fwbench backend against the plugin contract (repeatable)")
    group.addoption("--fwbench-task", action="append", default=[], metavar="NAME",
                    help="only these tasks (default: every registered training task; repeatable)")
    group.addoption("--fwbench-peak", type=float, default=None, metavar="GFLOPS",
                    help="the machine's peak for the sync audit (default: fwbench's cached or measured peak)")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "fwbench_kit: a test of the fwbench backend kit")
    if config.getoption(OPTION) and config.args_source != pytest.Config.ArgsSource.ARGS:
        # No paths given: run the kit alone rather than whatever testpaths/rootdir would collect.
        config.args = []


class KitItem(pytest.Item):
    """One kit check; its report shows the check's summary line (``-rA`` or ``-v -s``)."""

    def __init__(self, *, check: Callable[[], str], **kwargs):
        super().__init__(**kwargs)
        self.check = check
        self.add_marker("fwbench_kit")

    def runtest(self) -> None:
        from .checks import NotApplicable

        try:
            summary = self.check()
        except NotApplicable as exc:
            pytest.skip(str(exc))
        self.user_properties.append(("fwbench", summary))
        self.add_report_section("call", "fwbench", summary)

    def repr_failure(self, excinfo, style=None):
        from .checks import KitFailure

        if isinstance(excinfo.value, KitFailure):
            return f"{self.name}: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"fwbench kit: {self.name}"


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so they apply to the kit's tests
def pytest_collection_modifyitems(session, config, items) -> None:
    backends = config.getoption(OPTION)
    if not backends:
        return
    from ..errors import FwbenchError
    from .checks import training_tasks

    try:
        tasks = config.getoption("--fwbench-task") or training_tasks()
        peak = config.getoption("--fwbench-peak")
        for backend in backends:
            items.extend(_items(session, backend, tasks, peak))
    except FwbenchError as exc:  # an unknown --fwbench-task, a broken spec: one line, no traceback
        raise pytest.UsageError(f"fwbench kit: {exc}") from None


def _items(session, backend: str, tasks: list[str], peak: float | None) -> list[KitItem]:
    from .checks import (
        NotApplicable,
        check_conformance,
        check_fault_crash_in_build,
        check_fault_unsupported,
        check_params,
        check_sync,
        check_weights,
        load,
    )

    def item(name: str, check: Callable[[], str]) -> KitItem:
        return KitItem.from_parent(session, name=name, nodeid=f"fwbench-kit[{backend}]::{name}", check=check)

    for task in tasks:
        if load(task).task.family != "train":
            raise pytest.UsageError(f"fwbench kit: --fwbench-task {task}: a {load(task).task.family} "
                                    "microbenchmark; the kit checks training tasks")
    registry_backend = _registered(backend)
    supported = [t for t in tasks if registry_backend is None or registry_backend.supports(load(t)).ok]
    declined = [t for t in tasks if t not in supported]
    out = []
    for task in tasks:
        out.append(item(f"conformance[{task}]", lambda t=task: check_conformance(backend, t)))
        out.append(item(f"weights[{task}]", lambda t=task: check_weights(backend, t)))
        out.append(item(f"params[{task}]", lambda t=task: check_params(backend, t)))
    first = supported[0] if supported else None

    def needs_task(check):
        def run():
            if first is None:
                raise NotApplicable(f"backend {backend!r} supports none of the tasks {tasks}")
            return check()
        return run

    out.append(item("sync", needs_task(lambda: check_sync(backend, first, peak))))
    out.append(item("fault:crash-in-build", needs_task(lambda: check_fault_crash_in_build(backend, first))))
    out.append(item("fault:unsupported",
                    lambda: check_fault_unsupported(backend, declined[0] if declined else None, first)))
    return out


def _registered(name: str):
    """The backend, or None when it is unknown/unavailable (each test then fails saying so)."""
    from ..plugins import get_registry

    backend = get_registry().backends.get(name)
    return backend if backend is not None and backend.availability().ok else None
