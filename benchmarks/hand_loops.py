"""Hand-written CPU training loops for torch, TensorFlow and JAX: the yardstick of ``bench tune``.

Each loop is what a user who knows the framework writes for mlp_mnist (Flatten -> Dense 128 ReLU
-> Dense 10, softmax cross-entropy, Adam lr 1e-3) at batch 128, at its best on a CPU: the whole
training split on the device once, batches sliced there, no host sync per step (one at the end of
a timed window), in each of the framework's precisions (float32; bfloat16 compute over float32
weights) and modes:

* torch: eager and ``torch.compile`` of forward + loss, autocast for bf16, fused Adam;
* tensorflow: a ``tf.function`` step, with XLA (``jit_compile=True``) and without (graph), over
  ``tf.Variable`` weights, Keras-free, the batch gathered inside the step (no eager op per step);
* jax: one ``jax.jit`` step with the state donated (optax Adam).

Every loop runs in its own process (the thread count pinned, ``--threads``, default 1), rounds
interleaved (A B C A B C ...: a busy neighbour hurts them alike); each round times ``--steps``
steps after a warm-up; the report is each loop's median over rounds.

``--suite`` puts the suite's own cell in the same rounds (one ``bench run`` process of
``mlp_mnist`` on ``mnist_5k`` at batch 128 per framework per round) and prints suite / the best
hand loop, for the suite's headline (median step) and its whole-run rate (mean step): issue "each
framework at its best" asks the tuned cell for at least 0.95. ``--suite-set
torch:backend.execution=compiled`` (repeatable) runs the suite's cell in another configuration, e.g.
the one ``bench tune`` picked.

Run: ``.venv/bin/python benchmarks/hand_loops.py [--rounds 3] [--steps 300] [--suite] [--fp32-only]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH, N, FEATURES, HIDDEN, CLASSES, LR = 128, 4096, 784, 128, 10, 1e-3


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, N)


def torch_loop(steps: int, threads: int, bf16: bool, compile_: bool = False) -> float:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x_np, y_np = data()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)

    def forward(xb, yb):
        if bf16:  # autocast: the matmuls in bfloat16, the loss and the weights in float32
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(xb)
            return F.cross_entropy(logits.float(), yb)
        return F.cross_entropy(model(xb), yb)

    loss_fn = torch.compile(forward) if compile_ else forward

    def step(i):
        s = (i * BATCH) % (N - BATCH)
        loss = loss_fn(x[s:s + BATCH], y[s:s + BATCH])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(20):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    float(loss)
    return BATCH * steps / (time.perf_counter() - start)


def tensorflow_loop(steps: int, threads: int, bf16: bool, graph: bool = False) -> float:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    x_np, y_np = data()
    x, y = tf.constant(x_np), tf.constant(y_np)
    init = tf.keras.initializers.GlorotUniform(seed=0)
    weights = [tf.Variable(init((FEATURES, HIDDEN))), tf.Variable(tf.zeros(HIDDEN)),
               tf.Variable(init((HIDDEN, CLASSES))), tf.Variable(tf.zeros(CLASSES))]
    m = [tf.Variable(tf.zeros_like(w)) for w in weights]
    v = [tf.Variable(tf.zeros_like(w)) for w in weights]
    t = tf.Variable(0.0)

    cursor = tf.Variable(0, dtype=tf.int32)  # where the next batch begins in the resident split

    # The split is an argument, not a captured constant, and the batch a gather: XLA takes a slice's
    # start as a compile-time constant and would compile the step again for every batch.
    @tf.function(jit_compile=not graph)
    def step(split_x, split_y):
        rows = (cursor * BATCH) % (N - BATCH) + tf.range(BATCH)
        xb, yb = tf.gather(split_x, rows), tf.gather(split_y, rows)
        cursor.assign_add(1)
        with tf.GradientTape() as tape:
            low = [tf.cast(w, tf.bfloat16) for w in weights] if bf16 else weights  # float32 masters
            h = tf.nn.relu((tf.cast(xb, tf.bfloat16) if bf16 else xb) @ low[0] + low[1])
            logits = tf.cast(h @ low[2] + low[3], tf.float32)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        grads = tape.gradient(loss, weights)
        t.assign_add(1.0)
        for w, g, mi, vi in zip(weights, grads, m, v, strict=True):
            mi.assign(0.9 * mi + 0.1 * g)
            vi.assign(0.999 * vi + 0.001 * g * g)
            w.assign_sub(LR * (mi / (1 - 0.9 ** t)) / (tf.sqrt(vi / (1 - 0.999 ** t)) + 1e-8))
        return loss

    for _ in range(20):
        step(x, y)
    begin = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    float(loss)
    return BATCH * steps / (time.perf_counter() - begin)


def jax_loop(steps: int, threads: int, bf16: bool) -> float:
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                          if threads == 1 else "")
    import jax
    import jax.numpy as jnp
    import optax

    x_np, y_np = data()
    x, y = jax.device_put(x_np), jax.device_put(y_np.astype(np.int32))
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w1": jax.random.normal(k1, (FEATURES, HIDDEN)) * 0.05, "b1": jnp.zeros(HIDDEN),
              "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) * 0.05, "b2": jnp.zeros(CLASSES)}
    tx = optax.adam(LR)
    state = (params, tx.init(params))

    def loss_fn(p, xb, yb):
        if bf16:  # compute in bfloat16 over float32 parameters
            p, xb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p), xb.astype(jnp.bfloat16)
        logits = (jax.nn.relu(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(state, start):
        p, o = state
        xb = jax.lax.dynamic_slice_in_dim(x, start, BATCH)
        yb = jax.lax.dynamic_slice_in_dim(y, start, BATCH)
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, o = tx.update(g, o, p)
        return (optax.apply_updates(p, updates), o), loss

    step = jax.jit(step.__wrapped__, donate_argnums=0)
    for i in range(20):
        state, loss = step(state, (i * BATCH) % (N - BATCH))
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, loss = step(state, (i * BATCH) % (N - BATCH))
    jax.block_until_ready((state, loss))
    return BATCH * steps / (time.perf_counter() - start)


LOOPS = {"torch": torch_loop, "tensorflow": tensorflow_loop, "jax": jax_loop}


def child(name: str, steps: int, threads: int, mode: str, bf16: bool) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    kwargs = {"compile_": True} if mode == "compile" else {"graph": True} if mode == "graph" else {}
    print(json.dumps({"name": name, "samples_per_s": LOOPS[name](steps, threads, bf16, **kwargs)}))


def suite_cell(name: str, threads: int, overrides: list[str]) -> tuple[float, float] | None:
    """One ``bench run`` process of the suite's mlp_mnist cell at batch 128.

    Returns its headline samples/s (batch / median step) and its whole-run samples/s (batch / mean
    step, stalls included: what a hand loop's one window measures), or None if the cell failed.
    """
    out = Path(tempfile.mkdtemp(prefix="fwbench-hand-loops-"))
    sets = [arg for o in ["training.batch_size=128", *overrides] for arg in ("--set", o)]
    subprocess.run([sys.executable, "-m", "fwbench.cli", "run", "-b", name, "-t", "mlp_mnist", "--dataset",
                    "mnist_5k", "--threads", str(threads), "--repeat", "1", "--peak", "off", "--no-progress",
                    "-o", str(out), *sets], check=False, capture_output=True)
    from fwbench.records.record import THROUGHPUT, THROUGHPUT_MEAN
    from fwbench.records.results import load_records

    values = [(r["metrics"][THROUGHPUT], r["metrics"][THROUGHPUT_MEAN])
              for r in load_records(out) if r.get("status") == "ok"]
    return values[0] if values else None


#: the loops each framework's user may write on a CPU: (precision, mode); mode "" is the
#: framework's usual one (torch eager, TensorFlow with XLA, jax.jit), "compile" torch.compile and
#: "graph" a tf.function without XLA
VARIANTS = {"torch": [("fp32", ""), ("bf16", ""), ("fp32", "compile"), ("bf16", "compile")],
            "tensorflow": [("fp32", ""), ("bf16", ""), ("fp32", "graph"), ("bf16", "graph")],
            "jax": [("fp32", ""), ("bf16", "")]}


def variant_label(precision: str, mode: str) -> str:
    return f"{precision} {mode}".strip()


def hand_loop(name: str, precision: str, mode: str, steps: int, threads: int) -> float | None:
    """One hand loop in its own process: its samples/s, or None (the reason on stderr)."""
    cmd = [sys.executable, __file__, "--child", name, "--steps", str(steps), "--threads", str(threads),
           "--precision", precision, "--mode", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not line:
        print(f"{name} {variant_label(precision, mode)}: failed: {proc.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)
        return None
    return json.loads(line[-1])["samples_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frameworks", default="torch,tensorflow,jax")
    parser.add_argument("--fp32-only", action="store_true", help="only each framework's usual float32 loop")
    parser.add_argument("--suite", action="store_true", help="also run the suite's cell in each round; print the ratio")
    parser.add_argument("--suite-set", action="append", default=[], metavar="FRAMEWORK:KEY=VALUE",
                        help="an override for the suite's cell of one framework (repeatable)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="", choices=["", "compile", "graph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.threads, args.mode, args.precision == "bf16")
        return 0
    frameworks = args.frameworks.split(",")
    loops: dict[tuple[str, str], list[float]] = {}
    suite: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):  # A B C A B C ...: every loop and the suite's cell in every round
        for name in frameworks:
            for precision, mode in VARIANTS[name][:1] if args.fp32_only else VARIANTS[name]:
                value = hand_loop(name, precision, mode, args.steps, args.threads)
                if value is not None:
                    loops.setdefault((name, variant_label(precision, mode)), []).append(value)
            if args.suite:
                overrides = [o.split(":", 1)[1] for o in args.suite_set if o.split(":", 1)[0] == name]
                value = suite_cell(name, args.threads, overrides)
                if value is None:
                    print(f"{name}: the suite's cell failed", file=sys.stderr)
                else:
                    suite.setdefault(name, []).append(value)
    for name in frameworks:
        medians = {label: statistics.median(v) for (n, label), v in loops.items() if n == name}
        for label, median in medians.items():
            print(f"{name:10s} hand loop {label:<13s} batch {BATCH}: median {median:>10,.0f} samples/s "
                  f"({len(loops[(name, label)])} rounds)")
        if suite.get(name) and medians:
            best_label, best = max(medians.items(), key=lambda kv: kv[1])
            headline = statistics.median(h for h, _ in suite[name])
            total = statistics.median(t for _, t in suite[name])
            print(f"{name:10s} suite {headline:,.0f} samples/s (median step) = {headline / best:.2f}x, "
                  f"{total:,.0f} (mean step) = {total / best:.2f}x the best hand loop ({best_label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
