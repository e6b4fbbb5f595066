-- Client registry: the source of truth for the router and the Dagster code location.
-- Idempotent: safe to apply any number of times (IF NOT EXISTS everywhere).
-- client_id is deliberately not constrained here: the provisioning sensor validates
-- it and marks an invalid pending client 'failed' with the reason.
CREATE TABLE IF NOT EXISTS clients (
    client_id         TEXT PRIMARY KEY,
    name              TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'active', 'failed', 'deprovisioning', 'deprovisioned')),
    status_detail     TEXT,
    api_key_hash      TEXT NOT NULL CHECK (api_key_hash ~ '^[0-9a-f]{64}$'),
    ch_database_name  TEXT UNIQUE,
    batch_source_url  TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    provisioned_at    TIMESTAMPTZ,
    deprovisioned_at  TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS clients_status_idx ON clients (status);

-- One row per ClickHouse migration applied to a client's database.
-- version 0 is the base schema (clickhouse/schemas/01_events_base.sql).
CREATE TABLE IF NOT EXISTS schema_versions (
    client_id       TEXT NOT NULL REFERENCES clients (client_id),
    version         INTEGER NOT NULL CHECK (version >= 0),
    name            TEXT NOT NULL,
    checksum        TEXT NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    dagster_run_id  TEXT,
    PRIMARY KEY (client_id, version)
);

-- Every lifecycle action (provisioned, migrated, failed, deprovisioned...).
CREATE TABLE IF NOT EXISTS client_audit_log (
    id              BIGSERIAL PRIMARY KEY,
    client_id       TEXT NOT NULL,
    action          TEXT NOT NULL,
    detail          JSONB NOT NULL DEFAULT '{}'::jsonb,
    dagster_run_id  TEXT,
    actor           TEXT NOT NULL DEFAULT 'system',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS client_audit_log_client_idx ON client_audit_log (client_id, created_at);
