-- ClickHouse targets (issue 15): where each client's database lives, and client moves.
-- Idempotent: safe to apply any number of times.

-- The ClickHouse target (CLICKHOUSE_TARGETS name; 'default' = the CLICKHOUSE_* server) that
-- holds the client's database. Every existing client keeps 'default', so a single-server
-- setup works unchanged. Changed only by a client move (analytics_core.moves), in the same
-- transaction that records the move's switch.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS ch_target TEXT NOT NULL DEFAULT 'default';
DO $$
BEGIN
    ALTER TABLE clients ADD CONSTRAINT clients_ch_target_check
        CHECK (ch_target ~ '^[a-z][a-z0-9_]{0,30}$');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE INDEX IF NOT EXISTS clients_ch_target_idx ON clients (ch_target);

-- One row per move of a client's database from one target to another. `step` is the last
-- step that completed; a re-run resumes after it (analytics_core/moves/plan.py):
--   started -> copied -> switched -> fenced -> delta_copied -> verified -> done
-- (`done`: the old copy is dropped), or `abandoned` (only before the switch). At most one unfinished move per client.
CREATE TABLE IF NOT EXISTS client_moves (
    id              BIGSERIAL PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    database_name   TEXT NOT NULL,
    source_target   TEXT NOT NULL,
    dest_target     TEXT NOT NULL CHECK (dest_target <> source_target),
    step            TEXT NOT NULL DEFAULT 'started' CHECK (step IN (
                        'started', 'copied', 'switched', 'fenced', 'delta_copied',
                        'verified', 'done', 'abandoned')),
    requested_by    TEXT NOT NULL DEFAULT 'system',
    dagster_run_id  TEXT,
    counts          JSONB NOT NULL DEFAULT '{}'::jsonb,   -- what was copied and verified
    last_error      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,           -- runs that worked on this move
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    switched_at     TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ
);

CREATE UNIQUE INDEX IF NOT EXISTS client_moves_one_open_idx
    ON client_moves (client_id) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS client_moves_client_idx ON client_moves (client_id, created_at);
