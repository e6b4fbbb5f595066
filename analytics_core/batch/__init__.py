"""Batch loads from a client's landing zone into its own ClickHouse database, with dlt.

Layout of a landing zone (`clients.batch_source_url`: a directory or any fsspec URL):

    <url>/users/<any path>.{jsonl,ndjson,csv,parquet}
    <url>/page_views/<any path>.{jsonl,ndjson,csv,parquet}

Modules, one job each:
- `tables`: the two landing tables, their primary keys and lineage columns;
- `formats`: file format from a file name;
- `parsing` / `parquet_rows`: pure parsing of one file into rows or line-numbered problems;
- `ledger`: pure bookkeeping of which file contents were loaded (kept in dlt state);
- `landing_zone`: fsspec listing and reading (I/O);
- `source`: the dlt source (`users`, `page_views` resources, merge on primary key);
- `pipeline`: the per-client dlt pipeline (the client's database, one pipeline name per client);
- `client_load`: plan a client's load from its registry row (skip inactive clients), run it
  without Dagster, and summarise the outcome;
- `file_log`: the queryable PostgreSQL log of loaded and rejected files;
- `seed_sample`: `python -m analytics_core.batch.seed_sample CLIENT_ID` drops `samples/`.

Design choices:
- The ledger of loaded files lives in the dlt resource state, which dlt stores in the client's
  own database and commits in the same load package as the rows. A load that fails half-way
  commits no state, so its files are read again next time; the merge on the primary key makes
  that second load replace, never duplicate, what the first one may have written. If the
  client's database is dropped, the ledger goes with the data and the files load again.
  `batch_files` in PostgreSQL is a report of what happened (for operators), not the ledger.
- A file is all-or-nothing: it is checked completely (and its sha256 computed) before any row
  is handed to dlt. A malformed file is reported with its path, line and reason, is not
  loaded, and does not stop the client's other files; it is re-reported on every run until
  its content changes.
"""
