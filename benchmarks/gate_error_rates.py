"""The error rates of the regression gate (`bench ab` + `bench compare`), measured on this machine.

    # every regression shape on the CI matrix, from A/A rounds (the figures in docs/statistics.md):
    .venv/bin/python benchmarks/gate_error_rates.py --shapes --k 50 --repeat 8 \
        --rounds-json benchmarks/results/gate_rounds.json
    .venv/bin/python benchmarks/gate_error_rates.py --from-json benchmarks/results/gate_rounds.json --repeat 8
    # fewer recorded rounds, regrouped: 50 comparisons from random sets of 8 of the kept rounds
    .venv/bin/python benchmarks/gate_error_rates.py --from-json benchmarks/results/gate_rounds.json --repeat 8 \
        --regroup 50
    # a smoke run (minutes):
    .venv/bin/python benchmarks/gate_error_rates.py --shapes --backend numpy --k 2 --repeat 2
    # the older measurement: real slowdowns committed into the NumPy backend (slow5, slow10)
    .venv/bin/python benchmarks/gate_error_rates.py --k 50 --repeat 5

What it does:

1. copies this checkout into a throwaway git repository and commits the revisions it needs
   (``base``; without ``--shapes`` also ``slow5`` / ``slow10`` whose NumPy ``train_step`` does extra
   work for 5% / 10% of its own step's time), installs each once as `bench ab` does;
2. runs rounds of the gate's matrix — ``base`` and ``base`` again (and the slow revisions), each
   through its own ``bench run`` in a fresh process per cell, the order rotated every round;
3. judges consecutive groups of ``--repeat`` rounds exactly as the gate does (`fwbench.gate.ab.merge_blocks`,
   `fwbench.gate.compare.compare` paired by round, the gate's threshold, alpha, metrics, --fail-on):
   base vs base again is A/A (a failure is a false positive, family-wise over every row);
4. with ``--shapes``, every A/B condition is made from the second base's *recorded* rounds by
   transforming what the records hold, which is cheap and exact for what the gate reads (the
   per-repeat step statistics, first step, peak memory, accuracy): (a) a uniform slowdown multiplies
   every step statistic; (b) an intermittent stall (10x a step's cost every N steps, N above the
   window size) adds its share of the total time to the mean step and leaves the median and best
   windows alone; (c) a first-step regression multiplies the first step; (d) a peak-memory
   regression multiplies the peak; (e) an accuracy regression lowers the test accuracy. What this
   leaves out: a real slowdown under load also makes a window likelier to be cut by a neighbour
   (the median window then moves more than the injection, see docs/statistics.md), which only the
   committed slowdowns (without ``--shapes``) measure;
5. prints the A/A family-wise false-positive rate and the detection rate per condition and per
   backend; ``--rounds-json`` keeps every round's slimmed records (small JSON) so that
   ``--from-json`` recomputes every figure without running anything.

Not a test: minutes per round-group on the 2-core reference machine.
"""
from __future__ import annotations

import argparse
import copy
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
GATE = {"threshold": "3%", "alpha": "0.01",
        "metrics": ["throughput", "throughput_best", "throughput_total", "throughput_span", "test_accuracy",
                    "peak_host_bytes", "compile_s"],
        "fail_on": "slower"}
CONDITIONS = {"A/A": "base2", "A/B 5%": "slow5", "A/B 10%": "slow10"}
SIDES = ("base", "base2", "slow5", "slow10")
BACKENDS = "numpy,torch,tensorflow,jax"  # the CI matrix
MATRIX = ["--task", "mlp_mnist", "--dataset", "mnist_5k", "--profile", "quick"]


def _scale(record: dict, keys: tuple[str, ...], factor: float) -> None:
    stats = record["metrics"].get("step_time_s") or {}
    for key in keys:
        if isinstance(stats.get(key), int | float):
            stats[key] *= factor


def _uniform(fraction: float):
    def inject(record: dict) -> None:
        _scale(record, ("median", "min", "mean", "best_span"), 1 + fraction)
    return inject


def _stall(fraction: float):
    def inject(record: dict) -> None:
        # the stalls add `fraction` of the total time: to the mean step and to every span of SPAN_UNITS
        # windows (a stall every N steps with N below a span's steps); windows without one stay as they are
        _scale(record, ("mean", "best_span"), 1 + fraction)
    return inject


def _metric(key: str, factor: float = 1.0, delta: float = 0.0):
    def inject(record: dict) -> None:
        value = record["metrics"].get(key)
        if isinstance(value, int | float):
            record["metrics"][key] = value * factor + delta
    return inject


#: The regression shapes injected by transforming the second base's records (--shapes).
SHAPES = {
    "uniform 5%": _uniform(0.05), "uniform 10%": _uniform(0.10),
    "stall 10% of total time": _stall(0.10),
    "first step x2": _metric("first_step_s", 2.0),
    "peak memory +20%": _metric("peak_host_bytes", 1.2),
    "accuracy -5 points": _metric("test_accuracy", delta=-0.05),
}
KEEP = ("schema_version", "run_id", "cell_id", "backend", "task", "device", "dataset", "overrides", "status",
        "error", "params", "frontend", "engine", "finished_at")


