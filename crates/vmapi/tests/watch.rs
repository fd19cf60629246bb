//! WatchVms: snapshot then follow, resume, the owner filter and the resync answer; and a
//! follower process (examples/follow_vms) that is killed twice while 1000 VMs are
//! created, changed and destroyed, and ends with exactly VMAPI's state.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // the test only reads
#[path = "../examples/follow_vms/checkpoint.rs"]
mod checkpoint;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use checkpoint::Checkpoint;
use common::{all_at_once, all_vms, env_or};
use dc_testkit::feed::Feed;
use dc_testkit::watched::resync_then_snapshot;
use dc_testkit::{Dc, Options, eventually};
use moray_client::{EtagCondition, MorayClient};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use triton_proto::vmapi::v1 as pb;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;
use triton_testkit::{MorayFixture, keep_no_change_log};
use vmapi::model::VmRecord;
use vmapi::store::VMS_BUCKET;

/// VMAPI alone on its Moray (no compute: the tests write VM records themselves).
struct Alone {
    vmapi: VmapiClient<tonic::transport::Channel>,
    moray: MorayClient,
    _shutdown: tokio_util::sync::DropGuard,
    fixture: MorayFixture,
}

async fn alone(fixture: MorayFixture) -> Alone {
    let shutdown = CancellationToken::new();
    let config = vmapi::Config {
        listen: "127.0.0.1:0".into(),
        moray_url: fixture.url().to_string(),
        reconcile_period_ms: 0,
        ..Default::default()
    };
    let running = vmapi::start(config, shutdown.clone())
        .await
        .expect("VMAPI starts");
    let vmapi = VmapiClient::connect(format!("http://{}", running.addr))
        .await
        .expect("connect to VMAPI");
    let moray = MorayClient::connect(fixture.url()).await.expect("Moray");
    Alone {
        vmapi,
        moray,
        _shutdown: shutdown.drop_guard(),
        fixture,
    }
}

fn record(owner: &str, alias: &str) -> VmRecord {
    VmRecord {
        uuid: uuid::Uuid::new_v4().to_string(),
        owner_uuid: owner.into(),
        alias: alias.into(),
        brand: "joyent".into(),
        state: "running".into(),
        ram: 256,
        tags: json!({"role": alias})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..Default::default()
    }
}

async fn put(moray: &MorayClient, vm: &VmRecord) {
    moray
        .put_object(VMS_BUCKET, &vm.uuid, &vm.to_value(), EtagCondition::Any)
        .await
        .expect("put VM record");
}

