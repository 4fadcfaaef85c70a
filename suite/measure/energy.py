"""Energy counters: joules per training step and per inference call, or the reason there are none.

Two counters, both cumulative hardware energy registers read by difference (never a power reading
multiplied by a time):

* **GPU**: NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since
  the driver loaded, Volta and newer) through ``nvidia-ml-py`` (`NvmlCounter`);
* **CPU**: RAPL through Linux powercap (``/sys/class/powercap/intel-rapl:N/energy_uj``, one file per
  package, microjoules, wrapping at ``max_energy_range_uj``), where this user may read it
  (`RaplCounter`; since Linux 5.10 it is root-only by default).

Otherwise `open_counter` returns `Unavailable` with the reason, and the record says so.

A counter advances in steps (NVML about every 100 ms on recent GPUs, RAPL about every 1 ms), so a
window shorter than many steps reads mostly quantisation. `measure` therefore runs *more calls*
until the window spans at least `MIN_PERIODS` update periods, and records the calls, the window and
the number of periods it spanned; it never scales a short window up to a longer one.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: A window spans at least this many counter update periods (quantisation error <~ 1 / MIN_PERIODS).
MIN_PERIODS = 20
NVML_PERIOD_S = 0.1  # NVML's energy counter on Volta..Hopper moves every ~20-100 ms: the safe end
RAPL_PERIOD_S = 0.001  # RAPL's energy status updates about every millisecond
POWERCAP = Path("/sys/class/powercap")


class EnergyCounter(Protocol):
    """A cumulative energy register. ``read()`` returns joules since an arbitrary origin."""

    name: str
    update_period_s: float

    def read(self) -> float: ...


@dataclass(frozen=True)
class Unavailable:
    """No counter here, and why (stored in the record as ``"unavailable: <reason>"``)."""

    reason: str

    def __str__(self) -> str:
        return f"unavailable: {self.reason}"


class NvmlCounter:
    """NVML total energy of one GPU (``nvidia-ml-py``), joules."""

    name = "nvml"
    update_period_s = NVML_PERIOD_S

    def __init__(self, index: int | None = None, uuid: str | None = None):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.handle = (pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid
                       else pynvml.nvmlDeviceGetHandleByIndex(index or 0))
        self.read()  # raises NVMLError_NotSupported on GPUs without the counter (pre-Volta)

    def read(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3  # mJ -> J


class RaplCounter:
    """The sum of every RAPL package domain (``intel-rapl:N``, not its sub-domains), joules."""

    name = "rapl"
    update_period_s = RAPL_PERIOD_S

    def __init__(self, root: Path = POWERCAP):
        self.domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not self.domains:
            raise FileNotFoundError(f"no package domain under {root} (intel-rapl:N)")
        self.ranges = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
        self._last = [self._raw(d) for d in self.domains]  # PermissionError when root-only
        self._total_uj = 0

    @staticmethod
    def _raw(domain: Path) -> int:
        return int((domain / "energy_uj").read_text())

    def read(self) -> float:
        for i, domain in enumerate(self.domains):
            now = self._raw(domain)
            delta = now - self._last[i]
            self._total_uj += delta if delta >= 0 else delta + self.ranges[i]  # the register wrapped
            self._last[i] = now
        return self._total_uj / 1e6


def _visible_gpu() -> tuple[int | None, str | None]:
    """NVML index or UUID of the first GPU in ``CUDA_VISIBLE_DEVICES`` (NVML ignores that variable)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if not first:
        return 0, None
    return (int(first), None) if first.isdigit() else (None, first)


def open_counter(device: str, powercap: Path = POWERCAP) -> EnergyCounter | Unavailable:
    """The counter for ``device`` ("gpu": NVML; "cpu": RAPL), or `Unavailable` with the reason."""
    if device == "gpu":
        try:
            import pynvml  # noqa: F401
        except ImportError:
            return Unavailable("nvidia-ml-py is not installed (pip install 'fwbench[energy]')")
        try:
            index, uuid = _visible_gpu()
            return NvmlCounter(index, uuid)
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported, no driver...
            return Unavailable(f"NVML total energy counter not readable ({type(exc).__name__}: {exc})")
    try:
        return RaplCounter(powercap)
    except FileNotFoundError:
        return Unavailable(f"no RAPL package domain under {powercap} (not an Intel/AMD host with powercap, "
                           "or not mounted in this container)")
    except PermissionError:
        return Unavailable(f"{powercap}/intel-rapl:*/energy_uj is readable by root only; "
                           "grant read access (chmod o+r) to measure CPU energy")
    except (OSError, ValueError) as exc:
        return Unavailable(f"RAPL unreadable ({type(exc).__name__}: {exc})")


