"""``bench ab BASE NEW``: run one matrix on two revisions, alternately, on this machine, and judge.

This is the regression gate CI should use (as ``asv continuous`` does): no baseline from another
machine or another day. BASE and NEW are git revisions of the repository in the current folder, or
two Python environments with fwbench installed (a venv folder or its ``python``).

1. **Prepare** each side once: a git worktree of the revision (in a temporary folder) installed with
   ``pip install --no-deps --target`` into a folder of its own; it runs with *this* environment's
   Python and dependencies, with that folder first on ``PYTHONPATH`` (so its ``fwbench``, its
   backends, tasks and entry points are the revision's). The same revision twice is prepared once.
2. **Run** the matrix ``--repeat`` times per side, each time through the side's own ``bench run``
   (one fresh process per cell), alternating sides in ABBA blocks — A B, B A, A B ... — so drift of
   the machine and any order effect hit both sides alike, and block *i* of A and of B form a pair.
3. **Judge**: each side's runs become one record per cell (`fwbench.measure.repeats.merge_repeats`), kept
   in ``OUT/base/cells`` and ``OUT/new/cells`` (each repeat keeps its block index, the record its
   last repeat's time); `fwbench.gate.compare.compare` pairs block *i* of BASE with block *i* of NEW (a
   paired t on log values, over the blocks both sides have) and the table and exit code are those
   of ``bench compare`` — which, given ``OUT/base OUT/new``, reads the same cells and pairs alike.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

DEFAULT_AB_REPEATS = 8  # what the gate uses: its error rates are measured (docs/statistics.md)
TIMED_OUT = 124  # run_block's code for a block stopped at --block-timeout


@dataclass
class Side:
    """One side of the comparison: how to start its ``bench`` and where its records go."""

    name: str  # "BASE" or "NEW"
    spec: str  # what the user gave: a revision or an environment
    python: str
    pythonpath: str | None = None  # the revision's install folder, first on PYTHONPATH
    commit: str | None = None
    help_text: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        return f"{self.spec} ({self.commit[:10]})" if self.commit else self.spec

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def bench(self, *args: str, timeout: float | None = None, log=None) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-m", "fwbench.cli", *args], env=self.env(), text=True,
                              stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT if log else subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def _environment_python(spec: str) -> str | None:
    """The Python of an environment given as a venv folder or its interpreter, else None."""
    path = Path(spec)
    if path.is_dir() and (path / "bin" / "python").exists():
        return str(path / "bin" / "python")
    if path.is_file() and os.access(path, os.X_OK) and path.name.startswith("python"):
        return str(path)
    return None


def resolve_commit(repo: Path, spec: str, name: str) -> str:
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise UsageError(f"{name} {spec!r} is not a revision of {repo} (git rev-parse found no commit); "
                         "use a branch, tag or commit hash (e.g. HEAD~1), or a venv folder")
    return found.stdout.strip()


def find_repo(start: Path) -> Path:
    top = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True, check=False)
    if top.returncode != 0:
        raise UsageError(f"{start} is not inside a git repository; run it in a clone of the project, "
                         "or give BASE and NEW as two venv folders")
    return Path(top.stdout.strip())


def _install_revision(repo: Path, commit: str, work: Path, stack: ExitStack) -> str:
    """A worktree of ``commit`` installed into a folder of its own; returns that folder."""
    src, site = work / f"src-{commit[:12]}", work / f"site-{commit[:12]}"
    added = _git(repo, "worktree", "add", "--detach", "--force", str(src), commit)
    if added.returncode != 0:
        raise UsageError(f"git worktree add {commit[:12]} failed: {_last(added.stderr)}")
    stack.callback(_git, repo, "worktree", "remove", "--force", str(src))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
                             capture_output=True, text=True, check=False)
    if install.returncode != 0:
        raise UsageError(f"installing revision {commit[:12]} failed: {_last(install.stderr)}")
    return str(site)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def prepare_sides(base: str, new: str, work: Path, stack: ExitStack, cwd: Path | None = None,
                  progress=lambda message: None) -> tuple[Side, Side]:
    """BASE and NEW ready to run. Bad revisions are refused before anything is built."""
    sides, repo, specs = [], None, {}
    for name, spec in (("BASE", base), ("NEW", new)):
        python = _environment_python(spec)
        if python:
            sides.append(Side(name, spec, python))
            continue
        repo = repo or find_repo(cwd or Path.cwd())
        sides.append(Side(name, spec, sys.executable, commit=resolve_commit(repo, spec, name)))
    for side in sides:
        if side.commit:
            if side.commit not in specs:
                progress(f"preparing {side.label}: git worktree + pip install --no-deps --target")
                specs[side.commit] = _install_revision(repo, side.commit, work, stack)
            side.pythonpath = specs[side.commit]
    for side in sides:
        shown = side.bench("run", "--help", timeout=300)
        if shown.returncode != 0:
            raise UsageError(f"{side.name} {side.label} cannot start `bench`: {_last(shown.stderr)}")
        side.help_text = shown.stdout
    return sides[0], sides[1]


def _block_args(side: Side, matrix: list[str]) -> list[str]:
    extra = []
    if "--repeat" in side.help_text:
        extra += ["--repeat", "1"]  # one process per cell per block; the blocks are the repeats
    if "--peak" in side.help_text:
        extra += ["--peak", "off"]  # % of peak is not compared; measuring it would cost minutes
    return ["run", *matrix, *extra, "--no-progress"]


def run_block(side: Side, matrix: list[str], out: Path, block: int, timeout: float | None) -> int:
    """One run of the matrix by ``side`` into ``out/blocks/blockNNN``; its log in ``out/logs``.

    Returns the exit code of its `bench run`, or 124 when the block ran past ``timeout`` (killed;
    the cells it did not finish count as timed out in that block, `merge_blocks`)."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log_path = out / "logs" / f"block{block:03d}.log"
    where = out / "blocks" / f"block{block:03d}"
    with open(log_path, "w") as log:
        try:
            done = side.bench(*_block_args(side, matrix), "--out", str(where), timeout=timeout, log=log)
        except subprocess.TimeoutExpired:
            log.write(f"\nbench ab: block {block} ran past --block-timeout {timeout:g} s and was stopped\n")
            return TIMED_OUT
    reason = _last(log_path.read_text()).removeprefix("bench: error: ")
    if done.returncode == 2:
        raise UsageError(f"{side.name} {side.label} refused the matrix: {reason}")
    if done.returncode != 0 and not list(where.glob("*/run.json")):
        # nothing ran (e.g. a dataset that cannot be fetched): every further block would fail alike
        raise UsageError(f"{side.name} {side.label} could not start the matrix: {reason}")
    return done.returncode


