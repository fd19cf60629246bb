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

use std::time::Duration;

use triton_e2e::manatee_testkit::LEASE_TTL_SECS;
use triton_e2e::manatee_testkit::faults::{failover_trial, trials};
use triton_e2e::{
    Load, LoadThrough, MORAY_CONNECT_TIMEOUT_MS, MorayOnShard, REQUEST_TIMEOUT, median_max,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored (scripts/bench manatee)"]
async fn moray_failover_after_sigkill_of_the_primary() {
    let trials = trials();
    let settle = Duration::from_secs(120);
    let mut env = MorayOnShard::start(settle).await;
    let load = Load::start(&env.client, 4, Duration::from_millis(5));
    load.wait_progress(50, settle, "initial writes").await;
    let mut unavailable = Vec::new();
    let mut takeover = Vec::new();
    for trial in 1..=trials {
        let work = LoadThrough {
            load: &load,
            reader: &env.reader,
        };
        let trial = failover_trial(&mut env.shard, &work, trial, settle).await;
        unavailable.push(trial.unavailable);
        takeover.push(trial.takeover);
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
