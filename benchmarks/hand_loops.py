"""Hand-written training loops for torch, TensorFlow and JAX: the yardstick of ``bench tune``.

Each loop is what a user who knows the framework writes, at its best, for one of the suite's
tasks with synthetic MNIST-shaped data: ``--task mlp_mnist`` (Flatten -> Dense 128 ReLU -> Dense
10, batch 128) or ``--task cnn_mnist`` (Conv 32 3x3 ReLU -> MaxPool 2 -> Conv 64 3x3 ReLU -> MaxPool
2 -> Flatten -> Dropout 0.3 -> Dense 10, batch 64; torch and JAX), softmax cross-entropy, Adam lr
1e-3. The whole training split is put on the device once (``--device cpu|gpu``), batches are
sliced there, and nothing syncs per step: one sync ends a timed window. Each loop runs in each of
the framework's precisions (float32; TF32 matmuls on a GPU; bfloat16 compute over float32
weights) and modes:

* torch: eager and ``torch.compile`` of forward + loss (on a GPU also ``mode="reduce-overhead"``,
  CUDA graphs), autocast for bf16, fused Adam;
* tensorflow: a ``tf.function`` step, with XLA (``jit_compile=True``) and without (graph), over
  ``tf.Variable`` weights, Keras-free, the batch gathered inside the step (no eager op per step);
* jax: one ``jax.jit`` step with the state donated (optax Adam); float32 at the highest matmul
  precision, TF32 at XLA's default one.

Every loop runs in its own process (the thread count pinned, ``--threads``, default 1), rounds
interleaved (A B C A B C ...: a busy neighbour hurts them alike); each round times ``--steps``
steps after a warm-up; the report is each loop's median over rounds.

``--suite`` puts the suite's own cell in the same rounds (one ``bench run`` process of the task on
``mnist_5k`` at the same batch and device per framework per round) and prints suite / the best
hand loop, for the suite's headline (median step) and its whole-run rate (mean step): issue "each
framework at its best" asks the tuned cell for at least 0.95. ``--suite-set
torch:backend.execution=compiled`` (repeatable) runs the suite's cell in another configuration, e.g.
the one ``bench tune`` picked.

Run: ``.venv/bin/python benchmarks/hand_loops.py [--task mlp_mnist] [--device cpu] [--rounds 3] [--steps 300]
[--suite] [--fp32-only]``. On a GPU, e.g. ``--device gpu --task cnn_mnist --frameworks torch,jax --suite
--suite-set torch:training.precision=bf16 --suite-set torch:dataset.placement=device``.
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

N, FEATURES, HIDDEN, CLASSES, LR, DROPOUT = 4096, 784, 128, 10, 1e-3, 0.3
#: the batch size of each task, as the issue states its goals (mlp_mnist 128, cnn_mnist 64)
BATCHES = {"mlp_mnist": 128, "cnn_mnist": 64}


def data(task: str):
    """``(x, y)``: N synthetic samples, x ``(N, 784)`` for the MLP or ``(N, 1, 28, 28)`` (NCHW) for the
    convnet, float32; y ``(N,)`` class indices."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, FEATURES)).astype(np.float32)
    return (x if task == "mlp_mnist" else x.reshape(N, 1, 28, 28)), rng.integers(0, CLASSES, N)


def torch_loop(task: str, steps: int, threads: int, precision: str, gpu: bool, mode: str = "") -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(threads)
    device = "cuda" if gpu else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    batch = BATCHES[task]
    x_np, y_np = data(task)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    if task == "mlp_mnist":
        layers = [nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES)]
    else:
        layers = [nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(DROPOUT), nn.Linear(64 * 7 * 7, CLASSES)]
    model = nn.Sequential(*layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)

    def forward(xb, yb):
        if precision == "bf16":  # autocast: the matmuls in bfloat16, the loss and the weights in float32
            with torch.autocast(device, dtype=torch.bfloat16):
                logits = model(xb)
            return F.cross_entropy(logits.float(), yb)
        return F.cross_entropy(model(xb), yb)

    loss_fn = {"": forward, "compile": torch.compile(forward),
               "cudagraphs": torch.compile(forward, mode="reduce-overhead")}[mode]

    def step(i):
        s = (i * batch) % (N - batch)
        loss = loss_fn(x[s:s + batch], y[s:s + batch])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(20):
        step(i)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    float(loss)  # waits for the device
    return batch * steps / (time.perf_counter() - start)


