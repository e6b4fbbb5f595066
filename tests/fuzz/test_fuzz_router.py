"""Runs the router fuzzer (tests/fuzz/fuzz_router.py) for a bounded time in `bin/test`.

Coverage-guided (atheris/libFuzzer) over the committed corpus in tests/fixtures/fuzz/router/;
inputs it discovers go to a temporary directory, never into the work tree. Any exception,
or any message that needs the `unprocessable` last resort, fails the test with the input
that caused it (saved as a crash artifact, its path in the output). The run's throughput
and time are printed. `ROUTER_FUZZ_SECONDS` (default 30) sets the budget.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "fixtures" / "fuzz" / "router"


def test_the_router_fuzzer_finds_nothing_in_its_time_budget(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError as exc:  # never skipped: a missing fuzzer is a broken install
        pytest.fail(f"atheris is not installed ({exc}); run bin/setup (bin/setup.d/20-fuzz.sh)")
    seconds = int(os.environ.get("ROUTER_FUZZ_SECONDS", "30"))
    found = tmp_path / "corpus"
    found.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "fuzz" / "fuzz_router.py"),
            f"-max_total_time={seconds}",
            "-print_final_stats=1",
            "-rss_limit_mb=2048",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(found),
            str(CORPUS),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=seconds + 180,
    )
    log = "\n".join(
        line for line in proc.stderr.splitlines() if not line.startswith("INFO: Instrumenting")
    )
    assert proc.returncode == 0, f"the fuzzer found a failing input:\n{log[-6000:]}"
    runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", log).group(1))  # type: ignore[union-attr]
    rate = int(re.search(r"stat::average_exec_per_sec:\s+(\d+)", log).group(1))  # type: ignore[union-attr]
    corpus = len(list(CORPUS.iterdir()))
    print(f"router fuzzer: {runs} inputs in {seconds} s ({rate}/s), corpus {corpus} files")
    assert runs > 1000
