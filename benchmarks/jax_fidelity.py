"""How close is fwbench's JAX trainer to a minimal hand-written JAX + optax loop?

Two workloads, both batch 128 with Adam: the MLP 784-128-10 and a conv layer 3->32 3x3 on 32x32
images (conv -> global average pool -> dense 10, so the convolution dominates). For each, the
suite's `JaxTrainer.train_step` + `sync` and a hand-written ``jax.jit`` step of the same maths
(NHWC, ``optax.adam``, donated state) run in the same process and threads, in alternating rounds;
the median step time of each is compared (goal: suite >= 0.95x the hand loop's throughput).
Compile time is measured apart (AOT ``lower().compile()``). A last section times the suite in
both of its image layouts (NHWC default, NCHW canonical) on the conv workload and the small
ResNet, the measurement behind the default layout.

Usage: ``python benchmarks/jax_fidelity.py [--threads N] [--rounds R] [--no-layouts]`` (~1-2 min).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

MLP_LAYERS = [{"type": "flatten"}, {"type": "dense", "units": 128, "activation": "relu"},
              {"type": "dense", "units": 10, "activation": "softmax"}]
CONV_LAYERS = [{"type": "conv2d", "filters": 32, "kernel": 3, "padding": "same", "activation": "relu"},
               {"type": "global_avg_pool"}, {"type": "dense", "units": 10, "activation": "softmax"}]
BATCH = 128
LR = 1e-3


def suite_trainer(layers, input_shape, layout="NHWC", name="bench"):
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights
    from fwbench.spec import task_from_dict
    from fwbench_jax.backend import JaxBackend

    task = task_from_dict({
        "task": {"name": name}, "dataset": {"name": "synthetic"},
        "model": {"layers": layers, "init": "he_uniform"},
        "optimizer": {"name": "adam", "lr": LR},
        "training": {"batch_size": BATCH, "epochs": 1},
        "backend": {"layout": layout},
    }, "<bench>")
    info = analyze(task.model, input_shape, 10)
    weights = initial_weights(task.model, info, seed=0)
    return JaxBackend().build(BuildRequest(task, info, weights, "cpu", 10)), weights


def hand_written(kind: str, weights: dict, x: np.ndarray, y: np.ndarray):
    """A minimal idiomatic JAX loop: returns ``(step() -> handle, compile seconds)``."""
    import jax
    import jax.numpy as jnp
    import optax

    if kind == "mlp":
        params = {"w1": weights["1.weight"], "b1": weights["1.bias"],
                  "w2": weights["2.weight"], "b2": weights["2.bias"]}

        def forward(p, xb):
            h = jax.nn.relu(xb.reshape(xb.shape[0], -1) @ p["w1"] + p["b1"])
            return h @ p["w2"] + p["b2"]
    else:
        params = {"k": weights["0.weight"].transpose(2, 3, 1, 0), "kb": weights["0.bias"],
                  "w": weights["2.weight"], "b": weights["2.bias"]}
        x = x.transpose(0, 2, 3, 1)  # NHWC

        def forward(p, xb):
            h = jax.lax.conv_general_dilated(xb, p["k"], (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.nn.relu(h + p["kb"]).mean(axis=(1, 2))
            return h @ p["w"] + p["b"]

    opt = optax.adam(LR)

    def loss_fn(p, xb, yb):
        logits = forward(p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), logits

    def step(p, s, xb, yb):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, xb, yb)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, (loss, jnp.sum(jnp.argmax(logits, -1) == yb))

    params = jax.device_put(params)
    state = [params, opt.init(params)]
    xb, yb = jax.device_put((np.ascontiguousarray(x), y.astype(np.int32)))
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(state[0], state[1], xb, yb).compile()
    compile_s = time.perf_counter() - start

    def run():
        state[0], state[1], handle = compiled(state[0], state[1], xb, yb)
        return handle

    return run, compile_s


def time_steps(step, sync, n: int) -> list[float]:
    """Per-step seconds, each step followed by a sync (as the suite times it)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    return times


