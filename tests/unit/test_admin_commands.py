"""`python -m analytics_core.admin` dispatches each sub-command to its own handler."""

from __future__ import annotations

import argparse
from pathlib import Path

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


def test_check_migrations_reports_every_file_and_fails_on_one_that_can_not_run_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Settings that can not be read: the check reads files only, so it still runs.
    env = {"POSTGRES_PORT": "not-a-port"}
    (tmp_path / "v001_ok.sql").write_text(
        "ALTER TABLE events_base ADD COLUMN IF NOT EXISTS a UInt8"
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        assert admin.main(["check-migrations", "--dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            "ok    base schema",
            "ok    v001 ok",
            "2 of 2 file(s) can be applied (and re-applied)",
        ]

        # A plain CREATE heals on a re-run (counted as applied once it exists); an ALTER of
        # several clauses that can not run twice does not.
        (tmp_path / "v002_plain.sql").write_text("CREATE TABLE t (a UInt8) ENGINE = Log")
        bad = "ALTER TABLE events_base ADD COLUMN b UInt8, ADD COLUMN c UInt8"
        (tmp_path / "v003_bad.sql").write_text(bad)
        assert admin.main(["check-migrations", "--dir", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert "ok    v002 plain\n" in out
        assert f"error v003 bad: statement 1 ({bad!r}) is ADD COLUMN without IF NOT EXISTS" in out
        assert out.endswith("3 of 4 file(s) can be applied (and re-applied)\n")

        # A version with no file between two that have one: new clients would skip it.
        (tmp_path / "v003_bad.sql").unlink()
        (tmp_path / "v006_late.sql").write_text("SELECT 1")
        assert admin.main(["check-migrations", "--dir", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert "4 of 4 file(s) can be applied" in out
        assert "error: no file for v003, v004, v005: deleted or misnumbered?" in out

        (tmp_path / "v4_misnamed.sql").write_text("SELECT 1")
        assert admin.main(["check-migrations", "--dir", str(tmp_path)]) == 1
        assert "v4_misnamed.sql: migration files must be named" in capsys.readouterr().err

        assert admin.main(["check-migrations", "--dir", str(tmp_path / "nope")]) == 2
        assert "not a folder" in capsys.readouterr().err


def test_check_migrations_passes_the_shipped_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert admin.main(["check-migrations"]) == 0
    assert capsys.readouterr().out.startswith("ok    base schema\nok    v001 page_url_column\n")