async fn watch(
    vmapi: &VmapiClient<tonic::transport::Channel>,
    position: u64,
    owner_uuid: &str,
) -> Feed<pb::WatchVmsEvent> {
    vmapi
        .clone()
        .watch_vms(pb::WatchVmsRequest {
            position,
            owner_uuid: owner_uuid.into(),
        })
        .await
        .expect("WatchVms")
        .into_inner()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_changes_of_one_owner_and_resume() {
    let a = alone(MorayFixture::start().await).await;
    let (owner, other) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (web, db) = (record(&owner, "web"), record(&owner, "db"));
    for vm in [&web, &db, &record(&other, "theirs")] {
        put(&a.moray, vm).await;
    }
    let mut vmapi = a.vmapi.clone();

    let status = vmapi
        .watch_vms(pb::WatchVmsRequest {
            position: 0,
            owner_uuid: "nope".into(),
        })
        .await
        .expect_err("a bad owner_uuid is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("ValidationFailed") && status.message().contains("owner_uuid"),
        "{status:?}"
    );

    let mut stream = watch(&vmapi, 0, &owner).await;
    let (mut got, at) = stream.snapshot().await;
    got.sort_by(|x, y| x.uuid.cmp(&y.uuid));
    let mut want = Vec::new();
    for vm in [&web, &db] {
        let one = vmapi
            .get_vm(pb::GetVmRequest {
                uuid: vm.uuid.clone(),
                owner_uuid: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        want.push(one);
    }
    want.sort_by(|x, y| x.uuid.cmp(&y.uuid));
    assert_eq!(got, want, "the snapshot's VMs are GetVm's");

    // Another owner's change is not seen; this owner's is, in order.
    put(&a.moray, &record(&other, "theirs-too")).await;
    let mut web2 = web.clone();
    web2.state = "stopped".into();
    put(&a.moray, &web2).await;
    // (`at + 1`: the other owner's change took a position.)
    let change = stream.put(at + 1, &web.uuid, &web2.to_pb()).await;
    a.moray
        .delete_object(VMS_BUCKET, &db.uuid, EtagCondition::Any)
        .await
        .unwrap();
    let deleted = stream.delete(change.position, &db.uuid).await;
    drop(stream);

    // Resuming from a position gives what came after it, once.
    let mut resumed = watch(&vmapi, change.position, "").await;
    resumed.resumes_with(change.position, &[deleted]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_what_is_kept_is_answered_with_resync() {
    let fixture = MorayFixture::start_with(keep_no_change_log).await;
    let a = alone(fixture).await;
    let owner = uuid::Uuid::new_v4().to_string();
    for alias in ["a", "b", "c"] {
        put(&a.moray, &record(&owner, alias)).await;
    }
    // With no retention, the next trim deletes those changes.
    a.fixture.change_log_trimmed_through(3).await;
    // From 0 the whole state comes again.
    let vms = resync_then_snapshot(|position| watch(&a.vmapi, position, "")).await;
    assert_eq!(vms.len(), 3);
}

// ------------------------------------------------------------ the follower process

fn follower_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("examples").join("follow_vms");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds it (or: cargo build -p vmapi --example follow_vms)",
        bin.display()
    );
    bin
}

/// The follower process; killed when dropped, so a failed test leaves none behind.
struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_follower(addr: std::net::SocketAddr, state: &Path) -> Follower {
    Follower(
        Command::new(follower_bin())
            .arg(addr.to_string())
            .arg(state)
            .arg("50")
            .spawn()
            .expect("start follow_vms"),
    )
}

/// Kills the follower with SIGKILL, after checking it had not stopped by itself.
fn kill(mut follower: Follower) {
    assert!(
        follower.0.try_wait().expect("follower status").is_none(),
        "the follower exited by itself"
    );
    follower.0.kill().expect("SIGKILL");
    follower.0.wait().expect("reaped");
}

fn applied(state: &Path) -> usize {
    Checkpoint::load(state).map_or(0, |c| c.applied.len())
}

/// Makes one job per item (a VM's uuid, or a new VM's alias) at once ([`all_at_once`]),
/// then waits for every job; all must succeed.
async fn jobs<F, Fut>(dc: &Dc, what: &str, items: &[String], call: F) -> Vec<pb::JobRef>
where
    F: Fn(VmapiClient<tonic::transport::Channel>, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::JobRef>, tonic::Status>>
        + Send
        + 'static,
{
    let pauses = (Duration::from_millis(50), Duration::from_secs(2));
    let refs = all_at_once(dc, what, items, pauses, call).await;
    for r in &refs {
        let job = dc.wait_job(&r.job_uuid).await;
        assert_eq!(
            job.execution, "succeeded",
            "{what} {}: {}",
            r.vm_uuid, job.error
        );
    }
    refs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_twice_ends_with_exactly_vmapis_state() {
    let vms = env_or("VMAPI_WATCH_VMS", 1000);
    let started = Instant::now();
    let dc = Dc::start(Options {
        // 16 CPUs a node: room for 64 of the seeded package's VMs.
        sim_nodes: 20,
        node_ram_mib: 32_768,
        heartbeat: Duration::from_secs(2),
        ..Options::vmapi()
    })
    .await;
    let state = dc.dir.path().join("follower.state");
    let addr = dc.addr(dc_testkit::Service::Vmapi);
    let follower = spawn_follower(addr, &state);
    eventually(
        "the follower's first checkpoint",
        Duration::from_secs(30),
        || async { applied(&state) > 0 },
    )
    .await;

    // Create, killing the follower once the changes flow.
    let aliases: Vec<String> = (0..vms).map(|i| format!("vm{i}")).collect();
    let template = dc.create_request("");
    let create = jobs(&dc, "create", &aliases, move |mut c, alias| {
        let req = pb::CreateVmRequest {
            alias,
            ..template.clone()
        };
        async move { c.create_vm(req).await }
    });
    let kill_once = async {
        eventually(
            "the follower applies changes",
            Duration::from_secs(60),
            || async { applied(&state) > 100 },
        )
        .await;
        kill(follower);
        spawn_follower(addr, &state)
    };
    let (refs, follower) = tokio::join!(create, kill_once);
    let created = started.elapsed();
    let uuids: Vec<String> = refs.iter().map(|r| r.vm_uuid.clone()).collect();

    // Change and destroy, killing the follower again on the way.
    let third = uuids.len() / 3;
    let (stop, rest) = uuids.split_at(third);
    let (update, rest) = rest.split_at(third);
    let destroy = &rest[..rest.len() / 2];
    let before = applied(&state);
    let changes = async {
        tokio::join!(
            jobs(&dc, "stop", stop, |mut c, uuid| async move {
                c.stop_vm(pb::VmActionRequest {
                    uuid,
                    ..Default::default()
                })
                .await
            }),
            jobs(&dc, "update", update, |mut c, uuid| async move {
                c.update_vm(pb::UpdateVmRequest {
                    uuid,
                    set_customer_metadata: [("note".to_string(), "changed".to_string())].into(),
                    set_tags: [(
                        "tier".to_string(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue("gold".into())),
                        },
                    )]
                    .into(),
                    ..Default::default()
                })
                .await
            }),
            jobs(&dc, "destroy", destroy, |mut c, uuid| async move {
                c.delete_vm(pb::DeleteVmRequest {
                    uuid,
                    owner_uuid: String::new(),
                })
                .await
            }),
        )
    };
    let kill_again = async {
        eventually(
            "the follower applies the changes",
            Duration::from_secs(60),
            || async { applied(&state) > before + 100 },
        )
        .await;
        kill(follower);
        spawn_follower(addr, &state)
    };
    let (_, follower) = tokio::join!(changes, kill_again);
    let changed = started.elapsed();

    // The follower's state converges to VMAPI's, field by field.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (checkpoint, listed) = loop {
        let listed: BTreeMap<String, pb::Vm> = all_vms(&dc, "")
            .await
            .into_iter()
            .map(|vm| (vm.uuid.clone(), vm))
            .collect();
        let checkpoint = Checkpoint::load(&state).expect("the follower's file");
        let followed: BTreeMap<String, pb::Vm> = checkpoint
            .vms
            .iter()
            .map(|vm| (vm.uuid.clone(), vm.clone()))
            .collect();
        if followed == listed {
            break (checkpoint, listed);
        }
        if Instant::now() > deadline {
            let differ = listed
                .iter()
                .find(|(uuid, vm)| followed.get(*uuid) != Some(*vm))
                .map(|(uuid, vm)| {
                    format!("{uuid}: VMAPI {vm:?}, follower {:?}", followed.get(uuid))
                });
            panic!(
                "the follower has {} VMs, VMAPI {}; first difference: {differ:?}",
                followed.len(),
                listed.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    kill(follower);
    assert_eq!(listed.len(), vms);
    assert_eq!(
        listed.values().filter(|vm| vm.state == "destroyed").count(),
        destroy.len()
    );
    assert_eq!(
        listed.values().filter(|vm| vm.state == "stopped").count(),
        stop.len()
    );

    // No gap, no duplicate: the positions applied are the snapshot's, then exactly the
    // sequence numbers Moray gave the bucket's changes after it.
    let applied = &checkpoint.applied;
    assert!(
        applied.windows(2).all(|w| w[0] < w[1]),
        "applied positions strictly increase"
    );
    let moray = MorayClient::connect(&dc.moray_url()).await.expect("Moray");
    let rows = moray
        .sql(
            "SELECT seq FROM moray_changes WHERE bucket = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            &[
                json!(VMS_BUCKET),
                json!(applied[0]),
                json!(checkpoint.position),
            ],
        )
        .await
        .expect("the bucket's changes");
    let seqs: Vec<u64> = rows.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), rows.len());
    assert_eq!(&applied[1..], seqs.as_slice(), "every change applied once");
    eprintln!(
        "{vms} VMs: created in {created:?}, changed in {changed:?}, followed in {:?}; {} changes applied",
        started.elapsed(),
        applied.len() - 1
    );
}
