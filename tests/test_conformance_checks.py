"""The conformance checks compare what they claim, pass on correct backends and fail on wrong ones.

Outside specs (``tests/fixtures/conformance``) that once failed correct backends stay here as
regressions; each check's reference is independent of the NumPy backend where it matters.
"""
from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest
from fwbench.backend import Availability
from fwbench.conformance import checks as C
from fwbench.layers import BatchNorm, Conv2D, Dense, Dropout, MaxPool
from fwbench.plugins import get_registry
from fwbench.spec import load_task, task_from_dict

FIXTURES = Path(__file__).parent / "fixtures" / "conformance"


def backend(name):
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    b = get_registry().get_backend(name)
    b.configure(device="cpu", threads=1)
    return b


def failed(checks):
    return [(c.backend, c.quantity, c.max_abs, c.max_rel) for c in checks if not c.passed]


def small_task(**changes):
    raw = {"task": {"name": "small"}, "dataset": {"name": "digits"},
           "model": {"layers": [
               {"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"},
               {"type": "batchnorm"}, {"type": "activation", "fn": "leaky_relu", "alpha": 0.2},
               {"type": "avgpool", "size": 3, "stride": 2},
               {"type": "residual", "layers": [{"type": "conv2d", "filters": 3, "kernel": 3, "stride": 2,
                                                "padding": "same"}]},
               {"type": "flatten"}, {"type": "dense", "units": 10}]},
           "optimizer": {"name": "nesterov", "lr": 0.05, "weight_decay": 1e-3},
           "clip": {"kind": "value", "max": 0.05}, "training": {"batch_size": 8, "epochs": 1}}
    raw.update(changes)
    return task_from_dict(raw, "<test>")


def test_reference_is_checked_against_finite_differences_and_closed_forms():
    numpy = backend("numpy")
    checks = C.check_task("small", small_task(), numpy, numpy)
    assert not failed(checks)
    quantities = {c.quantity for c in checks}
    assert {"fd:0.weight", "fd:1.gamma", "fd:4.shortcut.weight", "rule:nesterov", "rule:task"} <= quantities
    # float64 against the same float64 code cannot fail: not counted
    assert not any(q.startswith(("grad:", "step:", "curve")) for q in quantities)


def test_finite_differences_catch_a_wrong_gradient(monkeypatch):
    from fwbench_numpy import layers as L

    numpy = backend("numpy")
    original = L.BatchNorm.backward

    def wrong(self, dy):
        dx = original(self, dy)
        self.grads["gamma"][...] *= 1.01
        return dx

    monkeypatch.setattr(L.BatchNorm, "backward", wrong)
    bad = {q for _, q, *_ in failed(C.check_task("small", small_task(), numpy, numpy))}
    assert bad == {"fd:1.gamma"}


def test_finite_differences_pass_among_crowded_kinks_at_any_jitter(monkeypatch):
    """Thousands of pre-activations within 1e-3 of a ReLU kink, then a BatchNorm: at about 3% of
    jittered points a central difference crosses kinks at all three steps (CI drew one; the jitter
    then hung on set order, so PYTHONHASHSEED chose it). Fresh points must find a clean one."""
    numpy = backend("numpy")
    spec = FIXTURES / "fd_kinks_bn_near_constant.toml"
    task = load_task(spec)
    data, bases = C.CheckData.of(task), C.FD_BASES

    def failing_seeds(bases):
        monkeypatch.setattr(C, "FD_BASES", bases)
        out = []
        for seed in range(300):
            monkeypatch.setattr(C, "FD_SEED", seed)
            checks = C.check_task(spec.stem, task, numpy, numpy, full=False, curve_steps=1, data=data)
            assert sum(c.quantity.startswith("fd:") for c in checks) == 8
            out += [(seed, q) for _, q, *_ in failed(checks)]
        return out

    assert failing_seeds(1), "the fixture no longer crowds kinks: the retry is untested"
    assert failing_seeds(bases) == []


def test_float32_tolerance_with_the_rounding_probe_still_catches_a_wrong_batchnorm_eps(monkeypatch):
    """The probe widens the forward tolerance only where the forward is ill-conditioned: torch's
    BatchNorm built with eps 1e-3 for the spec's 1e-5 (outputs off by ~5e-4 relative) still fails."""
    torch = backend("torch")
    from torch import nn

    real = nn.BatchNorm2d
    monkeypatch.setattr(nn, "BatchNorm2d", lambda channels, eps, momentum: real(channels, eps=1e-3, momentum=momentum))
    bad = {q for _, q, *_ in failed(C.check_task("small", small_task(), torch, backend("numpy")))}
    assert "train logits" in bad


