//! What a tenant controls in its instance's files cannot lead the agent onto the host's,
//! and a crash of the agent mid-create leaves no instance half made.
//!
//! * linux: an instance whose writable layer has `etc` replaced by a symlink to a host
//!   directory boots (and reboots) with its own `/etc/hosts` right and the host's
//!   directory untouched; destroy does not follow it either.
//! * linux and sim: a create cut short (the record written, the disk not finished, or
//!   the agent gone during the step) is removed when the agent starts again, so nothing
//!   is left `provisioning` and the create, sent again, succeeds.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cn_agent::agent::AgentOptions;
use cn_agent::sim::{SimBackend, SimConfig, SimDelays};
use cn_agent::{Error, ImageSource, InstanceSpec, InstanceState, ZoneBackend};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const STOP_GRACE: Duration = Duration::from_secs(1);

mod common;

use common::{Host, cat_inside};
use dc_testkit::node::{SimNode, instance_spec};

impl Host {
    fn new() -> Host {
        Host::admin(
            "the tenant-files test",
            'f',
            &["sh", "httpd", "cat", "ls", "readlink"],
        )
    }

    /// An instance with its NIC `n` on the bridge.
    fn instance(&self, hostname: &str, n: u8) -> InstanceSpec {
        self.spec(hostname, vec![self.nic(0, n)])
    }
}

