"""The file ledger: what is skipped without reading, what is read, what is re-reported."""

from __future__ import annotations

from typing import Any

from analytics_core.batch.formats import FileFormat
from analytics_core.batch.ledger import Ledger, ListedFile, triage
from analytics_core.batch.parsing import LineProblem


def listed(path: str, size: int = 10, modified: str = "1") -> ListedFile:
    return ListedFile("users", path, "/root/" + path, size, modified, FileFormat.JSONL)


def test_new_files_are_read_in_path_order() -> None:
    ledger = Ledger({})
    plan = triage([listed("users/b.jsonl"), listed("users/a.jsonl")], ledger)
    assert [f.path for f in plan.to_read] == ["users/a.jsonl", "users/b.jsonl"]
    assert plan.unchanged == [] and plan.still_rejected == []


def test_loaded_file_with_same_fingerprint_is_not_read_again() -> None:
    state: dict[str, Any] = {}
    ledger = Ledger(state)
    ledger.mark_loaded(listed("users/a.jsonl"), "sha-a", 3)
    plan = triage([listed("users/a.jsonl"), listed("users/b.jsonl")], Ledger(state))
    assert [f.path for f in plan.unchanged] == ["users/a.jsonl"]
    assert [f.path for f in plan.to_read] == ["users/b.jsonl"]
    assert state["files"]["users/a.jsonl"] == {"sha256": "sha-a", "fp": "10:1", "rows": 3}


def test_touched_file_is_read_but_same_content_is_recognised() -> None:
    ledger = Ledger({})
    ledger.mark_loaded(listed("users/a.jsonl"), "sha-a", 3)
    touched = listed("users/a.jsonl", modified="2")
    assert triage([touched], ledger).to_read == [touched]
    assert ledger.content_loaded(touched, "sha-a")
    assert not ledger.content_loaded(touched, "sha-new")
    ledger.touch(touched)
    assert triage([touched], ledger).unchanged == [touched]


def test_unknown_modification_time_always_reads() -> None:
    ledger = Ledger({})
    f = listed("users/a.jsonl", modified="")
    ledger.mark_loaded(f, "sha-a", 1)
    assert triage([f], ledger).to_read == [f]


def test_rejected_file_is_re_reported_until_it_changes() -> None:
    ledger = Ledger({})
    bad = listed("users/a.jsonl")
    ledger.mark_rejected(bad, "sha-bad", [LineProblem(3, "not JSON")])
    [(f, rejection)] = triage([bad], ledger).still_rejected
    assert f == bad and rejection.problems == (LineProblem(3, "not JSON"),)
    fixed = listed("users/a.jsonl", size=12, modified="2")
    assert triage([fixed], ledger).to_read == [fixed]
    ledger.mark_loaded(fixed, "sha-fixed", 4)
    assert ledger.known_rejection(fixed) is None
    assert triage([fixed], ledger).unchanged == [fixed]
