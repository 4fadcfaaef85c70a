"""Frontend x engine bookkeeping: labels from records (old ones too), `bench check` variants, and
the report's overhead ratio with its interval."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench.conformance.runner import backend_options, check_variants
from fwbench.errors import UsageError
from fwbench.plugins import get_registry
from fwbench.records.record import backend_label, engine_of, frontend_of
from fwbench.report.frontends import overhead_ratio
from record_samples import example_record


def test_old_and_raw_records_are_raw_on_their_own_engine():
    old = {"backend": "torch", "overrides": {}}
    assert (frontend_of(old), engine_of(old), backend_label(old)) == ("raw", "torch", "torch")
    keras = {"backend": "keras", "frontend": "keras", "engine": "jax"}
    assert backend_label(keras) == "keras[jax]"
    failed_early = {"backend": "keras", "frontend": None, "overrides": {"backend.engine": "torch"}}
    assert engine_of(failed_early) == "torch"


def test_backend_options_accepts_only_backend_keys():
    assert backend_options(["backend.mode=native", "backend.engine=jax"]) == {"mode": "native", "engine": "jax"}
    for bad in ("optimizer.lr=0.1", "backend.=1", "mode"):
        with pytest.raises(UsageError, match="backend options only"):
            backend_options([bad])


def test_check_variants_expand_a_frontend_over_its_installed_engines():
    registry = get_registry()
    if "keras" not in registry.backends:
        pytest.skip("the keras plugin is not installed")
    keras = registry.get_backend("keras")
    variants = check_variants(registry, ["numpy", "keras"], [])
    assert variants[0] == ("numpy", {})
    assert variants[1:] == [("keras", v) for v in keras.conformance_variants()]
    assert check_variants(registry, ["keras"], ["backend.engine=jax", "backend.mode=native"]) == [
        ("keras", {"engine": "jax", "mode": "native"})]


def _with_steps(times):
    record = example_record("keras")
    record["metrics"]["step_time_s"]["raw"] = list(times)
    return record


def test_overhead_ratio_is_the_ratio_of_medians_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    slow = _with_steps(0.003 * (1 + 0.05 * rng.standard_normal(200)))
    fast = _with_steps(0.001 * (1 + 0.05 * rng.standard_normal(200)))
    found = overhead_ratio(slow, fast)
    assert found["ratio"] == pytest.approx(3.0, rel=0.03)
    assert found["low"] < found["ratio"] < found["high"] and found["high"] - found["low"] < 0.3
    same = overhead_ratio(fast, _with_steps(0.001 * (1 + 0.05 * rng.standard_normal(200))))
    assert same["low"] < 1.0 < same["high"]  # no overhead: the interval covers 1


def test_overhead_ratio_without_step_times_is_none():
    record = _with_steps([])
    assert overhead_ratio(record, _with_steps([0.1, 0.2, 0.3])) is None
    assert overhead_ratio(_with_steps([0.2]), _with_steps([0.1]))["low"] is None


def test_an_engine_grid_plans_each_raw_backend_only_on_its_own_engine(tmp_path):
    from fwbench.cli import build_parser
    from fwbench.commands.run import run_options
    from fwbench.run.matrix import plan_run

    registry = get_registry()
    wanted = [b for b in ("jax", "torch", "keras") if b in registry.backends]
    if "keras" not in wanted:
        pytest.skip("the keras plugin is not installed")
    engines = [e for e in ("jax", "torch") if e in registry.backends and registry.backends[e].availability().ok]
    if not engines or not registry.backends["keras"].availability().ok:
        pytest.skip("needs keras and jax or torch")
    args = build_parser().parse_args(["run", "-b", ",".join(wanted), "-t", "mlp_mnist", "--dataset", "digits",
                                      "--set", "backend.engine=" + ",".join(engines), "--peak", "off",
                                      "--out", str(tmp_path)])
    planned = [(c.backend, c.overrides["backend.engine"]) for c in plan_run(run_options(args)).cells]
    expected = [(b, e) for e in engines for b in wanted if b in (e, "keras")]
    assert planned == expected


def test_each_check_quantity_names_the_rule_it_exercises():
    from fwbench.frontends import rule_of_check

    assert rule_of_check("grad:1.weight") is None and rule_of_check("logits") is None
    assert rule_of_check("curve") == {} and rule_of_check("rule:task") == {}
    assert rule_of_check("step:adam") == rule_of_check("rule:adam") == {"optimizer": "adam", "clip": "none"}
    assert rule_of_check("rule:clip-value") == {"optimizer": "sgd", "clip": "value"}
    assert rule_of_check("step:lr-per-step") == {"optimizer": "momentum", "clip": "none"}


def test_overhead_interval_over_repeats_is_filled_for_merged_records():
    from record_samples import example_record

    raw = example_record("jax", step_time=0.010, repeats=2, repeat_cv=0.02, seed=1)
    keras = example_record("keras", step_time=0.013, repeats=2, repeat_cv=0.02, seed=2)
    found = overhead_ratio(keras, raw)
    assert found["over"] == "repeats" and found["low"] < found["ratio"] < found["high"]
    assert found["ratio"] == pytest.approx(1.3, rel=0.05)


def test_a_raw_backend_answers_the_frontend_questions_without_frontend_members():
    from fwbench.frontends import (
        bind,
        conformance_variants_of,
        engines_of,
        frontend_name,
        identity_of,
        label_of,
        native_differences_of,
    )

    numpy = get_registry().get_backend("numpy")
    assert not any(hasattr(numpy, m) for m in ("engines", "conformance_variants", "label", "frontend",
                                               "for_options", "native_differences", "identity"))
    assert engines_of(numpy) == {"numpy": numpy.availability()} and conformance_variants_of(numpy) == [{}]
    assert (label_of(numpy), frontend_name(numpy), bind(numpy, {"x": 1})) == ("numpy", "raw", numpy)
    assert identity_of(numpy) == {"frontend": "raw", "frontend_version": None, "engine": "numpy",
                                  "engine_version": numpy.version()}
    assert native_differences_of(numpy, None, "step:adam") == []


def test_a_frontend_declares_its_engines_and_gets_the_rest_by_default():
    from fwbench.frontends import (
        Frontend,
        conformance_variants_of,
        engines_of,
        identity_of,
        label_of,
    )

    class OnNumpy(Frontend):
        name, engine_names, engine = "onnumpy", ("numpy",), "numpy"

        def for_options(self, options, source="<spec>"):
            return self

        def version(self):
            return "1.0"

        def configure(self, *, device, threads):
            return {}

        def build(self, request):
            raise NotImplementedError

    frontend = OnNumpy()
    assert engines_of(frontend) == {"numpy": get_registry().get_backend("numpy").availability()}
    assert conformance_variants_of(frontend) == [{}] and label_of(frontend) == "onnumpy[numpy]"
    assert identity_of(frontend)["frontend"] == "onnumpy" and identity_of(frontend)["engine"] == "numpy"
    assert "backend_mode" not in identity_of(frontend)
