"""Build the images the compose test runs, locally, without any container registry.

    python -m tests.deploy.local_images [--state-dir DIR]   builds (or reuses) every image

Our own image comes from the repository's Dockerfile; the third-party services are
stand-ins for the official images built from the same sources devstack uses (recipes in
deploy/images/): Kafka from its Maven Central jars, ClickHouse served from the chdb-core
wheel by devstack's clickhouse_server.py, PostgreSQL, Redis, Prometheus and Alertmanager
from Debian packages. Everything starts from a Debian rootfs made by mmdebstrap and cached
under ~/.cache/analytics-pipeline/images/.

Reuse: each image is tagged with a content hash of everything that goes into it (recipe
files, assembled build context, build arguments, parent image ids), so a warm run builds
nothing and a change rebuilds only what it touches (the Docker layer cache keeps, e.g., the
app image's dependency layer while pyproject.toml is unchanged). Images of older hashes
are removed after a successful build. Builds run in parallel as their parents are ready.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from analytics_core.settings import REPO_ROOT
from devstack import kafka, kafka_jars

from .engine import DockerEngine, EngineError

log = logging.getLogger("local_images")

RECIPES_DIR = REPO_ROOT / "deploy" / "images"
HASH_LABEL = "analytics.test.content-hash"
RECIPE_LABEL = "analytics.test.recipe"
CA_DIR = Path("/usr/local/share/ca-certificates")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "analytics-pipeline"


# --- content hashing -------------------------------------------------------------------


def _hash_tree(digest: hashlib._Hash, root: Path, paths: Iterable[Path]) -> None:
    for path in sorted(paths):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(f"{path.stat().st_mode & 0o111:o}".encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")


def tree_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def dockerignore_allowlist(root: Path) -> list[Path]:
    """The files the repository's .dockerignore lets into the app image's context.

    The .dockerignore is an allow-list: `*` then `!path` lines; compiled files are excluded.
    """
    files: list[Path] = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line.startswith("!"):
            continue
        target = root / line[1:].rstrip("/")
        if target.is_file():
            files.append(target)
        elif target.is_dir():
            files.extend(p for p in tree_files(target) if p.suffix != ".pyc")
    return files


# --- the Debian rootfs -------------------------------------------------------------------


def debian_sources() -> list[str]:
    """The Debian mirror lines apt on this machine already uses (deb.debian.org otherwise)."""
    proc = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI)|$(RELEASE)|$(COMPONENT)"],
        capture_output=True,
        text=True,
    )
    lines: list[str] = []
    for row in sorted(set(proc.stdout.split("\n"))):
        parts = row.split("|")
        if len(parts) == 3 and parts[1].startswith("bookworm"):
            line = f"deb {parts[0]} {parts[1]} {parts[2]}"
            if line not in lines:
                lines.append(line)
    return lines or [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]


def ensure_rootfs() -> Path:
    """A Debian bookworm rootfs tarball, made once by mmdebstrap and cached."""
    sources = debian_sources()
    key = hashlib.sha256("\n".join(["bookworm", "apt", "ca-certificates", *sources]).encode())
    target = cache_dir() / "images" / f"debian-bookworm-{key.hexdigest()[:12]}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    log.info("building the Debian rootfs with mmdebstrap (once, cached in %s)", target)
    t0 = time.monotonic()
    argv = [
        "mmdebstrap",
        "--quiet",
        "--variant=apt",
        "--mode=root",
        "--format=tar",
        "--include=ca-certificates",
        "bookworm",
        str(partial),
        *sources,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise EngineError(f"mmdebstrap failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    os.replace(partial, target)
    log.info("rootfs ready in %.0fs", time.monotonic() - t0)
    return target


# --- recipes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One image: how to assemble its build context and which images it builds on."""

    name: str
    repository: str
    # Fills the (empty) build-context directory; returns extra build args.
    assemble: Callable[[Path], dict[str, str]]
    parents: dict[str, str] = field(default_factory=dict)  # build arg -> recipe name
    dockerfile: str = "Dockerfile"
    # Build from this directory as is (the repository root for our app image).
    context_root: Path | None = None
    context_files: Callable[[], list[Path]] | None = None


def _copy_recipe(name: str) -> Callable[[Path], dict[str, str]]:
    def assemble(ctx: Path) -> dict[str, str]:
        shutil.copytree(RECIPES_DIR / name, ctx, dirs_exist_ok=True)
        return {}

    return assemble


