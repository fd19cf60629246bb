//! `scripts/bench manatee`: write unavailability after SIGKILL of the primary, measured
//! from the kill to the first acknowledged commit sent after it, through the primary the
//! cluster state names (as Moray follows it). Five trials by default
//! (`MANATEE_BENCH_TRIALS`); between trials the killed peer is restarted, rebuilt with
//! `manatee-adm rebuild` and the shard waits until `manatee-adm verify` passes.
//!
//! Run: `cargo test --release -p manatee --test failover_bench -- --ignored --nocapture`

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{LEASE_TTL_SECS, Writer, check_acked};
use manatee_testkit::faults::{failover_trial, median_max, trials};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored"]
async fn failover_after_sigkill_of_the_primary() {
    let trials = trials();
    let settle = Duration::from_secs(120);
    let mut shard = common::start_shard(3);
    shard.wait_healthy(settle, "setup").await;
    let writer = Writer::start(&shard).await;
    writer.wait_progress(50, settle, "initial writes").await;
    let mut results = Vec::new();
    for trial in 1..=trials {
        let trial = failover_trial(&mut shard, &writer, trial, settle).await;
        results.push(trial.unavailable);
    }
    let acked = writer.stop().await;
    check_acked(&shard, &acked.keys, "after the trials").await;
    let (median, max) = median_max(&results);
    println!(
        "manatee failover (SIGKILL of the primary -> first acknowledged write), {} trials, \
         lease TTL {LEASE_TTL_SECS} s (keep-alive every {:.1} s), pg poll 250 ms: median {median:.2} s, max {max:.2} s; \
         {} writes acknowledged, none lost",
        results.len(),
        LEASE_TTL_SECS as f64 / 3.0,
        acked.keys.len()
    );
}
