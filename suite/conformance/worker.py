"""The fuzzer's check process: a spawned child that is replaced once it has grown too large.

A framework keeps native memory for every model it builds that neither `Backend.release_caches` nor
a reset of its context gives back (TensorFlow: about 6.6 MB a spec, 2.7 GB after 261 specs). One
process over hundreds of specs would grow without bound, so ``bench check --random`` checks each
spec in a `RecycledWorker`: a single spawned process (never forked: the frameworks hold threads)
that answers with its resident size; past ``recycle_rss`` bytes it is shut down, and the next call
starts a fresh one. A child that dies inside a call (a native crash, the OOM killer) raises
`WorkerDied` in the parent, which goes on with a fresh child.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Self

from ..run.process import memory_status

#: A check process resident past this many bytes after a spec is replaced before the next one.
RECYCLE_RSS_BYTES = 3 * 2**29  # 1.5 GiB: nine processes of a full run stay within 16 GB
#: Seconds one call may take before the child is killed: a drawn spec checks in seconds (the
#: slowest, Keras on JAX compiling every variant, in well under a minute), so this only ends a hang.
CALL_TIMEOUT_S = 900.0


class WorkerDied(RuntimeError):
    """The child process ended inside a call (killed, or crashed in native code)."""


class RecycledWorker:
    """Calls ``fn(*args)`` in one spawned child process, replaced after any call that leaves it more
    than ``recycle_rss`` bytes resident, and killed when a call takes over ``timeout`` seconds.
    ``started`` counts the processes started so far and ``largest`` is the largest resident size a
    child reported after a call. ``fn`` and its arguments must pickle (a module-level function,
    plain data)."""

    def __init__(self, recycle_rss: int = RECYCLE_RSS_BYTES, timeout: float = CALL_TIMEOUT_S):
        self.recycle_rss, self.timeout = recycle_rss, timeout
        self.started = 0
        self.largest = 0
        self._pool: ProcessPoolExecutor | None = None

    def call(self, fn, *args):
        """``fn(*args)``, run in the child; `WorkerDied` when the child ended during the call."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_end_with_parent, initargs=(os.getpid(),))
            self.started += 1
        future = self._pool.submit(_with_resident_size, fn, *args)
        try:
            value, resident = future.result(timeout=self.timeout)
        except BrokenProcessPool:
            children = self._children()
            self.close()  # joins the pool's thread, which reaps the child
            raise WorkerDied(f"the check process ended during the call ({_how_it_ended(children)})") from None
        except TimeoutError:
            for child in self._children():
                child.kill()
            self.close()
            raise WorkerDied(f"the check process took over {self.timeout:g} s on one call and was killed") from None
        self.largest = max(self.largest, resident)
        if resident > self.recycle_rss:
            self.close()
        return value

    def _children(self) -> list:
        """The pool's child processes (`multiprocessing.Process`), as far as the pool says."""
        return list((getattr(self._pool, "_processes", None) or {}).values())

    def close(self) -> None:
        """Shut the child down (it ends after the call it is on); the next call starts a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: prctl(2) option: the signal this process gets when its parent ends.
PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """In the child, first: be killed when the parent ends (Linux), however it ends; otherwise a
    `bench check --random` stopped by a signal would leave its child checking specs for nobody."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(1)


def _how_it_ended(children: list) -> str:
    """"killed by SIGKILL" or "exit code N": how the pool's (reaped) child ended, where it says."""
    codes = [child.exitcode for child in children if child.exitcode is not None]
    if not codes:
        return "it ended abruptly"
    if codes[0] < 0:
        name = signal.Signals(-codes[0]).name
        return f"killed by {name}" + (": out of memory?" if name == "SIGKILL" else "")
    return f"exit code {codes[0]}"


def _with_resident_size(fn, *args) -> tuple:
    """In the child: ``(fn(*args), VmRSS in bytes)``."""
    value = fn(*args)
    return value, memory_status().get("VmRSS", 0)