def tensorflow_loop(task: str, steps: int, threads: int, precision: str, gpu: bool, mode: str = "") -> float:
    import tensorflow as tf

    if task != "mlp_mnist":
        raise SystemExit("the TensorFlow hand loop is written for mlp_mnist only")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
    if not gpu:
        tf.config.set_visible_devices([], "GPU")
    bf16, graph, batch = precision == "bf16", mode == "graph", BATCHES[task]
    x_np, y_np = data(task)
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
        rows = (cursor * batch) % (N - batch) + tf.range(batch)
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
    return batch * steps / (time.perf_counter() - begin)


def jax_loop(task: str, steps: int, threads: int, precision: str, gpu: bool, mode: str = "") -> float:
    if not gpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                              if threads == 1 else "")
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if precision == "tf32" else "highest")
    batch = BATCHES[task]
    x_np, y_np = data(task)
    x, y = jax.device_put(x_np), jax.device_put(y_np.astype(np.int32))
    keys = jax.random.split(jax.random.key(0), 4)
    if task == "mlp_mnist":
        params = {"w1": jax.random.normal(keys[0], (FEATURES, HIDDEN)) * 0.05, "b1": jnp.zeros(HIDDEN),
                  "w2": jax.random.normal(keys[1], (HIDDEN, CLASSES)) * 0.05, "b2": jnp.zeros(CLASSES)}
    else:  # OIHW kernels, as the input is NCHW
        params = {"k1": jax.random.normal(keys[0], (32, 1, 3, 3)) * 0.3, "c1": jnp.zeros(32),
                  "k2": jax.random.normal(keys[1], (64, 32, 3, 3)) * 0.06, "c2": jnp.zeros(64),
                  "w": jax.random.normal(keys[2], (64 * 7 * 7, CLASSES)) * 0.02, "b": jnp.zeros(CLASSES)}
    tx = optax.adam(LR)
    state = (params, tx.init(params), keys[3])

    def conv_pool(h, kernel, bias):
        h = jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + bias[None, :, None, None])
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def logits_of(p, xb, key):
        if task == "mlp_mnist":
            return jax.nn.relu(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        h = conv_pool(conv_pool(xb, p["k1"], p["c1"]), p["k2"], p["c2"]).reshape(xb.shape[0], -1)
        keep = jax.random.bernoulli(key, 1 - DROPOUT, h.shape)
        return (jnp.where(keep, h / (1 - DROPOUT), 0).astype(h.dtype)) @ p["w"] + p["b"]

    def loss_fn(p, xb, yb, key):
        if precision == "bf16":  # compute in bfloat16 over float32 parameters
            p, xb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p), xb.astype(jnp.bfloat16)
        logits = logits_of(p, xb, key).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(state, start):
        p, o, key = state
        key, sub = jax.random.split(key) if task == "cnn_mnist" else (key, key)  # the MLP has no dropout
        xb = jax.lax.dynamic_slice_in_dim(x, start, batch)
        yb = jax.lax.dynamic_slice_in_dim(y, start, batch)
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb, sub)
        updates, o = tx.update(g, o, p)
        return (optax.apply_updates(p, updates), o, key), loss

    step = jax.jit(step, donate_argnums=0)
    for i in range(20):
        state, loss = step(state, (i * batch) % (N - batch))
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, loss = step(state, (i * batch) % (N - batch))
    jax.block_until_ready((state, loss))
    return batch * steps / (time.perf_counter() - start)


LOOPS = {"torch": torch_loop, "tensorflow": tensorflow_loop, "jax": jax_loop}


def child(name: str, task: str, steps: int, threads: int, precision: str, mode: str, gpu: bool) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    print(json.dumps({"name": name, "samples_per_s": LOOPS[name](task, steps, threads, precision, gpu, mode)}))


def suite_cell(name: str, task: str, threads: int, gpu: bool, overrides: list[str]) -> tuple[float, float] | None:
    """One ``bench run`` process of the suite's cell of ``task`` at the hand loops' batch size.

    Returns its headline samples/s (batch / median step) and its whole-run samples/s (batch / mean
    step, stalls included: what a hand loop's one window measures), or None if the cell failed.
    """
    out = Path(tempfile.mkdtemp(prefix="fwbench-hand-loops-"))
    sets = [arg for o in [f"training.batch_size={BATCHES[task]}", *overrides] for arg in ("--set", o)]
    subprocess.run([sys.executable, "-m", "fwbench.cli", "run", "-b", name, "-t", task, "--dataset",
                    "mnist_5k", "--threads", str(threads), "--repeat", "1", "--peak", "off", "--no-progress",
                    "--device", "gpu" if gpu else "cpu", "-o", str(out), *sets], check=False, capture_output=True)
    from fwbench.records.record import THROUGHPUT, THROUGHPUT_MEAN
    from fwbench.records.results import load_records

    values = [(r["metrics"][THROUGHPUT], r["metrics"][THROUGHPUT_MEAN])
              for r in load_records(out) if r.get("status") == "ok"]
    return values[0] if values else None


