"""The fused, numerically stable softmax cross-entropy (mean over the batch)."""
from __future__ import annotations

import numpy as np

from .workspace import Workspace


class SoftmaxCrossEntropy:
    """Loss, correct count and gradient from logits in one pass.

    With ``z`` the logits ``(N, K)`` and ``y`` the labels ``(N,)``::

        shifted = z - max_k z                  (no overflow in exp)
        log p   = shifted - log(sum_k exp(shifted))
        loss    = -mean_n log p[n, y_n]
        dz      = (softmax(z) - onehot(y)) / N

    Args:
        dtype: dtype of the gradient buffer.
    """

    def __init__(self, dtype: np.dtype | str):
        self.ws = Workspace(dtype)

    def __call__(self, logits: np.ndarray, labels: np.ndarray,
                 with_grad: bool = True) -> tuple[float, int, np.ndarray | None]:
        """Returns ``(mean loss, number of correct argmax predictions, dz or None)``.

        ``dz`` is a reused buffer, overwritten by the next call.
        """
        n = logits.shape[0]
        rows = np.arange(n)
        probs = self.ws.get("probs", logits.shape)
        np.subtract(logits, logits.max(axis=1, keepdims=True), out=probs)
        picked = probs[rows, labels].astype(np.float64)  # shifted logit of the true class
        np.exp(probs, out=probs)
        total = probs.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0], dtype=np.float64) - picked))
        correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
        if not with_grad:
            return loss, correct, None
        np.divide(probs, total * n, out=probs)  # softmax / N
        probs[rows, labels] -= 1.0 / n
        return loss, correct, probs
