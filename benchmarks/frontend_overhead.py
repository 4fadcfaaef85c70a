"""Frontend overhead: Keras on TensorFlow, JAX and PyTorch, and Flax on JAX, against the raw
engines, on the same tasks, data, weights and threads.

Runs (or reads) ``bench run -b tensorflow,jax,torch,keras,flax -t TASKS --set
backend.engine=tensorflow,jax,torch``: the runner orders cells task by task and engine by engine,
so each frontend cell runs right next to its raw engine's. Prints, per task, each frontend's
overhead = its median step time / the raw engine's, with a percentile-bootstrap 95% interval over
both cells' step times (`fwbench.report.frontends.overhead_ratio`, the numbers of the report's
frontend x engine view). The interval covers step-to-step noise only: on a shared machine,
repeat the run and compare. There, ``--threads 1`` is the steadier choice: with 2 threads on
2 busy cores, every OpenMP region of a many-small-ops step (Keras on torch) waits for a core.

Usage: ``python benchmarks/frontend_overhead.py [--tasks mlp_mnist,cnn_mnist] [--profile quick]
[--threads N] [--out DIR] [--records DIR]`` (a few minutes on 2 cores; ``--records`` only reads an earlier run).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mlp_mnist,cnn_mnist")
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--profile", default="quick", choices=["quick", "full"])
    parser.add_argument("--threads", type=int, default=None, help="threads per cell (default: all cores)")
    parser.add_argument("--out", type=Path, default=Path("results/frontend_overhead"))
    parser.add_argument("--records", type=Path, default=None, help="read this run folder instead of running")
    args = parser.parse_args()
    folder = args.records
    if folder is None:
        cmd = [sys.executable, "-m", "fwbench.cli", "run", "-b", "tensorflow,jax,torch,keras,flax",
               "-t", args.tasks, "--dataset", args.dataset, "--profile", args.profile,
               "--set", "backend.engine=tensorflow,jax,torch", "--out", str(args.out), "--peak", "off",
               "--no-progress"] + (["--threads", str(args.threads)] if args.threads else [])
        print(" ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=False)
        folder = args.out
    from fwbench.records.results import load_records
    from fwbench.report.frontends import frontend_grids

    for grid in frontend_grids(load_records(folder)):
        print(f"\n{grid['label']}")
        for row in grid["rows"]:
            cells = "  ".join(f"{e}: {c['thr'] or '—'} (acc {c['acc'] or '—'})"
                              for e, c in zip(grid["engines"], row["cells"]))
            print(f"  {row['frontend']:6s} {cells}")
        for o in grid["overheads"]:
            print(f"  overhead {o['frontend']} on {o['engine']}: {o['ratio']} (95% {o['interval'] or '—'}) {o['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
