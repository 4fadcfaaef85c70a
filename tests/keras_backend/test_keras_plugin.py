"""Registration, lazy imports, options and `KerasBackend.configure` (subprocesses: Keras' engine
is fixed per process by KERAS_BACKEND)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fwbench.cli import main
from fwbench.errors import SpecError
from fwbench_keras.backend import KerasBackend
from fwbench_keras.options import ENGINES, engine_installed

FRAMEWORKS = ("keras", "tensorflow", "torch", "jax")


def _run(code: str, env: dict | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=180,
                         env={**clean, **(env or {})})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_importing_the_plugin_and_planning_a_cell_imports_no_framework():
    code = ("import sys, fwbench_keras, fwbench_keras.backend\n"
            "from fwbench.registry import Registry\n"
            "r = Registry(); fwbench_keras.fwbench_register_backends(r); b = r.backends['keras']\n"
            "b.availability(); b.version(); b.engines(); b.for_options({'engine': 'jax'})\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))")
    assert _run(code) == "[]"


@pytest.mark.parametrize(("options", "key", "words"), [
    ({"engine": "tensorflw"}, "backend.engine", 'expected one of: "tensorflow", "jax", "torch"'),
    ({"mode": "loose"}, "backend.mode", 'expected one of: "exact", "native"'),
    ({"compile": "xla"}, "backend.compile", 'compile = "xla"; expected one of: "auto", true, false'),
])
def test_bad_options_name_the_key_and_the_choices(options, key, words):
    with pytest.raises(SpecError) as info:
        KerasBackend().for_options(options, "tasks/mlp_mnist.toml")
    assert key in str(info.value) and words in str(info.value)


def test_bench_run_refuses_an_unknown_engine_before_any_cell(tmp_path, capsys):
    code = main(["run", "-b", "keras", "-t", "mlp_mnist", "--dataset", "digits",
                 "--set", "backend.engine=jax,tensorflw",
                 "--peak", "off", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "backend.engine" in err[0] and "tensorflw" in err[0]
    assert not any(tmp_path.iterdir())  # no run folder, no record


def test_bench_check_refuses_a_non_backend_setting(capsys):
    assert main(["check", "-b", "keras", "-t", "mlp_mnist", "--set", "optimizer.lr=0.1"]) == 2
    assert "backend options only" in capsys.readouterr().err


def test_engines_and_identity():
    engines = KerasBackend().engines()
    assert list(engines) == list(ENGINES)
    assert all(a.ok == engine_installed(e) for e, a in engines.items())
    installed = [e for e in ENGINES if engine_installed(e)]
    assert KerasBackend().conformance_variants() == [{"engine": e} for e in installed]
    bound = KerasBackend().for_options({"engine": installed[0], "mode": "native"})
    identity = bound.identity()
    assert identity["frontend"] == "keras" and identity["engine"] == installed[0]
    assert identity["backend_mode"] == "native" and bound.label == f"keras[{installed[0]}]"


@pytest.mark.parametrize("engine", [e for e in ENGINES if engine_installed(e)])
def test_configure_sets_keras_backend_before_keras_loads(engine):
    code = ("import json, os\n"
            "from fwbench_keras.backend import KerasBackend\n"
            f"facts = KerasBackend().for_options({{'engine': {engine!r}}}).configure(device='cpu', threads=1)\n"
            "import keras\n"
            "print(json.dumps({'env': os.environ['KERAS_BACKEND'], 'keras': keras.backend.backend(), "
            "'facts': facts['keras_backend']}))")
    assert json.loads(_run(code)) == {"env": engine, "keras": engine, "facts": engine}


def test_configure_refuses_a_second_engine_in_one_process():
    installed = [e for e in ENGINES if engine_installed(e)]
    if len(installed) < 2:
        pytest.skip("needs two Keras engines")
    code = ("from fwbench_keras.backend import KerasBackend\n"
            "from fwbench.errors import UsageError\n"
            f"KerasBackend().for_options({{'engine': {installed[0]!r}}}).configure(device='cpu', threads=1)\n"
            "try:\n"
            f"    KerasBackend().for_options({{'engine': {installed[1]!r}}}).configure(device='cpu', threads=1)\n"
            "except UsageError as exc:\n"
            "    print('refused' if 'its own process' in str(exc) else str(exc))\n")
    assert _run(code) == "refused"