@pytest.mark.parametrize(("fixture", "ties"), [("batchnorm_global_pool_relu_tie", True), ("leaky_relu_at_zero", False),
                                             ("fd_kinks_bn_near_constant", False)])
def test_noise_at_a_relu_kink_is_told_from_an_exact_zero(fixture, ties):
    """Rounding noise of an exact zero at a ReLU (a global pool of a one-sample BatchNorm) gets
    offset biases for the float64 checks; exact zeros (a zero bias on a ReLU-zeroed input) keep the
    canonical weights, so that the kink convention is still checked (JAX's leaky ReLU at 0)."""
    task = load_task(FIXTURES / f"{fixture}.toml")
    data = C.CheckData.of(task)
    shape, classes = C.task_input(task)
    ref = C.Side(backend("numpy"), task, shape, classes, "float64", batch_size=data.batch_size)
    batch = C.batches(shape, classes, 1, batch_size=data.batch_size)[0]
    assert C.has_noise_ties(ref, batch) is ties


@pytest.mark.parametrize(("fixture", "quantities"), [
    ("step_noise_constant_features", ("step:task",)),
    ("step_noise_constant_features_dropout", ("step:task", "dropout:step"))])
def test_step_noise_allowance_still_catches_a_wrong_weight_decay(monkeypatch, fixture, quantities):
    """A weight update made of rounding noise (a dense layer after BatchNorms of exactly constant
    features) passes by the spread of the reference's probed steps, in ``step:`` and, with shared
    dropout masks, ``dropout:step``; that allowance stays at the noise's size, so torch with twice
    the spec's weight decay (updates off by ~3e-7) still fails."""
    import fwbench_torch.optim as torch_optim

    task = load_task(FIXTURES / f"{fixture}.toml")
    torch, numpy = backend("torch"), backend("numpy")

    def steps(checks):
        return {c.quantity: c.passed for c in checks if c.quantity in ("step:task", "dropout:step")}

    right = steps(C.check_task("noise", task, torch, numpy, full=False, data=C.CheckData.of(task)))
    assert right == dict.fromkeys(quantities, True)
    real = torch_optim.torch.optim.SGD
    monkeypatch.setattr(torch_optim.torch.optim, "SGD",
                        lambda params, weight_decay, **kw: real(params, weight_decay=2 * weight_decay, **kw))
    assert steps(C.check_task("noise", task, torch, numpy, full=False, data=C.CheckData.of(task))) == dict.fromkeys(
        quantities, False)


def test_closed_form_catches_a_wrong_update_rule(monkeypatch):
    from fwbench_numpy import optim

    numpy = backend("numpy")
    monkeypatch.setattr(optim.Nesterov, "_update", optim.Momentum._update)  # heavy ball instead
    bad = {q for _, q, *_ in failed(C.check_task("small", small_task(), numpy, numpy))}
    assert bad == {"rule:nesterov", "rule:task"}


def test_closed_form_catches_norm_clipping_without_the_eps(monkeypatch):
    from fwbench_numpy import optim

    numpy = backend("numpy")
    monkeypatch.setattr(optim, "CLIP_NORM_EPS", 0.0)  # optax's rule: max / norm
    task = small_task(optimizer={"name": "sgd", "lr": 0.1})
    bad = {q for _, q, *_ in failed(C.check_task("small", task, numpy, numpy))}
    assert bad == {"rule:clip-norm"}


def test_gauge_biases_are_only_those_that_feed_batch_norm():
    layers = (Conv2D(filters=2, kernel=3), Dropout(rate=0.5), MaxPool(size=2), BatchNorm(),
              Conv2D(filters=2, kernel=3, activation="relu"), BatchNorm(), Dense(units=3))
    out = C.without_gauge_biases(layers)
    assert [getattr(layer, "use_bias", None) for layer in out] == [False, None, None, None, True, None, True]


@pytest.mark.parametrize("name", ["numpy", "torch", pytest.param("tensorflow", marks=pytest.mark.slow),
                                  pytest.param("jax", marks=pytest.mark.slow)])  # XLA compiles: ~30 s CPU
