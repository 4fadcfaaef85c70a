"""A large property-based conformance run: random valid specs, every available backend.

    .venv/bin/python benchmarks/conformance_fuzz.py [--examples 500] [--seed 0] [--backend numpy,torch]

Goal: 0 disagreements on 500 random specs with all four built-in backends. Prints the count, the
seed and the wall time; on a disagreement, the checks that failed and the smallest failing spec
as TOML (hypothesis shrinking), ready to paste into ``tests/fixtures/conformance/``.
The test suite runs a handful of examples (``tests/test_conformance_checks.py``); this is the
long run (about 5 s of CPU per spec with four backends: TensorFlow and JAX compile each variant).
"""
from __future__ import annotations

import argparse
import sys
import time

from fwbench.conformance.fuzz import fuzz
from fwbench.plugins import get_registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default=None, help="comma-separated (default: every available)")
    args = parser.parse_args()
    registry = get_registry()
    names = args.backend.split(",") if args.backend else [
        n for n, b in sorted(registry.backends.items()) if b.availability().ok]
    start = time.strftime("%Y-%m-%d %H:%M:%S")

    def progress(i, raw):
        if i % 25 == 0:
            print(f"  {i} specs...", file=sys.stderr, flush=True)

    result = fuzz(names, args.examples, args.seed, progress, isolate=True)
    print(f"started {start}; {result.examples} specs, seed {args.seed}, backends {', '.join(names)}, "
          f"wall {result.seconds:.0f} s, {result.processes} check process(es)")
    if result.failure is None:
        print("0 disagreements")
        return 0
    print(f"disagreement: {result.failure}")
    print(result.toml)
    return 1


if __name__ == "__main__":
    sys.exit(main())
