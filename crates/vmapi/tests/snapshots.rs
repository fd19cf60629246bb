//! Snapshots through VMAPI on simulated compute nodes: real PostgreSQL, Moray, CNAPI
//! and cn-agents (sim backend), the jobs `create_snapshot`, `rollback_snapshot` and
//! `delete_snapshot`, checked against what the node has.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cn_agent::ZoneBackend;
use cn_agent::sim::SimDelays;
use common::{delete_vm, job_of, running_vm, sim_of, succeeds};
use dc_testkit::services::cn_agent;
use dc_testkit::{Dc, Options, error_of};
use triton_proto::vmapi::v1 as pb;
use uuid::Uuid;

fn snap(uuid: &str, name: &str) -> pb::SnapshotRequest {
    pb::SnapshotRequest {
        uuid: uuid.to_string(),
        name: name.to_string(),
        ..Default::default()
    }
}

fn states(vm: &pb::Vm) -> Vec<(String, String)> {
    vm.snapshots
        .iter()
        .map(|s| (s.name.clone(), s.state.clone()))
        .collect()
}

fn pair(name: &str, state: &str) -> (String, String) {
    (name.to_string(), state.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_rolled_back_to_and_deleted_on_the_node() {
    let dc = Dc::start(Options {
        sim_nodes: 1,
        // Long enough that the states in between can be seen.
        sim_delays: SimDelays {
            snapshot: Duration::from_millis(300),
            ..Default::default()
        },
        ..Options::vmapi()
    })
    .await;
    let mut c = dc.vmapi();
    let vm = running_vm(&dc, "snappy").await;
    let vm_id: Uuid = vm.uuid.parse().unwrap();
    let sim = sim_of(&dc, &vm.server_uuid);
    sim.disk_write(vm_id, "/before", "before").unwrap();

    // Create: `creating` at once, `created` after the job, on the node too.
    let job = c
        .create_snapshot(snap(&vm.uuid, "first"))
        .await
        .expect("create snapshot")
        .into_inner();
    assert_eq!(states(&dc.vm(&vm.uuid).await), [pair("first", "creating")]);
    let job = dc.wait_job(&job.job_uuid).await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    assert_eq!(job.name, "create_snapshot");
    let steps: Vec<&str> = job.chain.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["check", "machine_create_snapshot", "record"]);
    let after = dc.vm(&vm.uuid).await;
    assert_eq!(states(&after), [pair("first", "created")]);
    assert!(!after.snapshots[0].created_timestamp.is_empty());
    assert_eq!(after.state, "running");
    let on_node = sim.get(vm_id).await.unwrap();
    assert_eq!(on_node.snapshots.len(), 1);
    assert_eq!(on_node.snapshots[0].name, "first");

    // Refused at once, naming the field: a name in use, a bad name.
    for bad in ["first", "", "a/b", "..", &"x".repeat(65)] {
        let (name, msg) = error_of(c.create_snapshot(snap(&vm.uuid, bad)).await);
        assert_eq!(name, "ValidationFailed", "{bad:?}: {msg}");
        assert!(msg.contains("name"), "{msg}");
    }
    assert_eq!(
        states(&dc.vm(&vm.uuid).await),
        [pair("first", "created")],
        "a refused request leaves nothing behind"
    );
    // Unknown snapshots, and another owner's VM, are not found.
    let (name, msg) = error_of(c.rollback_snapshot(snap(&vm.uuid, "nope")).await);
    assert_eq!(name, "ResourceNotFound", "{msg}");
    assert!(msg.contains("nope"), "{msg}");
    let (name, _) = error_of(c.delete_snapshot(snap(&vm.uuid, "nope")).await);
    assert_eq!(name, "ResourceNotFound");
    let mut theirs = snap(&vm.uuid, "first");
    theirs.owner_uuid = Uuid::new_v4().to_string();
    let (name, _) = error_of(c.delete_snapshot(theirs.clone()).await);
    assert_eq!(name, "ResourceNotFound");
    let (name, _) = error_of(c.create_snapshot(theirs).await);
    assert_eq!(name, "ResourceNotFound");

    // Rollback: the instance goes back to the snapshot's disk, and runs again.
    sim.disk_write(vm_id, "/before", "changed").unwrap();
    sim.disk_write(vm_id, "/after", "after").unwrap();
    let mut back = snap(&vm.uuid, "first");
    back.start = true;
    succeeds(&dc, c.rollback_snapshot(back).await).await;
    assert_eq!(sim.disk_read(vm_id, "/before").as_deref(), Some("before"));
    assert_eq!(sim.disk_read(vm_id, "/after"), None);
    let rolled = dc.vm(&vm.uuid).await;
    assert_eq!(rolled.state, "running");
    assert_eq!(states(&rolled), [pair("first", "created")]);
    // Without `start` the instance is left stopped.
    succeeds(&dc, c.rollback_snapshot(snap(&vm.uuid, "first")).await).await;
    assert_eq!(dc.vm(&vm.uuid).await.state, "stopped");
    assert_eq!(sim.get(vm_id).await.unwrap().state.as_str(), "stopped");

    // Jobs of one VM run in order: a create and a delete sent together.
    let create = c
        .create_snapshot(snap(&vm.uuid, "second"))
        .await
        .expect("create second")
        .into_inner();
    let (name, msg) = error_of(c.delete_snapshot(snap(&vm.uuid, "second")).await);
    assert_eq!(name, "VmStateError", "still being created: {msg}");
    let delete = c
        .delete_snapshot(snap(&vm.uuid, "first"))
        .await
        .expect("delete first")
        .into_inner();
    assert_eq!(
        states(&dc.vm(&vm.uuid).await),
        [pair("first", "deleting"), pair("second", "creating")]
    );
    assert_eq!(dc.wait_job(&create.job_uuid).await.execution, "succeeded");
    assert_eq!(dc.wait_job(&delete.job_uuid).await.execution, "succeeded");
    assert_eq!(states(&dc.vm(&vm.uuid).await), [pair("second", "created")]);
    let names: Vec<String> = sim
        .get(vm_id)
        .await
        .unwrap()
        .snapshots
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["second"]);

    // A destroyed VM takes no snapshots; its snapshots went with it.
    assert_eq!(delete_vm(&dc, &vm.uuid).await.execution, "succeeded");
    assert!(dc.vm(&vm.uuid).await.snapshots.is_empty());
    let (name, msg) = error_of(c.create_snapshot(snap(&vm.uuid, "late")).await);
    assert_eq!(name, "VmDestroyed", "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_taken_is_failed_and_can_be_deleted() {
    let dc = Dc::start(Options {
        sim_nodes: 1,
        ..Options::vmapi()
    })
    .await;
    let mut c = dc.vmapi();
    let mut req = dc.create_request("lost");
    req.autoboot = Some(false);
    let r = c.create_vm(req).await.expect("create").into_inner();
    assert_eq!(dc.wait_job(&r.job_uuid).await.execution, "succeeded");
    let vm = dc.vm(&r.vm_uuid).await;
    // The instance goes from its node behind VMAPI's back.
    let sim = sim_of(&dc, &vm.server_uuid);
    sim.destroy(vm.uuid.parse().unwrap()).await.unwrap();

    let job = job_of(&dc, c.create_snapshot(snap(&vm.uuid, "doomed")).await).await;
    assert_eq!(job.execution, "failed", "{job:?}");
    assert!(job.error.contains("does not exist"), "{}", job.error);
    assert_eq!(states(&dc.vm(&vm.uuid).await), [pair("doomed", "failed")]);
    // A failed snapshot can be deleted (there is nothing on the node to remove).
    succeeds(&dc, c.delete_snapshot(snap(&vm.uuid, "doomed")).await).await;
    assert!(dc.vm(&vm.uuid).await.snapshots.is_empty());
}
