"""Every flag of every `greenllm` subcommand says what it does."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from greenllm.agent.command import build_parser as agent_parser
from greenllm.cli import build_parser
from greenllm.sim.command import build_parser as simulate_parser


def _actions(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _actions(subparser, f"{name} {sub}")
        else:
            yield name, action


PARSERS = {"greenllm": build_parser, "greenllm agent": agent_parser, "greenllm simulate": simulate_parser}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_has_help(name: str) -> None:
    actions = list(_actions(PARSERS[name](), name))
    assert len(actions) > 3
    missing = [
        f"{where}: {'/'.join(a.option_strings) or a.dest}"
        for where, a in actions
        if not a.help or a.help == argparse.SUPPRESS or not a.help.strip()
    ]
    assert not missing, missing


def test_every_subcommand_has_help() -> None:
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in subparsers._choices_actions}
    assert set(helps) == {"run", "agent", "simulate", "plan", "crd"}
    assert all(helps.values()), helps
