"""The trace report as text for a person."""

from __future__ import annotations

from analytics_core.trace.model import TraceError, TraceReport


def _t(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def text(report: TraceReport | TraceError, since_hint: str = "--since") -> str:
    """`since_hint` names the caller's bound on how far back was searched (the CLI's flag,
    a Dagster run's config field)."""
    if isinstance(report, TraceError):
        return f"event {report.event_id}: can not trace: {report.reason}"
    out = [f"event {report.event_id}: {report.status}"]
    where = report.client_id or f"{len(report.databases_searched)} client database(s)"
    out.append(f"  searched: {where}; {report.dead_letter_scan}")
    if report.raw_copies:
        out.append("")
        out.append("Kafka messages that carried it:")
        for c in report.raw_copies:
            state = f"produced {_t(c.produced_at)}" if c.available else "no longer in Kafka"
            replay = f", replay attempt {c.replay_attempt}" if c.replay_attempt else ""
            out.append(f"  {c.coords.label()}  {'/'.join(c.roles)}  ({state}{replay})")
    if report.rows:
        out.append("")
        out.append("ClickHouse rows:")
        for r in report.rows:
            out.append(
                f"  {r.database}.{r.table}: {r.kafka_topic}[{r.kafka_partition}]@{r.kafka_offset}"
                f" batch_index {r.batch_index}, origin [{r.origin_partition}]@{r.origin_offset},"
                f" attempt {r.attempt}"
            )
            out.append(
                f"    received {_t(r.received_at)}, ingested {_t(r.ingested_at)}"
                f" by {r.router_instance} (ClickHouse target {r.target});"
                f" {r.event_name} at {_t(r.event_timestamp)}"
            )
    if report.letters:
        out.append("")
        out.append("dead letters:")
        for x in report.letters:
            src = x.source.label() if x.source else "?"
            out.append(
                f"  {x.dl.label()}  reason {x.reason}, attempt {x.attempt}, client"
                f" {x.client_id or '-'}, failed copy {src}, batch index {x.batch_index}"
                f" (matched by {x.matched_by})"
            )
            if x.detail:
                out.append(f"    {x.detail[:300]}")
    if report.fates:
        out.append("")
        out.append("dead-letter reprocessing:")
        for f in report.fates:
            run = f", run {f.dagster_run_id}" if f.dagster_run_id else ""
            out.append(
                f"  {f.outcome} at {_t(f.at)}: letter {f.dl.label()} ({f.reason},"
                f" {f.attempts} attempt(s){run})" + (f": {f.detail}" if f.detail else "")
            )
    if not report.found:
        out.append("")
        out.append(f"  not found anywhere (wrong id, another client, or older than {since_hint})")
    if report.notes:
        out.append("")
        out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)
