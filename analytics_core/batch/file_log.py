"""Write a load's outcome to `batch_files` (PostgreSQL): the operators' view of each file.

Called after the load committed, so a row says what really happened. Upserts on
(client, table, path, sha256): re-reporting a still-bad file only moves `last_seen_at`.
"""

from __future__ import annotations

from psycopg2.extras import execute_values

from analytics_core.batch.report import LoadReport
from analytics_core.registry import Conn

_UPSERT = (
    "INSERT INTO batch_files (client_id, table_name, file_path, sha256, status, rows_loaded,"
    " problem_line, problem, load_id, dagster_run_id) VALUES %s"
    " ON CONFLICT (client_id, table_name, file_path, sha256) DO UPDATE SET"
    " status = EXCLUDED.status, rows_loaded = COALESCE(EXCLUDED.rows_loaded,"
    " batch_files.rows_loaded), problem_line = EXCLUDED.problem_line,"
    " problem = EXCLUDED.problem, load_id = COALESCE(EXCLUDED.load_id, batch_files.load_id),"
    " dagster_run_id = COALESCE(EXCLUDED.dagster_run_id, batch_files.dagster_run_id),"
    " last_seen_at = now()"
)

Record = tuple[str, str, str, str, str, int | None, int | None, str | None, str | None, str | None]


def records(
    client_id: str, report: LoadReport, load_id: str | None, run_id: str | None
) -> list[Record]:
    out: list[Record] = []
    for table in report.tables.values():
        for f in table.consumed:
            out.append(
                (
                    client_id,
                    table.table,
                    f.path,
                    f.sha256,
                    "loaded",
                    f.rows,
                    None,
                    None,
                    load_id,
                    run_id,
                )
            )
        for r in table.rejected:
            if not r.sha256:
                continue
            first = r.problems[0] if r.problems else None
            out.append(
                (
                    client_id,
                    table.table,
                    r.path,
                    r.sha256,
                    "rejected",
                    None,
                    first.line if first else None,
                    first.reason if first else None,
                    load_id,
                    run_id,
                )
            )
    return out


def write_file_log(
    conn: Conn, client_id: str, report: LoadReport, load_id: str | None, run_id: str | None
) -> int:
    rows = records(client_id, report, load_id, run_id)
    if rows:
        with conn.cursor() as cur:
            execute_values(cur, _UPSERT, rows)
    conn.commit()
    return len(rows)
