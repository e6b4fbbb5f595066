"""Command-line values out of range are argparse errors (one line, exit 2), not tracebacks."""

from __future__ import annotations

import pytest

from analytics_core import admin
from analytics_core.dlq import reprocess
from devstack import cli as devstack_cli
from router import send_events


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (admin.main, ["set-quota", "acme", "--burst", "99999999999999999999"], "--burst: "),
        (admin.main, ["set-quota", "acme", "--burst", "0"], "not between 1 and 2147483647"),
        (admin.main, ["set-quota", "acme", "--events-per-s", "nan"], "--events-per-s: 'nan'"),
        (admin.main, ["set-quota", "acme", "--events-per-s", "-1"], "positive"),
        (reprocess.main, ["--max-attempts", "-1"], "--max-attempts: -1 is not between"),
        (reprocess.main, ["--max-wait-days", "1e12"], "at most 36500"),
        (reprocess.main, ["--max-records", "x"], "'x' is not a whole number"),
        (reprocess.main, ["--client-id", "Bad!"], "--client-id: "),
        (send_events.main, ["--client-id", "a", "--api-key", "k", "--pad", "-1"], "--pad: -1"),
    ],
)
def test_values_out_of_range_are_refused_by_the_parser(
    main: object, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)  # type: ignore[operator]
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "--timeout", "-3"], "--timeout: '-3' is not a positive"),
        (["logs", "kafka", "-n", "-5"], "-n/--lines: -5 is not between 1"),
        (["down", "--services", ""], "--services: name at least one service"),
        (["reset", "--services", " , "], "--services: name at least one service"),
    ],
)
def test_devstack_refuses_what_it_used_to_misread(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        devstack_cli.main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err
