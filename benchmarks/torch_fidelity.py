"""How much does the suite's torch route cost against a hand-written PyTorch loop?

For two workloads, the same maths is run two ways in one process with the same threads:

* suite: ``TorchBackend().build(...)`` then ``trainer.train_step(batch, lr)`` (+ ``sync``), the
  calls the suite times;
* hand: a minimal hand-written loop (``nn.Sequential``, ``F.cross_entropy``, ``backward``, the same
  optimizer implementation, ``zero_grad(set_to_none=True)``), also setting the lr and counting
  correct predictions each step, as the suite's step does.

Workloads: MLP 784-128-10 (batch 128, Adam) and conv2d 3->32 3x3 'same' on 32x32 inputs
(batch 128) + flatten + dense 10 (Adam). Rounds of the two are interleaved and the median
throughput of each is reported on the wall clock and on the process CPU clock (steadier when other
programs share the cores), with the ratio suite/hand (goal >= 0.95). Both start from the
same weights and see the same batches; their final weights are compared to show it is the same
maths. Then the first step (which includes compilation) is timed apart from the steady state for
``compile = false`` and ``compile = true`` (inductor): with a cold cache (a fresh
``TORCHINDUCTOR_CACHE_DIR``), with a warm on-disk cache (``torch._dynamo.reset()`` first: what a
new cell process sees once the cache is filled) and in the same process (the graph is reused).

Run: ``.venv/bin/python benchmarks/torch_fidelity.py [--threads N] [--rounds R]`` (~1 min on
2 cores; ``--threads 1`` gives the steadiest numbers on a shared machine).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

if "torch" not in sys.modules and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    # a fresh cache, so the cold compile time is what a new user sees; removed at exit
    _CACHE = tempfile.mkdtemp(prefix="fwbench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import numpy as np
import torch
import torch.nn.functional as F
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import task_from_dict
from fwbench_torch.backend import TorchBackend
from torch import nn

BATCH = 128
LR = 1e-3
WORKLOADS = {
    "mlp 784-128-10": (
        (1, 28, 28),
        [
            {"type": "flatten"},
            {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    ),
    "conv 3->32 3x3 + dense 10": (
        (3, 32, 32),
        [
            {"type": "conv2d", "filters": 32, "kernel": 3, "padding": "same", "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    ),
}


def make_task(layers, compile_: bool):
    raw = {
        "dataset": {"name": "synthetic"},
        "model": {"layers": layers},
        "optimizer": {"name": "adam", "lr": LR},
        "training": {"batch_size": BATCH, "epochs": 1},
        "backend": {"compile": compile_},
    }
    return task_from_dict(raw, "<torch_fidelity>")


def build_suite(shape, layers, compile_: bool = False):
    task = make_task(layers, compile_)
    info = analyze(task.model, shape, 10)
    weights = initial_weights(task.model, info, 0)
    return TorchBackend().build(BuildRequest(task, info, weights, "cpu", 10)), weights


def hand_model(shape, layers, weights) -> nn.Sequential:
    """The same network written by hand, loaded with the canonical weights."""
    mods: list[nn.Module] = []
    c = shape[0]
    for i, spec in enumerate(layers):
        if spec["type"] == "flatten":
            mods.append(nn.Flatten())
            continue
        w, b = torch.from_numpy(weights[f"{i}.weight"]), torch.from_numpy(weights[f"{i}.bias"])
        if spec["type"] == "conv2d":
            m = nn.Conv2d(c, spec["filters"], spec["kernel"], padding=spec["kernel"] // 2)
            m.weight.data.copy_(w)
        else:
            m = nn.Linear(w.shape[0], w.shape[1])
            m.weight.data.copy_(w.T)
        m.bias.data.copy_(b)
        mods.append(m)
        if spec.get("activation") == "relu":
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def make_batches(shape, n=8):
    rng = np.random.default_rng(0)
    return [
        (
            rng.normal(size=(BATCH, *shape)).astype(np.float32),
            rng.integers(0, 10, BATCH).astype(np.int64),
        )
        for _ in range(n)
    ]


class HandLoop:
    """The minimal loop; ``impl`` picks the optimizer implementation (the suite's, or torch's
    default when None)."""

    def __init__(self, model: nn.Module, impl: str | None):
        self.model = model.train()
        kw = (
            {}
            if impl is None
            else ({"fused": True} if impl == "fused" else {"foreach": impl == "foreach"})
        )
        self.opt = torch.optim.Adam(model.parameters(), lr=LR, **kw)

    def step(self, x, y, lr):
        for g in self.opt.param_groups:
            g["lr"] = lr
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach(), (logits.detach().argmax(1) == y).sum()


@dataclass
class Rates:
    """Steps per second of the rounds, on the wall clock and on this process's CPU clock.

    On a shared machine the CPU clock is the steadier one: time spent waiting for a core is not
    counted (it does count the threads' spin-waits, alike for both loops).
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def measure(self, step, batches, n) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            step(*batches[i % len(batches)])
        self.wall.append(n / (time.perf_counter() - wall))
        self.cpu.append(n / max(time.process_time() - cpu, 1e-9))

    def median(self, clock: str) -> float:
        return statistics.median(getattr(self, clock))

    def best(self, clock: str) -> float:
        return max(getattr(self, clock))

    def spread(self, clock: str) -> float:
        values = getattr(self, clock)
        return (max(values) - min(values)) / statistics.median(values)


def calibrate(step, batches, target_s=0.3) -> int:
    """Steps per round so that a round lasts about ``target_s`` (after 3 warm-up steps)."""
    probe = Rates()
    probe.measure(step, batches, 3)
    probe.measure(step, batches, 5)
    return max(5, int(target_s * probe.wall[-1]))


def fidelity(name, shape, layers, rounds) -> None:
    trainer, weights = build_suite(shape, layers)
    impl = trainer.compile_info["optimizer"]
    hand = HandLoop(hand_model(shape, layers, weights), impl)
    hand_default = HandLoop(hand_model(shape, layers, weights), None)
    raw = make_batches(shape)
    suite_batches = [trainer.to_device(x, y) for x, y in raw]
    hand_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in raw]

    def suite_step(x, y):
        trainer.sync(trainer.train_step((x, y), LR))

    runs = {
        "suite": (suite_step, suite_batches),
        "hand": (lambda x, y: hand.step(x, y, LR), hand_batches),
        "hand_default": (lambda x, y: hand_default.step(x, y, LR), hand_batches),
    }
    n = min(calibrate(step, batches) for step, batches in runs.values())
    rates = {key: Rates() for key in runs}
    for _ in range(rounds):  # interleaved, so drifting load on a shared machine hits all alike
        for key, (step, batches) in runs.items():
            rates[key].measure(step, batches, n)
    suite, hand_r, default = rates["suite"], rates["hand"], rates["hand_default"]

    got = trainer.get_weights()
    drift = max(
        float(np.abs(got[f"{i}.weight"] - canonical(m)).max())
        for i, m in _weighted(layers, hand.model)
    )
    print(
        f"\n{name}: batch {BATCH}, Adam, {rounds} interleaved rounds of {n} steps "
        f"(optimizer impl: {impl})"
    )
    for clock in ("wall", "cpu"):
        s_med, h_med = suite.median(clock), hand_r.median(clock)
        print(
            f"  [{clock:4s}] suite TorchTrainer.train_step {s_med:7.1f} steps/s "
            f"({1e3 / s_med:6.2f} ms, spread {suite.spread(clock):4.0%}) | hand-written "
            f"{h_med:7.1f} steps/s ({1e3 / h_med:6.2f} ms, spread {hand_r.spread(clock):4.0%})"
        )
        print(
            f"  [{clock:4s}] ratio suite/hand: median {s_med / h_med:.3f}, best-of-rounds "
            f"{suite.best(clock) / hand_r.best(clock):.3f}   (goal >= 0.95); hand-written with "
            f"torch's default Adam (for-loop on CPU): {default.median(clock):.1f} steps/s"
        )
    print(
        f"  same maths: max |w_suite - w_hand| after {8 + n * rounds} identical steps = {drift:.1e}"
    )


