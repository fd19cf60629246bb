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

use std::time::{Duration, Instant};

use common::{LEASE_TTL_SECS, Writer, check_acked};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored"]
async fn failover_after_sigkill_of_the_primary() {
    let trials: usize = std::env::var("MANATEE_BENCH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let settle = Duration::from_secs(120);
    let mut shard = common::start_shard(3);
    shard.wait_healthy(settle, "setup").await;
    let writer = Writer::start(&shard).await;
    writer.wait_progress(50, settle, "initial writes").await;
    let mut results = Vec::new();
    for trial in 1..=trials {
        let before = shard.state().await.expect("state");
        let p = shard.index_of(&before.primary.id);
        // Let the lease be refreshed at a random moment relative to the kill.
        tokio::time::sleep(Duration::from_millis(500 + 137 * trial as u64 % 1000)).await;
        shard.sitters[p].signal(libc::SIGKILL);
        let killed = Instant::now();
        shard.sitters[p].kill();
        writer
            .wait_progress(10, settle, "writes after the kill")
            .await;
        let first = writer
            .first_success_after(killed)
            .expect("a commit after the kill");
        let secs = first.duration_since(killed).as_secs_f64();
        eprintln!("trial {trial}: {secs:.2} s without writes");
        results.push(secs);
        shard.spawn(p);
        let id = shard.sitters[p].id.clone();
        let deadline = Instant::now() + settle;
        while shard
            .adm(&["rebuild", "--id", &id, "-y", "--wait", "120"])
            .0
            != 0
        {
            assert!(
                Instant::now() < deadline,
                "rebuild kept refusing\n{}",
                shard.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        shard.wait_healthy(settle, "after rebuild").await;
    }
    let acked = writer.stop().await;
    check_acked(&shard, &acked.keys, "after the trials").await;
    let mut sorted = results.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!(
        "manatee failover (SIGKILL of the primary -> first acknowledged write), {} trials, \
         lease TTL {LEASE_TTL_SECS} s (keep-alive every {:.1} s), pg poll 250 ms: median {median:.2} s, max {max:.2} s; \
         {} writes acknowledged, none lost",
        results.len(),
        LEASE_TTL_SECS as f64 / 3.0,
        acked.keys.len()
    );
}
