"""The reference's rounding probe and the allowances the checks derive from it.

Two correct frameworks round the same computation differently. The NumPy reference models that
difference with its rounding probe (`NumpyTrainer.probe_rounding`: every layer's output and input
gradient one ulp off with random signs, BatchNorm's statistics summed sequentially). How far the
reference's own results move under the probe is its *spread*; a check adds `ROUNDING_FACTOR`
times that spread to its bound, so an ill-conditioned model (a BatchNorm of a near-constant
feature, an update made of rounding noise) passes where a correct backend is as accurate as the
reference, and a real fault, far larger than the noise, still fails. `docs/conformance.md`.
"""
from __future__ import annotations

import numpy as np

#: a bound adds this many times the reference's own spread
ROUNDING_FACTOR = 10
#: The step checks' spread is the element-wise largest over probes of these seeds: one draw of
#: one-ulp signs can cancel where another framework's rounding does not (3x smaller, seen).
STEP_PROBE_SEEDS = (1, 2, 3)


def probed(trainer, seed: int = 1):
    """``trainer`` under the reference's rounding probe with signs drawn from ``seed``, where the
    trainer has one (`NumpyTrainer.probe_rounding`)."""
    if hasattr(trainer, "probe_rounding"):
        trainer.probe_rounding(seed=seed)
    return trainer


def step_slack(weights: dict[str, np.ndarray], probes: list) -> dict[str, np.ndarray]:
    """Per array ``(*shape)``, what a step check adds to its bound element by element:
    `ROUNDING_FACTOR` times the largest distance of the reference's ``weights`` after its steps
    from those of its ``probes`` (the same steps under `probed` with each of `STEP_PROBE_SEEDS`)."""
    moved = [p.get_weights() for p in probes]
    return {k: ROUNDING_FACTOR * np.max([np.abs(np.asarray(m[k], np.float64) - w) for m in moved], axis=0)
            if moved else 0.0 for k, w in weights.items()}
