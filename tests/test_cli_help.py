"""Every option of every subcommand has a help line with its default and its choices."""

from __future__ import annotations

import argparse

import pytest

from spikeseg.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, prefix: str = "spikeseg"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


PARSERS = list(_parsers(build_parser()))


def test_every_subcommand_is_walked():
    names = {n for n, _ in PARSERS}
    assert {"spikeseg train", "spikeseg evaluate", "spikeseg predict", "spikeseg report",
            "spikeseg convert", "spikeseg sweep", "spikeseg activations", "spikeseg export",
            "spikeseg import-original", "spikeseg data info", "spikeseg data make-mnist-cifar",
            "spikeseg models"} <= names


@pytest.mark.parametrize("name,parser", PARSERS, ids=[n for n, _ in PARSERS])
def test_every_option_has_help_with_default_and_choices(name, parser):
    fmt = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        label = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help.strip(), f"{label} has no help"
        text = fmt._expand_help(action) if action.help else ""
        flag = action.nargs == 0  # store_true and the like
        if action.option_strings and not action.required and not flag:
            assert "default" in text, f"{label}: help does not say its default: {text!r}"
        if action.choices is not None:
            shown = fmt._format_args(action, action.dest)
            assert all(str(c) in shown for c in action.choices), f"{label}: choices not shown"
    assert parser.format_help()  # renders


@pytest.mark.parametrize("name", [n for n, _ in PARSERS])
def test_help_exits_zero(name, capsys):
    argv = name.split()[1:] + ["--help"]
    assert main(argv) == 0
    assert "usage:" in capsys.readouterr().out