/// Names and contents of the files in `dir`.
fn snapshot_of(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_a_planted_etc_symlink_never_reaches_the_host() {
    let h = Host::new();
    let spec = h.instance("planted", 1);
    let ip = spec.nics[0].ip.unwrap();
    let (b, uuid) = h.backend_with(spec).await;
    b.shutdown(uuid, STOP_GRACE).await.expect("stop");

    // The host's directory the tenant aims at, with files of the host's.
    let host_etc = h.dir.path().join("host-etc");
    std::fs::create_dir(&host_etc).unwrap();
    for name in ["hosts", "hostname", "resolv.conf"] {
        std::fs::write(host_etc.join(name), format!("the host's {name}\n")).unwrap();
    }
    let before = snapshot_of(&host_etc);

    // What a tenant can do from inside (it owns its writable layer): /etc becomes a
    // symlink to the host's directory.
    let disk = b.disk(uuid);
    disk.mount().unwrap();
    let upper = disk.upper();
    std::fs::remove_dir_all(upper.join("etc")).ok();
    std::os::unix::fs::symlink(&host_etc, upper.join("etc")).unwrap();
    disk.unmount().unwrap();

    // Boot writes the instance's /etc files inside it, and the host's are untouched.
    let files_stay_inside = |instance: cn_agent::Instance, when: &str| {
        assert_eq!(instance.state, InstanceState::Running, "{when}");
        assert_eq!(
            snapshot_of(&host_etc),
            before,
            "{when}: the host's directory changed"
        );
        let pid = instance.pid.expect("running");
        let hosts = cat_inside(pid, "/etc/hosts");
        assert!(hosts.contains(&format!("{ip}\tplanted")), "{when}: {hosts}");
        assert_eq!(cat_inside(pid, "/etc/hostname"), "planted\n", "{when}");
        let resolv = cat_inside(pid, "/etc/resolv.conf");
        let gateway = h.bridges[0].gateway();
        assert!(
            resolv.contains(&format!("nameserver {gateway}")),
            "{when}: {resolv}"
        );
    };
    files_stay_inside(
        b.boot(uuid).await.expect("boot with a planted etc link"),
        "boot",
    );
    // A reboot writes them again: still inside.
    files_stay_inside(b.reboot(uuid, STOP_GRACE).await.expect("reboot"), "reboot");

    // Destroy removes the link, not what it points to.
    b.destroy(uuid).await.expect("destroy");
    assert_eq!(snapshot_of(&host_etc), before, "destroy touched the host");
    assert!(!b.zone_dir(uuid).exists());
}

/// Starts an agent on `backend` (no CNAPI), as the binary does at boot.
async fn start_agent<B: ZoneBackend>(
    backend: Arc<B>,
) -> (CancellationToken, cn_agent::agent::Running) {
    let shutdown = CancellationToken::new();
    let running = SimNode::default()
        .start(backend, AgentOptions::default(), shutdown.clone())
        .await;
    (shutdown, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_a_create_cut_short_is_undone_at_agent_start() {
    let h = Host::new();
    let b = h.backend_with_image().await;

    // A create the agent died in: the record says provisioning, the disk is mounted
    // and only half made (the agent died before the mount points were made and the
    // disk unmounted). Made with a real create, then put back to that point.
    let mut spec = h.instance("halfmade", 2);
    spec.autoboot = false;
    let uuid = spec.uuid;
    b.create(spec.clone()).await.expect("create");
    let zone = b.zone_dir(uuid);
    let record_path = zone.join("zone.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["state"] = "provisioning".into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let disk = b.disk(uuid);
    disk.mount().unwrap();
    std::fs::remove_dir(disk.upper().join("etc")).ok();
    // A second one cut short even earlier: its directory made, no record yet.
    let early = Uuid::new_v4();
    std::fs::create_dir(b.zone_dir(early)).unwrap();
    // And an image import that never finished.
    let partial = h.config.state_dir.join("images").join(format!(
        ".partial-{}-{}",
        Uuid::new_v4(),
        Uuid::new_v4()
    ));
    std::fs::create_dir_all(partial.join("root/bin")).unwrap();
    assert_eq!(
        h.backend().get(uuid).await.unwrap().state,
        InstanceState::Provisioning
    );

    // The agent starts again.
    let b = Arc::new(h.backend());
    let (shutdown, running) = start_agent(b.clone()).await;
    assert!(
        matches!(b.get(uuid).await, Err(Error::VmNotFound(_))),
        "{:?}",
        b.get(uuid).await
    );
    assert!(
        b.list()
            .await
            .unwrap()
            .iter()
            .all(|i| i.state != InstanceState::Provisioning)
    );
    assert!(!zone.exists(), "{} is left", zone.display());
    assert!(!b.zone_dir(early).exists());
    assert!(!partial.exists());
    assert!(!b.disk(uuid).is_mounted());

    // VMAPI sends the create again (the restarted agent does not know its task): it
    // succeeds, and the instance boots.
    let mut again = spec.clone();
    again.autoboot = true;
    let created = b.create(again).await.expect("the create sent again");
    assert_eq!(created.state, InstanceState::Running);
    let pid = created.pid.expect("running");
    assert_eq!(cat_inside(pid, "/etc/hostname"), "halfmade\n");

    // A finished instance is left alone by the next start.
    shutdown.cancel();
    let _ = running.task.await;
    let (shutdown, running) = start_agent(b.clone()).await;
    assert_eq!(b.get(uuid).await.unwrap().state, InstanceState::Running);
    b.destroy(uuid).await.unwrap();
    shutdown.cancel();
    let _ = running.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_a_create_cut_short_is_undone_at_agent_start() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sim.json");
    let config = SimConfig {
        delays: SimDelays {
            // A create that never ends by itself: the agent dies during it.
            create: Duration::from_secs(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let b = SimBackend::persistent(state_file.clone(), config.clone()).unwrap();
    let image = ImageSource {
        image_uuid: Uuid::new_v4(),
        path: "/images/base.tar.gz".into(),
    };
    b.image_ensure_present(image.clone()).await.unwrap();
    let spec = InstanceSpec {
        cpu_cap: 0,
        max_lwps: 0,
        ..instance_spec(image.image_uuid, "cut", vec![], vec![])
    };
    let uuid = spec.uuid;
    let creating = tokio::spawn({
        let b = b.clone();
        let spec = spec.clone();
        async move { b.create(spec).await }
    });
    while b.get(uuid).await.is_err() {
        tokio::task::yield_now().await;
    }
    // Anything else the agent does meanwhile saves the state, the half-made instance
    // with it; then the agent is gone.
    b.image_ensure_present(ImageSource {
        image_uuid: Uuid::new_v4(),
        path: "/images/other.tar.gz".into(),
    })
    .await
    .unwrap();
    creating.abort();
    let _ = creating.await;
    drop(b);

    let b = Arc::new(SimBackend::persistent(state_file.clone(), config).unwrap());
    assert_eq!(
        b.get(uuid).await.unwrap().state,
        InstanceState::Provisioning,
        "the crash left it provisioning"
    );
    let (shutdown, running) = start_agent(b.clone()).await;
    assert!(matches!(b.get(uuid).await, Err(Error::VmNotFound(_))));
    shutdown.cancel();
    let _ = running.task.await;

    // The create sent again succeeds.
    let b = SimBackend::persistent(
        state_file,
        SimConfig {
            delays: SimDelays::default(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(b.get(uuid).await, Err(Error::VmNotFound(_))));
    let created = b.create(spec).await.expect("the create sent again");
    assert_eq!(created.state, InstanceState::Running);
}