def _assemble_base(ctx: Path) -> dict[str, str]:
    shutil.copytree(RECIPES_DIR / "base", ctx, dirs_exist_ok=True)
    certs = ctx / "ca-certificates"
    certs.mkdir()
    if CA_DIR.is_dir():
        for crt in sorted(CA_DIR.rglob("*.crt")):
            shutil.copy(crt, certs / crt.name)
    return {}


def kafka_tools_jar() -> Path:
    """kafka-tools (the CLI classes the broker jars lack), fetched once with Maven."""
    version = kafka_jars.kafka_version()
    target = cache_dir() / f"kafka-tools-{version}"
    jar = target / f"kafka-tools-{version}.jar"
    if jar.is_file():
        return jar
    target.mkdir(parents=True, exist_ok=True)
    argv = [
        "mvn",
        "-q",
        "-B",
        "dependency:copy",
        f"-Dartifact=org.apache.kafka:kafka-tools:{version}",
        f"-DoutputDirectory={target}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not jar.is_file():
        raise EngineError(f"Maven could not fetch kafka-tools {version}:\n{proc.stdout[-2000:]}")
    return jar


def _assemble_kafka(ctx: Path) -> dict[str, str]:
    shutil.copytree(RECIPES_DIR / "kafka", ctx, dirs_exist_ok=True)
    libs = ctx / "libs"
    libs.mkdir()
    for jar in sorted(kafka_jars.ensure_jars().glob("*.jar")):
        os.link(jar, libs / jar.name) if _same_fs(jar, libs) else shutil.copy(jar, libs)
    shutil.copy(kafka_tools_jar(), libs)
    # The broker's logging as devstack configures it.
    (ctx / "log4j2.properties").write_text(kafka.LOG4J2)
    return {}


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def chdb_version() -> str:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    for req in data["project"]["optional-dependencies"]["localstack"]:
        m = re.fullmatch(r"chdb-core==([\w.]+)", req.strip())
        if m:
            return m.group(1)
    raise EngineError("pyproject.toml: no exact chdb-core pin in the localstack extra")


def _assemble_clickhouse(ctx: Path) -> dict[str, str]:
    shutil.copytree(RECIPES_DIR / "clickhouse", ctx, dirs_exist_ok=True)
    shutil.copy(REPO_ROOT / "devstack" / "clickhouse_server.py", ctx / "clickhouse_server.py")
    return {"CHDB_VERSION": chdb_version()}


def _stand_in(name: str, assemble: Callable[[Path], dict[str, str]] | None = None) -> Recipe:
    """A stand-in for an official image, built on the local Debian base."""
    return Recipe(
        name,
        f"localhost/analytics-test-{name}",
        assemble or _copy_recipe(name),
        {"BASE_IMAGE": "base"},
    )


def _app_context_files() -> list[Path]:
    allowed = dockerignore_allowlist(REPO_ROOT)
    return [REPO_ROOT / "Dockerfile", REPO_ROOT / ".dockerignore", *allowed]


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("base", "localhost/analytics-test-base", _assemble_base, {"DEBIAN_IMAGE": "debian"}),
        _stand_in("python"),
        Recipe(
            "app",
            "localhost/analytics-pipeline",
            lambda ctx: {},
            {"PYTHON_IMAGE": "python"},
            context_root=REPO_ROOT,
            context_files=_app_context_files,
        ),
        Recipe(
            "clickhouse",
            "localhost/analytics-test-clickhouse",
            _assemble_clickhouse,
            {"PYTHON_IMAGE": "python"},
        ),
        _stand_in("kafka", _assemble_kafka),
        _stand_in("postgres"),
        _stand_in("redis"),
        _stand_in("prometheus"),
        _stand_in("alertmanager"),
    )
}


# --- building --------------------------------------------------------------------------------


@dataclass
class Built:
    name: str
    tag: str
    image_id: str
    seconds: float  # 0 when re-used
    reused: bool


