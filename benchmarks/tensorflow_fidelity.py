"""How close is fwbench's TensorFlow trainer to a minimal hand-written TensorFlow loop?

Two workloads, both batch 128 with Adam (lr 1e-3): the MLP 784-128-10 and a conv layer 3->32 3x3
on 32x32 images (conv -> global average pool -> dense 10, so the convolution dominates; the same
workloads as the other backends' fidelity scripts). For each, the suite's
`TensorflowTrainer.train_step` + `sync` and a hand-written ``tf.function(jit_compile=True)`` step of
the same maths (NHWC, ``"SAME"`` padding, Adam written out, loss and correct count returned) run in
the same process and threads, in alternating rounds; the median step time of each is compared
(goal: suite >= 0.95x the hand loop's throughput). The hand loop is also timed when called
through its concrete function, the dispatch the suite uses (`fwbench_tensorflow.trainer.Compiled`),
so the comparison shows both the dispatch saving and the step itself. Both are synced the way the suite syncs: one
host read of the step's result after every step. The first step (trace + XLA compile) is timed
apart. With ``--graph`` the same comparison also runs without XLA (``compile = "graph"`` against a
plain ``tf.function``), which shows what XLA costs or gains on this CPU.

Usage: ``python benchmarks/tensorflow_fidelity.py [--threads N] [--rounds R] [--graph]``
(about 1 minute; 2 with ``--graph``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

MLP_LAYERS = [{"type": "flatten"}, {"type": "dense", "units": 128, "activation": "relu"},
              {"type": "dense", "units": 10, "activation": "softmax"}]
CONV_LAYERS = [{"type": "conv2d", "filters": 32, "kernel": 3, "padding": "same",
                "activation": "relu"},
               {"type": "global_avg_pool"}, {"type": "dense", "units": 10, "activation": "softmax"}]
WORKLOADS = {"mlp": (MLP_LAYERS, (1, 28, 28)), "conv": (CONV_LAYERS, (3, 32, 32))}
BATCH = 128
LR = 1e-3
B1, B2, EPS = 0.9, 0.999, 1e-8


def suite_trainer(backend, kind: str, mode):
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights
    from fwbench.spec import task_from_dict

    layers, shape = WORKLOADS[kind]
    task = task_from_dict({
        "task": {"name": f"fidelity_{kind}"}, "dataset": {"name": "synthetic"},
        "model": {"layers": layers, "init": "he_uniform"},
        "optimizer": {"name": "adam", "lr": LR},
        "training": {"batch_size": BATCH, "epochs": 1},
        "backend": {"compile": mode},
    }, "<bench>")
    info = analyze(task.model, shape, 10)
    weights = initial_weights(task.model, info, seed=0)
    return backend.build(BuildRequest(task, info, weights, "cpu", 10)), weights


def hand_written(kind: str, weights: dict, jit: bool):
    """A minimal idiomatic TF loop of the same maths: returns ``step(x, y) -> (2,) tensor``."""
    import tensorflow as tf

    if kind == "mlp":
        names = ["1.weight", "1.bias", "2.weight", "2.bias"]
        params = [tf.Variable(weights[n]) for n in names]

        def logits_of(x):
            w1, b1, w2, b2 = params
            h = tf.nn.relu(tf.nn.bias_add(tf.matmul(tf.reshape(x, [-1, 784]), w1), b1))
            return tf.nn.bias_add(tf.matmul(h, w2), b2)
    else:
        kernel = weights["0.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO, once
        params = [tf.Variable(kernel), tf.Variable(weights["0.bias"]),
                  tf.Variable(weights["2.weight"]), tf.Variable(weights["2.bias"])]

        def logits_of(x):
            k, b, w, c = params
            h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, k, 1, "SAME"), b))
            return tf.nn.bias_add(tf.matmul(tf.reduce_mean(h, axis=[1, 2]), w), c)

    ms = [tf.Variable(tf.zeros_like(p)) for p in params]
    vs = [tf.Variable(tf.zeros_like(p)) for p in params]
    t = tf.Variable(0.0)

    @tf.function(jit_compile=jit, autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = logits_of(x)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, params)
        t.assign_add(1.0)
        c1, c2 = 1.0 - B1 ** t, 1.0 - B2 ** t
        for p, g, m, v in zip(params, grads, ms, vs, strict=True):
            m.assign(B1 * m + (1 - B1) * g)
            v.assign(B2 * v + (1 - B2) * g * g)
            p.assign_sub(LR * (m / c1) / (tf.sqrt(v / c2) + EPS))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.float32))
        return tf.stack([loss, correct])

    return step


def timed(fn, steps: int) -> tuple[float, float]:
    """Mean wall and CPU seconds per call over ``steps`` calls of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def compare(backend, kind: str, mode, rounds: int) -> dict:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    _, shape = WORKLOADS[kind]
    x = rng.normal(size=(BATCH, *shape)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)

    trainer, weights = suite_trainer(backend, kind, mode)
    batch = trainer.to_device(x, y)
    step = hand_written(kind, weights, jit=mode is True)
    hx, hy = tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(y)

    concrete = hand_written(kind, weights, jit=mode is True).get_concrete_function(hx, hy)

    sides = {
        "suite": lambda: trainer.sync(trainer.train_step(batch, LR)),
        "hand": lambda: step(hx, hy).numpy(),
        # the same hand loop called through its concrete function, as the suite does
        "hand_cf": lambda: concrete(hx, hy).numpy(),
    }
    first = {name: timed(fn, 1)[0] for name, fn in sides.items()}
    probe = timed(sides["suite"], 3)[0]
    steps = max(3, min(300, int(0.2 / max(probe, 1e-5))))  # ~0.2 s per round and side
    samples = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            samples[name].append(timed(fn, steps))
    med = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
    cpu = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
    return {"kind": kind, "mode": trainer.compile_info["mode"], "first": first, "median": med,
            "cpu": cpu, "steps": steps, "ratio": med["hand"] / med["suite"],
            "ratio_cf": med["hand_cf"] / med["suite"], "cpu_ratio": cpu["hand"] / cpu["suite"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--graph", action="store_true", help="also compare without XLA")
    args = parser.parse_args()

    from fwbench_tensorflow.backend import TensorflowBackend

    backend = TensorflowBackend()
    facts = backend.configure(device="cpu", threads=args.threads)
    print(f"tensorflow {facts['version']} on {facts['device_name']}: intra-op threads "
          f"{facts['intra_op_threads']}, inter-op {facts['inter_op_threads']}, batch {BATCH}, "
          f"Adam, {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}")
    header = (f"{'workload':8} {'mode':6} {'first suite':>11} {'first hand':>10} "
              f"{'suite ms':>9} {'hand ms':>8} {'suite/s':>8} {'hand/s':>8} {'ratio':>6} "
              f"{'cpu ratio':>9} {'hand_cf ms':>10} {'ratio cf':>8}")
    print(header)
    results = []
    for mode in (True, "graph") if args.graph else (True,):
        for kind in WORKLOADS:
            r = compare(backend, kind, mode, args.rounds)
            results.append(r)
            med, first = r["median"], r["first"]
            print(f"{kind:8} {r['mode']:6} {first['suite']:10.2f}s {first['hand']:9.2f}s "
                  f"{med['suite'] * 1e3:9.3f} {med['hand'] * 1e3:8.3f} "
                  f"{BATCH / med['suite']:8.0f} {BATCH / med['hand']:8.0f} {r['ratio']:5.2f}x "
                  f"{r['cpu_ratio']:8.2f}x {med['hand_cf'] * 1e3:10.3f} {r['ratio_cf']:7.2f}x",
                  flush=True)
    print("ratio = suite throughput / hand-written throughput (median wall time per step, "
          "goal >= 0.95x); cpu ratio = the same from process CPU time, less sensitive to other "
          "load on the machine; hand_cf / ratio cf = the hand loop called through its concrete "
          "function (no tf.function dispatch), as the suite calls its step. 'first' = first call "
          "(trace + compile + one step).")
    return 0 if all(r["ratio"] >= 0.95 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
