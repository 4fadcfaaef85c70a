"""What a conformance check reports (`Check`) and how two arrays are compared."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RTOL, ATOL = 1e-4, 1e-5  # forward: float32 against the float64 reference


@dataclass
class Check:
    backend: str
    task: str
    quantity: str
    max_abs: float
    max_rel: float
    passed: bool
    note: str = ""
    skipped: bool = False  # not applicable: the backend declined the task (or this variant of it)


def skipped_check(backend: str, task: str, quantity: str, reason: str) -> Check:
    return Check(backend, task, quantity, np.nan, np.nan, False, f"not applicable: {reason}", skipped=True)


def compare(reference: np.ndarray, candidate: np.ndarray, rtol: float = RTOL, atol: float = ATOL):
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return np.inf, np.inf, False
    diff = np.abs(reference - candidate)
    max_abs = float(diff.max(initial=0.0))
    max_rel = float((diff / np.maximum(np.abs(reference), 1e-12)).max(initial=0.0))
    ok = bool(np.all(diff <= atol + rtol * np.abs(reference))) and not np.isnan(diff).any()
    return max_abs, max_rel, ok


def compare_updates(before, reference, candidate, rtol: float, atol: float, slack=0.0):
    """Compare two arrays after an update, relative to the largest element of the reference update
    ``reference - before`` (an element-wise relative error means nothing where the update is ~0).
    ``slack`` (a scalar or an array of the reference's shape) is added element-wise to the bound:
    the rounding spread of the reference's own steps (see `check_task`)."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return np.inf, np.inf, False
    scale = float(np.abs(reference - np.asarray(before, np.float64)).max(initial=0.0))
    diff = np.abs(reference - candidate)
    max_abs = float(diff.max(initial=0.0))
    max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else np.inf)
    ok = bool(np.all(diff <= atol + rtol * scale + np.asarray(slack, np.float64))) and not np.isnan(diff).any()
    return max_abs, max_rel, ok


def worst(results):
    """The failing (or else largest) of several ``(max_abs, max_rel, ok)`` triples."""
    return max(results, key=lambda t: (not t[2], t[0])) if results else (0.0, 0.0, True)
