"""Training-step time of the suite's NumPy trainer versus a minimal hand-written NumPy loop.

MLP 784-128-10 (tasks/mlp_mnist.toml), batch 128, Adam, float32. Both run in this one process
with the same BLAS thread limit, start from the same canonical weights and see the same batch;
their steps are interleaved so load changes on the machine hit both alike. The script first
checks, in float64, that both compute the same maths (same losses and weights after 5 steps).

    .venv/bin/python benchmarks/numpy_mlp_step.py [--threads 1] [--steps 2000]

Goal: the trainer at >= 0.9x the hand loop's speed (ratio = hand time / trainer time).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import load_task

ROOT = Path(__file__).resolve().parents[1]


class HandMLP:
    """784-128-10 ReLU MLP + softmax cross-entropy + Adam, written the plain way."""

    def __init__(self, w: dict[str, np.ndarray], lr: float, b1=0.9, b2=0.999, eps=1e-8):
        self.W1, self.b1 = w["1.weight"].copy(), w["1.bias"].copy()
        self.W2, self.b2 = w["2.weight"].copy(), w["2.bias"].copy()
        self.m = [np.zeros_like(p) for p in self.params()]
        self.v = [np.zeros_like(p) for p in self.params()]
        self.beta1, self.beta2, self.eps, self.t = b1, b2, eps, 0

    def params(self):
        return [self.W1, self.b1, self.W2, self.b2]

    def step(self, x, y, lr):
        n = x.shape[0]
        rows = np.arange(n)
        h = x @ self.W1 + self.b1
        a = np.maximum(h, 0)
        z = a @ self.W2 + self.b2
        correct = float(np.count_nonzero(z.argmax(1) == y))
        zs = z - z.max(1, keepdims=True)
        e = np.exp(zs)
        s = e.sum(1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - zs[rows, y]))
        dz = e / s
        dz[rows, y] -= 1
        dz /= n
        dW2 = a.T @ dz
        db2 = dz.sum(0)
        da = dz @ self.W2.T
        da *= h > 0
        dW1 = x.T @ da
        db1 = da.sum(0)
        self.t += 1
        bc1, bc2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for p, g, m, v in zip(self.params(), [dW1, db1, dW2, db2], self.m, self.v):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            p -= (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + self.eps)
        return loss, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    from fwbench_numpy.backend import NumpyBackend

    backend = NumpyBackend()
    facts = backend.configure(device="cpu", threads=args.threads)
    task = load_task(ROOT / "tasks" / "mlp_mnist.toml")
    info = analyze(task.model, (1, 28, 28), 10)
    lr = task.optimizer.lr
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)

    def pair(dtype: str):
        training = dataclasses.replace(task.training, batch_size=args.batch, dtype=dtype)
        spec = dataclasses.replace(task, training=training)
        weights = initial_weights(spec.model, info, 0, dtype)
        trainer = backend.build(BuildRequest(spec, info, weights, "cpu", 10))
        return trainer, HandMLP(weights, lr)

    # same maths, checked in float64 (in float32, Adam turns rounding noise in near-zero
    # gradients into full-size steps of either sign): equal losses and weights after 5 steps
    trainer, hand = pair("float64")
    batch, x_flat = trainer.to_device(x, y), x.reshape(args.batch, -1).astype(np.float64)
    for _ in range(5):
        ours, theirs = trainer.train_step(batch, lr), hand.step(x_flat, y, lr)
        assert abs(ours[0] - theirs[0]) < 1e-12 and ours[1] == theirs[1], (ours, theirs)
    w = trainer.get_weights()
    for name, p in zip(["1.weight", "1.bias", "2.weight", "2.bias"], hand.params()):
        np.testing.assert_allclose(w[name], p, rtol=1e-9, atol=1e-12, err_msg=name)

    trainer, hand = pair("float32")  # the timed pair
    batch = trainer.to_device(x, y)  # untimed, like the suite
    x_flat = np.ascontiguousarray(x.reshape(args.batch, -1))
    for _ in range(50):  # warm-up
        trainer.train_step(batch, lr)
        hand.step(x_flat, y, lr)
    t_trainer, t_hand = [], []
    clock = time.perf_counter
    for i in range(args.steps):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate who goes first
        for who in order:
            start = clock()
            if who == 0:
                trainer.train_step(batch, lr)
                t_trainer.append(clock() - start)
            else:
                hand.step(x_flat, y, lr)
                t_hand.append(clock() - start)

    med_trainer, med_hand = statistics.median(t_trainer), statistics.median(t_hand)
    blas = facts["blas"][0] if facts["blas"] else {}
    print(f"MLP 784-128-10, batch {args.batch}, Adam, float32; {args.steps} interleaved steps each")
    print(f"numpy {np.__version__}, BLAS {blas.get('internal_api')} {blas.get('version')} "
          f"({blas.get('architecture')}), threads {args.threads}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, {platform.processor() or platform.machine()}")
    print(f"suite NumpyTrainer.train_step : median {med_trainer * 1e3:7.3f} ms   "
          f"min {min(t_trainer) * 1e3:7.3f} ms")
    print(f"hand-written NumPy loop       : median {med_hand * 1e3:7.3f} ms   "
          f"min {min(t_hand) * 1e3:7.3f} ms")
    print(f"speed ratio trainer/hand (hand time / trainer time): median {med_hand / med_trainer:.2f}x, "
          f"min {min(t_hand) / min(t_trainer):.2f}x   (goal >= 0.9x)")


if __name__ == "__main__":
    main()
