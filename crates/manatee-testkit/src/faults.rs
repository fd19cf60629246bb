//! The faults every shard test runs, in one place: a write load (Manatee's own writer
//! straight to PostgreSQL, or writers through Moray) is a [`Workload`], and [`four_faults`]
//! and [`failover_trial`] drive the shard through the faults while it runs, checking after
//! each that every acknowledged write is still there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manatee_client::state::ClusterState;

use crate::Shard;

/// Writes running while the shard is faulted: they count, and remember, what was
/// acknowledged.
#[allow(async_fn_in_trait)] // used from the tests' own runtime, never spawned
pub trait Workload {
    /// Waits until at least `n` more writes are acknowledged; panics after `timeout`,
    /// saying `what` was awaited.
    async fn wait_progress(&self, n: usize, timeout: Duration, what: &str);
    /// When the first write sent after `t` was acknowledged.
    fn first_success_after(&self, t: Instant) -> Option<Instant>;
    /// Panics unless every write acknowledged so far is on the shard's primary with its
    /// value (and whatever else the workload promises), naming `what` had just happened.
    async fn check(&self, shard: &Shard, what: &str);
}

/// The refusals `manatee-adm rebuild` may answer while a killed primary's sitter starts
/// and reports itself deposed.
pub const REBUILD_WAITS: &[&str] = &["not yet stopped", "does not answer"];

/// The four faults of the Manatee issue, one after the other under `work`, each ending with
/// three healthy peers and `work` checked:
///
/// 1. SIGKILL of the primary (sitter, PostgreSQL and backends): the sync takes over; the
///    old primary comes back deposed and rejoins after `manatee-adm rebuild`.
/// 2. SIGSTOP of the primary past its lease, then SIGCONT: the sync takes over; the old
///    primary finds itself deposed and never acknowledges a write again
///    (`stale_write`, sent straight to its PostgreSQL, must not succeed).
/// 3. SIGKILL of the sync: the primary takes the async as its sync; the old sync rejoins
///    by itself as an async when restarted.
/// 4. SIGKILL of the async: it rejoins by itself when restarted; no new generation.
pub async fn four_faults(
    shard: &mut Shard,
    work: &impl Workload,
    settle: Duration,
    stale_write: &str,
) {
    kill_primary(shard, work, settle).await;
    pause_primary(shard, work, settle, stale_write).await;
    kill_sync(shard, work, settle).await;
    kill_async(shard, work, settle).await;
}

/// A takeover: waits until the state's generation is past `before`'s and the old sync
/// is the primary.
async fn takeover(shard: &Shard, before: &ClusterState, settle: Duration, what: &str) {
    let after = shard
        .wait_state(settle, what, |s| s.generation > before.generation)
        .await;
    assert_eq!(
        after.primary.id,
        before.sync.as_ref().expect("sync").id,
        "{what}: only the sync may take over"
    );
    assert!(
        after.deposed.iter().any(|d| d.id == before.primary.id),
        "{what}: the old primary is deposed"
    );
}

async fn kill_primary(shard: &mut Shard, work: &impl Workload, settle: Duration) {
    let before = shard.state().await.expect("state");
    let p = shard.index_of(&before.primary.id);
    shard.sitters[p].signal(libc::SIGKILL);
    let killed_at = Instant::now();
    shard.sitters[p].kill();
    takeover(shard, &before, settle, "takeover after SIGKILL").await;
    work.wait_progress(20, settle, "writes after SIGKILL of the primary")
        .await;
    let first = work
        .first_success_after(killed_at)
        .expect("a write after the kill");
    eprintln!(
        "SIGKILL of the primary: writes resumed after {:.2} s",
        first.duration_since(killed_at).as_secs_f64()
    );
    work.check(shard, "after SIGKILL of the primary").await;
    // It comes back deposed; rebuild lets it rejoin.
    shard.spawn(p);
    let id = shard.sitters[p].id.clone();
    shard.rebuild(&id, settle).await;
    shard
        .wait_healthy(settle, "after rebuild of the killed primary")
        .await;
    work.check(shard, "after rebuild 1").await;
}

