"""Each default has one name, defined once where it is owned, and docs/generating.md says what those names
hold: generate() follows transformers, the command line llama.cpp, the pipeline transformers' pipeline."""
import argparse
import ast
import re
from pathlib import Path

import pytest

import minineo
from minineo.commands.generate import CLI_MAX_NEW_TOKENS, CLI_TEMPERATURE, parser
from minineo.text import settings as settings_module
from minineo.text.settings import DEFAULT_MAX_NEW_TOKENS, Settings
from minineo.text.pipeline import PIPELINE_MAX_NEW_TOKENS, PIPELINE_TEMPERATURE

ROOT = Path(minineo.__file__).parent
PAGE = (ROOT.parent / "docs" / "generating.md").read_text(encoding="utf-8")   # the page with the flag table


def readme_flag_defaults():  # {"--top-k": "50", ...}: the "(...)" at the end of each row of the flag table
    defaults = {}
    for cell, meaning in re.findall(r"^\| (`[^|]*`) \| (.*) \|$", PAGE, re.M):
        groups = re.findall(r"`([^`]*)`", cell)
        given = re.findall(r"\(([^()]*)\)\s*$", meaning)
        values = given[0].split(":")[0].split(", ") if given else []
        if len(values) == len(groups):
            for flags, value in zip(groups, values):
                for flag in flags.split(", "):
                    defaults[flag] = value
    return defaults


def test_readme_flag_table_gives_the_commands_defaults():
    table = readme_flag_defaults()
    checked = []
    for action in parser()._actions:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            continue   # no default to show (--seed, --threads), a switch, --help and --version
        flag = max(action.option_strings, key=len)
        assert any(f in table for f in action.option_strings), f"docs/generating.md's flag table does not give {flag}'s default"
        shown = next(table[f] for f in action.option_strings if f in table)
        assert shown == str(action.default), f"docs/generating.md: {flag} ({shown}), --help: {action.default}"
        checked.append(flag)
    assert {"--max-new-tokens", "--temperature", "--top-k", "--min-new-tokens"} <= set(checked), checked
    assert parser().get_default("temperature") == CLI_TEMPERATURE
    assert parser().get_default("max_new_tokens") == CLI_MAX_NEW_TOKENS


def test_readme_gives_the_python_and_pipeline_defaults():
    assert f"`max_new_tokens` counts new tokens (default {DEFAULT_MAX_NEW_TOKENS})" in PAGE
    assert f"temperature {PIPELINE_TEMPERATURE}, up to {PIPELINE_MAX_NEW_TOKENS} new tokens" in PAGE
    assert Settings().temperature == settings_module.DEFAULT_TEMPERATURE and Settings().top_k == settings_module.DEFAULT_TOP_K


def test_the_flag_table_parser_reads_the_rows():   # so that the test above can fail
    assert readme_flag_defaults()["--top-p"] == str(Settings.top_p)
    assert readme_flag_defaults()["-n"] == str(CLI_MAX_NEW_TOKENS)


@pytest.mark.parametrize("prefix", ["DEFAULT_", "CLI_", "PIPELINE_"])
def test_each_default_name_is_defined_once(prefix):
    defined = {}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.startswith(prefix):
                        defined.setdefault(target.id, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    twice = {name: where for name, where in defined.items() if len(where) > 1}
    assert not twice, f"defined more than once: {twice}"
