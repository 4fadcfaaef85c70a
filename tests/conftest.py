"""Shared fixtures: the toy outside plugin (installed for real, with its entry point) and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# cells claim cores through lock files (fwbench.run.placement); a test session keeps its own, so
# that a neighbour's run on this shared machine never marks a test's cells as sharing cores
os.environ.setdefault("FWBENCH_LOCK_DIR", tempfile.mkdtemp(prefix="fwbench-test-locks-"))

ROOT = Path(__file__).resolve().parent.parent
TOY_SOURCE = ROOT / "tests" / "fixtures" / "toy_plugin"


@pytest.fixture(scope="session")
def toy_site(tmp_path_factory) -> Path:
    """pip-install the toy plugin package into a private folder (a real install: dist-info + entry point)."""
    target = tmp_path_factory.mktemp("toy_site")
    build = tmp_path_factory.mktemp("toy_src")
    subprocess.run(["cp", "-r", str(TOY_SOURCE) + "/.", str(build)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(build)], check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return target


@pytest.fixture
def bench(toy_site, tmp_path):
    """Run the real ``bench`` CLI in a subprocess with the toy plugin importable. Returns CompletedProcess."""

    def run(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None):
        # one repeat per cell unless a test asks for more (--repeat or FWBENCH_REPEAT): tests stay fast
        full_env = {**os.environ, "PYTHONPATH": str(toy_site), "FWBENCH_DATA_DIR": str(tmp_path / "data"),
                    "COLUMNS": "200", "FWBENCH_REPEAT": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "fwbench.cli", *args], capture_output=True, text=True, check=False,
                              timeout=timeout, env=full_env, cwd=cwd or tmp_path)

    return run


#: Modules whose tests start `bench` processes (runs, the kit, asv, the CI scripts, a browser).
CLI_MODULES = {"test_plugin_kit", "test_asv", "test_ab", "test_ci_scripts", "test_report_browser",
               "test_concurrency", "test_faults", "test_runner", "test_repeats", "test_studies"}
#: Tests elsewhere that start `bench` processes (by function name).
CLI_TESTS = {"test_cli_exit_codes", "test_cli_bad_input_is_one_line_exit_2", "test_cli_missing_folder_is_exit_2",
             "test_cli_report_end_to_end", "test_corrupt_records_are_skipped_with_a_warning_naming_the_file",
             "test_bench_run_conv2d_quick_makes_a_record_with_cases_gflops_and_percent_of_peak"}
#: A test parametrised with one of these backends imports its framework.
FRAMEWORKS = {"torch", "tensorflow", "jax", "keras", "flax"}
#: Folders of backends whose tests import a framework (seconds each to import), and modules that
#: run every framework backend (conformance: a process per backend and task).
FRAMEWORK_DIRS = {"torch_backend", "tensorflow_backend", "jax_backend", "keras_backend", "flax_backend"}
FRAMEWORK_MODULES = {"test_conformance"}


def pytest_collection_modifyitems(config, items):
    """Mark what stays out of ``make test-quick``: tests that run ``bench`` processes (``cli``: the
    `bench` or `toy_site` fixture, a module of `CLI_MODULES`, a test of `CLI_TESTS`) and tests of a
    framework backend (``framework``: its folder, conformance, or a framework as a parameter).
    ``make test`` runs everything."""
    for item in items:
        path = Path(str(item.fspath))
        name = getattr(item, "originalname", item.name)
        if (path.stem in CLI_MODULES or name in CLI_TESTS
                or {"bench", "toy_site"} & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.cli)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (FRAMEWORK_DIRS & set(path.parts) or path.stem in FRAMEWORK_MODULES
                or FRAMEWORKS & {v for v in params.values() if isinstance(v, str)}):
            item.add_marker(pytest.mark.framework)
