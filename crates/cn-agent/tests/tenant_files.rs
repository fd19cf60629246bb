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

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cn_agent::agent::{AgentOptions, start};
use cn_agent::sim::{SimBackend, SimConfig, SimDelays};
use cn_agent::sysinfo::NodeFacts;
use cn_agent::{Error, ImageSource, InstanceSpec, InstanceState, NicSpec, ZoneBackend};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const STOP_GRACE: Duration = Duration::from_secs(1);

use dc_testkit::linux::{BridgeSetup, Image, LinuxHost, Setup};

/// A linux host for one test: its own state directory, bridge, cgroup parent and
/// names, all removed by the guard, also when the test fails.
/// The test's linux host, with what this test adds to it.
struct Host(LinuxHost);

impl std::ops::Deref for Host {
    type Target = LinuxHost;
    fn deref(&self) -> &LinuxHost {
        &self.0
    }
}

impl Host {
    fn new() -> Host {
        Host(LinuxHost::set_up(&Setup {
            who: "the tenant-files test",
            cgroup: "triton-test-",
            netns: "tf",
            link: "f",
            bridges: &[BridgeSetup {
                nic_tag: "admin",
                stem: "tf",
                net: 99,
                seed: 6..8,
            }],
            create_bridges: true,
            image: Image {
                dirs: &["bin", "www", "etc", "tmp"],
                applets: &["sh", "httpd", "cat", "ls", "readlink"],
                index: "hello\n",
                init: None,
            },
        }))
    }

    fn spec(&self, hostname: &str, n: u8) -> InstanceSpec {
        InstanceSpec {
            uuid: Uuid::new_v4(),
            owner_uuid: Uuid::new_v4().to_string(),
            alias: hostname.to_string(),
            hostname: hostname.to_string(),
            brand: "joyent-minimal".into(),
            image_uuid: self.image.image_uuid,
            ram: 64,
            cpu_cap: 50,
            quota: 1,
            max_lwps: 64,
            nics: vec![NicSpec {
                interface: String::new(),
                mac: format!("02:98:00:{:02x}:00:{n:02x}", self.subnet()),
                ip: Some(Ipv4Addr::new(10, 99, self.subnet(), 10 + n)),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 99, self.subnet(), 1)),
                resolvers: vec![Ipv4Addr::new(10, 99, self.subnet(), 1)],
                nic_tag: "admin".into(),
                vlan_id: 0,
                mtu: 0,
                primary: true,
            }],
            init: ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            customer_metadata: Default::default(),
            internal_metadata: Default::default(),
            tags: Default::default(),
            autoboot: true,
            billing_id: String::new(),
        }
    }
}

/// `cat path` inside the instance whose pid 1 is `pid` (in its mount namespace, so
/// every symlink resolves as the instance sees it).
fn cat_inside(pid: u32, path: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .args([
            "--target",
            &pid.to_string(),
            "--mount",
            "--",
            "/bin/cat",
            path,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "cat {path} inside: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let b = h.backend();
    b.image_ensure_present(h.image.clone()).await.unwrap();
    let spec = h.spec("planted", 1);
    let uuid = spec.uuid;
    let ip = spec.nics[0].ip.unwrap();
    b.create(spec).await.expect("create");
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

    let booted = b.boot(uuid).await.expect("boot with a planted etc link");
    assert_eq!(booted.state, InstanceState::Running);
    assert_eq!(
        snapshot_of(&host_etc),
        before,
        "the host's directory changed"
    );
    let pid = booted.pid.expect("running");
    let hosts = cat_inside(pid, "/etc/hosts");
    assert!(hosts.contains(&format!("{ip}\tplanted")), "{hosts}");
    assert_eq!(cat_inside(pid, "/etc/hostname"), "planted\n");
    assert!(
        cat_inside(pid, "/etc/resolv.conf").contains(&format!("nameserver 10.99.{}.1", h.subnet()))
    );

    // A reboot writes them again: still inside.
    let rebooted = b.reboot(uuid, STOP_GRACE).await.expect("reboot");
    assert_eq!(
        snapshot_of(&host_etc),
        before,
        "the host's directory changed"
    );
    let pid = rebooted.pid.expect("running");
    let hosts = cat_inside(pid, "/etc/hosts");
    assert!(hosts.contains(&format!("{ip}\tplanted")), "{hosts}");

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
    let server_uuid = Uuid::new_v4();
    let running = start(
        backend,
        move |agent_port| NodeFacts::Sim {
            uuid: server_uuid,
            hostname: "node0".into(),
            ram_mib: 4096,
            cpus: 2,
            disk_bytes: 1 << 40,
            nic_tags: vec!["admin".into()],
            datacenter: "test".into(),
            agent_port,
            boot_time: 1_700_000_000,
        },
        AgentOptions::default(),
        shutdown.clone(),
    )
    .await
    .expect("agent starts");
    (shutdown, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_a_create_cut_short_is_undone_at_agent_start() {
    let h = Host::new();
    let b = h.backend();
    b.image_ensure_present(h.image.clone()).await.unwrap();

    // A create the agent died in: the record says provisioning, the disk is mounted
    // and only half made (the agent died before the mount points were made and the
    // disk unmounted). Made with a real create, then put back to that point.
    let mut spec = h.spec("halfmade", 2);
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
        uuid: Uuid::new_v4(),
        owner_uuid: Uuid::new_v4().to_string(),
        alias: "cut".into(),
        hostname: "cut".into(),
        brand: "joyent-minimal".into(),
        image_uuid: image.image_uuid,
        ram: 64,
        cpu_cap: 0,
        quota: 1,
        max_lwps: 0,
        nics: vec![],
        init: vec![],
        customer_metadata: Default::default(),
        internal_metadata: Default::default(),
        tags: Default::default(),
        autoboot: true,
        billing_id: String::new(),
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
