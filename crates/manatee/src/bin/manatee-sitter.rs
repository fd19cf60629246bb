//! manatee-sitter: runs one PostgreSQL peer of a Manatee shard.
//!
//! `manatee-sitter --config /etc/manatee/sitter.toml [--check-config]`; every key can also
//! be set as `MANATEE_SITTER_<KEY>` (see docs/manatee.md and `triton_common::service`).

triton_common::service_main!(
    "manatee-sitter",
    "Runs one PostgreSQL peer of a Manatee shard",
    |cfg: manatee::SitterConfig, cancel| async move {
        let running = manatee::run_sitter(cfg, cancel).await?;
        tracing::info!(peer = %running.peer.id, status = %running.status_addr, "manatee-sitter running");
        Ok(running.wait().await?)
    }
);