class ImageBuilder:
    def __init__(self, engine: DockerEngine, workdir: Path) -> None:
        self.engine = engine
        self.workdir = workdir

    def image_id(self, tag: str) -> str | None:
        proc = self.engine.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def _prune_others(self, recipe: str, keep: str) -> None:
        out = self.engine.docker(
            "image",
            "ls",
            "--filter",
            f"label={RECIPE_LABEL}={recipe}",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        )
        stale = [t for t in out.split() if t != keep and not t.endswith(":<none>")]
        if stale:
            self.engine.run(["docker", "image", "rm", *stale], check=False)

    def debian(self) -> Built:
        t0 = time.monotonic()
        tar = ensure_rootfs()
        digest = hashlib.sha256(tar.name.encode()).hexdigest()[:16]
        tag = f"localhost/analytics-test-debian:{digest}"
        existing = self.image_id(tag)
        if existing:
            return Built("debian", tag, existing, 0.0, True)
        self.engine.run(
            [
                "docker",
                "import",
                "-c",
                'CMD ["/bin/bash"]',
                "-c",
                f"LABEL {RECIPE_LABEL}=debian",
                str(tar),
                tag,
            ],
            timeout=600,
        )
        self._prune_others("debian", tag)
        return Built("debian", tag, self.image_id(tag) or "", time.monotonic() - t0, False)

    def build(self, recipe: Recipe, parents: dict[str, Built]) -> Built:
        t0 = time.monotonic()
        ctx = Path(tempfile.mkdtemp(prefix=f"ctx-{recipe.name}-", dir=self.workdir))
        try:
            if recipe.context_root is not None:
                assert recipe.context_files is not None
                build_args = recipe.assemble(ctx)
                root, files = recipe.context_root, recipe.context_files()
            else:
                build_args = recipe.assemble(ctx)
                root, files = ctx, tree_files(ctx)
            for arg, parent in recipe.parents.items():
                build_args[arg] = parents[parent].tag
            digest = hashlib.sha256(recipe.name.encode())
            for arg in sorted(build_args):
                parent_id = next(
                    (b.image_id for b in parents.values() if b.tag == build_args[arg]), ""
                )
                digest.update(f"{arg}={build_args[arg]}@{parent_id}\n".encode())
            _hash_tree(digest, root, files)
            content = digest.hexdigest()[:16]
            tag = f"{recipe.repository}:{content}"
            existing = self.image_id(tag)
            if existing:
                return Built(recipe.name, tag, existing, 0.0, True)
            log.info("building %s (%s)", recipe.name, tag)
            argv = [
                "docker",
                "build",
                "--network",
                "host",
                "--force-rm",
                "-q",
                "-t",
                tag,
                "--label",
                f"{RECIPE_LABEL}={recipe.name}",
                "--label",
                f"{HASH_LABEL}={content}",
                "-f",
                str(root / recipe.dockerfile),
            ]
            for arg, value in sorted(build_args.items()):
                argv += ["--build-arg", f"{arg}={value}"]
            self.engine.run([*argv, str(root)], timeout=1800)
            self._prune_others(recipe.name, tag)
            seconds = time.monotonic() - t0
            log.info("built %s in %.0fs", recipe.name, seconds)
            return Built(recipe.name, tag, self.image_id(tag) or "", seconds, False)
        finally:
            shutil.rmtree(ctx, ignore_errors=True)

    def build_all(self, names: Iterable[str] | None = None, workers: int = 4) -> dict[str, Built]:
        """Build the named recipes (all by default) and their parents, in parallel."""
        wanted = list(names or RECIPES)
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order or name == "debian":
                return
            for parent in RECIPES[name].parents.values():
                visit(parent)
            order.append(name)

        for name in wanted:
            visit(name)
        futures: dict[str, Future[Built]] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures["debian"] = pool.submit(self.debian)

            def run(name: str) -> Built:
                recipe = RECIPES[name]
                ready = {p: futures[p].result() for p in recipe.parents.values()}
                return self.build(recipe, ready)

            for name in order:  # parents are submitted before children
                futures[name] = pool.submit(run, name)
            return {name: f.result() for name, f in futures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.deploy.local_images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, help="default: $PIPELINE_STATE_DIR or .state")
    parser.add_argument("--keep-engine", action="store_true", help="leave dockerd running")
    parser.add_argument("names", nargs="*", help=f"recipes (default all: {', '.join(RECIPES)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[images] %(message)s")
    state = args.state_dir or Path(os.environ.get("PIPELINE_STATE_DIR") or REPO_ROOT / ".state")
    engine = DockerEngine(state.resolve() / "docker")
    unknown = set(args.names) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipe(s): {', '.join(sorted(unknown))}")
    try:
        engine.start()
        work = state.resolve() / "docker" / "build"
        work.mkdir(parents=True, exist_ok=True)
        built = ImageBuilder(engine, work).build_all(args.names or None)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep_engine:
            engine.stop()
    for b in built.values():
        size = ""
        print(f"{b.name:<13} {b.tag:<60} {'reused' if b.reused else f'{b.seconds:.0f}s'}{size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
