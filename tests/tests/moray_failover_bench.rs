//! `scripts/bench manatee`: write unavailability through Moray after SIGKILL of the
//! primary's sitter, PostgreSQL and backends, measured from the kill to the first
//! `PutObject` sent after it that Moray acknowledged (four writers, each resending
//! retryable failures every 20 ms). Five trials by default (`MANATEE_BENCH_TRIALS`);
//! between trials the killed peer is restarted, rebuilt with `manatee-adm rebuild`, and
//! the shard waits until `manatee-adm verify` passes.
//!
//! Run: `cargo test --release -p triton-e2e --test moray_failover_bench -- --ignored --nocapture`

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use triton_e2e::manatee_testkit::LEASE_TTL_SECS;
use triton_e2e::{Load, MORAY_CONNECT_TIMEOUT_MS, MorayOnShard, REQUEST_TIMEOUT, median_max};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored (scripts/bench manatee)"]
async fn moray_failover_after_sigkill_of_the_primary() {
    let trials: usize = std::env::var("MANATEE_BENCH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let settle = Duration::from_secs(120);
    let mut env = MorayOnShard::start(settle).await;
    let load = Load::start(&env.client, 4, Duration::from_millis(5));
    load.wait_progress(50, settle, "initial writes").await;
    let mut unavailable = Vec::new();
    let mut takeover = Vec::new();
    for trial in 1..=trials {
        let before = env.shard.state().await.expect("state");
        let p = env.shard.index_of(&before.primary.id);
        // Kill at a varying moment relative to the lease keep-alives.
        tokio::time::sleep(Duration::from_millis(500 + 137 * trial as u64 % 1000)).await;
        // The clock starts once the signal is sent: writes sent before it may still be
        // acknowledged by the old primary.
        env.shard.sitters[p].signal(libc::SIGKILL);
        let killed = Instant::now();
        env.shard.sitters[p].kill();
        env.shard
            .wait_state(settle, "takeover", |s| s.generation > before.generation)
            .await;
        let declared = killed.elapsed().as_secs_f64();
        load.wait_progress(10, settle, "writes after the kill")
            .await;
        let first = load
            .first_success_after(killed)
            .expect("a write after the kill");
        let secs = first.duration_since(killed).as_secs_f64();
        eprintln!(
            "trial {trial}: new generation seen after {declared:.2} s, first PutObject \
             acknowledged through moray after {secs:.2} s"
        );
        unavailable.push(secs);
        takeover.push(declared);
        env.shard.spawn(p);
        let id = env.shard.sitters[p].id.clone();
        env.shard.rebuild(&id, settle).await;
        env.shard.wait_healthy(settle, "after rebuild").await;
    }
    load.assert_no_wrong("bench");
    let acked = load.stop().await;
    env.check_acked(&acked.keys, "after the trials").await;
    let (median, max) = median_max(&unavailable);
    let (t_median, t_max) = median_max(&takeover);
    println!(
        "manatee failover through moray (SIGKILL of the primary -> first acknowledged \
         PutObject), {} trials: median {median:.2} s, max {max:.2} s \
         (new generation in etcd: median {t_median:.2} s, max {t_max:.2} s); \
         lease TTL {LEASE_TTL_SECS} s (keep-alive every {:.1} s), pg poll 250 ms, \
         moray connect timeout {MORAY_CONNECT_TIMEOUT_MS} ms, request timeout {} ms, \
         writers resend retryable errors after 20 ms; {} writes acknowledged, none lost, \
         {} retryable errors, {} unknown outcomes",
        unavailable.len(),
        LEASE_TTL_SECS as f64 / 3.0,
        REQUEST_TIMEOUT.as_millis(),
        acked.keys.len(),
        acked.retryable,
        acked.unknown,
    );
    env.stop().await;
}
