//! The Manatee issue's acceptance test, through Moray: a real etcd, three real sitters
//! with their PostgreSQLs, and a real Moray following the shard from its config
//! (`manatee_etcd`), under continuous acknowledged `PutObject` load from four writers.
//!
//! The faults are `manatee_testkit::faults::four_faults`, as Manatee's own test runs them:
//! SIGKILL of the primary (Moray moves to the sync), SIGSTOP of the primary past its lease
//! then SIGCONT, SIGKILL of the sync, SIGKILL of the async.
//!
//! After each: every acknowledged key is read back through Moray with its acknowledged
//! value, the shard is back to three peers and `manatee-adm verify` passes. Writers treat
//! retryable errors as "not applied" (and prove it: the resend is conditioned on the key
//! not existing) and unknown outcomes as "maybe applied"; any other error fails the test.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use triton_e2e::manatee_testkit::faults::four_faults;
use triton_e2e::{Load, LoadThrough, MorayOnShard};

const SETTLE: Duration = Duration::from_secs(90);
const WRITERS: usize = 4;
const PAUSE: Duration = Duration::from_millis(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moray_on_manatee_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut env = MorayOnShard::start(SETTLE).await;
    let load = Load::start(&env.client, WRITERS, PAUSE);
    load.wait_progress(50, SETTLE, "initial writes").await;

    let work = LoadThrough {
        load: &load,
        reader: &env.reader,
    };
    four_faults(
        &mut env.shard,
        &work,
        SETTLE,
        "CREATE TABLE IF NOT EXISTS stale_probe (x int); INSERT INTO stale_probe VALUES (1)",
    )
    .await;

    load.assert_no_wrong("at the end");
    let acked = load.stop().await;
    assert!(
        acked.keys.len() > 200,
        "only {} writes acknowledged",
        acked.keys.len()
    );
    env.check_acked(&acked.keys, "at the end").await;
    eprintln!(
        "{} writes acknowledged through moray, {} retryable errors (resent), {} unknown outcomes; \
         errors seen: {:?}; {:.0} s",
        acked.keys.len(),
        acked.retryable,
        acked.unknown,
        acked.examples,
        started.elapsed().as_secs_f64()
    );
    env.stop().await;
}
