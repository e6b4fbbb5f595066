"""Pure-ish parsing of a Parquet landing file (an open binary file) into rows or problems.

"Line" means the 1-based row number for Parquet. Problems: not a Parquet file, an
unreadable row group (with the first row it would have held), a row without a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from analytics_core.batch.parsing import LineProblem, ParseItem, Row, keyed_row
from analytics_core.batch.tables import TableSpec

BATCH_ROWS = 10_000


def parse_parquet(source: IO[bytes], spec: TableSpec) -> Iterator[ParseItem]:
    # Imported here: pyarrow (and numpy) would otherwise load in every process that loads the
    # code location, lifecycle run workers included, for the few runs that read Parquet.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield LineProblem(0, f"not a readable Parquet file: {str(exc).splitlines()[0]}")
        return
    number = 0
    batches = pf.iter_batches(batch_size=BATCH_ROWS)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as exc:
            yield LineProblem(number + 1, f"unreadable Parquet data: {str(exc).splitlines()[0]}")
            return
        records: list[dict[str, Any]] = batch.to_pylist()
        for doc in records:
            number += 1
            keyed = keyed_row(doc, spec)
            if isinstance(keyed, str):
                yield LineProblem(number, keyed)
                continue
            yield Row(number, keyed)
