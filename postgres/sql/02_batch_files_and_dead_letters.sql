-- Batch loads and dead-letter reprocessing (issue 4). Idempotent: IF NOT EXISTS everywhere.

-- What each landing file did, per client and table: a queryable report for operators.
-- The ledger that decides what loads is dlt's state in the client's own database (it is
-- committed with the rows); this table is written after a load commits.
CREATE TABLE IF NOT EXISTS batch_files (
    client_id       TEXT NOT NULL,
    table_name      TEXT NOT NULL,
    file_path       TEXT NOT NULL,       -- relative to the client's landing root
    sha256          TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    status          TEXT NOT NULL CHECK (status IN ('loaded', 'rejected')),
    rows_loaded     BIGINT,
    problem_line    BIGINT,              -- rejected: first bad line (0 = the file as a whole)
    problem         TEXT,                -- rejected: why, e.g. "not JSON: unexpected character"
    load_id         TEXT,                -- dlt load id of the load that consumed or saw it
    dagster_run_id  TEXT,
    first_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, table_name, file_path, sha256)
);

CREATE INDEX IF NOT EXISTS batch_files_rejected_idx
    ON batch_files (client_id, last_seen_at) WHERE status = 'rejected';

-- Dead letters that will not heal by themselves: they wait here for a human.
-- One row per dead-letter record, keyed by its own coordinates on the dead-letter topic,
-- so re-running the reprocessing never parks the same record twice.
CREATE TABLE IF NOT EXISTS parked_dead_letters (
    id                BIGSERIAL PRIMARY KEY,
    dl_topic          TEXT NOT NULL,
    dl_partition      INTEGER NOT NULL,
    dl_offset         BIGINT NOT NULL,
    reason            TEXT NOT NULL,     -- the router's reason code, or 'unreadable_envelope'
    parked_because    TEXT NOT NULL,     -- permanent_reason, max_attempts, client_gone, ...
    detail            TEXT NOT NULL DEFAULT '',
    payload           BYTEA,             -- the ORIGINAL message bytes, unchanged
    message_key       BYTEA,
    headers           JSONB NOT NULL DEFAULT '{}'::jsonb,  -- the dead-letter envelope
    client_id         TEXT,
    event_id          TEXT,
    batch_index       INTEGER,
    origin_topic      TEXT,
    origin_partition  INTEGER,
    origin_offset     BIGINT,
    source_topic      TEXT,
    source_partition  INTEGER,
    source_offset     BIGINT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    first_failed_at   TIMESTAMPTZ,
    parked_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    dagster_run_id    TEXT,
    UNIQUE (dl_topic, dl_partition, dl_offset)
);

CREATE INDEX IF NOT EXISTS parked_dead_letters_client_idx
    ON parked_dead_letters (client_id, parked_at);
CREATE INDEX IF NOT EXISTS parked_dead_letters_reason_idx
    ON parked_dead_letters (reason, parked_at);

-- Recoverable dead letters whose client is not active yet (pending, failed, unregistered):
-- kept with their bytes and re-checked by every run; resolved once replayed or parked.
CREATE TABLE IF NOT EXISTS deferred_dead_letters (
    id                BIGSERIAL PRIMARY KEY,
    dl_topic          TEXT NOT NULL,
    dl_partition      INTEGER NOT NULL,
    dl_offset         BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    detail            TEXT NOT NULL DEFAULT '',
    payload           BYTEA,
    message_key       BYTEA,
    headers           JSONB NOT NULL DEFAULT '{}'::jsonb,
    client_id         TEXT,
    event_id          TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    first_failed_at   TIMESTAMPTZ,
    deferred_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at       TIMESTAMPTZ,
    resolution        TEXT CHECK (resolution IN ('replayed', 'parked')),
    dagster_run_id    TEXT,
    UNIQUE (dl_topic, dl_partition, dl_offset)
);

CREATE INDEX IF NOT EXISTS deferred_dead_letters_waiting_idx
    ON deferred_dead_letters (client_id, id) WHERE resolved_at IS NULL;

-- Every dead letter re-submitted to the raw topic (audit; lets a later run skip records
-- a filtered run already handled).
CREATE TABLE IF NOT EXISTS replayed_dead_letters (
    dl_topic          TEXT NOT NULL,
    dl_partition      INTEGER NOT NULL,
    dl_offset         BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    client_id         TEXT,
    event_id          TEXT,
    attempts          INTEGER NOT NULL,
    from_deferred     BOOLEAN NOT NULL DEFAULT false,
    replayed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    dagster_run_id    TEXT,
    PRIMARY KEY (dl_topic, dl_partition, dl_offset)
);

CREATE INDEX IF NOT EXISTS replayed_dead_letters_client_idx
    ON replayed_dead_letters (client_id, replayed_at);
