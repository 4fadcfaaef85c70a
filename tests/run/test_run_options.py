"""`RunOptions`: the typed options a script plans a run with, and the ones ``bench run`` builds."""
from __future__ import annotations

from pathlib import Path

import pytest
from fwbench.run.executor import ExecutorOptions
from fwbench.run.matrix import plan_run
from fwbench.run.options import RunOptions


def test_a_script_plans_a_run_without_argparse(tmp_path):
    options = RunOptions(backends=["numpy"], tasks=["mlp_mnist"], dataset="digits", overrides=["optimizer.lr=0.01,0.1"],
                         peak="off", out=tmp_path, threads=1, repeats=2, timeout_s=60.0)
    plan = plan_run(options)
    cells = [(c.backend, c.task, c.device, c.overrides["optimizer.lr"], c.overrides["dataset.name"])
             for c in plan.cells]
    assert cells == [("numpy", "mlp_mnist", "cpu", 0.01, "digits"), ("numpy", "mlp_mnist", "cpu", 0.1, "digits")]
    assert {(c.threads, c.repeats, c.timeout_s, c.profile) for c in plan.cells} == {(1, 2, 60.0, None)}
    assert plan.run_dir.parent == tmp_path and not plan.run_dir.exists()  # planning writes nothing
    assert plan.manifest["repeats"] == 2 and plan.manifest["argv"] == []


def test_the_defaults_are_bench_runs():
    from fwbench.cli import build_parser
    from fwbench.commands.run import run_options

    assert run_options(build_parser().parse_args(["run"])) == RunOptions()
    parsed = run_options(build_parser().parse_args(["run", "-b", "numpy,torch", "--report", "--no-progress"]))
    assert parsed.backends == ("numpy", "torch") and parsed.report and parsed.report_file is None
    assert not parsed.progress


def test_lists_and_texts_become_tuples_and_paths():
    options = RunOptions(tasks=["a", "b"], out="somewhere", data_dir="cache")
    assert options.tasks == ("a", "b") and options.out == Path("somewhere") and options.data_dir == Path("cache")
    with pytest.raises(TypeError, match=r"tasks=\['mlp_mnist'\]"):
        RunOptions(tasks="mlp_mnist")


def test_the_executor_is_given_its_own_typed_options():
    options = RunOptions(executor="dask", workers=2)
    assert options.executor_options == ExecutorOptions(workers=2, scheduler=None)