def merge_blocks(blocks: list[list[dict]] | dict[int, list[dict]], timed_out: dict[int, float] | None = None
                 ) -> list[dict]:
    """One record per cell from runs of the same matrix: ``blocks[i]`` = the records of block *i*
    (a list counts from 1). Each repeat keeps its block index, so two sides pair by block even when
    a block is missing on one of them. A cell that failed in any block, or that a block stopped at
    its ``timed_out[block]`` seconds did not finish, is that failure."""
    from ..measure.repeats import merge_repeats

    blocks = dict(enumerate(blocks, start=1)) if isinstance(blocks, list) else blocks
    by_cell: dict[str, list[dict]] = {}
    for i, records in sorted(blocks.items()):
        for record in records:
            by_cell.setdefault(record["cell_id"], []).append({**record, "repeat": i, "block": i})
    for i, seconds in sorted((timed_out or {}).items()):
        for records in by_cell.values():
            if not any(r["block"] == i for r in records):
                records.append({**records[0], "status": "timeout", "repeat": i, "block": i,
                                "error": f"block {i} ran past --block-timeout {seconds:g} s", "metrics": {}})
    merged = []
    for _cell_id, records in sorted(by_cell.items()):
        records.sort(key=lambda r: r["block"])
        bad = [r for r in records if r.get("status") != "ok"]
        if bad:
            final = dict(bad[0])
            final["error"] = f"repeat {bad[0]['repeat']}/{len(records)}: {bad[0].get('error')}"
        else:
            final = merge_repeats(records)
        final["ab"] = {"blocks": [r["block"] for r in records]}
        merged.append(final)
    return merged


