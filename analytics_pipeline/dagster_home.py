"""`python -m analytics_pipeline.dagster_home`: prepare DAGSTER_HOME for `dagster dev`.

    python -m analytics_pipeline.dagster_home               create the dir, copy dagster.yaml
    python -m analytics_pipeline.dagster_home --print-env   ...and print `export` lines
    python -m analytics_pipeline.dagster_home -- dagster dev -w workspace.yaml
                                                            ...and run a command with them

DAGSTER_HOME defaults to <PIPELINE_STATE_DIR>/dagster (.state/dagster). The repository's
dagster.yaml (shipped in the package as `analytics_pipeline/dagster.yaml`, a link to it) is
copied there whenever it differs, so the copy never goes stale; running this
again changes nothing. dagster.yaml reads its PostgreSQL connection from POSTGRES_HOST/PORT/
USER/PASSWORD and DAGSTER_POSTGRES_DB, which Dagster requires to be set: the values exported
here are those of `analytics_core.settings.Settings` (the environment, else its defaults).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from analytics_core.settings import Settings, SettingsError


def instance_config() -> Traversable:
    """The repository's dagster.yaml, as shipped in the package."""
    return files("analytics_pipeline") / "dagster.yaml"


def default_home(settings: Settings) -> Path:
    return settings.state_dir / "dagster"


def prepare(home: Path, source: Traversable | None = None) -> Path:
    """Create `home` and make `home/dagster.yaml` a copy of `source`; idempotent."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    data = (source or instance_config()).read_bytes()
    if not target.exists() or target.read_bytes() != data:
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return home


def dagster_env(settings: Settings, home: Path) -> dict[str, str]:
    """The variables dagster.yaml and the code location need (includes the password)."""
    pg = settings.postgres
    return {
        "DAGSTER_HOME": str(home),
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_DB": pg.dbname,
        "DAGSTER_POSTGRES_DB": pg.dagster_dbname,
        # dagster-postgres builds its own URL without TLS options; libpq reads these.
        "PGSSLMODE": pg.sslmode,
        **({"PGSSLROOTCERT": pg.sslrootcert} if pg.sslrootcert else {}),
    }


def export_lines(settings: Settings, home: Path) -> list[str]:
    """Shell `export` lines; the password is never printed, only kept from the environment."""
    lines = []
    for name, value in dagster_env(settings, home).items():
        if name == "POSTGRES_PASSWORD":
            lines.append('export POSTGRES_PASSWORD="${POSTGRES_PASSWORD-}"')
        else:
            lines.append(f"export {name}={shlex.quote(value)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics_pipeline.dagster_home",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--home", type=Path, help="DAGSTER_HOME (default: <state dir>/dagster)")
    parser.add_argument("--print-env", action="store_true", help="print export lines")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND to run")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        home = prepare((args.home or default_home(settings)).resolve())
    except OSError as exc:
        print(f"error: cannot prepare DAGSTER_HOME: {exc}; choose --home", file=sys.stderr)
        return 2
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        env = {**os.environ, **dagster_env(settings, home)}
        os.execvpe(command[0], command, env)
    if args.print_env:
        print("\n".join(export_lines(settings, home)))
    else:
        print(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
