"""The bin/ scripts answer --help (and refuse what they do not take) without doing anything:
no setup, no stack, no venv. Each runs as a copy in a scratch checkout whose other scripts
and tools are stand-ins that leave a mark, so a script that went on to do real work is
caught by that mark, and by any file it made, instead of installing or starting anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("dev", "test", "setup", "test-stack-env")
# What each stand-in does: leave its name in MARKS and fail.
STAND_IN = '#!/bin/sh\necho "$0" >>"$MARKS"\nexit 1\n'


class Checkout:
    """A scratch repository root holding a copy of one script under bin/; the other bin/
    scripts, apt-get and sudo are stand-ins."""

    def __init__(self, root: Path, script: str) -> None:
        self.root = root
        self.script = script
        self.marks = root.parent / "marks"
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True)
        tools = root.parent / "tools"
        tools.mkdir()
        for name in SCRIPTS:
            target = bin_dir / name
            if name == script:
                shutil.copy2(REPO / "bin" / name, target)
            else:
                target.write_text(STAND_IN)
                target.chmod(0o755)
        for tool in ("apt-get", "sudo"):
            (tools / tool).write_text(STAND_IN)
            (tools / tool).chmod(0o755)
        self.path = f"{tools}:{os.environ['PATH']}"
        self.before = self.files()

    def files(self) -> set[Path]:
        return {p.relative_to(self.root) for p in self.root.rglob("*")}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        cache = self.root.parent / "cache"
        full_env = {
            **os.environ,
            "PATH": self.path,
            "MARKS": str(self.marks),
            "XDG_CACHE_HOME": str(cache),
            "PYTHON": "false",  # a bin/setup that went on stops at its Python check
            **env,
        }
        for name in ("DAGSTER_PORT", "DEV_SKIP_SETUP", "DEV_STOP_TIMEOUT_S", "PIPELINE_STATE_DIR"):
            if name not in env:
                full_env.pop(name, None)
        started = time.monotonic()
        done = subprocess.run(
            [str(self.root / "bin" / self.script), *args],
            cwd=self.root.parent,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert time.monotonic() - started < 3, f"bin/{self.script} {args} took long: it did work"
        assert not self.marks.exists(), f"bin/{self.script} {args} ran {self.marks.read_text()}"
        assert self.files() == self.before, f"bin/{self.script} {args} made files"
        assert not cache.exists(), f"bin/{self.script} {args} wrote to the cache"
        return done


@pytest.fixture
def checkout(tmp_path: Path, request: pytest.FixtureRequest) -> Checkout:
    return Checkout(tmp_path / "repo", request.param)


@pytest.mark.parametrize("checkout", SCRIPTS, indirect=True)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_usage_and_does_nothing_else(checkout: Checkout, flag: str) -> None:
    done = checkout.run(flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: bin/{checkout.script} ")
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("checkout", "variables"),
    [
        ("dev", ("DAGSTER_PORT", "DEV_SKIP_SETUP", "DEV_STOP_TIMEOUT_S")),
        ("test", ("TEST_KEEP_STACK", "TEST_EXTERNAL_SERVERS", "PIPELINE_STATE_DIR")),
        ("setup", ("PYTHON", "XDG_CACHE_HOME")),
        ("test-stack-env", ("PIPELINE_STATE_DIR", "POSTGRES_PORT", "KAFKA_BOOTSTRAP_SERVERS")),
    ],
    indirect=["checkout"],
)
def test_help_names_the_variables_the_script_reads(
    checkout: Checkout, variables: tuple[str, ...]
) -> None:
    text = checkout.run("--help").stdout
    missing = [name for name in variables if name not in text]
    assert not missing, f"bin/{checkout.script} --help does not name {missing}"


@pytest.mark.parametrize("checkout", ["dev", "setup", "test-stack-env"], indirect=True)
@pytest.mark.parametrize("argument", ["--bogus", "-x", "extra"])
def test_an_argument_is_refused_in_one_line(checkout: Checkout, argument: str) -> None:
    done = checkout.run(argument)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert argument in done.stderr and "--help" in done.stderr


@pytest.mark.parametrize("checkout", ["test"], indirect=True)
def test_bin_test_says_where_its_other_arguments_go(checkout: Checkout) -> None:
    text = checkout.run("--help").stdout
    assert "pytest" in text
    assert "bin/test -- --help" in text


@pytest.mark.parametrize("checkout", ["test"], indirect=True)
def test_bin_test_passes_help_after_dashes_to_pytest(checkout: Checkout) -> None:
    venv = checkout.root / ".venv"
    venv.symlink_to(REPO / ".venv")
    checkout.before = checkout.files()
    done = checkout.run("--", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: pytest ")


@pytest.mark.parametrize("checkout", ["test"], indirect=True)
@pytest.mark.parametrize("argument", ["-k", "--help-me"])
def test_bin_test_leaves_other_first_arguments_to_pytest(checkout: Checkout, argument: str) -> None:
    """Not its own help: bin/test goes on to its stack (here the stand-in, which fails)."""
    done = subprocess.run(
        [str(checkout.root / "bin" / "test"), argument],
        cwd=checkout.root.parent,
        env={**os.environ, "PATH": checkout.path, "MARKS": str(checkout.marks)},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode != 0
    assert not done.stdout.startswith("usage: bin/test")
    assert "test-stack-env" in checkout.marks.read_text()


@pytest.mark.parametrize("checkout", ["dev"], indirect=True)
@pytest.mark.parametrize("port", ["abc", "0", "65536", "70000", "-1", "30 00", "3000x"])
def test_bin_dev_refuses_a_dagster_port_that_is_no_port(checkout: Checkout, port: str) -> None:
    """At once: before bin/setup, the stack or `dagster dev` (which started its daemon,
    then failed, and bin/dev exited 0)."""
    done = checkout.run(DAGSTER_PORT=port)
    assert done.returncode == 2
    assert "DAGSTER_PORT" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("checkout", ["dev"], indirect=True)
def test_bin_dev_refuses_a_stop_timeout_that_is_no_number(checkout: Checkout) -> None:
    done = checkout.run(DEV_STOP_TIMEOUT_S="soon")
    assert done.returncode == 2
    assert "DEV_STOP_TIMEOUT_S" in done.stderr


@pytest.mark.parametrize("checkout", ["dev"], indirect=True)
def test_bin_dev_takes_a_good_port_and_goes_on(checkout: Checkout) -> None:
    """A valid port passes the check: bin/dev goes on to bin/setup (the stand-in here)."""
    done = subprocess.run(
        [str(checkout.root / "bin" / "dev")],
        cwd=checkout.root.parent,
        env={
            **{k: v for k, v in os.environ.items() if k != "DEV_SKIP_SETUP"},
            "PATH": checkout.path,
            "MARKS": str(checkout.marks),
            "DAGSTER_PORT": "3001",
        },
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode != 0
    assert "DAGSTER_PORT" not in done.stderr
    assert "bin/setup" in checkout.marks.read_text()
