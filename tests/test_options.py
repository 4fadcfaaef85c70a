"""Declared backend options (`fwbench.options`): unknown keys and bad values are refused at plan time."""
from __future__ import annotations

import json

import pytest
from fwbench.cli import main
from fwbench.errors import SpecError
from fwbench.options import Option, applicable_overrides, option_values, resolve_options


class _Fake:
    def __init__(self, name, *options):
        self.name, self.declared_options = name, options


COMPILE = Option("compile", default=False, choices=(False, True, "default"), help="compile")
SLEEP = Option("sleep", default=0.0, kind=float, help="sleep")


def test_values_are_parsed_over_the_defaults():
    b = _Fake("b", COMPILE, SLEEP)
    assert resolve_options(b, {}) == {"compile": False, "sleep": 0.0}
    assert resolve_options(b, {"compile": "DEFAULT", "sleep": 1}) == {"compile": "default", "sleep": 1.0}
    assert resolve_options(b, {"compile": True})["compile"] is True


@pytest.mark.parametrize("table, words", [
    ({"compile": "ture"}, ['does not accept compile = "ture"', "false, true"]),
    ({"compile": 1}, ["does not accept compile = 1"]),  # 1 is not true: TOML has booleans
    ({"sleep": "fast"}, ["takes sleep as any float", '"fast"']),
    ({"sleep": True}, ["takes sleep as any float"]),
    ({"complie": True}, ["unknown option 'complie'", "did you mean 'compile'?"]),
])
def test_bad_tables_name_the_key_and_the_fix(table, words):
    with pytest.raises(SpecError) as err:
        resolve_options(_Fake("b", COMPILE, SLEEP), table, "tasks/x.toml")
    text = str(err.value)
    assert text.startswith("tasks/x.toml [backend.")
    for word in words:
        assert word in text


def test_a_key_another_backend_of_the_run_declares_is_not_an_error():
    plain, torchy = _Fake("plain"), _Fake("torchy", COMPILE)
    assert resolve_options(plain, {"compile": True}, others=[torchy]) == {}
    with pytest.raises(SpecError, match="plain takes no"):
        resolve_options(plain, {"compile": True})
    overrides = {"backend.compile": True, "backend.engine": "jax", "lr": 0.1}
    assert applicable_overrides(plain, overrides) == {"backend.engine": "jax", "lr": 0.1}
    assert applicable_overrides(torchy, overrides) == overrides


# The three cases of issue 19, replayed through the CLI: exit 2, one line, before any cell starts.
@pytest.mark.parametrize("args, words", [
    (["-b", "torch", "--set", "backend.compile=ture"], ["--set [backend.compile]", "ture", "expected one of"]),
    (["-b", "numpy", "--set", "backend.typo_option=1"], ["unknown option 'typo_option'", "numpy takes no"]),
    (["-b", "keras", "--set", "backend.enigne=jax"], ["unknown option 'enigne'", "did you mean 'engine'"]),
])
def test_bad_backend_options_exit_2_before_any_cell(args, words, tmp_path, capsys):
    code = main(["run", *args, "-t", "mlp_mnist", "--dataset", "digits", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert not list(tmp_path.iterdir())  # no run folder: nothing started


def test_a_bad_option_in_a_task_file_names_the_file(tmp_path, capsys):
    from fwbench.plugins import get_registry

    spec = tmp_path / "t.toml"
    text = get_registry().get_task_file("mlp_mnist").read_text()
    spec.write_text(text + '\n[backend]\ncompile = "sometimes"\n')
    code = main(["run", "-b", "jax", "-t", str(spec), "--dataset", "digits", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and f"{spec} [backend.compile]" in err and '"sometimes"' in err


def test_list_backends_options_json(capsys):
    assert main(["list", "backends", "--options", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    torch = {r["option"]: r for r in rows if r["backend"] == "torch"}
    assert set(torch) == {"compile", "execution", "optimizer_impl"}
    assert json.loads(torch["compile"]["default"]) is False
    assert any(r["backend"] == "numpy" and r["option"] == "(none)" for r in rows)


def test_every_builtin_option_default_is_one_of_its_choices():
    from fwbench.options import declared
    from fwbench.plugins import get_registry

    for backend in get_registry().backends.values():
        for option in declared(backend).values():
            assert option.parse(option.default, "<default>", backend.name) == option.default


# `bench check --set backend.KEY=…` goes through the same declarations: refused before any check runs.
@pytest.mark.parametrize("args, words", [
    (["-b", "torch", "--set", "backend.compile=ture"], ["--set [backend.compile]", '"ture"', "expected one of"]),
    (["-b", "numpy", "--set", "backend.typo_option=1"], ["unknown option 'typo_option'", "numpy takes no"]),
    (["-b", "keras", "--set", "backend.enigne=jax"], ["unknown option 'enigne'", "did you mean 'engine'"]),
])
def test_bench_check_refuses_bad_backend_options_the_same_way(args, words, capsys, monkeypatch):
    from fwbench.conformance import runner as conformance_runner
    def no_checks(*_a, **_k):  # reaching the checks means the option was accepted
        raise AssertionError("a check started")

    monkeypatch.setattr(conformance_runner, "run_checks", no_checks)
    code = main(["check", *args, "-t", "mlp_mnist"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_trainers_read_parsed_values_over_the_defaults():
    """`option_values`: what a trainer reads; another backend's key is ignored, a bad value refused."""
    assert option_values((COMPILE, SLEEP), None) == {"compile": False, "sleep": 0.0}
    assert option_values((COMPILE,), {"compile": "Default", "layout": "NCHW"}) == {"compile": "default"}
    with pytest.raises(SpecError, match=r'^t.toml \[backend.sleep\]: mine takes sleep as any float, got "x"'):
        option_values((SLEEP,), {"sleep": "x"}, "t.toml", "mine")


def test_builtin_trainers_map_their_options():
    from fwbench_jax.options import jax_options
    from fwbench_tensorflow.options import compile_mode as tf_mode
    from fwbench_torch.options import torch_options

    assert torch_options({})["compile"] is None and torch_options({"compile": True})["compile"] == "default"
    assert torch_options({"compile": "max-autotune"})["compile"] == "max-autotune"
    assert tf_mode({}) == "xla" and tf_mode({"compile": False}) == "eager" and tf_mode({"compile": "graph"}) == "graph"
    jit, layout = jax_options({"layout": "nchw"})
    assert jit is True and layout.name == "NCHW"