def min_window_s(counter: EnergyCounter) -> float:
    """The shortest window `measure` accepts for ``counter``: `MIN_PERIODS` update periods."""
    return MIN_PERIODS * counter.update_period_s


def measure(counter: EnergyCounter | Unavailable, call: Callable[[], Any], *, units: int = 1,
            max_calls: int = 1_000_000, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Joules per call of ``call`` (which must finish its device work before returning).

    Runs ``call`` until the window spans `min_window_s` (more calls for a short call, never an
    extrapolation), reading the counter before the first and after the last. ``units`` per call
    (samples of a batch) give ``joules_per_unit``. Returns the record's ``energy`` entry; with an
    `Unavailable` counter, ``{"available": False, "reason": ...}``.
    """
    if isinstance(counter, Unavailable):
        return {"available": False, "reason": str(counter)}
    window = min_window_s(counter)
    e0, t0 = counter.read(), clock()
    calls, elapsed = 0, 0.0
    while (elapsed < window and calls < max_calls) or calls == 0:
        call()
        calls += 1
        elapsed = clock() - t0
    joules = counter.read() - e0
    out = {"available": True, "counter": counter.name, "update_period_s": counter.update_period_s,
           "calls": calls, "window_s": elapsed, "window_periods": elapsed / counter.update_period_s,
           "joules": joules, "joules_per_call": joules / calls, "joules_per_unit": joules / calls / units,
           "watts": joules / elapsed if elapsed > 0 else None}
    if elapsed < window:  # max_calls reached first: say so instead of scaling the short window up
        out["short_window"] = (f"{calls} calls spanned {elapsed:.3f} s < {window:.3f} s "
                               f"({MIN_PERIODS} counter periods): quantisation dominates")
    if joules <= 0:
        out.update(available=False, reason=f"unavailable: the {counter.name} counter did not move over "
                                           f"{elapsed:.3f} s")
    return out


class Meter:
    """Cumulative readings of one counter from its creation (e.g. over a training run)."""

    def __init__(self, counter: EnergyCounter | Unavailable, clock: Callable[[], float] = time.perf_counter):
        self.counter, self.clock = counter, clock
        self.start = None if isinstance(counter, Unavailable) else counter.read()
        self.t0 = clock()

    @property
    def available(self) -> bool:
        return self.start is not None

    def since_start(self) -> float | None:
        """Joules since the meter was made (None without a counter)."""
        return None if self.start is None else self.counter.read() - self.start


def training_energy(meter: Meter, metrics: dict[str, Any]) -> dict[str, Any]:
    """The record's ``metrics["energy"]`` of a training run read by ``meter`` around `train`.

    ``joules_per_step`` divides the energy of the whole training call (the steps and the
    evaluation after each epoch) by its steps; ``energy_to_target_j`` is the cumulative energy at
    the end of the first epoch whose validation accuracy reached ``training.target_accuracy``
    (history rows carry ``energy_j``). A run shorter than `MIN_PERIODS` counter periods is flagged
    ``short_window``, never scaled."""
    if not meter.available:
        return {"available": False, "reason": str(meter.counter)}
    joules, elapsed = meter.since_start(), meter.clock() - meter.t0
    steps = metrics.get("steps") or 0
    out: dict[str, Any] = {"available": joules > 0, "counter": meter.counter.name, "joules": joules,
                           "window_s": elapsed, "update_period_s": meter.counter.update_period_s,
                           "joules_per_step": joules / steps if steps else None,
                           "covers": "the whole training call: steps and per-epoch evaluation"}
    if joules <= 0:
        out["reason"] = f"unavailable: the {meter.counter.name} counter did not move over {elapsed:.3f} s"
    if elapsed < min_window_s(meter.counter):
        out["short_window"] = f"{elapsed:.3f} s < {MIN_PERIODS} counter periods: quantisation dominates"
    target = metrics.get("target_accuracy")
    if target:
        reached = next((row for row in metrics.get("history") or []
                        if row.get("val_accuracy", 0) >= target and row.get("energy_j") is not None), None)
        out["energy_to_target_j"] = reached["energy_j"] if reached else None
        out["target_accuracy"] = target
    return out