def merged_side(out: Path, timed_out: dict[int, float] | None = None) -> list[dict]:
    """`merge_blocks` of the side's blocks in ``out/blocks/blockNNN``, written to ``out/cells``."""
    from ..records.results import load_records, write_record

    blocks = {int(p.name.removeprefix("block")): load_records(p) for p in sorted((out / "blocks").glob("block*"))
              if p.is_dir() and p.name.removeprefix("block").isdigit() and list(p.glob("*/run.json"))}
    merged = merge_blocks(blocks, timed_out)
    for record in merged:
        record.pop("_path", None)
        record["ab"]["side"] = out.name
        record["_path"] = str(write_record(record, out / "cells"))
    return merged


def order(blocks: int) -> list[tuple[int, int]]:
    """(block, side index) in ABBA order: A B, B A, A B, ... (side 0 = BASE)."""
    steps = []
    for block in range(1, blocks + 1):
        sides = (0, 1) if block % 2 else (1, 0)
        steps += [(block, s) for s in sides]
    return steps


def matrix_args(args) -> list[str]:
    """The ``bench run`` options of the matrix both sides run."""
    out: list[str] = []
    if args.backend:
        out += ["--backend", ",".join(args.backend)]
    out += ["--task", ",".join(args.task)]
    if args.dataset:
        out += ["--dataset", args.dataset]
    if args.profile:
        out += ["--profile", args.profile]
    for item in args.overrides:
        out += ["--set", item]
    if args.threads:
        out += ["--threads", str(args.threads)]
    if args.device:
        out += ["--device", ",".join(args.device)]
    out += ["--timeout", f"{args.timeout:g}"]
    return out


def cmd_ab(args) -> int:
    from ..run.display import make_console
    from .compare import compare, exit_code, markdown, options, print_result

    threshold, alpha, metrics = options(args)  # refuse bad options before building anything
    if args.repeat < 2:
        raise UsageError(f"--repeat {args.repeat}: bench ab needs at least 2 blocks per side to judge a change "
                         f"(no interval from one); use --repeat {DEFAULT_AB_REPEATS}, the gate's default")
    console = make_console(stderr=True)
    out = (args.out or Path("results")) / f"ab-{time.strftime('%Y%m%d-%H%M%S')}"
    matrix = matrix_args(args)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="fwbench-ab-"))
        stack.callback(shutil.rmtree, work, True)
        base, new = prepare_sides(args.base, args.new, work, stack,
                                  progress=lambda m: console.print(m, style="dim"))
        console.print(f"bench ab: BASE {base.label} vs NEW {new.label}, {args.repeat} block(s) in ABBA order "
                      f"→ {out}")
        sides = (base, new)
        started = time.perf_counter()
        timed_out: dict[str, dict[int, float]] = {"BASE": {}, "NEW": {}}
        for block, index in order(args.repeat):
            side = sides[index]
            t0 = time.perf_counter()
            rc = run_block(side, matrix, out / side.name.lower(), block, args.block_timeout)
            if rc == TIMED_OUT:
                timed_out[side.name][block] = args.block_timeout
            state = {0: "ok", TIMED_OUT: "timed out (--block-timeout)"}.get(rc, "some cell failed")
            console.print(f"  block {block}/{args.repeat} {side.name:<4} {side.label}: {state} "
                          f"({time.perf_counter() - t0:.0f} s)", style="dim" if rc == 0 else "yellow")
        records = {side.name: merged_side(out / side.name.lower(), timed_out[side.name]) for side in sides}
    if not records["BASE"] or not records["NEW"]:
        empty = "BASE" if not records["BASE"] else "NEW"
        raise UsageError(f"{empty} produced no records (see the logs in {out / empty.lower() / 'logs'})")
    result = compare(records["BASE"], records["NEW"], threshold, alpha, metrics, paired=True,
                     allow_no_evidence=args.allow_no_evidence, allow_env_change=args.allow_env_change)
    result.threshold_text = args.threshold
    result.notes.append(f"BASE {base.label}, NEW {new.label}: {args.repeat} interleaved block(s), paired by block; "
                        f"{time.perf_counter() - started:.0f} s; records in {out}")
    (out / "compare.md").write_text(markdown(result, args.fail_on, title="fwbench ab"))
    print_result(result, args.format, args.fail_on, title=f"bench ab: BASE {base.label} → NEW {new.label}")
    return exit_code(result, args.fail_on)