def compare(kind: str, layers, input_shape, rounds: int, steps: int) -> float:
    import jax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, *input_shape)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    trainer, weights = suite_trainer(layers, input_shape)
    batch = trainer.to_device(x, y)
    trainer.sync(trainer.train_step(batch, LR))  # compiles (AOT, timed inside)
    hand, hand_compile = hand_written(kind, weights, x, y)
    jax.block_until_ready(hand())

    suite_times, hand_times = [], []
    for _ in range(rounds):  # alternate so drifting load on shared cores hits both alike
        suite_times += time_steps(functools.partial(trainer.train_step, batch, LR), trainer.sync, steps)
        hand_times += time_steps(hand, jax.block_until_ready, steps)
    suite_med, hand_med = statistics.median(suite_times), statistics.median(hand_times)
    ratio = hand_med / suite_med  # suite throughput / hand throughput
    print(f"\n[{kind}] batch {BATCH}, Adam, {rounds} rounds x {steps} steps each, per-step sync")
    print(f"  compile          suite {trainer.compile_info['compile_s']:.3f} s   hand {hand_compile:.3f} s")
    print(f"  median step      suite {suite_med * 1e3:8.3f} ms   hand {hand_med * 1e3:8.3f} ms")
    print(f"  throughput       suite {BATCH / suite_med:10.0f} /s  hand {BATCH / hand_med:10.0f} /s")
    print(f"  ratio suite/hand {ratio:.3f}x  ({'meets' if ratio >= 0.95 else 'BELOW'} the 0.95x goal)")
    return ratio


def layouts(rounds: int, steps: int) -> None:
    from fwbench.spec import load_task

    rng = np.random.default_rng(1)
    resnet = [_layer_dict(layer) for layer in load_task(ROOT / "tasks" / "resnet_cifar.toml").model.layers]
    print(f"\n[layout] suite train step, median ms over {rounds} alternating rounds x {steps} steps "
          "(NHWC is the default)")
    x = rng.normal(size=(BATCH, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    for label, layers in (("conv 3->32 3x3", CONV_LAYERS), ("resnet_cifar", resnet)):
        runs = {}
        for layout in ("NHWC", "NCHW"):
            trainer, _ = suite_trainer(layers, (3, 32, 32), layout=layout)
            batch = trainer.to_device(x, y)
            trainer.sync(trainer.train_step(batch, LR))
            runs[layout] = (trainer, functools.partial(trainer.train_step, batch, LR), [])
        for _ in range(rounds):
            for trainer, step, times in runs.values():
                times += time_steps(step, trainer.sync, steps)
        cells = [f"{layout} {statistics.median(times) * 1e3:8.2f} ms (compile "
                 f"{trainer.compile_info['compile_s']:.2f} s)" for layout, (trainer, _, times) in runs.items()]
        print(f"  {label:16s} " + "   ".join(cells))


def _layer_dict(layer) -> dict:
    from fwbench.spec import spec_to_dict

    return {k: v for k, v in spec_to_dict(layer).items() if v is not None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-layouts", action="store_true")
    args = parser.parse_args(argv)

    from fwbench_jax.backend import JaxBackend

    facts = JaxBackend().configure(device="cpu", threads=args.threads)  # before jax is imported
    print(f"jax {facts['jax']} / jaxlib {facts['jaxlib']} / optax {facts['optax']} on {facts['devices']}, "
          f"threads {args.threads} (affinity {facts['cpu_affinity']}), XLA_FLAGS={facts['XLA_FLAGS']!r}")
    ratios = {"mlp": compare("mlp", MLP_LAYERS, (1, 28, 28), args.rounds, 400),
              "conv": compare("conv", CONV_LAYERS, (3, 32, 32), args.rounds, 12)}
    if not args.no_layouts:
        layouts(rounds=3, steps=3)
    print("\nsummary: " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
