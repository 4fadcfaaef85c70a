"""``bench info``: this machine (CPU, threads, BLAS, frameworks); ``--peak`` measures its peak."""
from __future__ import annotations

import argparse
import json
import os

from ..run.placement import threads_help
from .common import EXIT_CELL_FAILED, EXIT_OK, console, positive_int


def add_parser(subparsers) -> None:
    """Register ``bench info``."""
    info = subparsers.add_parser("info", help="this machine: CPU, threads, BLAS, frameworks")
    info.add_argument("--peak", action="store_true",
                      help="measure the float32 matmul peak (each backend's own matmul, in its own process) "
                           "and the memory bandwidth; cached for `bench run`")
    info.add_argument("--threads", type=positive_int, default=None,
                      help=threads_help("threads for --peak, as `bench run` gives a cell"))
    info.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                      help="with --peak: the device to measure (gpu: each backend's matmul and add on the GPU)")
    info.set_defaults(handler=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    """Print the environment manifest and each backend's availability (or, with ``--peak``, the peak)."""
    from ..plugins import get_registry
    from ..records.environment import collect

    env = collect(os.cpu_count())
    env["backends"] = {name: str(b.availability()) for name, b in sorted(get_registry().backends.items())}
    if getattr(args, "peak", False):
        return print_peak(args, env)
    console().print_json(json.dumps(env, default=str))
    return EXIT_OK


def print_peak(args: argparse.Namespace, env: dict) -> int:
    """``bench info --peak``: measure the device's peak again, print it per backend, cache it."""
    from rich.table import Table

    from ..micro.peak import cache_path, machine_peak
    from ..run.placement import available_cores, threads_per_cell

    threads = threads_per_cell(args.threads, 1, available_cores())  # as `bench run` gives a cell
    out = console()
    device = getattr(args, "device", "cpu")
    peak = machine_peak(device, threads, refresh=True, progress=lambda m: out.print(m, style="dim"))
    peak = peak.details if peak else None
    if peak is None:
        out.print("no backend could measure a matmul peak (see the errors above)")
        return EXIT_CELL_FAILED
    where = peak.get("device_name") or env["cpu"]["model"]
    table = Table(title=f"{device.upper()} peak, {threads} thread(s), float32 ({where})", header_style="bold",
                  title_justify="left")
    for column in ("backend", "version", "GFLOP/s (best)", "GFLOP/s (median)", "matrix", "note"):
        table.add_column(column, justify="left" if column in ("backend", "version", "note") else "right")
    for name, v in peak["per_backend"].items():
        best = v.get("gflops")
        table.add_row(name, str(v.get("version") or ""), f"{best:,.1f}" if best else "—",
                      f"{v['gflops_median']:,.1f}" if v.get("gflops_median") else "—",
                      f"{v['n']}²" if v.get("n") else "", v.get("error") or ("peak" if name == peak["best_backend"] else ""))
    out.print(table)
    bw = peak.get("bandwidth") or {}
    out.print(f"peak: {peak['gflops']:,.1f} GFLOP/s ({peak['best_backend']}); memory bandwidth: "
              f"{bw.get('gbps', float('nan')):,.1f} GB/s (copy {bw.get('copy_gbps', float('nan')):,.1f}, "
              f"add {bw.get('add_gbps', float('nan')):,.1f}; {bw.get('backend') or 'NumPy'}"
              + (f", {bw.get('threads')} thread(s))" if device == "cpu" else ", on the GPU)"))
    out.print(f"cached in {cache_path()} for `bench run`")
    print(json.dumps({k: peak.get(k) for k in ("gflops", "best_backend", "bandwidth_gbps", "threads", "device")}))
    return EXIT_OK
