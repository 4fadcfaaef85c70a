"""The CI scripts' logic (not GitHub): .ci/bench-gate passes the gate's settings to `bench ab`, writes
the table to the job summary and keeps bench ab's exit code; the workflow calls the scripts."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUB = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$STUB_ARGS"
[ "$STUB_CODE" = 2 ] && { echo "bench: error: BASE 'nope' is not a revision" >&2; exit 2; }
echo "### fwbench compare: table"
exit "$STUB_CODE"
"""


def _gate(tmp_path: Path, code: int, *args: str, github: bool = True) -> tuple[subprocess.CompletedProcess, list, Path]:
    stub = tmp_path / "bench"
    stub.write_text(STUB)
    stub.chmod(0o755)
    summary = tmp_path / "summary.md"
    env = {**os.environ, "BENCH": str(stub), "STUB_ARGS": str(tmp_path / "args"), "STUB_CODE": str(code),
           "BENCH_GATE_OUT": str(tmp_path / "gate"), "GITHUB_BASE_REF": "release"}
    if github:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    else:
        env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(["bash", str(ROOT / ".ci" / "bench-gate"), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    return done, (tmp_path / "args").read_text().splitlines(), summary


@pytest.mark.parametrize("code", [0, 1])
def test_the_gate_runs_bench_ab_with_its_settings_and_keeps_the_exit_code(tmp_path, code):
    done, args, summary = _gate(tmp_path, code)
    assert done.returncode == code
    assert args[:3] == ["ab", "origin/release", "HEAD"]
    joined = " ".join(args)
    for part in ("--profile quick", "--repeat 8", "--threads 1", "--threshold 3%", "--alpha 0.01",
                 "--fail-on slower", "--format md", "--backend numpy,torch,tensorflow,jax", "--task mlp_mnist"):
        assert part in joined
    assert summary.read_text() == "### fwbench compare: table\n" == (tmp_path / "gate.md").read_text()


def test_bad_input_keeps_exit_2_and_says_so_in_the_summary(tmp_path):
    done, args, summary = _gate(tmp_path, 2, "nope", "HEAD")
    assert done.returncode == 2 and args[:3] == ["ab", "nope", "HEAD"]
    assert "could not run (exit 2)" in summary.read_text() and "not a revision" in done.stderr


def test_outside_github_there_is_no_summary_file(tmp_path):
    done, _, summary = _gate(tmp_path, 0, github=False)
    assert done.returncode == 0 and not summary.exists() and "table" in done.stdout


def test_the_workflow_runs_the_tests_and_the_gate_through_the_scripts():
    text = (ROOT / ".github" / "workflows" / "bench.yml").read_text()
    assert "bash .ci/run" in text and "bash base/.ci/bench-gate" in text
    assert "gh run download" not in text  # no baseline from another runner


def _job(text: str, name: str) -> str:
    """The lines of one job of the workflow (from ``  name:`` to the next job)."""
    jobs = re.split(r"\n  (?=[\w-]+:\n)", text[text.index("\njobs:"):])
    (job,) = [j for j in jobs if j.startswith(f"{name}:\n")]
    return job


def test_the_pull_request_cannot_loosen_the_gate():
    text = (ROOT / ".github" / "workflows" / "bench.yml").read_text()
    top = text[:text.index("\njobs:")]
    assert "contents: read" in top and "write" not in top.split("permissions:")[1].split("env:")[0]
    gate = _job(text, "gate")
    # the gate's script and its `bench` (the code that judges) are BASE's; NEW is only measured
    assert "ref: ${{ github.event.pull_request.base.sha }}" in gate and "bash base/.ci/bench-gate" in gate
    assert 'BENCH="$PWD/env-base/bin/bench"' in gate
    # each side installed with its own pins
    assert '-c "$side/constraints.txt"' in gate and "for side in base new" in gate
    assert "write" not in gate and "persist-credentials: false" in gate
    summary = _job(text, "gate-summary")
    assert "pull-requests: write" in summary and "actions/checkout" not in summary and "needs: gate" in summary
    assert "contents: write" in _job(text, "nightly-asv")
