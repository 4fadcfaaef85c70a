"""What plugins register: backends, tasks, studies, datasets, executors. Validates what it is given."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import FwbenchError, UnknownNameError

if TYPE_CHECKING:
    from .backend import Backend
    from .datasets.base import Dataset
    from .run.executor import ExecutorFactory


class RegistrationError(FwbenchError):
    """A plugin registered something twice or something malformed."""


@dataclass
class Registry:
    """Filled once per process by the ``fwbench_register_*`` hooks."""

    backends: dict[str, Backend] = field(default_factory=dict)
    task_files: dict[str, Path] = field(default_factory=dict)
    study_files: dict[str, Path] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    executors: dict[str, ExecutorFactory] = field(default_factory=dict)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    current_plugin: str = "?"

    def _claim(self, kind: str, name: str) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistrationError(f"plugin {self.current_plugin!r} registered a {kind} with invalid name {name!r}")
        key = (kind, name)
        if key in self.origin:
            raise RegistrationError(
                f"{kind} {name!r} registered twice: by {self.origin[key]!r} and {self.current_plugin!r}; "
                "uninstall one of the two packages or rename the entry"
            )
        self.origin[key] = self.current_plugin

    def backend(self, backend: Backend) -> None:
        self._claim("backend", backend.name)
        self.backends[backend.name] = backend

    def task_file(self, path: str | Path) -> None:
        path = Path(path)
        self._claim("task", path.stem)
        self.task_files[path.stem] = path

    def task_dir(self, directory: str | Path) -> None:
        for path in sorted(Path(directory).glob("*.toml")):
            self.task_file(path)

    def study_file(self, path: str | Path) -> None:
        """A study (``[study]`` + ``[[cells]]`` TOML, see `fwbench.studies.spec`), named by its file stem."""
        path = Path(path)
        self._claim("study", path.stem)
        self.study_files[path.stem] = path

    def study_dir(self, directory: str | Path) -> None:
        for path in sorted(Path(directory).glob("*.toml")):
            self.study_file(path)

    def dataset(self, dataset: Dataset) -> None:
        self._claim("dataset", dataset.name)
        self.datasets[dataset.name] = dataset

    def executor(self, name: str, factory: ExecutorFactory) -> None:
        """An executor factory (`fwbench.run.executor`): called with the run's `ExecutorOptions`."""
        self._claim("executor", name)
        self.executors[name] = factory

    # -- look-ups with errors that name the fix ------------------------------------------------
    def get_backend(self, name: str) -> Backend:
        if name not in self.backends:
            raise UnknownNameError("backend", name, list(self.backends), "see `bench list backends`")
        return self.backends[name]

    def get_dataset(self, name: str) -> Dataset:
        if name not in self.datasets:
            raise UnknownNameError("dataset", name, list(self.datasets), "see `bench list datasets`")
        return self.datasets[name]

    def get_study_file(self, name: str) -> Path:
        if name.endswith(".toml") or "/" in name:
            path = Path(name)
            if not path.is_file():
                raise UnknownNameError("study file", name, [], "give an existing .toml path or a study name "
                                       "from `bench list studies`")
            return path
        if name not in self.study_files:
            raise UnknownNameError("study", name, list(self.study_files), "see `bench list studies`")
        return self.study_files[name]

    def get_task_file(self, name: str) -> Path:
        if name.endswith(".toml") or "/" in name:
            path = Path(name)
            if not path.is_file():
                raise UnknownNameError("task file", name, [], "give an existing .toml path or a task name from `bench list tasks`")
            return path
        if name not in self.task_files:
            raise UnknownNameError("task", name, list(self.task_files), "see `bench list tasks`, or pass a path to a .toml spec")
        return self.task_files[name]
