"""The package carries its data: a wheel built from this checkout holds every SQL file, the
event JSON Schema, the sample landing data and dagster.yaml, and code installed from that
wheel (outside the repository) finds them through importlib.resources.

No servers are needed. The wheel is built from a copy of the package sources (links kept),
so the checkout gets no build/ or egg-info and parallel runs never collide.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("analytics_core", "analytics_pipeline", "router", "devstack")
DATA_DIRS = ("clickhouse", "postgres", "samples")


def shipped_files() -> dict[str, bytes]:
    """Wheel path -> bytes, for every file the repository says must ship."""
    out: dict[str, bytes] = {}
    for kind in ("schemas", "migrations", "ops"):
        for f in sorted((REPO / "clickhouse" / kind).glob("*.sql")):
            out[f"analytics_core/sql/clickhouse/{kind}/{f.name}"] = f.read_bytes()
    for f in sorted((REPO / "postgres" / "sql").glob("*.sql")):
        out[f"analytics_core/sql/postgres/{f.name}"] = f.read_bytes()
    for f in sorted((REPO / "analytics_core" / "contract").glob("*.json")):
        out[f"analytics_core/contract/{f.name}"] = f.read_bytes()
    landing = REPO / "samples" / "landing"
    for f in sorted(p for p in landing.rglob("*") if p.is_file()):
        out[f"analytics_core/batch/samples/{f.relative_to(landing).as_posix()}"] = f.read_bytes()
    out["analytics_pipeline/dagster.yaml"] = (REPO / "dagster.yaml").read_bytes()
    return out


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*SOURCES, *DATA_DIRS):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "dagster.yaml"):
        shutil.copy(REPO / name, src / name)
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    [wheel] = out.glob("*.whl")
    return wheel


FIND_EVERYTHING = """
import json, sys, tempfile
from pathlib import Path

import analytics_core
from analytics_core import package_data, registry
from analytics_core.batch.seed_sample import copy_samples
from analytics_core.migrations import files
from analytics_pipeline import dagster_home

landing = Path(tempfile.mkdtemp()) / "landing"
home = dagster_home.prepare(Path(tempfile.mkdtemp()) / "home")
print(json.dumps({
    "package": analytics_core.__file__,
    "migrations": [[m.version, m.name, m.checksum] for m in files.load()],
    "metadata_sql": [p.name for p in registry.metadata_files()],
    "ops_sql": [p.name for p in package_data.sql_files(package_data.clickhouse_ops())],
    "schema_id": json.loads(package_data.event_schema().read_text())["$id"],
    "samples": copy_samples(str(landing)),
    "dagster_yaml": (home / "dagster.yaml").read_text(),
}))
"""


def test_a_built_wheel_ships_the_data_and_installed_code_finds_it(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    expected = shipped_files()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        missing = sorted(set(expected) - names)
        assert not missing, f"not in the wheel: {missing}"
        for name, data in expected.items():
            assert z.read(name) == data, f"{name} differs from the repository's file"

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    # Run outside the checkout, with the installed copy first on the path.
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-P", "-c", FIND_EVERYTHING],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(target), found["package"]

    from analytics_core.migrations.files import checksum

    repo_migrations = sorted((REPO / "clickhouse" / "migrations").glob("*.sql"))
    assert [v for v, _, _ in found["migrations"]] == [0] + [
        int(p.name[1:4]) for p in repo_migrations
    ]
    base = (REPO / "clickhouse" / "schemas" / "01_events_base.sql").read_bytes()
    assert found["migrations"][0][2] == checksum(base)
    assert found["metadata_sql"] == sorted(p.name for p in (REPO / "postgres/sql").glob("*.sql"))
    assert found["ops_sql"] == sorted(p.name for p in (REPO / "clickhouse/ops").glob("*.sql"))
    schema = json.loads((REPO / "analytics_core/contract/event-v1.schema.json").read_text())
    assert found["schema_id"] == schema["$id"]
    landing = REPO / "samples" / "landing"
    assert found["samples"] == sorted(
        p.relative_to(landing).as_posix() for p in landing.rglob("*") if p.is_file()
    )
    assert found["dagster_yaml"] == (REPO / "dagster.yaml").read_text()
