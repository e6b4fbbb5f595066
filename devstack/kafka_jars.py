"""The Apache Kafka broker jars, fetched once from Maven Central into a cache outside the checkout.

Cache: $KAFKA_JARS_DIR, else ~/.cache/analytics-pipeline/kafka-<version>/ (XDG_CACHE_HOME is
honoured). A `.complete` marker is written only after Maven copied every jar, so an interrupted
download is redone on the next `up`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import process
from .service import StackError

log = logging.getLogger("devstack")

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
MARKER = ".complete"


def kafka_version() -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not m:
        raise StackError(f"kafka: no <kafka.version> in {POM}")
    return m.group(1).strip()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "analytics-pipeline" / f"kafka-{kafka_version()}"


def is_complete(jars_dir: Path) -> bool:
    return (jars_dir / MARKER).is_file() and any(jars_dir.glob("kafka_2.13-*.jar"))


def ensure_jars(jars_dir: Path | None = None, *, timeout: float = 900.0) -> Path:
    """Return the jar directory, downloading with Maven first if it is not complete."""
    target = jars_dir or default_cache_dir()
    if is_complete(target):
        return target
    with process.file_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target):
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                f"kafka: the broker jars are not in {target} and Maven (`mvn`) is missing to "
                "fetch them; apt-get install -y maven (or set KAFKA_JARS_DIR to a directory "
                "holding the Kafka jars plus a .complete file)"
            )
        version = kafka_version()
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("downloading Kafka %s jars with Maven into %s (once) ...", version, target)
        t0 = time.monotonic()
        argv = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise StackError(
                f"kafka: Maven did not finish fetching the jars in {timeout:.0f}s"
            ) from None
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            out = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise StackError(
                f"kafka: Maven could not fetch org.apache.kafka:kafka_2.13:{version} "
                f"(exit {proc.returncode}); is Maven Central reachable?\n{out}"
            )
        names = sorted(p.name for p in staging.glob("*.jar"))
        (staging / MARKER).write_text(f"kafka {version}\n" + "\n".join(names) + "\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        log.info("fetched %d jars in %.1fs", len(names), time.monotonic() - t0)
    return target
