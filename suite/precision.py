"""Precision policies: ``training.precision`` (``--set precision=…``), one vocabulary for every backend.

==========  =================================================================================
``fp32``    the default: float32 everywhere, TensorFloat-32 **off** (full float32 matmuls).
``tf32``    float32 storage, matmuls and convolutions in TensorFloat-32 (10-bit mantissa) on a
            GPU that has it (Ampere and later). There is no such mode on a CPU: declined there.
``bf16``    mixed: parameters, optimizer state and the update in float32 ("master weights");
            the forward and backward of every layer in bfloat16; the loss in float32.
``fp16``    as ``bf16`` with float16 compute, plus dynamic loss scaling (`LOSS_SCALE`).
==========  =================================================================================

Where a mixed policy rounds (the reference, `fwbench_numpy.precision`, rounds exactly here; a
framework's autocast / dtype policy rounds in the same places up to its own choice of which
element-wise op stays in float32):

* a dense or conv2d layer rounds its input, weight and bias to the compute dtype, accumulates the
  product in float32 and rounds its output; every other layer computes on its low-precision input
  (BatchNorm with float32 statistics and parameters) and rounds its output;
* the logits are cast up to float32 for the softmax cross-entropy;
* backward: the loss gradient is rounded to the compute dtype where it enters the low-precision
  graph; every input gradient is rounded; weight gradients are accumulated in float32, rounded to
  the compute dtype, and reach the float32 master weights (BatchNorm's stay float32).

A backend lists the policies it implements in ``Backend.precisions`` (import-free; default: fp32
only); a cell asking for another one is skipped with its reason (`fwbench.backend.precision_availability`). The policy a
trainer actually applied goes in ``compile_info["precision"]`` (`in_force`) and in every record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Every policy name, in the order shown to users.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DEFAULT = "fp32"


@dataclass(frozen=True)
class LossScale:
    """Dynamic loss scaling (``fp16``): the loss gradient is multiplied by ``scale`` before the
    backward pass and the weight gradients divided by it after. A step whose gradients are not
    finite is skipped and the scale multiplied by ``backoff``; after ``growth_interval`` finite
    steps in a row it is multiplied by ``growth``. The values are the common ground of
    ``torch.amp.GradScaler`` (given ``init_scale``), Keras' and TensorFlow's LossScaleOptimizer."""

    initial: float = 2.0 ** 15
    growth: float = 2.0
    backoff: float = 0.5
    growth_interval: int = 2000


LOSS_SCALE = LossScale()


@dataclass(frozen=True)
class Policy:
    """One precision policy.

    Attributes:
        name: one of `PRECISIONS`.
        compute_dtype: the dtype of layer computations (``"float32"``, ``"bfloat16"``, ``"float16"``).
        mantissa_bits: stored mantissa bits of the compute dtype (float32 23, TF32 10, bf16 7, fp16 10).
        loss_scaling: whether the policy scales the loss (fp16).
        gpu_only: no CPU implementation exists in any framework (tf32).
    """

    name: str
    compute_dtype: str
    mantissa_bits: int
    loss_scaling: bool = False
    gpu_only: bool = False

    @property
    def mixed(self) -> bool:
        """Low-precision compute with float32 master weights (bf16, fp16)."""
        return self.compute_dtype != "float32"

    @property
    def unit_roundoff(self) -> float:
        """``u = 2**-(mantissa_bits + 1)``: the largest relative error of one rounding to nearest."""
        return 2.0 ** -(self.mantissa_bits + 1)


POLICIES = {
    "fp32": Policy("fp32", "float32", 23),
    "tf32": Policy("tf32", "float32", 10, gpu_only=True),
    "bf16": Policy("bf16", "bfloat16", 7),
    "fp16": Policy("fp16", "float16", 10, loss_scaling=True),
}


def policy(name: str) -> Policy:
    """The `Policy` named ``name`` (a validated spec value)."""
    return POLICIES[name]


def of_task(task: Any) -> Policy:
    """The policy of a training `fwbench.spec.TaskSpec` (fp32 for anything without one)."""
    training = getattr(task, "training", None)
    return POLICIES[getattr(training, "precision", DEFAULT)]


def in_force(pol: Policy, **facts: Any) -> dict[str, Any]:
    """``compile_info["precision"]`` of a trainer: the policy applied and how (``facts``)."""
    out: dict[str, Any] = {"policy": pol.name, "compute_dtype": pol.compute_dtype,
                           "param_dtype": "float32", "tf32": pol.name == "tf32"}
    if pol.loss_scaling:
        out["loss_scale"] = {"dynamic": True, "initial": LOSS_SCALE.initial,
                             "growth_interval": LOSS_SCALE.growth_interval}
    out.update(facts)
    return out


def recorded(record: dict[str, Any]) -> str:
    """The precision a record ran under: what the trainer applied, else what the spec asked."""
    applied = (record.get("compile_info") or {}).get("precision")
    if isinstance(applied, dict) and applied.get("policy"):
        return str(applied["policy"])
    training = (record.get("config") or {}).get("training") or {}
    return str(training.get("precision", DEFAULT))
