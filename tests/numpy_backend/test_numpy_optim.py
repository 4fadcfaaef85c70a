"""Optimizers against values worked out by hand from the OptimizerSpec formulas, and clipping.

Every case starts from p = [1, -2] (float64) and feeds the same three gradients
g1 = [0.5, -1], g2 = [-0.25, 0.5], g3 = [1, 2]. The expected parameters after steps 1, 2 and 3
were computed element by element with a calculator from the rules in `fwbench.spec.OptimizerSpec`
(not with this backend's code); short derivations are given where they fit.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from fwbench.spec import OPTIMIZERS, OptimizerSpec
from fwbench_numpy.optim import (
    OPTIMIZER_CLASSES,
    clip_by_global_norm,
    clip_by_value,
    make_optimizer,
)
from numpy_helpers import make_task, make_trainer

P0 = [1.0, -2.0]
GRADS = [[0.5, -1.0], [-0.25, 0.5], [1.0, 2.0]]

CASES = {
    # p -= 0.1 g: [1 - 0.05, -2 + 0.1] = [0.95, -1.9]; then + [0.025, -0.05]; then - [0.1, 0.2]
    "sgd": ({"name": "sgd", "lr": 0.1},
            [[0.95, -1.9], [0.975, -1.95], [0.875, -2.15]]),
    # g + 0.1 p = [0.6, -1.2] -> [0.94, -1.88]; g2 + 0.1 p1 = [-0.156, 0.312] -> [0.9556, -1.9112]
    "sgd_l2": ({"name": "sgd", "lr": 0.1, "weight_decay": 0.1},
               [[0.94, -1.88], [0.9556, -1.9112], [0.846044, -2.092088]]),
    # b1 = g1; b2 = 0.9 b1 + g2 = [0.2, -0.4]; b3 = [0.18, -0.36] + g3 = [1.18, 1.64]
    "momentum": ({"name": "momentum", "lr": 0.1, "momentum": 0.9},
                 [[0.95, -1.9], [0.93, -1.86], [0.812, -2.024]]),
    # update g + 0.9 b: [0.95, -1.9], [-0.07, 0.14], [2.062, 3.476]
    "nesterov": ({"name": "nesterov", "lr": 0.1, "momentum": 0.9},
                 [[0.905, -1.81], [0.912, -1.824], [0.7058, -2.1716]]),
    "nesterov_l2": ({"name": "nesterov", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
                    [[0.9031, -1.8062], [0.90757411, -1.81514822],
                     [0.698189208191, -2.156378416382]]),
    # v1 = 0.01 g1^2 = [0.0025, 0.01]; p1 = p0 - 0.01 g1 / (sqrt(v1) + 1e-8)
    "rmsprop": ({"name": "rmsprop", "lr": 0.01, "alpha": 0.99, "eps": 1e-8},
                [[0.900000019999996, -1.900000009999999],
                 [0.9449013374421751, -1.944901331474435],
                 [0.8574273783928595, -2.0323752943495976]]),
    # s1 = [0.25, 1] -> p1 = [1 - 0.1 * 0.5 / (0.5 + 1e-8), ...]; s2 = [0.3125, 1.25]
    "adagrad": ({"name": "adagrad", "lr": 0.1, "eps": 1e-8},
                [[0.900000002, -1.900000001],
                 [0.9447213607499958, -1.9447213601499957],
                 [0.8574342054175036, -2.0320085158634402]]),
    "adagrad_initial": ({"name": "adagrad", "lr": 0.1, "eps": 1e-10, "initial_accumulator": 0.1},
                        [[0.9154845745414341, -1.9046537410845317],
                         [0.9544095217434496, -1.9476868893720214],
                         [0.870268889368195, -2.0341544296017067]]),
    # step 1: m/(1-0.9) = g1, v/(1-0.999) = g1^2 -> p1 = p0 - 0.1 g1 / (|g1| + 1e-8)
    # step 2 (first element): m = 0.02, v = 0.00031225, p2 = 0.9 - 0.1 (0.02/0.19) / (sqrt(v/0.001999) + 1e-8)
    "adam": ({"name": "adam", "lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
             [[0.900000002, -1.900000001],
              [0.8733662987078463, -1.873366297370903],
              [0.8075551396770898, -1.9190994760260234]]),
    "adam_l2": ({"name": "adam", "lr": 0.1, "weight_decay": 0.1},
                [[0.9000000016666666, -1.9000000008333333],
                 [0.8544413674617625, -1.8537472646427609],
                 [0.7815043998631658, -1.88636311586399]]),
    # p *= 1 - 0.1 * 0.1 first: [0.99, -1.98], then the adam step of 0.1 sign(g1)
    "adamw": ({"name": "adamw", "lr": 0.1, "weight_decay": 0.1},
              [[0.890000002, -1.880000001],
               [0.8544662986878463, -1.8345662973609032],
               [0.7801104766702113, -1.8619538130424145]]),
}


def test_every_spec_optimizer_has_a_class():
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)
    assert {c[0]["name"] for c in CASES.values()} == set(OPTIMIZERS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_three_steps_match_hand_computed_values(case):
    hyper, expected = CASES[case]
    spec = OptimizerSpec(**hyper)
    p = np.array(P0)
    g = np.zeros(2)
    opt = make_optimizer(spec, [p], [g])
    for step, (grad, want) in enumerate(zip(GRADS, expected), start=1):
        g[...] = grad
        opt.step(spec.lr)
        assert opt.t == step
        np.testing.assert_allclose(p, want, rtol=1e-12, atol=0, err_msg=f"{case} step {step}")
        np.testing.assert_array_equal(g, grad)  # gradients are never modified


def test_step_uses_the_learning_rate_it_is_given():
    spec = OptimizerSpec(name="sgd", lr=123.0)
    p, g = np.array([1.0]), np.array([2.0])
    make_optimizer(spec, [p], [g]).step(0.25)
    assert p[0] == 0.5


def test_float32_update_stays_float32_and_in_place():
    spec = OptimizerSpec(name="adamw", lr=0.01, weight_decay=0.1)
    p = np.ones(4, np.float32)
    g = np.full(4, 0.5, np.float32)
    view = p[:]
    make_optimizer(spec, [p], [g]).step(0.01)
    assert p.dtype == np.float32 and np.shares_memory(view, p)
    np.testing.assert_allclose(p, 1 * (1 - 0.001) - 0.01, rtol=1e-6)


def test_unknown_optimizer_names_the_choices():
    spec = dataclasses.replace(OptimizerSpec(name="sgd", lr=0.1), name="adm")
    with pytest.raises(ValueError, match="expected one of: sgd"):
        make_optimizer(spec, [np.zeros(1)], [np.zeros(1)])


def test_clip_by_global_norm():
    a, b = np.array([3.0, 4.0]), np.array([12.0])  # global norm 13
    norm = clip_by_global_norm([a, b], 6.5)
    assert norm == 13.0
    coef = 6.5 / (13.0 + 1e-6)  # PyTorch's clip_grad_norm_ rule
    np.testing.assert_allclose(a, [3 * coef, 4 * coef], rtol=1e-15)
    np.testing.assert_allclose(b, [12 * coef], rtol=1e-15)
    assert math.sqrt(a @ a + b @ b) == pytest.approx(6.5, rel=1e-6)

    c = np.array([0.3, -0.4])  # norm 0.5 <= 1: untouched
    clip_by_global_norm([c], 1.0)
    np.testing.assert_array_equal(c, [0.3, -0.4])


def test_clip_by_value():
    g = np.array([-3.0, 0.5, 2.0, -0.25])
    clip_by_value([g], 1.0)
    np.testing.assert_array_equal(g, [-1.0, 0.5, 1.0, -0.25])


@pytest.mark.parametrize("kind", ["norm", "value"])
def test_trainer_clips_raw_gradients_before_weight_decay(kind):
    """p_new = p - lr * (clip(g) + wd * p): clipping sees the raw gradient only."""
    layers = [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]
    limit = 0.05
    task = make_task(layers, optimizer={"name": "sgd", "lr": 0.5, "weight_decay": 0.3},
                     clip={"kind": kind, "max": limit})
    trainer, _, _ = make_trainer(task, (1, 4, 4), 3)
    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.standard_normal((6, 1, 4, 4)) * 5, rng.integers(0, 3, 6))
    before = trainer.get_weights()
    _, _, raw = trainer.loss_and_grads(batch)
    if kind == "norm":
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in raw.values()))
        assert norm > limit  # the case is meaningful: clipping is active
        clipped = {k: g * (limit / (norm + 1e-6)) for k, g in raw.items()}
    else:
        assert max(float(np.abs(g).max()) for g in raw.values()) > limit
        clipped = {k: np.clip(g, -limit, limit) for k, g in raw.items()}
    trainer.train_step(batch, 0.2)
    after = trainer.get_weights()
    for name in raw:
        want = before[name] - 0.2 * (clipped[name] + 0.3 * before[name])
        np.testing.assert_allclose(after[name], want, rtol=1e-12, atol=1e-14, err_msg=name)