def slim(record: dict) -> dict:
    """What the gate reads of one record (for the kept rounds: a few hundred bytes per cell)."""
    m = record.get("metrics") or {}
    stats = m.get("step_time_s") or {}
    env = record.get("env") or {}
    return {**{k: record.get(k) for k in KEEP if k in record},
            "config": {"training": {"batch_size": ((record.get("config") or {}).get("training") or {})
                                    .get("batch_size")}},
            "env": {"threads": env.get("threads"), "dtype": env.get("dtype"),
                    "cpu": {"model": (env.get("cpu") or {}).get("model")}},
            "metrics": {"step_time_s": {k: stats.get(k) for k in ("median", "min", "mean", "best_span") if k in stats},
                        **{k: m.get(k) for k in ("first_step_s", "peak_host_bytes", "peak_device_bytes",
                                                 "test_accuracy", "throughput_samples_per_s") if k in m}}}

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
    from fwbench.gate.ab import Side, _install_revision
    from fwbench.gate.compare import parse_alpha, parse_threshold
    from fwbench.records.results import load_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=50, help="comparisons per condition (default 50)")
    parser.add_argument("--repeat", type=int, default=8, help="blocks per side, as `bench ab --repeat` (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="threads per cell (default 1, as the gate)")
    parser.add_argument("--backend", default=BACKENDS, help=f"backends of the matrix (default: {BACKENDS})")
    parser.add_argument("--threshold", default=GATE["threshold"])
    parser.add_argument("--alpha", default=GATE["alpha"])
    parser.add_argument("--shapes", action="store_true",
                        help="run A/A rounds only and make every regression shape by transforming records")
    parser.add_argument("--rounds-json", type=Path, default=None,
                        help="keep every round's slimmed records here (small JSON; --from-json reads it)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="FILE",
                        help="run nothing: judge the rounds of an earlier --rounds-json FILE in groups of --repeat")
    parser.add_argument("--regroup", type=int, default=None, metavar="N",
                        help="with --from-json: judge N comparisons, each of --repeat rounds drawn at random "
                             "(without replacement) from the kept rounds, instead of the consecutive groups. "
                             "Comparisons then share rounds: cheaper, but not independent (see the docstring)")
    parser.add_argument("--regroup-seed", type=int, default=0, help="seed of --regroup's draws (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="write the comparisons as JSON here")
    args = parser.parse_args(argv)
    threshold, alpha = parse_threshold(args.threshold), parse_alpha(args.alpha)
    if args.from_json:
        kept = json.loads(args.from_json.read_text())
        groups = regrouped(len(kept["rounds"]), args.repeat, args.regroup, args.regroup_seed) \
            if args.regroup else None
        rows = judge_rounds(kept["rounds"], args.repeat, threshold, alpha, kept.get("shapes", True), groups=groups)
        how = (f"{args.regroup} random sets of {args.repeat} (seed {args.regroup_seed})" if args.regroup
               else f"consecutive groups of {args.repeat}")
        print(f"{len(kept['rounds'])} kept rounds of {' '.join(kept['matrix'])} judged in {how} "
              f"(threshold {args.threshold}, family-wise alpha {args.alpha}):")
        print(summary(rows, [], args.repeat))
        return 0
    sides_run = ("base", "base2") if args.shapes else SIDES
    matrix = ["--backend", args.backend, *MATRIX, "--threads", str(args.threads), "--repeat", "1", "--peak", "off",
              "--no-progress"]
    rounds: list[dict[str, list[dict]]] = []
    rows: list[dict] = []
    run_times: list[float] = []
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="fwbench-gate-"))
        stack.callback(shutil.rmtree, work, True)
        commits = make_repo(work / "repo", {} if args.shapes else {"slow5": 0.05, "slow10": 0.10})
        sites = {name: _install_revision(work / "repo", commit, work, stack) for name, commit in commits.items()}
        sides = {name: Side(name, name, sys.executable, pythonpath=sites[name if name != "base2" else "base"],
                            commit=commits[name if name != "base2" else "base"]) for name in sides_run}
        print(f"gate: {GATE}, threshold {args.threshold}, alpha {args.alpha}, --repeat {args.repeat}; "
              f"matrix {' '.join(matrix)}", flush=True)
        for index in range(args.k * args.repeat):
            names = list(sides_run)
            rotation = names[index % len(names):] + names[:index % len(names)]
            one: dict[str, list[dict]] = {}
            for name in rotation:
                out = work / "records" / name / f"round{index:04d}"
                t0 = time.perf_counter()
                done = sides[name].bench("run", *matrix, "--out", str(out), timeout=1800)
                run_times.append(time.perf_counter() - t0)
                if done.returncode == 2:
                    raise SystemExit(f"{name}: bench run refused the matrix: {done.stderr.strip()[-300:]}")
                one[name] = [slim(r) for r in load_records(out)]
            rounds.append(one)
            if args.rounds_json:  # every round kept as soon as it ends: a crash later loses nothing
                args.rounds_json.parent.mkdir(parents=True, exist_ok=True)
                args.rounds_json.write_text(json.dumps(
                    {"gate": {**GATE, "threshold": args.threshold, "alpha": args.alpha, "repeat": args.repeat,
                              "threads": args.threads}, "matrix": matrix, "shapes": args.shapes,
                     "rounds": rounds}, separators=(",", ":")))
            if len(rounds) % args.repeat == 0:
                rows += judge_rounds(rounds[-args.repeat:], args.repeat, threshold, alpha, args.shapes,
                                     group=len(rounds) // args.repeat - 1)
                print(summary(rows, run_times, args.repeat), flush=True)
    print("final:", summary(rows, run_times, args.repeat))
    if args.out:
        args.out.write_text(json.dumps({"gate": GATE, "matrix": matrix, "rows": rows}, indent=1))
    return 0


def _injected(records: list[dict], inject) -> list[dict]:
    out = []
    for record in records:
        record = copy.deepcopy(record)
        if record.get("status") == "ok":
            inject(record)
        out.append(record)
    return out


def regrouped(kept: int, repeat: int, count: int, seed: int) -> list[list[int]]:
    """``count`` sets of ``repeat`` distinct round indices out of ``kept``, drawn at random.

    With R kept rounds only R // repeat comparisons are independent; regrouping reuses rounds so
    that more A/A and A/B decisions are seen on the same recorded noise. Two sets share
    repeat**2 / R rounds on average, so the decisions are correlated: the rates are estimates of
    the same per-comparison probability, but their binomial intervals are too narrow (quote the
    consecutive-groups figure beside them)."""
    import random

    if repeat > kept:
        raise SystemExit(f"--regroup: {kept} kept rounds cannot make a set of --repeat {repeat}")
    draw = random.Random(seed)
    return [sorted(draw.sample(range(kept), repeat)) for _ in range(count)]


def judge_rounds(rounds: list[dict[str, list[dict]]], repeat: int, threshold: float, alpha: float, shapes: bool,
                 group: int | None = None, groups: list[list[int]] | None = None) -> list[dict]:
    """Every comparison of consecutive groups of ``repeat`` rounds (or of the given ``groups`` of round
    indices), as the gate judges them: one row per (group, condition) with the gate's decision and, per
    backend, whether that backend's cell failed."""
    from fwbench.gate.ab import merge_blocks
    from fwbench.gate.compare import compare, exit_code

    if groups is None:
        groups = [list(range(g * repeat, (g + 1) * repeat)) for g in range(len(rounds) // repeat)]
    rows = []
    for g, indices in enumerate(groups):
        chosen = [rounds[i] for i in indices]
        blocks = {side: [r[side] for r in chosen] for side in chosen[0]}
        base = merge_blocks(blocks["base"])
        others = {"A/A": blocks["base2"]}
        if shapes:
            others.update({name: [_injected(b, inject) for b in blocks["base2"]] for name, inject in SHAPES.items()})
        else:
            others.update({c: blocks[side] for c, side in CONDITIONS.items() if c != "A/A" and side in blocks})
        for condition, new_blocks in others.items():
            result = compare(base, merge_blocks(new_blocks), threshold, alpha, GATE["metrics"], paired=True)
            failing = result.failing(GATE["fail_on"])
            per_backend = {}
            for record in base:
                label = str(record.get("backend"))
                per_backend[label] = any(r.cell.split(" · ")[0] == label for r in failing)
            rows.append({"group": g if group is None else group, "condition": condition,
                         "gate_failed": exit_code(result, GATE["fail_on"]) == 1, "per_backend": per_backend,
                         "failing": [f"{r.cell} · {r.metric}: {r.verdict}" for r in failing],
                         "changes": {f"{r.cell} · {r.metric}": r.change for r in result.rows if r.change is not None}})
    return rows


def summary(rows: list[dict], run_times: list[float], repeat: int) -> str:
    import statistics

    per_comparison = 2 * repeat * statistics.mean(run_times) if run_times else float("nan")
    lines = [f"(wall time per bench ab comparison ≈ {per_comparison:.0f} s)"]
    for condition in dict.fromkeys(r["condition"] for r in rows):
        mine = [r for r in rows if r["condition"] == condition]
        fails = sum(r["gate_failed"] for r in mine)
        what = "family-wise false positives" if condition == "A/A" else "detected"
        backends = sorted({b for r in mine for b in r["per_backend"]})
        each = ", ".join(f"{b} {sum(r['per_backend'][b] for r in mine)}/{len(mine)}" for b in backends)
        lines.append(f"  {condition:<24} gate {what}: {fails}/{len(mine)} = {fails / len(mine):.0%} (per backend: {each})")
        if condition == "A/A" and fails:
            lines += [f"    false alarm: {f}" for r in mine for f in r["failing"]][:6]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
