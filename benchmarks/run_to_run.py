"""Do the numbers hold between runs? The main job's quick matrix run K times as separate invocations.

    .venv/bin/python benchmarks/run_to_run.py            # K = 4, the default --repeat of `bench run`
    .venv/bin/python benchmarks/run_to_run.py --k 4 --run-args "--repeat 5 --threads 1"
    # inference: each batch size's p50 latency and its interval (docs/inference.md)
    .venv/bin/python benchmarks/run_to_run.py --k 4 --backends numpy,torch,tensorflow,jax,onnxruntime \
        --run-args "--scenario inference --threads 1 --repeat 3 --set inference.batch_sizes=[1,64]"

For every backend it prints the headline throughput of each run, the run-to-run CV of the headline
(the between-invocation spread `bench compare` takes as its floor, `fwbench.measure.statistics.INVOCATION_CV`)
and how many of the K records' 95% intervals contain the median of the *other* K - 1 headlines
(coverage, leave-one-out: the run being judged is not part of what it is judged against). The
same for the best-window throughput. Goals (issue "Numbers that hold between runs"): coverage >= 90%,
CV <= 5% (3% better). Not a test: minutes on the 2-core reference machine.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MATRIX = ["--backend", "numpy,torch,tensorflow,jax", "--task", "mlp_mnist", "--dataset", "mnist_5k",
          "--profile", "quick"]
METRICS = (("throughput", "throughput_samples_per_s", "throughput_ci95"),
           ("best-window", "throughput_best_samples_per_s", "throughput_best_ci95"))


def main(argv=None) -> int:
    from fwbench.records.results import load_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=4, help="separate runs (default 4)")
    parser.add_argument("--backends", default=None, help="backends of the matrix (default numpy,torch,tensorflow,jax)")
    parser.add_argument("--run-args", default="", help="extra `bench run` options, e.g. \"--repeat 5\"")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: a temporary one)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fwbench-r2r-"))
    matrix = list(MATRIX)
    if args.backends:
        matrix[1] = args.backends
    command = [sys.executable, "-m", "fwbench.cli", "run", *matrix, *shlex.split(args.run_args), "--no-progress"]
    print("command:", " ".join(["bench", *command[3:]]), f"(x{args.k}, into {out})", flush=True)
    walls = []
    for k in range(args.k):
        t0 = time.perf_counter()
        subprocess.run([*command, "--out", str(out / f"run{k}")], check=False, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        print(f"run {k + 1}/{args.k}: {walls[-1]:.0f} s", flush=True)
    runs = [{r["backend"]: r for r in load_records(out / f"run{k}") if r.get("status") == "ok"}
            for k in range(args.k)]
    backends = sorted(set().union(*runs))
    if any(r.get("scenario") == "inference" for run in runs for r in run.values()):
        _latency_coverage(runs, backends)
        print(f"\nwall time per run: {statistics.mean(walls):.0f} s (mean of {args.k})")
        return 0
    for label, key, ci_key in METRICS:
        covered = total = 0
        print(f"\n{label} throughput (samples/s): per run | run-to-run CV | intervals containing the median of "
              "the other runs")
        for backend in backends:
            kept = [(run[backend]["metrics"].get(key), run[backend]["metrics"].get(ci_key)) for run in runs
                    if backend in run and run[backend]["metrics"].get(key)]
            values, cis = [v for v, _ in kept], [ci for _, ci in kept]
            if len(values) < 2:
                continue
            cv = statistics.stdev(values) / statistics.mean(values)
            others = [statistics.median(values[:k] + values[k + 1:]) for k in range(len(values))]
            hits = sum(1 for ci, middle in zip(cis, others, strict=False)
                       if ci and ci[0] is not None and ci[0] <= middle <= ci[1])
            covered, total = covered + hits, total + len(cis)
            print(f"  {backend:<11} {' '.join(f'{v:>9,.0f}' for v in values)} | CV {cv:5.1%} | {hits}/{len(cis)}")
        if total:
            print(f"  coverage: {covered}/{total} = {covered / total:.0%}")
    print(f"\nwall time per run: {statistics.mean(walls):.0f} s (mean of {args.k})")
    return 0


def _latency_coverage(runs: list[dict[str, dict]], backends: list[str]) -> None:
    """Inference records: per backend and batch size, each run's p50 and whether its ``p50_ci95``
    contains the median p50 of the other runs (leave-one-out, as for throughput)."""
    covered = total = 0
    print("\np50 latency (µs): per run | run-to-run CV | intervals containing the median of the other runs")
    for backend in backends:
        rows_per_run = [{row["batch_size"]: row for row in
                         ((run[backend].get("metrics") or {}).get("inference") or {}).get("batches") or []}
                        for run in runs if backend in run]
        for batch in sorted(set().union(*rows_per_run)):
            kept = [(rows[batch].get("p50_s"), rows[batch].get("p50_ci95")) for rows in rows_per_run
                    if batch in rows and rows[batch].get("p50_s")]
            values, cis = [v for v, _ in kept], [ci for _, ci in kept]
            if len(values) < 2:
                continue
            cv = statistics.stdev(values) / statistics.mean(values)
            others = [statistics.median(values[:k] + values[k + 1:]) for k in range(len(values))]
            hits = sum(1 for ci, middle in zip(cis, others, strict=False)
                       if ci and ci[0] is not None and ci[0] <= middle <= ci[1])
            covered, total = covered + hits, total + len(cis)
            print(f"  {backend:<11} batch {batch:<4} {' '.join(f'{v * 1e6:>9,.1f}' for v in values)} | "
                  f"CV {cv:5.1%} | {hits}/{len(cis)}")
    if total:
        print(f"  coverage: {covered}/{total} = {covered / total:.0%}")


if __name__ == "__main__":
    sys.exit(main())
