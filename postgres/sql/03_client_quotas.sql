-- Capture endpoint (issue 13): per-client quotas and the write-key index.
-- Idempotent: safe to apply any number of times.

-- Events per second and burst a client may send through the capture endpoint. NULL means
-- "the capture service's default" (CAPTURE_QUOTA_EVENTS_PER_S / CAPTURE_QUOTA_BURST), so a
-- changed default reaches every client that was never given its own quota.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS capture_events_per_s DOUBLE PRECISION
    CHECK (capture_events_per_s IS NULL OR capture_events_per_s > 0);
ALTER TABLE clients ADD COLUMN IF NOT EXISTS capture_burst INTEGER
    CHECK (capture_burst IS NULL OR capture_burst >= 1);

-- SDKs send only a write key: the capture service finds the client by the key's hash.
CREATE INDEX IF NOT EXISTS clients_api_key_hash_idx ON clients (api_key_hash);
