//! The Manatee issue's acceptance test, through Moray: a real etcd, three real sitters
//! with their PostgreSQLs, and a real Moray following the shard from its config
//! (`manatee_etcd`), under continuous acknowledged `PutObject` load from four writers.
//!
//! 1. SIGKILL of the primary (sitter, PostgreSQL, backends): the sync takes over, Moray
//!    moves to it; the old primary comes back deposed and rejoins after
//!    `manatee-adm rebuild`.
//! 2. SIGSTOP of the primary past its lease, then SIGCONT: the sync takes over; the old
//!    primary finds itself deposed and never accepts a write again.
//! 3. SIGKILL of the sync: the primary takes the async as its sync; the old sync rejoins.
//! 4. SIGKILL of the async: it rejoins; no new generation.
//!
//! After each: every acknowledged key is read back through Moray with its acknowledged
//! value, the shard is back to three peers and `manatee-adm verify` passes. Writers treat
//! retryable errors as "not applied" (and prove it: the resend is conditioned on the key
//! not existing) and unknown outcomes as "maybe applied"; any other error fails the test.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use triton_e2e::{Load, MorayOnShard};

const SETTLE: Duration = Duration::from_secs(90);
const WRITERS: usize = 4;
const PAUSE: Duration = Duration::from_millis(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moray_on_manatee_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut env = MorayOnShard::start(SETTLE).await;
    let load = Load::start(&env.client, WRITERS, PAUSE);
    load.wait_progress(50, SETTLE, "initial writes").await;

    // 1. SIGKILL of the primary.
    let before = env.shard.state().await.expect("state");
    let p = env.shard.index_of(&before.primary.id);
    env.shard.sitters[p].signal(libc::SIGKILL);
    let killed_at = Instant::now();
    env.shard.sitters[p].kill();
    let after = env
        .shard
        .wait_state(SETTLE, "takeover after SIGKILL", |s| {
            s.generation > before.generation
        })
        .await;
    assert_eq!(
        after.primary.id,
        before.sync.as_ref().expect("sync").id,
        "only the sync may take over"
    );
    load.wait_progress(20, SETTLE, "writes after SIGKILL of the primary")
        .await;
    let first = load
        .first_success_after(killed_at)
        .expect("a write after the kill");
    eprintln!(
        "SIGKILL of the primary: PutObject through moray succeeded again after {:.2} s",
        first.duration_since(killed_at).as_secs_f64()
    );
    env.check_acked(&load.snapshot(), "after SIGKILL of the primary")
        .await;
    env.shard.spawn(p);
    let id = env.shard.sitters[p].id.clone();
    env.shard.rebuild(&id, SETTLE).await;
    env.shard
        .wait_healthy(SETTLE, "after rebuild of the killed primary")
        .await;
    env.check_acked(&load.snapshot(), "after rebuild 1").await;
    load.assert_no_wrong("after SIGKILL of the primary");

    // 2. SIGSTOP of the primary past its lease, then SIGCONT.
    let before = env.shard.state().await.expect("state");
    let p = env.shard.index_of(&before.primary.id);
    env.shard.sitters[p].signal(libc::SIGSTOP);
    let after = env
        .shard
        .wait_state(SETTLE, "takeover after SIGSTOP", |s| {
            s.generation > before.generation
        })
        .await;
    assert_eq!(after.primary.id, before.sync.as_ref().expect("sync").id);
    load.wait_progress(20, SETTLE, "writes after SIGSTOP of the primary")
        .await;
    env.shard.sitters[p].signal(libc::SIGCONT);
    // It must never accept a write again: try one straight at its PostgreSQL.
    let stale = env.shard.sitters[p].url();
    let attempt = async {
        let (client, conn) = tokio_postgres::connect(&stale, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS stale_probe (x int); INSERT INTO stale_probe VALUES (1)")
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => panic!("the deposed primary accepted a write"),
        Ok(Err(e)) => eprintln!("write to the resumed old primary refused: {e}"),
        Err(_) => eprintln!("write to the resumed old primary never acknowledged (timed out)"),
    }
    let id = env.shard.sitters[p].id.clone();
    env.shard.rebuild(&id, SETTLE).await;
    env.shard
        .wait_healthy(SETTLE, "after rebuild of the paused primary")
        .await;
    env.check_acked(&load.snapshot(), "after SIGSTOP of the primary")
        .await;
    load.assert_no_wrong("after SIGSTOP of the primary");

    // 3. SIGKILL of the sync: the primary takes the async; the old sync rejoins.
    let before = env.shard.state().await.expect("state");
    let s = env.shard.index_of(&before.sync.as_ref().expect("sync").id);
    env.shard.sitters[s].kill();
    let after = env
        .shard
        .wait_state(SETTLE, "new sync after SIGKILL of the sync", |z| {
            z.generation > before.generation
        })
        .await;
    assert_eq!(after.primary.id, before.primary.id, "the primary stays");
    load.wait_progress(20, SETTLE, "writes after SIGKILL of the sync")
        .await;
    env.shard.spawn(s);
    env.shard
        .wait_healthy(SETTLE, "after the killed sync restarted")
        .await;
    env.check_acked(&load.snapshot(), "after SIGKILL of the sync")
        .await;

    // 4. SIGKILL of the async: it rejoins by itself, no new generation.
    let before = env.shard.state().await.expect("state");
    let a = env
        .shard
        .index_of(&before.asyncs.first().expect("an async").id);
    env.shard.sitters[a].kill();
    load.wait_progress(20, SETTLE, "writes after SIGKILL of the async")
        .await;
    env.shard.spawn(a);
    env.shard
        .wait_healthy(SETTLE, "after the killed async restarted")
        .await;
    let after = env.shard.state().await.expect("state");
    assert_eq!(
        after.generation, before.generation,
        "losing the async declares no generation"
    );

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
