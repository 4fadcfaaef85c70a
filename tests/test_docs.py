"""Docs that tell the truth: every command's ``--help`` works, and the defaults the help texts,
README and docs state are the parser's own."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from fwbench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


COMMANDS = sorted(_commands())


def test_the_documented_commands_are_all_there():
    assert {"run", "list", "info", "check", "report", "compare", "ab", "study", "doctor", "data"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_works_and_its_stated_defaults_are_the_parsers(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    assert "usage: bench" in capsys.readouterr().out
    for action in _commands()[command]._actions:
        stated = re.search(r"\(default:? ([^;)]+)", action.help or "")
        if not stated or action.default in (None, argparse.SUPPRESS):
            continue
        text = stated.group(1).strip()
        default = action.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        if isinstance(default, float) and default == int(default):
            shown = f"{default:g}"
        assert text.startswith(shown) or shown in text, (
            f"bench {command} {action.option_strings}: help says default {text!r}, the parser has {default!r}")


def test_every_threads_help_states_the_one_default():
    from fwbench.run.placement import default_threads

    for name, parser in _commands().items():
        for action in parser._actions:
            if "--threads" in action.option_strings:
                assert f"{default_threads()} on this machine" in action.help, name


def test_readme_states_the_real_defaults():
    from fwbench.measure.timing import TOO_FAST_MARGIN
    from fwbench.run.matrix import DEFAULT_REPEATS
    from fwbench.run.placement import threads_per_cell

    readme = (ROOT / "README.md").read_text()
    assert f"**{DEFAULT_REPEATS} times** (`--repeat {DEFAULT_REPEATS}`, the default)" in readme
    assert f"(default {DEFAULT_REPEATS})" in readme
    assert "1 thread by default" in readme and threads_per_cell(None, 1, 2) == 1  # the 2-core reference
    assert "all cores" not in readme and TOO_FAST_MARGIN == 2.0 and "twice the machine's measured peak" in readme


def test_docs_name_only_test_files_that_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name in re.findall(r"tests/[\w/]+\.py", doc.read_text()):
            assert (ROOT / name).exists(), f"{doc.name} names {name}, which does not exist"
