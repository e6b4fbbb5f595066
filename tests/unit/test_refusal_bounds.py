"""A refusal repeats what it was given within bounds (analytics_pipeline.failures)."""

from __future__ import annotations

from analytics_pipeline.failures import MAX_DESCRIPTION, MAX_METADATA_TEXT, REFUSED, refusal


def test_a_huge_config_value_is_not_repeated_whole() -> None:
    value = "A" * 20_000
    failure = refusal(f"can not trace {value!r}: {value!r} is not an event id", event_id=value)
    assert failure.description is not None
    assert len(failure.description) < MAX_DESCRIPTION + 50
    assert failure.description.endswith("characters in all)")
    assert "40039 characters" in failure.description  # says how long it was
    shown = failure.metadata["event_id"]
    assert len(getattr(shown, "value", shown)) < MAX_METADATA_TEXT + 50
    assert getattr(failure.metadata[REFUSED], "value", None) is True


def test_ordinary_refusals_are_unchanged() -> None:
    failure = refusal("confirmation 'x' does not match client id 'y'", client_id="y")
    assert failure.description == "confirmation 'x' does not match client id 'y'"
    assert getattr(failure.metadata["client_id"], "value", None) == "y"