def test_outside_specs_pass_on_every_backend(name):
    """The outside specs of issue 14: the VGG-like net (value clipping, overlapping avg pool,
    Nesterov: a float32 kink flip made a correct backend's 20-step float32 trajectory diverge), the
    bias-before-BN AdaGrad spec (rounding noise turned into steps by adaptive rules), and what the
    fuzzer found since (leaky ReLU at exactly 0)."""
    candidate, reference = backend(name), backend("numpy")
    for spec in sorted(FIXTURES.glob("*.toml")):
        task = load_task(spec)
        checks = C.check_task(spec.stem, task, candidate, reference, full=False, curve_steps=8,
                              data=C.CheckData.of(task))
        assert not failed(checks), spec.name


def split_task(**changes):
    """``small_task`` at the spec's batch size 3 on a train split of 8 samples (2 full batches and
    a partial one), 3 epochs: `CheckData.of` makes a 6-step curve crossing two epoch boundaries."""
    raw = {"dataset": {"name": "digits", "train_limit": 8, "validation_split": 0.0},
           "training": {"batch_size": 3, "epochs": 3},
           "schedule": {"name": "step", "gamma": 0.1, "step_epochs": 1}}
    raw.update(changes)
    return small_task(**raw)


def test_spec_batch_size_and_train_split_shape_the_checks():
    from fwbench.schedules import make_schedule

    task = split_task()
    data = C.CheckData.of(task)
    assert (data.batch_size, data.train_samples, data.steps_per_epoch) == (3, 8, 2)
    assert data.curve_steps(task, 20) == 6 and C.CheckData().curve_steps(task, 20) == 20
    # the curve's learning rates are those `fwbench.training.train` hands out for 2 steps per epoch
    lr = make_schedule(task.schedule, 0.05, 2, 6)
    assert C._task_lrs(task, 6, data.steps_per_epoch) == [lr(i) for i in range(6)]
    assert C._task_lrs(task, 6, 2) == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005])
    curve, (x, _) = C.split_batches(data, (1, 8, 8), 10, 6, task.training.seed)
    assert [len(b[1]) for b in curve] == [3] * 6 and x.shape == (8, 1, 8, 8)
    checks = C.check_task("split", task, backend("numpy"), backend("numpy"), full=False, data=data)
    assert not failed(checks)


def test_logits_after_curve_cover_the_last_partial_batch(monkeypatch):
    """A backend whose eval pass goes wrong on a batch smaller than the training batch (here: it
    normalises with the batch statistics) passes 8-sample checks and fails at the spec's batch
    size, where the split's last eval batch is partial."""
    torch_backend, numpy = backend("torch"), backend("numpy")
    from fwbench_torch.trainer import TorchTrainer

    original = TorchTrainer.predict

    def partial_in_train_mode(self, batch):
        if len(batch[0]) < 3:
            self.model.train()
            return self.model(batch[0]).detach().numpy()
        return original(self, batch)

    monkeypatch.setattr(TorchTrainer, "predict", partial_in_train_mode)
    task = split_task()
    assert not failed(C.check_task("split", task, torch_backend, numpy, full=False, curve_steps=6))
    bad = {q for _, q, *_ in failed(C.check_task("split", task, torch_backend, numpy, full=False,
                                                 data=C.CheckData.of(task)))}
    assert bad == {"logits after curve"}


def test_curve_catches_a_learning_rate_held_across_epochs(monkeypatch):
    """A backend that keeps the first learning rate it was handed (a compiled step with the lr
    baked in) fails the curve once a step schedule changes the lr at an epoch boundary."""
    torch_backend, numpy = backend("torch"), backend("numpy")
    from fwbench_torch.trainer import TorchTrainer

    original = TorchTrainer.train_step

    def first_lr(self, batch, lr):
        self.__dict__.setdefault("_held_lr", lr)
        return original(self, batch, self._held_lr)

    monkeypatch.setattr(TorchTrainer, "train_step", first_lr)
    task = split_task(schedule={"name": "step", "gamma": 0.1, "step_epochs": 2})  # lr drops after step 4
    bad = {q for _, q, *_ in failed(C.check_task("split", task, torch_backend, numpy, full=False,
                                                 data=C.CheckData.of(task)))}
    assert bad == {"curve", "logits after curve"}


def dropout_task():
    layers = [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"}, {"type": "dropout", "rate": 0.3},
              {"type": "batchnorm"}, {"type": "activation", "fn": "relu"},
              {"type": "residual", "layers": [{"type": "conv2d", "filters": 3, "kernel": 3, "stride": 2,
                                               "padding": "same"}, {"type": "dropout", "rate": 0.5}]},
              {"type": "flatten"}, {"type": "dropout", "rate": 0.2}, {"type": "dense", "units": 10}]
    return small_task(model={"layers": layers}, optimizer={"name": "adam", "lr": 0.05})


