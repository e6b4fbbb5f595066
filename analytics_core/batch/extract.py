"""The extraction of one landing table: ledger triage, check, stream rows (I/O glue).

Invariant: a file's rows are yielded only after the whole file passed the check, and the
file is recorded in the ledger only after its last row was yielded. dlt commits the
ledger (resource state) with the load package, so either the rows and the ledger entry
become durable together or neither does (a failed load is re-extracted in full and the
merge on the primary key makes that idempotent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from analytics_core.batch.file_reader import check_file, stream_rows
from analytics_core.batch.landing_zone import LandingZone
from analytics_core.batch.ledger import Ledger, triage
from analytics_core.batch.report import FileConsumed, FileRejected, TableReport
from analytics_core.batch.tables import SOURCE_FILE, SOURCE_LINE, SOURCE_SEQ, TableSpec, source_seq


def extract_table(
    zone: LandingZone,
    spec: TableSpec,
    ledger: Ledger,
    report: TableReport,
    *,
    chunk: int = 10_000,
) -> Iterator[list[dict[str, Any]]]:
    files, ignored = zone.list_table(spec.name)
    report.ignored.extend(ignored)
    plan = triage(files, ledger)
    report.unchanged += len(plan.unchanged)
    for f, rejection in plan.still_rejected:
        report.rejected.append(FileRejected(f.path, rejection.sha256, rejection.problems, True))
    for rank, f in enumerate(plan.to_read):
        checked = check_file(zone, f, spec)
        if not checked.ok:
            ledger.mark_rejected(f, checked.sha256, checked.problems)
            report.rejected.append(FileRejected(f.path, checked.sha256, checked.problems, False))
            continue
        if ledger.content_loaded(f, checked.sha256):
            ledger.touch(f)
            report.already_loaded.append(f.path)
            continue
        for rows in stream_rows(zone, f, spec, checked, chunk=chunk):
            out = []
            for row in rows:
                values = row.values
                values[SOURCE_FILE] = f.path
                values[SOURCE_LINE] = row.line
                values[SOURCE_SEQ] = source_seq(rank, row.line)
                out.append(values)
            yield out
        ledger.mark_loaded(f, checked.sha256, checked.rows)
        report.consumed.append(FileConsumed(f.path, checked.sha256, checked.rows))
