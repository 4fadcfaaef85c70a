"""`bench ab BASE NEW` on a throwaway git repository (a copy of this checkout): both revisions are
prepared and run alternately, a cell that breaks in NEW fails the gate, bad revisions are refused."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fwbench.gate.ab import order
from fwbench.records.results import load_records

ROOT = Path(__file__).resolve().parent.parent

MATRIX = ["--backend", "toy", "--task", "mlp_mnist", "--dataset", "digits", "--set", "epochs=1"]
BROKEN = '''
def _broken(*args, **kwargs):
    raise RuntimeError("injected regression: train() is broken in this revision")
'''


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    """This checkout's tracked files as a new repository: HEAD~1 as they are, HEAD with a broken train()."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True, text=True).stdout.split("\0")
    repo = tmp_path / "repo"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    training = repo / "suite" / "training.py"
    training.write_text(training.read_text() + BROKEN + "\ntrain = _broken\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "break train()")
    return repo


def test_order_is_abba():
    assert order(3) == [(1, 0), (1, 1), (2, 1), (2, 0), (3, 0), (3, 1)]


def test_a_revision_that_breaks_a_cell_fails_the_gate_and_both_sides_are_kept(bench, repo, tmp_path):
    out = tmp_path / "ab"
    result = bench("ab", "HEAD~1", "HEAD", *MATRIX, "--repeat", "2", "--out", str(out), cwd=repo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: toy · mlp_mnist" in result.stdout and "injected regression" in result.stdout
    (run,) = out.iterdir()
    base, new = load_records(run / "base" / "cells"), load_records(run / "new" / "cells")
    assert [r["status"] for r in base] == ["ok"] and [r["status"] for r in new] == ["failed"]
    assert "❌ regression" in (run / "compare.md").read_text()
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert len(listed.strip().splitlines()) == 1  # the temporary worktrees are gone


@pytest.mark.parametrize("args,fragment", [
    (["nope", "HEAD"], "BASE 'nope' is not a revision of"),
    (["HEAD", "HEAD~5"], "NEW 'HEAD~5' is not a revision of"),
    (["HEAD", "HEAD", "--repeat", "0"], "--repeat: expected a positive integer, got '0'"),
    (["HEAD", "HEAD", "--threshold", "x"], "--threshold 'x'"),
])
def test_bad_input_is_one_line_exit_2(bench, repo, args, fragment):
    result = bench("ab", *args, *MATRIX, cwd=repo)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bench: error: ") and fragment in line


def test_outside_a_repository_is_refused(bench, tmp_path):
    result = bench("ab", "HEAD~1", "HEAD", *MATRIX, cwd=tmp_path)
    assert result.returncode == 2 and "not inside a git repository" in result.stderr


def test_a_side_can_be_a_venv_folder_or_its_python(tmp_path):
    from fwbench.gate.ab import _environment_python

    (tmp_path / "venv" / "bin").mkdir(parents=True)
    python = tmp_path / "venv" / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    assert _environment_python(str(tmp_path / "venv")) == str(python)
    assert _environment_python(str(python)) == str(python)
    assert _environment_python("HEAD~1") is None and _environment_python(str(tmp_path)) is None
