"""Running a migration file again after an interruption (pure).

ClickHouse has no transactional DDL: a migration run killed after a statement and before
its version is recorded in `schema_versions` re-applies the whole file on the next run
(analytics_core.migrations.apply). A statement written with `IF [NOT] EXISTS` (or `OR
REPLACE`) runs twice as it is. One of the forms that has such a variant but is written
without it fails the second time, so:

- `statement_problem` names the form (`CREATE` without `IF NOT EXISTS`, `DROP` without
  `IF EXISTS`; in `ALTER TABLE` an `ADD COLUMN|INDEX|PROJECTION|CONSTRAINT|STATISTICS`
  without `IF NOT EXISTS`, a `DROP` of those or a `RENAME COLUMN` without `IF EXISTS`);
- `already_applied` tells, from ClickHouse's error, that such a statement failed only
  because what it creates exists or what it drops or renames is gone: the apply step then
  counts it as applied, which is what `IF [NOT] EXISTS` would have done. Only a statement
  with one such form is read that way: in an ALTER TABLE of several clauses, one clause
  found done says nothing of the others.

`rerun_problem` also refuses what no guard heals: a file that renames a column it adds, or
drops a column and then adds it again (the re-run drops what was written to it since).

Other statements (MODIFY COLUMN, MATERIALIZE INDEX, UPDATE, ...) run twice to the same
schema. String literals and comments are never read as keywords.
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
_ALTER = re.compile(r"^ALTER TABLE (\S+)(?: ON CLUSTER \S+)? (.*)$")  # table, clauses
_ADD_COLUMN = re.compile(r"^ADD COLUMN (?:IF NOT EXISTS )?(\S+)")
_RENAME_COLUMN = re.compile(r"^RENAME COLUMN (?:IF EXISTS )?(\S+) TO (\S+)")
_DROP_COLUMN = re.compile(r"^DROP COLUMN (?:IF EXISTS )?(\S+)")
_ADD_PART = re.compile(rf"^ADD ({'|'.join(_PARTS)})\b")
_DROP_PART = re.compile(rf"^DROP ({'|'.join(_PARTS)})\b")

# The errors (code, and text where the code is shared with other faults) of a form found
# already done, as ClickHouse 26 words them. An error not listed fails the run as before.
_DONE: dict[str, tuple[tuple[int, str], ...]] = {
    "ADD COLUMN": ((15, ""),),  # DUPLICATE_COLUMN
    "ADD INDEX": ((44, "already exists"),),
    "ADD CONSTRAINT": ((44, "already exists"),),
    "ADD PROJECTION": ((583, "already exists"),),  # ILLEGAL_PROJECTION
    "DROP COLUMN": ((10, "Cannot find column"),),  # NOT_FOUND_COLUMN_IN_BLOCK
    "RENAME COLUMN": ((10, "Cannot find column"),),
    "DROP INDEX": ((36, "Cannot find index"),),
    "DROP CONSTRAINT": ((36, "Cannot find constraint"),),
    "DROP PROJECTION": ((582, ""),),  # NO_SUCH_PROJECTION_IN_TABLE
    "CREATE": ((57, "already exists"), (82, "already exists")),
    "DROP": ((60, "does not exist"), (81, "does not exist")),  # UNKNOWN_TABLE, _DATABASE
}
_CODE = re.compile(r"\bCode: (\d+)\b")


def _code(statement: str, names: bool = False) -> str:
    """The statement upper-cased on single spaces, each quoted string or identifier
    replaced by `Q` (so its text is never taken for a keyword). With `names`, a quoted
    identifier (`x` or "x") becomes one token, its text in hex between backquotes, instead
    (`_name` reads it back)."""
    out: list[str] = []
    quote: str | None = None
    quoted: list[str] = []
    i, n = 0, len(statement)
    while i < n:
        c = statement[i]
        if quote:
            if c == "\\":
                quoted.append(statement[i : i + 2])
                i += 2
                continue
            if c == quote:
                keep = names and quote != "'"
                out.append(f" `{''.join(quoted).encode().hex()}` " if keep else "Q")
                quote = None
            else:
                quoted.append(c)
        elif c in ("'", '"', "`"):
            quote = c
            quoted = []
        else:
            out.append(c)
        i += 1
    return " ".join("".join(out).upper().split())


def _name(token: str) -> str:
    """A name of `_code(..., names=True)`, quoted or not, upper-cased (a name is compared
    without its case: a conservative check may see `a` and `A` as one column)."""
    if token.startswith("`") and token.endswith("`"):
        return bytes.fromhex(token[1:-1]).decode(errors="replace").upper()
    return token


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


def _clause_form(clause: str) -> str | None:
    """The form of one ALTER clause that can not run twice, e.g. "ADD COLUMN", or None."""
    add = _ADD_PART.match(clause)
    if add and not clause.startswith(f"ADD {add.group(1)} IF NOT EXISTS"):
        return f"ADD {add.group(1)}"
    drop = _DROP_PART.match(clause)
    if drop and not clause.startswith(f"DROP {drop.group(1)} IF EXISTS"):
        return f"DROP {drop.group(1)}"
    if clause.startswith("RENAME COLUMN ") and not clause.startswith("RENAME COLUMN IF EXISTS"):
        return "RENAME COLUMN"
    return None


def _forms(statement: str) -> tuple[list[str], int]:
    """The statement's forms that can not run twice, and its number of clauses."""
    code = _code(statement)
    if _CREATE.match(code):
        return ([] if _CREATE_OK.match(code) else ["CREATE"]), 1
    if _DROP.match(code):
        return ([] if _DROP_OK.match(code) else ["DROP"]), 1
    alter = _ALTER.match(code)
    if alter is None:
        return [], 1
    clauses = _clauses(alter.group(2))
    return [f for f in map(_clause_form, clauses) if f is not None], len(clauses)


