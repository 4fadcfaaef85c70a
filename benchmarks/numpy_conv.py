"""Conv2d forward + backward: the NumPy backend's im2col layer versus PyTorch, and peak memory.

Case: 3 -> 32 channels, 3x3 kernel, stride 1, padding 1, 32x32 input, batch 128, float32.
One "step" = forward + backward with both the input gradient and the weight (and bias) gradient.

* ``numpy``: `fwbench_numpy.layers.Conv2D` on its internal (C, H, W, N) layout, which is what it
  sees inside a model (the batch is converted once, untimed, in ``to_device``).
* ``numpy+NCHW``: the same plus converting x and dy from NCHW and y and dx back, every step (an
  upper bound on what the layout choice could cost if it were paid per layer).
* ``torch``: ``torch.nn.functional.conv2d`` + autograd (``y.backward(dy)``), NCHW.

Same thread count for both (threadpoolctl for NumPy's BLAS, ``torch.set_num_threads``), steps
interleaved, medians reported. First, in a fresh subprocess without torch: peak RSS (``ru_maxrss``)
of a cnn_cifar-shaped training step at batch 128.

    .venv/bin/python benchmarks/numpy_conv.py [--threads 1] [--reps 60]

Goal: numpy throughput >= 0.7x PyTorch's. Note: this machine sets OPENBLAS_CORETYPE=Haswell,
which keeps NumPy's OpenBLAS on AVX2 kernels; it only concerns OpenBLAS, not the libraries
PyTorch uses for its convolutions.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N, C, H, W, F, K, STRIDE, PAD = 128, 3, 32, 32, 32, 3, 1, 1


def conv_benchmark(threads: int, reps: int) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    blas = next(i for i in threadpool_info() if i["user_api"] == "blas")  # NumPy's, before torch
    import torch  # only in this script, never in the backend

    torch.set_num_threads(threads)
    from fwbench_numpy.layers import Conv2D

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    weight = (rng.standard_normal((F, C, K, K)) * 0.2).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    dy = rng.standard_normal((N, F, H, W), dtype=np.float32)

    layer = Conv2D("0", C, F, K, STRIDE, PAD, True, np.float32)
    layer.params["weight"][...] = weight
    layer.params["bias"][...] = bias
    x_int = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    dy_int = np.ascontiguousarray(dy.transpose(1, 2, 3, 0))

    def numpy_step():
        layer.forward(x_int, training=True)
        layer.backward(dy_int)

    def numpy_nchw_step():
        xi = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
        y = layer.forward(xi, training=True)
        np.ascontiguousarray(y.transpose(3, 0, 1, 2))
        dx = layer.backward(np.ascontiguousarray(dy.transpose(1, 2, 3, 0)))
        np.ascontiguousarray(dx.transpose(3, 0, 1, 2))

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    wt = torch.from_numpy(weight.copy()).requires_grad_(True)
    bt = torch.from_numpy(bias.copy()).requires_grad_(True)
    dyt = torch.from_numpy(dy.copy())

    def torch_step():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, stride=STRIDE, padding=PAD).backward(dyt)

    # correctness first: same outputs and gradients
    y_np = layer.forward(x_int, training=True).transpose(3, 0, 1, 2)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=STRIDE, padding=PAD)
    np.testing.assert_allclose(y_np, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    dx_np = layer.backward(dy_int).transpose(3, 0, 1, 2)
    xt.grad = wt.grad = bt.grad = None
    yt.backward(dyt)
    np.testing.assert_allclose(dx_np, xt.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(layer.grads["weight"], wt.grad.numpy(), rtol=1e-3, atol=1e-2)

    cases = {"numpy": numpy_step, "numpy+NCHW": numpy_nchw_step, "torch": torch_step}
    for fn in cases.values():  # warm-up
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(reps):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate the order
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)

    print(f"conv2d {C}->{F}, {K}x{K}, stride {STRIDE}, pad {PAD}, {H}x{W}, batch {N}, float32, "
          f"forward + backward (dx, dW, db); {reps} interleaved reps; threads {threads}")
    print(f"numpy {np.__version__} ({blas['internal_api']} {blas['version']}, "
          f"{blas.get('architecture')} kernels, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}); "
          f"torch {torch.__version__}")
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:11s} median {med[name] * 1e3:7.2f} ms  min {min(t) * 1e3:7.2f} ms  "
              f"{N / med[name]:8.0f} images/s")
    for name in ("numpy", "numpy+NCHW"):
        print(f"throughput ratio {name}/torch: median {med['torch'] / med[name]:.2f}x, "
              f"min {min(times['torch']) / min(times[name]):.2f}x   (goal >= 0.7x)")


def memory_probe(threads: int) -> None:
    """Runs in a fresh process: peak RSS of cnn_cifar training steps at batch 128."""
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights
    from fwbench.spec import load_task
    from fwbench_numpy.backend import NumpyBackend

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def hwm_mib() -> float:  # the same peak, per address space (not inherited across exec)
        with open("/proc/self/status") as fh:
            line = next(row for row in fh if row.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    backend = NumpyBackend()
    backend.configure(device="cpu", threads=threads)
    task = load_task(ROOT / "tasks" / "cnn_cifar.toml")
    task = dataclasses.replace(task, training=dataclasses.replace(task.training, batch_size=128))
    info = analyze(task.model, (3, 32, 32), 10)
    weights = initial_weights(task.model, info, 0, "float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    base = rss_mib()
    trainer = backend.build(BuildRequest(task, info, weights, "cpu", 10))
    batch = trainer.to_device(x, y)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        trainer.train_step(batch, 1e-3)
        times.append(time.perf_counter() - start)
    print(f"cnn_cifar training step, batch 128, float32 (fresh process, no torch): "
          f"median step {statistics.median(times[1:]) * 1e3:.0f} ms")
    print(f"  peak RSS: ru_maxrss {rss_mib():.0f} MiB (VmHWM {hwm_mib():.0f} MiB); "
          f"before building the model {base:.0f} MiB; "
          f"layer workspaces hold {trainer.model.workspace_bytes() / 2**20:.0f} MiB; "
          f"activation floats per sample (analytic) {info.activation_floats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.threads)
        return
    # the probe first, while this process is small: Linux carries ru_maxrss across exec
    subprocess.run([sys.executable, __file__, "--memory-probe", "--threads", str(args.threads)],
                   check=True)
    conv_benchmark(args.threads, args.reps)


if __name__ == "__main__":
    main()
