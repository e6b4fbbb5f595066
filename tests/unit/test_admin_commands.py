"""`python -m analytics_core.admin` dispatches each sub-command to its own handler."""

from __future__ import annotations

import argparse

import pytest

from analytics_core import admin
from analytics_core.settings import Settings


def _subcommands() -> set[str]:
    parser = admin.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_every_subcommand_has_exactly_one_handler() -> None:
    assert set(admin.COMMANDS) == _subcommands()
    assert set(admin.COMMANDS) >= admin.NAMES_A_CLIENT


@pytest.mark.parametrize("command", sorted(admin.NAMES_A_CLIENT - {"move-client"}))
def test_a_bad_client_id_is_refused_before_any_connection(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "Bad Id!"]
    if command == "deprovision":
        argv += ["--confirm", "Bad Id!"]
    if command == "set-quota":
        argv += ["--default"]
    args = admin.build_parser().parse_args(argv)
    # Settings pointing nowhere: reaching any server would fail differently.
    assert admin._run(args, Settings.from_env({"POSTGRES_PORT": "1"})) == 2
    assert capsys.readouterr().err.startswith("error: ")