#: the loops each framework's user may write: (precision, mode); mode "" is the framework's usual
#: one (torch eager, TensorFlow with XLA, jax.jit), "compile" torch.compile, "cudagraphs" its
#: reduce-overhead mode (GPU) and "graph" a tf.function without XLA; tf32 is a GPU mode
VARIANTS = {"torch": [("fp32", ""), ("bf16", ""), ("fp32", "compile"), ("bf16", "compile")],
            "tensorflow": [("fp32", ""), ("bf16", ""), ("fp32", "graph"), ("bf16", "graph")],
            "jax": [("fp32", ""), ("bf16", "")]}
GPU_VARIANTS = {"torch": [("tf32", ""), ("tf32", "compile"), ("tf32", "cudagraphs"), ("bf16", "cudagraphs")],
                "tensorflow": [("tf32", "")], "jax": [("tf32", "")]}


def variants(name: str, gpu: bool, fp32_only: bool) -> list[tuple[str, str]]:
    every = VARIANTS[name] + (GPU_VARIANTS[name] if gpu else [])
    return every[:1] if fp32_only else every


def variant_label(precision: str, mode: str) -> str:
    return f"{precision} {mode}".strip()


def hand_loop(name: str, task: str, precision: str, mode: str, steps: int, threads: int, gpu: bool) -> float | None:
    """One hand loop in its own process: its samples/s, or None (the reason on stderr)."""
    cmd = [sys.executable, __file__, "--child", name, "--task", task, "--steps", str(steps), "--threads",
           str(threads), "--precision", precision, "--mode", mode, "--device", "gpu" if gpu else "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not line:
        print(f"{name} {variant_label(precision, mode)}: failed: {proc.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)
        return None
    return json.loads(line[-1])["samples_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mlp_mnist", choices=sorted(BATCHES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frameworks", default="torch,tensorflow,jax")
    parser.add_argument("--fp32-only", action="store_true", help="only each framework's usual float32 loop")
    parser.add_argument("--suite", action="store_true", help="also run the suite's cell in each round; print the ratio")
    parser.add_argument("--suite-set", action="append", default=[], metavar="FRAMEWORK:KEY=VALUE",
                        help="an override for the suite's cell of one framework (repeatable)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="", choices=["", "compile", "cudagraphs", "graph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device == "gpu"
    if args.child:
        child(args.child, args.task, args.steps, args.threads, args.precision, args.mode, gpu)
        return 0
    frameworks = args.frameworks.split(",")
    loops: dict[tuple[str, str], list[float]] = {}
    suite: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):  # A B C A B C ...: every loop and the suite's cell in every round
        for name in frameworks:
            for precision, mode in variants(name, gpu, args.fp32_only):
                value = hand_loop(name, args.task, precision, mode, args.steps, args.threads, gpu)
                if value is not None:
                    loops.setdefault((name, variant_label(precision, mode)), []).append(value)
            if args.suite:
                overrides = [o.split(":", 1)[1] for o in args.suite_set if o.split(":", 1)[0] == name]
                value = suite_cell(name, args.task, args.threads, gpu, overrides)
                if value is None:
                    print(f"{name}: the suite's cell failed", file=sys.stderr)
                else:
                    suite.setdefault(name, []).append(value)
    for name in frameworks:
        medians = {label: statistics.median(v) for (n, label), v in loops.items() if n == name}
        for label, median in medians.items():
            print(f"{name:10s} hand loop {label:<16s} {args.task} batch {BATCHES[args.task]} on {args.device}: "
                  f"median {median:>10,.0f} samples/s ({len(loops[(name, label)])} rounds)")
        if suite.get(name) and medians:
            best_label, best = max(medians.items(), key=lambda kv: kv[1])
            headline = statistics.median(h for h, _ in suite[name])
            total = statistics.median(t for _, t in suite[name])
            print(f"{name:10s} suite {headline:,.0f} samples/s (median step) = {headline / best:.2f}x, "
                  f"{total:,.0f} (mean step) = {total / best:.2f}x the best hand loop ({best_label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
