"""Human-readable reconciliation reports (text for terminals, Markdown for Dagster)."""

from __future__ import annotations

from analytics_core.reconciliation.model import Report, Unavailable, window_label


def summary(report: Report | Unavailable) -> str:
    if isinstance(report, Unavailable):
        return f"client {report.client_id}: not reconciled: {report.reason}"
    t = report.totals()
    head = (
        f"client {report.client_id}: {t['windows_judged']} window(s) judged, "
        f"consumed {t['consumed']} = routed {t['routed']} + dead-lettered {t['dead_lettered']}; "
        f"rows found {t['rows_found']}, dead letters found {t['dead_letters_found']} "
        f"(parked {t['parked']})"
    )
    if t["duplicates_stored"] or t["duplicates_collapsed"]:
        # Producer duplicates: routed copies of an event stored once more, not loss.
        head += (
            f"; duplicates collapsed: {t['duplicates_collapsed']} by merges, "
            f"{t['duplicates_stored']} still stored (hidden by FINAL)"
        )
    if report.passed:
        return head + ": balanced"
    return (
        head
        + f": {len(report.problems)} problem(s): "
        + "; ".join(p.message for p in report.problems[:5])
    )


def markdown_table(report: Report) -> str:
    lines = [
        "| window | judged | consumed | routed | rows found | dead-lettered | letters found "
        "| parked | duplicates (stored / collapsed) | missing |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in report.windows:
        letters = str(w.letters_found) if w.letters_verified else "not verified"
        lines.append(
            f"| {window_label(w.window)} | {'yes' if w.judged else 'open'} | {w.consumed} "
            f"| {w.routed_accounted} | {w.rows_found} | {w.dead_lettered_accounted} "
            f"| {letters} | {w.parked} | {w.duplicates_stored} / {w.duplicates_collapsed} "
            f"| {w.missing} |"
        )
    return "\n".join(lines)


def text(report: Report | Unavailable) -> str:
    if isinstance(report, Unavailable):
        return summary(report)
    out = [summary(report), "", markdown_table(report)]
    relevant = [g for g in report.gaps if g.relevant]
    if relevant:
        out += ["", "offset gaps (committed without accounting):"]
        out += [
            f"  {g.stream.label()}: {g.start}..{g.end - 1} ({g.rows_inside} row(s) inside)"
            for g in relevant
        ]
    if report.problems:
        out += ["", "problems:"] + [f"  - {p.message}" for p in report.problems]
    if report.notes:
        out += ["", "notes:"] + [f"  - {n}" for n in report.notes]
    return "\n".join(out)
