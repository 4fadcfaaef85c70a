"""The error rates of the regression gate (`bench ab` + `bench compare`), measured on this machine.

    .venv/bin/python benchmarks/gate_error_rates.py --k 50            # the figures in docs/statistics.md
    .venv/bin/python benchmarks/gate_error_rates.py --k 5 --repeat 3  # a smoke run (minutes)

What it does:

1. copies this checkout into a throwaway git repository and commits three revisions: ``base``, and
   ``slow5`` / ``slow10``: the NumPy backend's ``train_step`` does extra NumPy work for 5% / 10% of
   the time of its own step, every step (proportional to the real step, so it grows with neighbours'
   load exactly as a real regression in the backend would);
2. installs each revision once, as `bench ab` does (worktree + ``pip install --no-deps --target``);
3. runs rounds of the gate's matrix — ``base``, ``base`` again, ``slow5``, ``slow10``, each through
   its own ``bench run`` in a fresh process per cell, the order rotated every round — and judges
   consecutive groups of ``--repeat`` rounds exactly as the gate does (`fwbench.ab.merge_blocks`,
   `fwbench.compare.compare` paired by round, the gate's threshold, alpha, metrics and --fail-on):
   base vs base again (A/A: a failure is a false positive), base vs slow5 and base vs slow10 (A/B: a
   failure is a detection). Each round serves the three comparisons at once: 4 runs instead of 6.
4. prints, after every group and at the end, the false-positive rate, the detection rates, the
   verdicts, the mean measured change and the wall time one `bench ab` comparison would take
   (2 x repeat runs of the matrix); with ``--out`` the rows are written as JSON.

Not a test: it takes ~1 minute per round-group on the 2-core reference machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The gate of .ci/bench-gate (keep the two in step).
GATE = {"threshold": "3%", "alpha": "0.01", "metrics": ["throughput", "throughput_best", "test_accuracy"],
        "fail_on": "slower"}
CONDITIONS = {"A/A": "base2", "A/B 5%": "slow5", "A/B 10%": "slow10"}
SIDES = ("base", "base2", "slow5", "slow10")
MATRIX = ["--backend", "numpy", "--task", "mlp_mnist", "--dataset", "mnist_5k", "--profile", "quick"]

INJECTION = '''
import time as _inject_time
import numpy as _inject_np

_INJECT_FRACTION = {fraction}
_INJECT_WORK = _inject_np.ones((24, 24), dtype=_inject_np.float32)


def _injected(train_step):
    """Extra NumPy work for a fixed fraction of each step's own time: a regression in the backend."""
    def step(self, batch, lr):
        start = _inject_time.perf_counter()
        out = train_step(self, batch, lr)
        until = _inject_time.perf_counter() + _INJECT_FRACTION * (_inject_time.perf_counter() - start)
        while _inject_time.perf_counter() < until:
            _INJECT_WORK @ _INJECT_WORK
        return out
    return step