@pytest.mark.parametrize("name", ["torch", pytest.param("tensorflow", marks=pytest.mark.slow),
                                  pytest.param("jax", marks=pytest.mark.slow)])
def test_dropout_masks_reach_every_raw_backend(name):
    checks = C.check_task("drop", dropout_task(), backend(name), backend("numpy"), full=False, curve_steps=3)
    assert not failed(checks)
    assert {c.quantity for c in checks if c.passed} >= {"dropout:grad", "dropout:step"}


def test_dropout_checks_share_masks_and_catch_a_wrong_scale(monkeypatch):
    """With the same keep masks handed to both sides (``use_dropout_masks``) a correct backend
    agrees to rounding; one that scales kept values by ``1 / rate`` (a keep probability taken for
    a drop rate) fails only the dropout checks. A backend without the seam is skipped."""
    torch_backend, numpy = backend("torch"), backend("numpy")
    import torch
    from fwbench_torch.model import MaskableDropout

    task = dropout_task()
    checks = C.check_task("drop", task, torch_backend, numpy, full=False, curve_steps=3)
    assert not failed(checks)
    assert {c.quantity for c in checks if c.passed} >= {"dropout:grad", "dropout:step"}

    original = MaskableDropout.forward

    def keep_probability(self, x):
        if self.keep is None or not self.training:
            return original(self, x)
        return torch.where(self.keep, x / self.p, torch.zeros((), dtype=x.dtype))

    monkeypatch.setattr(MaskableDropout, "forward", keep_probability)
    bad = {q for _, q, *_ in failed(C.check_task("drop", task, torch_backend, numpy, full=False, curve_steps=3))}
    assert bad == {"dropout:grad", "dropout:step"}

    monkeypatch.delattr("fwbench_torch.trainer.TorchTrainer.use_dropout_masks")
    checks = C.check_task("drop", task, torch_backend, numpy, full=False, curve_steps=3)
    skipped = [c for c in checks if c.skipped]
    assert [c.quantity for c in skipped] == ["dropout:grad", "dropout:step"]
    assert not failed(c for c in checks if not c.skipped)
    assert "use_dropout_masks" in skipped[0].note


def test_float32_forward_tolerance_follows_the_reference_rounding():
    """sigmoid -> global mean -> BN of a feature with a spread of ~1e-3: float32 rounding of the
    pooled mean is amplified ~100x; a correct float32 forward must pass, a wrong one must not."""
    numpy = backend("numpy")
    task = small_task(model={"layers": [{"type": "activation", "fn": "sigmoid"}, {"type": "global_avg_pool"},
                                        {"type": "batchnorm"}, {"type": "dense", "units": 10}]},
                      dataset={"name": "mnist_5k"})
    assert not failed(C.check_task("ill", task, numpy, numpy, full=False))
    exact = C._forward(C.Side(numpy, task, (1, 28, 28), 10, "float64"), C.batches((1, 28, 28), 10, 1)[0], "float64")
    assert not C.compare(exact[1], exact[1] * (1 + 1e-3), C.RTOL, C.ATOL)[2]


def test_summary_lists_unavailable_backends_as_skipped():
    from fwbench.conformance.runner import summary_table
    from rich.console import Console

    table = summary_table([C.Check("numpy", "t", "logits", 0.0, 0.0, True)],
                            [("ghost", "unavailable: ghostlib is not installed (pip install ghostlib)")])
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "ghost" in text and "skipped" in text and "pip install ghostlib" in text


def test_random_spec_fuzzer_runs_and_its_specs_round_trip_as_toml():
    from fwbench.conformance.fuzz import fuzz, spec_to_toml, task_specs
    from hypothesis import given, settings

    names = ["numpy"] + (["torch"] if importlib.util.find_spec("torch") else [])
    result = fuzz(names, 6, seed=3)
    assert result.failure is None, (str(result.failure), result.toml)
    assert result.examples >= 6

    @settings(max_examples=25, deadline=None, database=None)
    @given(task_specs())
    def round_trip(raw):
        assert tomllib.loads(spec_to_toml(raw)) == raw
        task_from_dict(raw, "<random>")

    round_trip()


