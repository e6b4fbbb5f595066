"""Whether a migration's statements can be run twice (pure).

ClickHouse has no transactional DDL: a migration run killed after a statement and before
its version is recorded in `schema_versions` re-applies the whole file on the next run
(analytics_core.migrations.apply). That heals only when every statement is re-runnable, so
a statement of a form that has an `IF [NOT] EXISTS` variant must use it:

- `CREATE <object>` needs `IF NOT EXISTS` (or `OR REPLACE`);
- `DROP <object>` needs `IF EXISTS`;
- in `ALTER TABLE`, each `ADD COLUMN|INDEX|PROJECTION|CONSTRAINT|STATISTICS` needs
  `IF NOT EXISTS`, each `DROP ...` of those and each `RENAME COLUMN` needs `IF EXISTS`.

Other statements (MODIFY COLUMN, MATERIALIZE INDEX, UPDATE, ...) are passed: running them
twice gives the same schema. String literals and comments are never read as keywords.
"""

from __future__ import annotations

import re

from analytics_core.migrations.files import split_statements

_PARTS = ("COLUMN", "INDEX", "PROJECTION", "CONSTRAINT", "STATISTICS")
_OBJECTS = (
    "TABLE|VIEW|MATERIALIZED VIEW|LIVE VIEW|WINDOW VIEW|DICTIONARY|DATABASE|FUNCTION"
    "|NAMED COLLECTION|INDEX|TEMPORARY TABLE"
)
_CREATE = re.compile(rf"^CREATE (?:OR REPLACE )?(?:{_OBJECTS})\b")
_CREATE_OK = re.compile(rf"^CREATE (?:OR REPLACE |(?:{_OBJECTS}) IF NOT EXISTS\b)")
_DROP = re.compile(rf"^DROP (?:{_OBJECTS})\b")
_DROP_OK = re.compile(rf"^DROP (?:{_OBJECTS}) IF EXISTS\b")
_ALTER = re.compile(r"^ALTER TABLE ")
_ADD_PART = re.compile(rf"^ADD ({'|'.join(_PARTS)})\b")
_DROP_PART = re.compile(rf"^DROP ({'|'.join(_PARTS)})\b")
_RENAME_COLUMN = re.compile(r"^RENAME COLUMN\b")


def _code(statement: str) -> str:
    """The statement upper-cased on single spaces, each quoted string or identifier
    replaced by `Q` (so its text is never taken for a keyword)."""
    out: list[str] = []
    quote: str | None = None
    i, n = 0, len(statement)
    while i < n:
        c = statement[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
                out.append("Q")
        elif c in ("'", '"', "`"):
            quote = c
        else:
            out.append(c)
        i += 1
    return " ".join("".join(out).upper().split())


def _clauses(alter_body: str) -> list[str]:
    """The comma-separated clauses of an ALTER TABLE, split outside parentheses."""
    clauses: list[str] = []
    depth, start = 0, 0
    for i, c in enumerate(alter_body):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            clauses.append(alter_body[start:i].strip())
            start = i + 1
    clauses.append(alter_body[start:].strip())
    return [c for c in clauses if c]


def _alter_problem(code: str) -> str | None:
    # The clauses follow the table name and an optional ON CLUSTER <name>.
    m = re.match(r"^ALTER TABLE \S+(?: ON CLUSTER \S+)? (.*)$", code)
    if m is None:
        return None
    for clause in _clauses(m.group(1)):
        add = _ADD_PART.match(clause)
        if add and not clause.startswith(f"ADD {add.group(1)} IF NOT EXISTS"):
            return f"ADD {add.group(1)} without IF NOT EXISTS"
        drop = _DROP_PART.match(clause)
        if drop and not clause.startswith(f"DROP {drop.group(1)} IF EXISTS"):
            return f"DROP {drop.group(1)} without IF EXISTS"
        if _RENAME_COLUMN.match(clause) and not clause.startswith("RENAME COLUMN IF EXISTS"):
            return "RENAME COLUMN without IF EXISTS"
    return None


def statement_problem(statement: str) -> str | None:
    """Why running `statement` a second time would fail, or None."""
    code = _code(statement)
    if _CREATE.match(code) and not _CREATE_OK.match(code):
        return "CREATE without IF NOT EXISTS"
    if _DROP.match(code) and not _DROP_OK.match(code):
        return "DROP without IF EXISTS"
    if _ALTER.match(code):
        return _alter_problem(code)
    return None


def rerun_problem(sql: str) -> str | None:
    """The first statement of a migration file that can not run twice, said with its fix;
    None when the whole file can be re-applied."""
    for number, statement in enumerate(split_statements(sql), start=1):
        problem = statement_problem(statement)
        if problem is not None:
            head = " ".join(statement.split())[:80]
            return (
                f"statement {number} ({head!r}) is {problem}: a run interrupted after it "
                "could not apply the file again; write it with IF [NOT] EXISTS"
            )
    return None
