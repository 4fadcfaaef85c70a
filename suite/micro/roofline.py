"""Analytic work of each microbenchmark case and pass: floating-point operations and bytes moved.

A multiply-add counts 2 FLOPs. Convolution and dense counts are exact for the GEMM work (the usual
convention of cuDNN / oneDNN benchmarks); pooling, batch norm and optimizer updates are
memory-bound, so their FLOP counts are a documented convention and their bytes (each array read or
written once, the least any implementation must move) say more:

* conv2d ``forward`` = ``2 N F Ho Wo C k k``; ``backward_data`` and ``backward_weights`` the same
  each; ``forward_backward`` 3x.
* dense ``forward`` = ``2 N in out``; ``backward`` (data + weights) 2x; ``forward_backward`` 3x.
* pooling: one comparison / addition per window element, ``N C Ho Wo k k``, each pass.
* batchnorm (training): 8 FLOPs per element forward (statistics 4, normalise + affine 4), 8
  backward.
* optimizer step: per parameter, `OPTIMIZER_FLOPS` and `OPTIMIZER_ARRAYS` (arrays read or written).
"""
from __future__ import annotations

from .spec import BatchNormCase, Conv2DCase, DenseCase, PoolCase

#: FLOPs per parameter of one update (weight decay adds 2).
OPTIMIZER_FLOPS = {"sgd": 2, "momentum": 4, "nesterov": 6, "rmsprop": 9, "adagrad": 7, "adam": 13,
                   "adamw": 15}
#: Parameter-sized arrays one update must read or write, counting read+write arrays twice:
#: sgd reads g, reads and writes p (3); one slot adds 2; Adam's two slots add 4.
OPTIMIZER_ARRAYS = {"sgd": 3, "momentum": 5, "nesterov": 5, "rmsprop": 5, "adagrad": 5, "adam": 7,
                    "adamw": 7}


def conv2d_work(case: Conv2DCase, pass_: str, itemsize: int) -> tuple[int, int]:
    """``(flops, bytes)`` of one pass of a convolution case."""
    n, c, f, k, ho = case.batch, case.channels, case.filters, case.kernel, case.out_size
    x, w, y = n * c * case.size ** 2, f * c * k * k, n * f * ho * ho
    once = 2 * n * f * ho * ho * c * k * k
    arrays = {"forward": (once, x + w + y), "backward_data": (once, y + w + x),
              "backward_weights": (once, x + y + w), "forward_backward": (3 * once, 2 * (x + w + y))}
    flops, floats = arrays[pass_]
    return flops, floats * itemsize


def dense_work(case: DenseCase, pass_: str, itemsize: int) -> tuple[int, int]:
    n, i, o = case.batch, case.in_features, case.out_features
    once, floats = 2 * n * i * o, n * i + i * o + n * o
    factor = {"forward": 1, "backward": 2, "forward_backward": 3}[pass_]
    return factor * once, (1 if pass_ == "forward" else 2) * floats * itemsize


def pool_work(case: PoolCase, pass_: str, itemsize: int) -> tuple[int, int]:
    n, c, s, ho = case.batch, case.channels, case.size, case.out_size
    flops = n * c * ho * ho * case.window ** 2
    x, y = n * c * s * s, n * c * ho * ho
    floats = x + y if pass_ == "forward" else 2 * x + 2 * y  # backward: x, y (max), dy -> dx
    return flops, floats * itemsize


def batchnorm_work(case: BatchNormCase, pass_: str, itemsize: int) -> tuple[int, int]:
    elements = case.batch * case.channels * case.size ** 2
    floats = 2 * elements if pass_ == "forward" else 3 * elements  # x -> y ; x, dy -> dx
    return 8 * elements, floats * itemsize


def optimizer_work(name: str, params: int, itemsize: int, weight_decay: float = 0.0) -> tuple[int, int]:
    flops = OPTIMIZER_FLOPS[name] + (2 if weight_decay and name != "adamw" else 0)
    flops -= 2 if name == "adamw" and not weight_decay else 0
    return flops * params, OPTIMIZER_ARRAYS[name] * params * itemsize


def matmul_flops(n: int) -> int:
    """An ``(n, n) @ (n, n)`` product."""
    return 2 * n ** 3


def rates(flops: float | None, nbytes: float | None, seconds: float, peak_flops: float | None,
          peak_bandwidth: float | None = None) -> dict[str, float | None]:
    """Achieved GFLOP/s and GB/s of ``seconds`` per call, and their percentages of the peaks."""
    ok = seconds and seconds > 0
    gflops = flops / seconds / 1e9 if ok and flops else None
    gbps = nbytes / seconds / 1e9 if ok and nbytes else None
    return {
        "gflops": gflops,
        "percent_of_peak": 100 * gflops * 1e9 / peak_flops if gflops and peak_flops else None,
        "gbps": gbps,
        "percent_of_bandwidth": 100 * gbps * 1e9 / peak_bandwidth if gbps and peak_bandwidth else None,
    }