def test_fuzzer_reports_a_shrunk_failing_spec(monkeypatch):
    from fwbench.conformance.fuzz import fuzz
    from fwbench_numpy import optim

    monkeypatch.setattr(optim.AdaGrad, "_update", optim.SGD._update)
    result = fuzz(["numpy"], 60, seed=0)
    assert result.failure is not None
    raw = tomllib.loads(result.toml)
    assert raw["optimizer"]["name"] == "adagrad"
    assert any(c.quantity == "rule:task" for c in result.failure.failed)
    # shrunk to flatten/global pool + the head (+ at most the optional block that may end a model)
    assert len(raw["model"]["layers"]) <= 3
    assert raw["model"]["layers"][0]["type"] in ("flatten", "global_avg_pool")
    task_from_dict(raw, "<pasted>")


def test_fuzzer_releases_each_backends_caches_after_every_spec(monkeypatch):
    """Hundreds of specs in one process: Keras on JAX grew ~150 MB a spec (jit caches) until
    `Backend.release_caches` ran between specs."""
    from fwbench.conformance.fuzz import fuzz

    numpy = get_registry().get_backend("numpy")
    calls = []
    monkeypatch.setattr(type(numpy), "release_caches", lambda self: calls.append(self.name), raising=False)
    result = fuzz(["numpy"], 3, seed=5)
    assert result.failure is None and calls == ["numpy"] * result.examples


def test_a_check_process_past_its_memory_budget_is_replaced_before_the_next_spec():
    """`bench check --random` checks in a child process: one process kept TensorFlow's ~6.6 MB a
    spec (2.7 GB after 261 specs). A child left past the budget is replaced; one under it is kept."""
    import os

    from fwbench.conformance.worker import RecycledWorker

    with RecycledWorker(recycle_rss=2**40) as kept:
        pids = {kept.call(os.getpid) for _ in range(3)}
    assert len(pids) == 1 and os.getpid() not in pids and kept.started == 1 and kept.largest > 0
    with RecycledWorker(recycle_rss=1) as replaced:
        pids = {replaced.call(os.getpid) for _ in range(3)}
    assert len(pids) == 3 and replaced.started == 3


def test_a_check_process_that_dies_is_reported_and_the_next_spec_gets_a_fresh_one():
    import os
    import signal

    from fwbench.conformance.worker import RecycledWorker, WorkerDied

    with RecycledWorker() as worker:
        first = worker.call(os.getpid)
        with pytest.raises(WorkerDied, match="ended during the call .exit code 3"):
            worker.call(os._exit, 3)
        second = worker.call(os.getpid)
        assert second != first and worker.started == 2
        with pytest.raises(WorkerDied, match="killed by SIGKILL: out of memory"):
            worker.call(os.kill, second, signal.SIGKILL)
        assert worker.call(os.getpid) not in (first, second) and worker.started == 3


