"""DDL for a target that is a ClickHouse cluster: `ON CLUSTER` and replicated engines (pure).

A target with `CLICKHOUSE_<NAME>_CLUSTER` set is a cluster of replicas: every schema change
must reach each of them, and client tables must replicate. The same migration files serve
single servers and clusters; for a cluster each statement is rewritten here:

- `CREATE DATABASE / TABLE / VIEW`, `ALTER TABLE`, `RENAME TABLE`, `DROP DATABASE / TABLE`
  get `ON CLUSTER '<cluster>'` after the object's name (tables qualified with the client's
  database, so no replica resolves them against another current database);
- a `*MergeTree` engine becomes its `Replicated*MergeTree` twin with the path ClickHouse
  itself defaults to, `'/clickhouse/tables/{uuid}/{shard}', '{replica}'` (`{uuid}` is the
  same on every replica of an ON CLUSTER table in an Atomic database, so a table dropped and
  created again never meets its old replication metadata); the engine's own arguments follow;
- any other statement (INSERT, OPTIMIZE, SYSTEM, ...) is refused with `NotClusterSafe`: run
  on one replica only it would leave the cluster inconsistent.

Invariant: for a target without a cluster nothing here runs; statements go to the server
unchanged (`render(statement, database, "")` returns them as they are).
"""

from __future__ import annotations

import re

from analytics_core.naming import quote_identifier

REPLICA_ARGS = "'/clickhouse/tables/{uuid}/{shard}', '{replica}'"
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.{}-]{1,128}")
_NAME = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"
_QUALIFIED = rf"(?P<name>{_NAME}(?:\.{_NAME})?)"
_HEADS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE | re.DOTALL))
    for kind, pattern in (
        ("database", rf"^\s*(?P<head>CREATE\s+DATABASE(?:\s+IF\s+NOT\s+EXISTS)?\s+){_QUALIFIED}"),
        (
            "table",
            rf"^\s*(?P<head>CREATE\s+(?:OR\s+REPLACE\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?\s+)"
            rf"{_QUALIFIED}",
        ),
        (
            "view",
            rf"^\s*(?P<head>CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?VIEW"
            rf"(?:\s+IF\s+NOT\s+EXISTS)?\s+){_QUALIFIED}",
        ),
        ("alter", rf"^\s*(?P<head>ALTER\s+TABLE\s+){_QUALIFIED}"),
        ("drop_database", rf"^\s*(?P<head>DROP\s+DATABASE(?:\s+IF\s+EXISTS)?\s+){_QUALIFIED}"),
        ("drop_table", rf"^\s*(?P<head>DROP\s+TABLE(?:\s+IF\s+EXISTS)?\s+){_QUALIFIED}"),
        (
            "rename",
            rf"^\s*(?P<head>RENAME\s+TABLE\s+{_QUALIFIED}\s+TO\s+)(?P<to>{_NAME}(?:\.{_NAME})?)",
        ),
    )
)
_ON_CLUSTER = re.compile(r"\bON\s+CLUSTER\b", re.IGNORECASE)
_ENGINE = re.compile(
    r"\bENGINE\s*=\s*(?P<engine>[A-Za-z]*MergeTree)\b(?P<args>\s*\()?", re.IGNORECASE
)


class NotClusterSafe(ValueError):
    """A statement can not be issued ON CLUSTER as written; the message says why."""


def cluster_clause(cluster: str) -> str:
    if not _CLUSTER_NAME.fullmatch(cluster):
        raise NotClusterSafe(
            f"cluster name {cluster!r} is not valid: use letters, digits, '_', '-', '.' or a "
            "{macro}"
        )
    return f"ON CLUSTER '{cluster}'"


def _qualified(name: str, database: str) -> str:
    return name if "." in name else f"{quote_identifier(database)}.{name}"


def _closing_paren(text: str, open_at: int) -> int:
    """Index of the ')' closing the '(' at `open_at` (quotes respected)."""
    depth, quote, i = 0, "", open_at
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise NotClusterSafe("unbalanced parentheses in the ENGINE clause")


def replicated_engine(statement: str) -> str:
    """The statement with its `*MergeTree` engine replaced by the replicated twin."""
    m = _ENGINE.search(statement)
    if m is None:
        if re.search(r"\bENGINE\s*=", statement, re.IGNORECASE):
            raise NotClusterSafe(
                "only MergeTree-family engines can replicate; this table would exist on one "
                "replica's data only"
            )
        return statement
    engine = m.group("engine")
    if engine.lower().startswith("replicated"):
        return statement
    replicated = "Replicated" + engine
    if m.group("args") is None:
        return (
            f"{statement[: m.start()]}ENGINE = {replicated}({REPLICA_ARGS}){statement[m.end() :]}"
        )
    open_at = m.end() - 1
    close = _closing_paren(statement, open_at)
    inner = statement[open_at + 1 : close].strip()
    args = REPLICA_ARGS + (f", {inner}" if inner else "")
    return f"{statement[: m.start()]}ENGINE = {replicated}({args}){statement[close + 1 :]}"


_REPLICATED_ARGS = re.compile(
    r"\bENGINE\s*=\s*Replicated(?P<engine>[A-Za-z]*MergeTree)\s*\(\s*'[^']*'\s*,\s*'[^']*'\s*,?\s*",
    re.IGNORECASE,
)


def single_server_engine(statement: str) -> str:
    """A `Replicated*MergeTree('path', 'replica', args...)` table definition as the plain
    engine with the same arguments, for a target that is one server (a table copied from a
    cluster by a client move)."""
    m = _REPLICATED_ARGS.search(statement)
    if m is None:
        return statement
    return f"{statement[: m.start()]}ENGINE = {m.group('engine')}({statement[m.end() :]}"


def render(statement: str, database: str, cluster: str) -> str:
    """The statement to issue on a target: unchanged without a cluster; else with ON CLUSTER
    after the object's name, tables qualified with `database`, engines replicated."""
    if not cluster:
        return statement
    clause = cluster_clause(cluster)
    if _ON_CLUSTER.search(statement):
        raise NotClusterSafe(
            "the statement already names a cluster; migration files must not (the target's "
            "cluster is added for each target)"
        )
    for kind, pattern in _HEADS:
        m = pattern.match(statement)
        if m is None:
            continue
        name = m.group("name")
        if kind == "rename":
            to = m.group("to")
            head = re.sub(re.escape(name), _qualified(name, database), m.group("head"), count=1)
            return f"{head}{_qualified(to, database)} {clause}{statement[m.end() :]}"
        target = name if kind in ("database", "drop_database") else _qualified(name, database)
        out = f"{m.group('head')}{target} {clause}{statement[m.end() :]}"
        return replicated_engine(out) if kind in ("table", "view") else out
    first = " ".join(statement.split()[:3])
    raise NotClusterSafe(
        f"{first!r}... can not be issued ON CLUSTER: a migration for a cluster target may only "
        "CREATE, ALTER, RENAME or DROP databases, tables and views"
    )