async fn pause_primary(
    shard: &mut Shard,
    work: &impl Workload,
    settle: Duration,
    stale_write: &str,
) {
    let before = shard.state().await.expect("state");
    let p = shard.index_of(&before.primary.id);
    shard.sitters[p].signal(libc::SIGSTOP);
    takeover(shard, &before, settle, "takeover after SIGSTOP").await;
    work.wait_progress(20, settle, "writes after SIGSTOP of the primary")
        .await;
    shard.sitters[p].signal(libc::SIGCONT);
    // It must never acknowledge a write again: try one straight at its PostgreSQL.
    let stale = shard.sitters[p].url();
    let attempt = async {
        let (client, conn) = tokio_postgres::connect(&stale, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.batch_execute(stale_write).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => panic!("the deposed primary acknowledged a write"),
        Ok(Err(e)) => eprintln!("write to the resumed old primary refused: {e}"),
        Err(_) => eprintln!("write to the resumed old primary never acknowledged (timed out)"),
    }
    // Once resumed, its sitter answers: the only refusal is that it has not stopped yet.
    let id = shard.sitters[p].id.clone();
    shard
        .rebuild_waiting_for(&id, settle, &["not yet stopped"])
        .await;
    shard
        .wait_healthy(settle, "after rebuild of the paused primary")
        .await;
    work.check(shard, "after SIGSTOP of the primary").await;
}

async fn kill_sync(shard: &mut Shard, work: &impl Workload, settle: Duration) {
    let before = shard.state().await.expect("state");
    let s = shard.index_of(&before.sync.as_ref().expect("sync").id);
    shard.sitters[s].kill();
    let after = shard
        .wait_state(settle, "new sync after SIGKILL of the sync", |z| {
            z.generation > before.generation
        })
        .await;
    assert_eq!(after.primary.id, before.primary.id, "the primary stays");
    assert_eq!(
        after.sync.as_ref().map(|x| &x.id),
        before.asyncs.first().map(|x| &x.id),
        "the async is the new sync"
    );
    rejoin(shard, work, s, settle, "sync").await;
    work.check(shard, "after SIGKILL of the sync").await;
}

async fn kill_async(shard: &mut Shard, work: &impl Workload, settle: Duration) {
    let before = shard.state().await.expect("state");
    let a = shard.index_of(&before.asyncs.first().expect("an async").id);
    shard.sitters[a].kill();
    rejoin(shard, work, a, settle, "async").await;
    let after = shard.state().await.expect("state");
    assert_eq!(
        after.generation, before.generation,
        "losing the async declares no generation"
    );
}

/// After a SIGKILL of the `role` peer `i`: writes go on, it restarts and the shard is
/// healthy again.
async fn rejoin(shard: &mut Shard, work: &impl Workload, i: usize, settle: Duration, role: &str) {
    work.wait_progress(20, settle, &format!("writes after SIGKILL of the {role}"))
        .await;
    shard.spawn(i);
    shard
        .wait_healthy(settle, &format!("after the killed {role} restarted"))
        .await;
}

/// One failover trial of the benchmarks: SIGKILL of the primary at a moment that varies
/// with `trial` relative to the lease keep-alives, then the killed peer restarted, rebuilt
/// and the shard healthy again.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// Seconds from the kill until the new generation was seen in etcd.
    pub takeover: f64,
    /// Seconds from the kill until the first write sent after it was acknowledged.
    pub unavailable: f64,
}

/// How many failover trials a benchmark runs: `MANATEE_BENCH_TRIALS`, 5 by default.
pub fn trials() -> usize {
    std::env::var("MANATEE_BENCH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Runs trial `trial` (see [`Failover`]) under `work`.
pub async fn failover_trial(
    shard: &mut Shard,
    work: &impl Workload,
    trial: usize,
    settle: Duration,
) -> Failover {
    let before = shard.state().await.expect("state");
    let p = shard.index_of(&before.primary.id);
    // Kill at a varying moment relative to the lease keep-alives.
    tokio::time::sleep(Duration::from_millis(500 + 137 * trial as u64 % 1000)).await;
    // The clock starts once the signal is sent: writes sent before it may still be
    // acknowledged by the old primary.
    shard.sitters[p].signal(libc::SIGKILL);
    let killed = Instant::now();
    shard.sitters[p].kill();
    shard
        .wait_state(settle, "takeover", |s| s.generation > before.generation)
        .await;
    let takeover = killed.elapsed().as_secs_f64();
    work.wait_progress(10, settle, "writes after the kill")
        .await;
    let first = work
        .first_success_after(killed)
        .expect("a write after the kill");
    let unavailable = first.duration_since(killed).as_secs_f64();
    eprintln!(
        "trial {trial}: new generation seen after {takeover:.2} s, first write \
         acknowledged after {unavailable:.2} s"
    );
    shard.spawn(p);
    let id = shard.sitters[p].id.clone();
    shard.rebuild(&id, settle).await;
    shard.wait_healthy(settle, "after rebuild").await;
    Failover {
        takeover,
        unavailable,
    }
}

/// Panics unless every key of `acked` (the acknowledged writes) is in `found` (what was
/// read back) with its value; `what` had just happened.
pub fn assert_none_lost<V: PartialEq + std::fmt::Debug>(
    acked: &BTreeMap<String, V>,
    found: &BTreeMap<String, V>,
    what: &str,
) {
    let lost: Vec<String> = acked
        .iter()
        .filter(|(k, v)| found.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: acknowledged {v:?}, found {:?}", found.get(k)))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged writes lost or wrong, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Median and maximum of `samples` (seconds).
pub fn median_max(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return (0.0, 0.0);
    }
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}
