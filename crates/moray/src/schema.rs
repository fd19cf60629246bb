//! Moray's own tables, created idempotently at start-up and whenever a new primary appears:
//! `buckets_config` (spec A2.1) and the change feed's `moray_changes` and
//! `moray_changes_state` (see `feed.rs`).

use crate::error::MorayError;
use crate::pool::PooledConn;

/// Advisory lock key serializing schema set-up between Moray processes ("moray_sc").
const SETUP_LOCK: i64 = 0x6d6f_7261_795f_7363;

const SETUP: &str = "
CREATE TABLE IF NOT EXISTS buckets_config (
    name TEXT PRIMARY KEY,
    index TEXT NOT NULL,
    pre TEXT NOT NULL,
    post TEXT NOT NULL,
    options TEXT,
    mtime TIMESTAMP WITHOUT TIME ZONE DEFAULT now()
);
ALTER TABLE buckets_config ADD COLUMN IF NOT EXISTS reindex_active TEXT;
CREATE TABLE IF NOT EXISTS moray_changes (
    id BIGSERIAL NOT NULL,
    seq BIGINT,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    op SMALLINT NOT NULL,
    value TEXT,
    etag TEXT,
    mtime BIGINT NOT NULL,
    ctime TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS moray_changes_seq_idx
    ON moray_changes (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS moray_changes_unsequenced_idx
    ON moray_changes (id) WHERE seq IS NULL;
CREATE INDEX IF NOT EXISTS moray_changes_bucket_seq_idx
    ON moray_changes (bucket, seq) WHERE seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS moray_changes_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    purged_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO moray_changes_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
";

/// Creates what is missing, under an advisory lock so concurrent Morays do not race.
pub async fn setup(conn: &mut PooledConn) -> Result<(), MorayError> {
    conn.in_transaction = true;
    let sql = format!("BEGIN; SELECT pg_advisory_xact_lock({SETUP_LOCK}); {SETUP} COMMIT;");
    conn.client.batch_execute(&sql).await?;
    conn.in_transaction = false;
    Ok(())
}
