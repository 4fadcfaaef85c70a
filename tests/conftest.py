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
        return subprocess.run([sys.executable, "-m", "fwbench.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=cwd or tmp_path)

    return run