def test_a_check_process_that_hangs_is_killed_and_reported():
    import os
    import time

    from fwbench.conformance.worker import RecycledWorker, WorkerDied

    with RecycledWorker(timeout=2) as worker:
        hung = worker.call(os.getpid)
        start = time.monotonic()
        with pytest.raises(WorkerDied, match="took over 2 s on one call and was killed"):
            worker.call(time.sleep, 600)
        assert time.monotonic() - start < 60
        assert worker.call(os.getpid) != hung and worker.started == 2
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is tied to its parent on Linux")
def test_a_check_process_ends_with_the_process_that_started_it():
    """A `bench check --random` killed by a signal must not leave its child checking specs for nobody."""
    import os
    import signal
    import subprocess
    import time

    script = ("import os, signal\nfrom fwbench.conformance.worker import RecycledWorker\n"
              "print(RecycledWorker().call(os.getpid), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())  # not read to the end: a child left alive would hold the pipe
    proc.wait(timeout=120)
    proc.stdout.close()

    def alive(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = alive(child)
    if left:
        os.kill(child, signal.SIGKILL)
    assert not left


def test_isolated_fuzzing_checks_the_same_specs_in_fresh_processes():
    from fwbench.conformance.fuzz import fuzz

    here, isolated = [], []
    in_process = fuzz(["numpy"], 3, seed=5, progress=lambda i, raw: here.append(raw))
    result = fuzz(["numpy"], 3, seed=5, progress=lambda i, raw: isolated.append(raw), isolate=True, recycle_rss=1)
    assert result.failure is None and isolated == here
    assert in_process.processes == 0 and result.processes == result.examples == 3 and result.largest_rss > 0


def test_a_spec_on_which_the_check_process_dies_is_a_disagreement_not_a_crash(monkeypatch):
    from fwbench.conformance import worker
    from fwbench.conformance.fuzz import fuzz

    def dies(self, fn, entries, raw, options):
        if raw["optimizer"]["name"] == "adagrad":
            raise worker.WorkerDied("the check process ended during the call (killed)")
        return []

    monkeypatch.setattr(worker.RecycledWorker, "call", dies)
    result = fuzz(["numpy"], 60, seed=0, isolate=True)
    assert result.failure is not None and tomllib.loads(result.toml)["optimizer"]["name"] == "adagrad"
    assert [(c.backend, c.quantity) for c in result.failure.failed] == [("numpy", "task")]
    assert "killed" in str(result.failure)


def test_a_check_process_that_died_once_is_reported_with_its_spec_not_a_traceback(monkeypatch):
    """A child killed in one spec (the OOM killer, a signal) fails that spec, and the same spec then
    passes when hypothesis checks it again: the run reports it as a disagreement that did not recur."""
    from fwbench.conformance import worker
    from fwbench.conformance.fuzz import fuzz

    deaths = []

    def dies_once(self, fn, entries, raw, options):
        if raw["optimizer"]["name"] == "adagrad" and not deaths:
            deaths.append(raw)
            raise worker.WorkerDied("the check process ended during the call (killed)")
        return []

    monkeypatch.setattr(worker.RecycledWorker, "call", dies_once)
    result = fuzz(["numpy"], 60, seed=0, isolate=True)
    assert result.flaky and result.failure is not None and result.failure.raw == deaths[0]
    assert tomllib.loads(result.toml) == deaths[0]


def test_fuzzer_skips_what_a_backend_declines_and_counts_a_crash(monkeypatch):
    """A frontend that cannot build a drawn spec raises Unsupported: skipped, never a failure;
    any other exception on a valid spec is a failure."""
    from fwbench.backend import Unsupported
    from fwbench.conformance.fuzz import check_spec

    numpy = backend("numpy")

    class Declines:
        name = label = "declines"

        def supports(self, task):
            return Availability(True)

        def build(self, request):
            raise Unsupported("no rule for this layer")

    class Crashes(Declines):
        name = label = "crashes"

        def build(self, request):
            raise NotImplementedError("oops")

    raw = {"task": {"name": "r"}, "dataset": {"name": "digits"},
           "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 8, "epochs": 1}}
    assert check_spec(raw, {"declines": Declines()}, numpy) == []
    failed = check_spec(raw, {"crashes": Crashes()}, numpy)
    assert [c.quantity for c in failed] == ["task", "inference"]  # training and serving both crash
    assert all("NotImplementedError" in c.note for c in failed)


def test_bench_check_random_stops_the_further_engines_once_it_has_failed(monkeypatch):
    """A disagreement here is shown at once: the other engines' processes (hundreds of specs to go)
    are stopped, not waited for."""
    import subprocess
    import sys
    import tempfile
    import time

    from fwbench.commands import check as cmd
    from fwbench.conformance import fuzz
    from fwbench.conformance.checks import Check

    started = []

    def sleeper(name, options, examples, seed):
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by _finish_random_elsewhere
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=log))
        return started[-1], log

    raw = {"task": {"name": "r"}}
    failed = [Check("numpy", "random", "logits", 1.0, 1.0, False)]
    monkeypatch.setattr(cmd, "_start_random_elsewhere", sleeper)
    monkeypatch.setattr(fuzz, "fuzz", lambda *a, **k: fuzz.FuzzResult(failure=fuzz.Disagreement(raw, failed, {})))
    t0 = time.perf_counter()
    code = cmd._check_random([("numpy", {}), ("keras", {"engine": "tensorflow"}), ("keras", {"engine": "jax"})], 5, 0)
    assert code == 1 and time.perf_counter() - t0 < 60
    assert len(started) == 2 and all(p.poll() is not None for p in started)  # stopped


def test_fuzzer_skips_a_drawn_option_the_backend_cannot_run_with_the_spec():
    """torch has no fused RMSprop: with a drawn optimizer_impl = "fused" the spec is valid and torch
    declines it (Unsupported, a skipped check), as a `bench run` cell is skipped with the reason."""
    from fwbench.conformance.fuzz import check_spec

    raw = {"task": {"name": "r"}, "dataset": {"name": "digits", "train_limit": 2, "validation_split": 0.0},
           "model": {"layers": [{"type": "global_avg_pool"}, {"type": "dense", "units": 10}]},
           "optimizer": {"name": "rmsprop", "lr": 1e-4}, "training": {"batch_size": 1, "epochs": 1}}
    torch = backend("torch")
    assert check_spec(raw, {"torch": torch}, backend("numpy"), {"torch": {"optimizer_impl": "fused"}}) == []


def test_bench_check_random_runs_each_backend_in_its_own_process_and_stops_when_one_fails(monkeypatch, capsys):
    """Every backend (each engine of a frontend) is fuzzed in its own process; when one of them
    fails, this one stops at its next spec instead of checking hundreds more."""
    import subprocess
    import sys
    import tempfile

    from fwbench.commands import check as cmd

    started = []

    def fails_at_once(name, options, examples, seed):
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by _finish_random_elsewhere
        started.append((name, options))
        proc = subprocess.Popen([sys.executable, "-c", "print('disagreement'); raise SystemExit(1)"], stdout=log)
        proc.wait()
        return proc, log

    monkeypatch.setattr(cmd, "_start_random_elsewhere", fails_at_once)
    variants = [("numpy", {}), ("torch", {}), ("keras", {"engine": "jax"}), ("keras", {"engine": "torch"})]
    assert cmd._check_random(variants, 200, 0) == 1
    assert started == variants[1:]
    assert "stopped after 0 specs" in capsys.readouterr().out


def test_coverage_counts_the_options_of_backends_checked_in_other_processes():
    """With one process per backend, the first one's coverage still counts every backend's drawn
    options: they come from the spec alone, so they are the ones the other processes ran with."""
    from collections import Counter

    from fwbench.conformance.fuzz import drawable_options, fuzz, options_for

    seen = []
    result = fuzz(["numpy"], 3, seed=5, progress=lambda i, raw: seen.append(raw), elsewhere=[("jax", {})])
    jax = get_registry().get_backend("jax")
    expected = Counter(f"jax backend.{k}={v}" for raw in seen
                       for k, v in options_for(raw, "jax", drawable_options(jax)).items())
    assert expected and {k: n for k, n in result.coverage.options.items() if k.startswith("jax ")} == expected


def test_every_vocabulary_item_is_drawn_in_the_default_run():
    """`bench check --random N --coverage` reports items and pairs; the default run (seed 0,
    DEFAULT_EXAMPLES specs) draws every item of the vocabulary at least once."""
    from fwbench.conformance.coverage import DEFAULT_EXAMPLES, VOCABULARY
    from fwbench.conformance.fuzz import draw_coverage

    coverage = draw_coverage(DEFAULT_EXAMPLES, seed=0)
    assert coverage.specs == DEFAULT_EXAMPLES
    assert coverage.missing == [], coverage.report()
    assert len(coverage.pairs) > 30 and "flatten>dense" in coverage.pairs
    assert {"head:residual", "classes:subset", "input:non-square", "model:frozen"} <= set(VOCABULARY)


def test_coverage_items_name_what_a_spec_uses():
    from fwbench.conformance.coverage import items, pairs

    raw = {"dataset": {"name": "synthetic", "shape": [2, 5, 7]},
           "model": {"layers": [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": 1},
                                {"type": "flatten"}, {"type": "dense", "units": 10},
                                {"type": "residual", "activation": "softmax",
                                 "layers": [{"type": "dense", "units": 10}]}], "frozen": ["conv2d"]},
           "optimizer": {"name": "adam", "lr": 0.1}, "training": {"dtype": "float64"}}
    got = items(raw)
    assert {"padding:int", "input:non-square", "head:residual", "residual:flat", "model:frozen",
            "activation:softmax", "optimizer:adam", "dtype:float64", "clip:none"} <= got
    assert "classes:subset" not in got and "head:dense" not in got
    assert pairs(raw) == {"conv2d>flatten", "flatten>dense", "dense>residual"}


def test_bench_check_hands_the_backend_options_to_the_checked_task():
    """``bench check -b B --set backend.K=V`` checks the task with K=V in its ``[backend]`` table,
    where the trainer reads it (it used to check the default mode and say nothing)."""
    from fwbench.conformance.checks import iter_checks

    seen = []

    def check(name, task, candidate, reference, device, rule_cache):
        seen.append(dict(task.backend))
        return []

    list(iter_checks("numpy", ["mlp_mnist"], options={"execution": "eager"}, check=check))
    assert seen == [{"execution": "eager"}]


def test_fuzzer_draws_declared_options_but_not_engines_conventions_or_compile_aliases():
    from fwbench.conformance.fuzz import drawable_options
    from fwbench.options import Option

    class Declares:
        name = "declares"
        declared_options = (Option("engine", default="a", choices=("a", "b"), help=""),
                            Option("mode", default="exact", choices=("exact", "native"), help=""),
                            Option("compile", default=True, choices=(True, False), help=""),
                            Option("layout", default="NHWC", choices=("NHWC", "NCHW"), help=""),
                            Option("only", default="x", choices=("x",), help=""),
                            Option("free", default=1.0, kind=float, help=""))

    assert drawable_options(Declares()) == {"layout": ("NHWC", "NCHW")}
    assert drawable_options(backend("numpy")) == {}


def test_fuzzer_does_not_draw_torch_compile_under_keras_either():
    """Inductor takes half a minute per trainer, and a spec builds about ten: as for raw torch."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    from fwbench.conformance.fuzz import drawable_options
    from fwbench.frontends import bind

    keras = get_registry().get_backend("keras")
    assert drawable_options(bind(keras, {"engine": "torch"}))["execution"] == ("eager", "graph")
    assert "compiled" in drawable_options(bind(keras, {"engine": "jax"}))["execution"]


def test_fuzzer_checks_each_backend_with_its_drawn_options_and_names_them_in_a_failure():
    from fwbench.conformance.fuzz import Disagreement, FuzzResult, check_spec

    built = []

    class Records:
        name = label = "records"

        def supports(self, task):
            return Availability(True)

        def build(self, request):
            built.append(dict(request.task.backend))
            raise NotImplementedError("oops")

    raw = {"task": {"name": "r"}, "dataset": {"name": "digits"},
           "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 8, "epochs": 1}}
    failed = check_spec(raw, {"records": Records()}, backend("numpy"), {"records": {"layout": "NCHW"}})
    assert built and all(b == {"layout": "NCHW"} for b in built)
    assert [c.backend for c in failed] == ["records", "records"]  # training and serving
    result = FuzzResult(failure=Disagreement(raw, failed, {"records": {"layout": "NCHW"}}))
    assert "[with backend.layout=NCHW]" in str(result.failure)
    assert result.toml.startswith("# records ran with --set backend.layout=NCHW\n")
    assert tomllib.loads(result.toml) == raw


def test_one_seed_draws_the_same_specs_whatever_options_the_backends_take():
    """A frontend's further engines run the same ``--seed`` in their own processes: the options
    drawn for a process's backends must not change which specs it draws."""
    from fwbench.conformance.fuzz import fuzz, options_for

    def specs(names):
        seen = []
        fuzz(names, 4, seed=7, progress=lambda i, raw: seen.append(raw))
        return seen

    alone = specs(["numpy"])
    assert alone and specs(["numpy", "torch"] if importlib.util.find_spec("torch") else ["numpy"]) == alone
    choices = {"layout": ("NHWC", "NCHW"), "execution": ("eager", "compiled")}
    assert options_for(alone[0], "jax", choices) == options_for(alone[0], "jax", choices)


def test_a_disagreement_prints_backend_labels_and_options_as_text(monkeypatch, capsys):
    """Labels (``flax[jax]``) and options (``[with backend.step=...]``) hold brackets that the
    terminal's markup must not eat."""
    from fwbench.commands import check as check_command
    from fwbench.conformance import fuzz as fuzz_module
    from fwbench.conformance.checks import Check

    failed = [Check("flax[jax]", "random", "run", float("nan"), float("nan"), False, "crashed: ValueError")]
    raw = {"task": {"name": "r"}, "dataset": {"name": "digits"},
           "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 8, "epochs": 1}}
    result = fuzz_module.FuzzResult(examples=1, backends=["flax[jax]"], failure=fuzz_module.Disagreement(
        raw, failed, {"flax[jax]": {"step": "functional"}}))
    monkeypatch.setattr(fuzz_module, "fuzz", lambda *args, **kwargs: result)
    assert check_command._check_random([("numpy", {})], 1, 0) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "flax[jax] run crashed: ValueError [with backend.step=functional]" in out  # no "(abs nan, rel nan)"
    measured = Check("torch", "random", "logits", 1e-3, 2e-2, False)
    assert str(fuzz_module.Disagreement(raw, [measured])) == "torch logits (abs 1.00e-03, rel 2.00e-02)"
