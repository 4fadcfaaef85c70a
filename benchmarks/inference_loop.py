"""Hand-written batch-1 MLP inference loops, one per framework, against the suite's inference cells.

The spec's MNIST MLP (flatten of one ``(1, 28, 28)`` image as the suite feeds it -> 128 ReLU ->
10, float32) written the shortest idiomatic way in each framework (NumPy, torch
``inference_mode``, the concrete function of a ``tf.function(jit_compile=True)``, a ``jax.jit``, an onnxruntime session of
a Flatten/Gemm/Relu/Gemm graph), one thread, one sample per call, the logits back
on the host (``.numpy()`` / ``np.asarray``) inside the timed call, as `fwbench.inference.scenario` times
`Trainer.predict`. Each framework runs in its own process; the p50 of ``--calls`` timed calls
(after 50 uncounted) is printed beside the suite's p50 for the same model, batch and threads
(``bench run --scenario inference -t mlp_mnist --set 'inference.batch_sizes=[1]' --threads 1``),
and their ratio: the suite's per-call overhead over a bare loop (the goal: within 1.2x).

Usage: ``python benchmarks/inference_loop.py [--frameworks numpy,torch,...] [--calls 3000]
[--suite]`` (``--suite`` also runs the suite's cells, 1 repeat each; about a minute on 2 cores).
Numbers on a shared machine are noisy: run it twice and quote both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAMEWORKS = ("numpy", "torch", "tensorflow", "jax", "onnxruntime")


def _weights():
    rng = np.random.default_rng(0)
    return (rng.normal(0, 0.05, (784, 128)).astype(np.float32), np.zeros(128, np.float32),
            rng.normal(0, 0.05, (128, 10)).astype(np.float32), np.zeros(10, np.float32))


def _call(framework: str):
    """A zero-argument function answering one sample, the logits as a NumPy array."""
    w1, b1, w2, b2 = _weights()
    # the spec's model (tasks/mlp_mnist.toml): flatten of one (1, 28, 28) image, dense 128 relu, dense 10
    x = np.random.default_rng(1).normal(size=(1, 1, 28, 28)).astype(np.float32)
    if framework == "numpy":
        return lambda: np.maximum(x.reshape(len(x), -1) @ w1 + b1, 0) @ w2 + b2
    if framework == "torch":
        import torch

        torch.set_num_threads(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                    torch.nn.Linear(128, 10)).eval()
        with torch.no_grad():
            model[1].weight.copy_(torch.from_numpy(w1.T))
            model[3].weight.copy_(torch.from_numpy(w2.T))
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                return model(xt).numpy()
        return run
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        v = [tf.constant(a) for a in (w1, b1, w2, b2)]
        f = tf.function(lambda t: tf.nn.relu(tf.reshape(t, (-1, 784)) @ v[0] + v[1]) @ v[2] + v[3],
                        jit_compile=True)
        xt = tf.constant(x)
        concrete = f.get_concrete_function(xt)  # no tracing-cache lookup per call: ~half the overhead
        return lambda: concrete(xt).numpy()
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        params = [jnp.asarray(a) for a in (w1, b1, w2, b2)]
        f = jax.jit(lambda p, t: jnp.maximum(t.reshape(t.shape[0], -1) @ p[0] + p[1], 0) @ p[2] + p[3])
        xj = jax.device_put(x)
        return lambda: np.asarray(f(params, xj))
    if framework == "onnxruntime":
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        inits = [numpy_helper.from_array(a, n) for a, n in zip((w1, b1, w2, b2), ("w1", "b1", "w2", "b2"))]
        nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w1", "b1"], ["h"]),
                 helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
        graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["N", 1, 28, 28])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"x": x})[0]
    raise SystemExit(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")


def loop_p50(framework: str, calls: int) -> float:
    call = _call(framework)
    for _ in range(50):
        call()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        call()
        times[i] = time.perf_counter() - t0
    return float(np.median(times))


def suite_p50(frameworks: list[str]) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="fwbench-inference-loop-"))
    subprocess.run([sys.executable, "-m", "fwbench.cli", "run", "--scenario", "inference", "-b", ",".join(frameworks),
                    "-t", "mlp_mnist", "--dataset", "mnist_5k", "--threads", "1", "--repeat", "1", "--peak", "off",
                    "--set", "inference.batch_sizes=[1]", "--set", "inference.min_time_s=1.0",
                    "--no-progress", "-o", str(out)], check=False, capture_output=True)
    from fwbench.records.results import load_records

    return {r["backend"]: r["metrics"]["latency_p50_s"] for r in load_records(out) if r.get("status") == "ok"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--suite", action="store_true", help="also run the suite's cells and print the ratio")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process of one framework
    args = parser.parse_args()
    if args.one:
        import os

        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps({"p50": loop_p50(args.one, args.calls)}))
        return 0
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    # one thread as the suite gives a cell: the BLAS pools, XLA's single-thread flag (the JAX backend's
    # `SINGLE_THREAD_XLA_FLAGS`), the CPU platform; `--one` pins itself to one core as a cell is pinned
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "JAX_PLATFORMS": "cpu"}
    import os

    loops = {}
    for framework in frameworks:
        done = subprocess.run([sys.executable, __file__, "--one", framework, "--calls", str(args.calls)],
                              capture_output=True, text=True, env={**os.environ, **env}, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        loops[framework] = json.loads(lines[-1])["p50"] if lines else None
        if not lines:
            print(f"{framework}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    suite = suite_p50(frameworks) if args.suite else {}
    print(f"{'framework':<12} {'loop p50 µs':>12} {'suite p50 µs':>13} {'suite/loop':>10}")
    for framework in frameworks:
        loop, ours = loops.get(framework), suite.get(framework)
        ratio = f"{ours / loop:.2f}x" if loop and ours else "—"
        print(f"{framework:<12} {loop * 1e6 if loop else float('nan'):>12.1f} "
              f"{ours * 1e6 if ours else float('nan'):>13.1f} {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
