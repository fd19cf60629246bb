//! Faults, for real: a real etcd, three sitters each running its own PostgreSQL, and a
//! writer committing continuously through whatever primary the cluster state names. After
//! each fault every acknowledged key must be on the new primary with its value, and the
//! shard must come back to three healthy peers (`manatee-adm verify` passes). The faults
//! are `manatee_testkit::faults::four_faults` (SIGKILL of the primary, SIGSTOP of the
//! primary past its lease, SIGKILL of the sync, SIGKILL of the async), which the
//! cross-service test in `tests/` runs through Moray.
//!
//! Then bad input: manatee-adm on a frozen shard and on a healthy peer, and a corrupt
//! cluster state, each refused with a clear message and no change.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Shard, Writer, check_acked};
use manatee_client::state::ShardKeys;
use manatee_testkit::faults::four_faults;

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_no_acknowledged_write() {
    let mut shard = common::start_shard(3);
    shard.wait_healthy(SETTLE, "initial setup").await;
    let writer = Writer::start(&shard).await;
    writer.wait_progress(50, SETTLE, "initial writes").await;

    four_faults(
        &mut shard,
        &writer,
        SETTLE,
        "INSERT INTO acked (k, v) VALUES ('stale', 'x')",
    )
    .await;

    let acked = writer.stop().await;
    assert!(!acked.keys.contains_key("stale"));
    assert!(
        acked.keys.len() > 200,
        "only {} writes acknowledged",
        acked.keys.len()
    );
    check_acked(&shard, &acked.keys, "at the end").await;
    eprintln!(
        "{} writes acknowledged, {} failed or unknown",
        acked.keys.len(),
        acked.failures
    );

    bad_input(&mut shard).await;
}

/// Refusals: a clear message, a non-zero exit, and no change to the state.
async fn bad_input(shard: &mut Shard) {
    let before = shard.state().await.expect("state");

    // Rebuild of a healthy peer.
    let healthy = before.sync.as_ref().expect("sync").id.clone();
    let (code, out) = shard.adm(&["rebuild", "--id", &healthy, "-y"]);
    assert_ne!(code, 0);
    assert!(out.contains("not deposed"), "{out}");

    // Frozen shard: freeze again and promote are refused.
    let (code, out) = shard.adm(&["freeze", "-r", "maintenance"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = shard.adm(&["freeze", "-r", "again"]);
    assert_ne!(code, 0);
    assert!(out.contains("already frozen"), "{out}");
    let (code, out) = shard.adm(&["promote", "--id", &healthy, "-r", "sync"]);
    assert_ne!(code, 0);
    assert!(out.contains("frozen"), "{out}");
    let (code, out) = shard.adm(&["unfreeze"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = shard.adm(&["unfreeze"]);
    assert_ne!(code, 0);
    assert!(out.contains("not frozen"), "{out}");
    let mid = shard.state().await.expect("state");
    assert_eq!(
        (mid.generation, &mid.primary.id, mid.freeze.is_none()),
        (before.generation, &before.primary.id, true)
    );

    // A corrupt state: commands refuse, sitters keep their roles, nothing is written.
    let etcd = shard.client();
    let key = ShardKeys::new(common::SHARD).state();
    let (kv, _) = etcd.get(&key).await.expect("get state");
    let good = kv.expect("state").value;
    etcd.put(&key, b"{\"generation\": \"oops\"".to_vec(), 0)
        .await
        .expect("corrupt the state");
    let (code, out) = shard.adm(&["freeze", "-r", "x"]);
    assert_ne!(code, 0);
    assert!(out.contains("not valid"), "{out}");
    let (code, out) = shard.adm(&["verify"]);
    assert_ne!(code, 0);
    assert!(out.contains("not valid"), "{out}");
    let (_, out) = shard.adm(&["show"]);
    assert!(out.contains("not valid"), "{out}");
    tokio::time::sleep(Duration::from_secs(
        u64::from(common::LEASE_TTL_SECS as u32) + 1,
    ))
    .await;
    let (kv, _) = etcd.get(&key).await.expect("get state");
    assert_eq!(
        kv.expect("state").value,
        b"{\"generation\": \"oops\"".to_vec(),
        "nobody rewrote the corrupt state"
    );
    etcd.put(&key, good, 0).await.expect("restore the state");
    shard
        .wait_healthy(SETTLE, "after the state was restored")
        .await;
    let after = shard.state().await.expect("state");
    assert_eq!(after.generation, before.generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sitter_with_unreachable_etcd_says_so_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sitter.toml");
    let data = dir.path().join("data");
    let pg_port = triton_testkit::free_port();
    let status_port = triton_testkit::free_port();
    let dead = triton_testkit::free_port();
    std::fs::write(
        &config,
        format!(
            "shard = \"x\"\netcd = [\"http://127.0.0.1:{dead}\"]\npg_port = {pg_port}\n\
             status_port = {status_port}\ndata_dir = \"{}\"\nfsync = false\n",
            data.display()
        ),
    )
    .expect("config");
    let log = dir.path().join("sitter.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_manatee-sitter"))
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot register with etcd") && text.contains(&format!("127.0.0.1:{dead}"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no clear message about etcd:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the sitter keeps retrying"
    );
    assert!(
        !data.join("pgdata").exists(),
        "PostgreSQL was not set up without etcd"
    );
    let _ = child.kill();
    let _ = child.wait();

    // manatee-adm against the same etcd: a clear message, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_manatee-adm"))
        .args(["--etcd", &format!("http://127.0.0.1:{dead}"), "show"])
        .output()
        .expect("run manatee-adm");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{dead}")), "{err}");
}
