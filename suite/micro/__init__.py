"""Microbenchmarks: one operation (conv2d, dense, pooling, batch norm, an optimizer step) or one
scaling sweep, timed per backend with a calibrated protocol and set against the machine's peak.

- `spec`: the ``[bench]`` + ``[[cases]]`` TOML format (`BenchSpec`, its case dataclasses).
- `families`: how each family's cases run on a backend's `fwbench.ops` (the cell body).
- `protocol`: the timing protocol (first call apart, warm-up, calibrated inner loop, repeats).
- `roofline`: analytic FLOPs and bytes of each case, GFLOP/s and % of peak.
- `peak`: the machine's measured matmul peak and memory bandwidth (cached).
- `tables`: the terminal tables of a microbenchmark run.
"""