def _without_guard(form: str) -> str:
    """E.g. "ADD COLUMN without IF NOT EXISTS"."""
    return (
        f"{form} without {'IF EXISTS' if form.startswith(('DROP', 'RENAME')) else 'IF NOT EXISTS'}"
    )


def statement_problem(statement: str) -> str | None:
    """Why running `statement` a second time would fail, or None."""
    forms, _clauses_n = _forms(statement)
    return _without_guard(forms[0]) if forms else None


def already_applied(statement: str, error: str) -> bool:
    """`statement` failed with `error` (ClickHouse's text, "Code: N. ...") only because a
    run before this one applied it: it has exactly one form that can not run twice, and
    the error is that form's "exists already" / "is gone already"."""
    forms, clauses = _forms(statement)
    if len(forms) != 1 or clauses != 1:
        return False
    m = _CODE.search(error)
    if m is None:
        return False
    code = int(m.group(1))
    return any(code == c and text in error for c, text in _DONE.get(forms[0], ()))


def rerun_problem(sql: str) -> str | None:
    """The first statement of a migration file that a re-run after an interruption could
    not heal (see `already_applied`), said with its fix; None when the whole file can be
    applied again."""
    for number, statement in enumerate(split_statements(sql), start=1):
        forms, clauses = _forms(statement)
        if not forms or (len(forms) == 1 and clauses == 1 and forms[0] in _DONE):
            continue
        head = " ".join(statement.split())[:80]
        problem = _without_guard(forms[0])
        return (
            f"statement {number} ({head!r}) is {problem} in a statement of several clauses"
            if clauses > 1
            else f"statement {number} ({head!r}) is {problem}"
        ) + ": a run interrupted after it could not apply the file again; write IF [NOT] EXISTS"
    return _column_touched_twice(sql)


def _column_touched_twice(sql: str) -> str | None:
    """A column the file both adds and renames, or drops and then adds again: applied
    again after an interruption, guarded or not, the first adds the column a second time
    and the rename then finds its new name taken; the second drops the re-added column,
    and with it whatever was written to it since the interrupted run."""
    renames: list[tuple[int, str, str, tuple[str, str]]] = []
    added: dict[tuple[str, str], int] = {}  # (table, column) -> statement that adds it
    dropped: dict[tuple[str, str], int] = {}  # (table, column) -> statement that drops it
    for number, statement in enumerate(split_statements(sql), start=1):
        alter = _ALTER.match(_code(statement, names=True))
        if alter is None:
            continue
        table = _name(alter.group(1))
        head = " ".join(statement.split())[:80]
        for clause in _clauses(alter.group(2)):
            if add := _ADD_COLUMN.match(clause):
                column = (table, _name(add.group(1)))
                if column in dropped:
                    return (
                        f"statement {number} ({head!r}) adds a column that statement "
                        f"{dropped[column]} of the same file drops: a run interrupted after "
                        "the add would drop the column again, and what was written to it "
                        "since; change a type with MODIFY COLUMN, or put the add in a file "
                        "of its own"
                    )
                added.setdefault(column, number)
            elif drop := _DROP_COLUMN.match(clause):
                dropped.setdefault((table, _name(drop.group(1))), number)
            elif rename := _RENAME_COLUMN.match(clause):
                old, new = (_name(g) for g in rename.groups())
                renames.append((number, head, table, (old, new)))
    for number, head, table, names in renames:
        adds = [added[(table, name)] for name in names if (table, name) in added]
        if adds:
            return (
                f"statement {number} ({head!r}) renames a column that statement {adds[0]} of "
                "the same file adds: a run interrupted after the rename would add the column "
                "again and the rename would then fail; put the rename in a file of its own"
            )
    return None