def canonical(m: nn.Module) -> np.ndarray:
    w = m.weight.detach().numpy()
    return w.T if isinstance(m, nn.Linear) else w


def _weighted(layers, model: nn.Sequential):
    """(spec index, hand module) of every layer with weights, in order."""
    modules = [m for m in model if isinstance(m, nn.Linear | nn.Conv2d)]
    indices = [i for i, spec in enumerate(layers) if spec["type"] in ("dense", "conv2d")]
    return list(zip(indices, modules, strict=True))


def first_step(name, shape, layers, rounds) -> None:
    """Build + first step + steady state for eager and torch.compile (cold, warm caches)."""
    raw = make_batches(shape, 4)
    print(f"\n{name}: first step (includes compilation) vs steady state")
    variants = (
        ("eager", False, False),
        ("compile, cold cache", True, False),
        # a new cell process once the cache is filled: in-memory graphs gone, disk cache kept
        ("compile, disk cache", True, True),
        # a second trainer in the same process: the graph is reused (parameters are inputs)
        ("compile, same process", True, False),
    )
    for label, compile_, reset in variants:
        if reset:
            torch._dynamo.reset()
        start = time.perf_counter()
        trainer, _ = build_suite(shape, layers, compile_)
        build_s = time.perf_counter() - start
        batches = [trainer.to_device(x, y) for x, y in raw]
        start = time.perf_counter()
        trainer.sync(trainer.train_step(batches[0], LR))
        first = time.perf_counter() - start

        def step(x, y, trainer=trainer):
            trainer.sync(trainer.train_step((x, y), LR))

        n = calibrate(step, batches)
        rates = Rates()
        for _ in range(rounds):
            rates.measure(step, batches, n)
        print(
            f"  {label:22s} build {build_s * 1e3:6.1f} ms  first step {first:7.3f} s  steady "
            f"{1e3 / rates.median('wall'):6.2f} ms/step wall, {1e3 / rates.median('cpu'):6.2f} "
            "ms/step CPU (medians)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-compile", action="store_true", help="only the eager fidelity part")
    args = parser.parse_args()
    facts = TorchBackend().configure(device="cpu", threads=args.threads)
    print(
        f"torch {facts['torch_version']}, {facts['threads']} threads, {facts['device_name']}, "
        f"inductor cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')}"
    )
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.5:
        print(
            f"warning: load average {load:.1f} on {os.cpu_count()} cores: other programs are "
            "running; wall-clock numbers will be noisy, the CPU-clock ones less so"
        )
    total = time.perf_counter()
    for name, (shape, layers) in WORKLOADS.items():
        fidelity(name, shape, layers, args.rounds)
    if not args.skip_compile:
        for name, (shape, layers) in WORKLOADS.items():
            first_step(name, shape, layers, rounds=3)
    print(f"\ntotal {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