'''


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                           *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_repo(where: Path, fractions: dict[str, float]) -> dict[str, str]:
    """This checkout's files as a new repository; returns {revision name: commit}."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
    _git(where, "init", "-q")
    _git(where, "add", "-A")
    _git(where, "commit", "-qm", "base")
    commits = {"base": _git(where, "rev-parse", "HEAD")}
    trainer = where / "plugins" / "fwbench_numpy" / "trainer.py"
    original = trainer.read_text()
    for name, fraction in fractions.items():
        _git(where, "checkout", "-q", commits["base"])
        marker = "    def train_step(self, batch: Any, lr: float)"
        if marker not in original:
            raise SystemExit(f"cannot inject: {marker.strip()!r} not found in {trainer}")
        cls = original[:original.index(marker)].rsplit("\nclass ", 1)[1].split("(")[0].split(":")[0].strip()
        trainer.write_text(original + INJECTION.format(fraction=fraction)
                           + f"\n{cls}.train_step = _injected({cls}.train_step)\n")
        _git(where, "commit", "-qam", f"inject a {fraction:.0%} slowdown")
        commits[name] = _git(where, "rev-parse", "HEAD")
    _git(where, "checkout", "-q", commits["base"])
    return commits


def main(argv=None) -> int:
    from fwbench.ab import Side, _install_revision
    from fwbench.compare import parse_alpha, parse_threshold
    from fwbench.results import load_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=50, help="comparisons per condition (default 50)")
    parser.add_argument("--repeat", type=int, default=8, help="blocks per side, as `bench ab --repeat` (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="threads per cell (default 1, as the gate)")
    parser.add_argument("--threshold", default=GATE["threshold"])
    parser.add_argument("--alpha", default=GATE["alpha"])
    parser.add_argument("--out", type=Path, default=None, help="write the comparisons as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="keep the records in this folder")
    parser.add_argument("--from-records", type=Path, default=None, metavar="DIR",
                        help="run nothing: judge the rounds kept by an earlier --keep DIR, in groups of --repeat")
    args = parser.parse_args(argv)
    threshold, alpha = parse_threshold(args.threshold), parse_alpha(args.alpha)
    if args.from_records:
        return rejudge(args.from_records, args.repeat, threshold, alpha)
    matrix = MATRIX + ["--threads", str(args.threads), "--repeat", "1", "--peak", "off", "--no-progress"]
    rows: list[dict] = []
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="fwbench-gate-"))
        stack.callback(shutil.rmtree, work, True)
        records_dir = args.keep or work / "records"
        commits = make_repo(work / "repo", {"slow5": 0.05, "slow10": 0.10})
        sites = {name: _install_revision(work / "repo", commit, work, stack) for name, commit in commits.items()}
        sides = {name: Side(name, name, sys.executable, pythonpath=sites[name if name != "base2" else "base"],
                            commit=commits[name if name != "base2" else "base"])
                 for name in SIDES}
        names = list(sides)
        run_times: list[float] = []
        print(f"gate: threshold {threshold:.1%}, alpha {alpha:g}, metrics {GATE['metrics']}, --fail-on "
              f"{GATE['fail_on']}, --repeat {args.repeat}, --threads {args.threads}; matrix {' '.join(MATRIX)}",
              flush=True)
        for group in range(args.k):
            blocks: dict[str, list[list[dict]]] = {name: [] for name in names}
            for r in range(args.repeat):
                round_index = group * args.repeat + r
                rotation = names[round_index % 4:] + names[:round_index % 4]
                for name in rotation:
                    out = records_dir / name / f"round{round_index:04d}"
                    t0 = time.perf_counter()
                    done = sides[name].bench("run", *matrix, "--out", str(out), timeout=1800)
                    run_times.append(time.perf_counter() - t0)
                    if done.returncode == 2:
                        raise SystemExit(f"{name}: bench run refused the matrix: {done.stderr.strip()[-300:]}")
                    blocks[name].append(load_records(out))
            rows += judge_group(blocks, threshold, alpha, group)
            print(summary(rows, run_times, args.repeat, final=False), flush=True)
    print(summary(rows, run_times, args.repeat, final=True))
    if args.out:
        args.out.write_text(json.dumps({"gate": {**GATE, "threshold": args.threshold, "alpha": args.alpha,
                                                 "repeat": args.repeat, "threads": args.threads},
                                        "matrix": MATRIX, "rows": rows}, indent=1))
    return 0


def judge_group(blocks: dict[str, list[list[dict]]], threshold: float, alpha: float, group: int) -> list[dict]:
    """The three comparisons of one group of rounds, as the gate judges them."""
    from fwbench.ab import merge_blocks
    from fwbench.compare import THROUGHPUT_LABEL, compare, exit_code

    rows = []
    base = merge_blocks(blocks["base"])
    for condition, other in CONDITIONS.items():
        result = compare(base, merge_blocks(blocks[other]), threshold, alpha, GATE["metrics"], paired=True)
        by_metric = {r.metric: r for r in result.rows}
        row, best = by_metric.get(THROUGHPUT_LABEL), by_metric.get("best-window throughput")
        rows.append({"group": group, "condition": condition,
                     "gate_failed": exit_code(result, GATE["fail_on"]) == 1,
                     "failing": [f"{r.metric}: {r.verdict}" for r in result.failing(GATE["fail_on"])],
                     "verdict": row.verdict if row else "none", "change": row.change if row else None,
                     "ci": row.ci if row else None, "p": row.p_value if row else None,
                     "best_verdict": best.verdict if best else "none",
                     "best_change": best.change if best else None, "best_ci": best.ci if best else None,
                     "best_p": best.p_value if best else None})
    return rows


def rejudge(folder: Path, repeat: int, threshold: float, alpha: float) -> int:
    """Judge kept rounds again in groups of ``repeat`` consecutive rounds (no new runs)."""
    from fwbench.results import load_records

    rounds = sorted(set.intersection(*({p.name for p in (folder / side).iterdir() if (p / "run.json").exists()
                                        or any(p.rglob("run.json"))} for side in SIDES)))
    rows: list[dict] = []
    for group in range(len(rounds) // repeat):
        names = rounds[group * repeat:(group + 1) * repeat]
        blocks = {side: [load_records(folder / side / name) for name in names] for side in SIDES}
        rows += judge_group(blocks, threshold, alpha, group)
    print(f"{len(rounds)} kept rounds judged in groups of {repeat} (threshold {threshold:.1%}, alpha {alpha:g}):")
    print(summary(rows, [], repeat, final=True))
    return 0


def summary(rows: list[dict], run_times: list[float], repeat: int, final: bool) -> str:
    import statistics

    lines = []
    per_comparison = 2 * repeat * statistics.mean(run_times) if run_times else float("nan")
    for condition in ("A/A", "A/B 5%", "A/B 10%"):
        mine = [r for r in rows if r["condition"] == condition]
        if not mine:
            continue
        fails = sum(r["gate_failed"] for r in mine)
        what = "false positives" if condition == "A/A" else "detected"
        verdicts = {v: sum(r["verdict"] == v for r in mine) for v in sorted({r["verdict"] for r in mine})}
        best = {v: sum(r["best_verdict"] == v for r in mine) for v in sorted({r["best_verdict"] for r in mine})}

        def mean(key, mine=mine):
            values = [r[key] for r in mine if r[key] is not None]
            return statistics.mean(values) if values else float("nan")
        lines.append(f"  {condition:<8} gate {what}: {fails}/{len(mine)} = {fails / len(mine):.0%}; "
                     f"throughput (median windows) {verdicts}, mean change {mean('change'):+.1%}; "
                     f"best-window throughput {best}, mean change {mean('best_change'):+.1%}")
    head = "final" if final else f"after {len(rows) // 3} comparison(s) per condition"
    return f"{head} (wall time per bench ab comparison ≈ {per_comparison:.0f} s):\n" + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
