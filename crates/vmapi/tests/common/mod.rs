//! A whole datacenter in-process on loopback ports: a real PostgreSQL, Moray, UFDS,
//! PAPI, IMGAPI (gRPC + HTTP file server), NAPI, CNAPI (on Moray), cn-agents (sim
//! nodes, or one linux node) and VMAPI. Seeded with an approved account, a package,
//! an active public image and an `admin` network.

#![allow(dead_code)] // each test binary uses part of it

pub mod host;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cn_agent::agent::AgentOptions;
use cn_agent::sim::{SimBackend, SimConfig, SimDelays};
use cn_agent::sysinfo::NodeFacts;
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as cnapi_pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::imgapi::v1 as img_pb;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1 as napi_pb;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1 as papi_pb;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1 as ufds_pb;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1 as pb;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;
use triton_testkit::MorayFixture;
use uuid::Uuid;

pub struct Options {
    pub sim_nodes: usize,
    pub node_ram_mib: u64,
    pub sim_delays: SimDelays,
    pub heartbeat: Duration,
    /// CNAPI keeps servers in memory instead of Moray (scale runs: CNAPI's Moray
    /// round trips per allocation are CNAPI's cost, not VMAPI's).
    pub cnapi_in_memory: bool,
    /// `/16` or `/24` admin network, e.g. "10.200.0.0/16".
    pub subnet: String,
    pub first_ip: String,
    pub last_ip: String,
    pub gateway: Option<String>,
    pub linux: Option<LinuxNode>,
    pub vmapi: Box<dyn Fn(&mut vmapi::Config) + Send + Sync>,
    /// Bytes of the image file (for sim nodes any bytes do).
    pub image_file: Option<PathBuf>,
}

/// A linux cn-agent: its backend config and the bridge carrying the admin nic tag.
pub struct LinuxNode {
    pub config: cn_agent::linux::LinuxConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sim_nodes: 2,
            node_ram_mib: 16384,
            sim_delays: SimDelays::default(),
            heartbeat: Duration::from_millis(300),
            cnapi_in_memory: false,
            subnet: "10.200.0.0/16".into(),
            first_ip: "10.200.0.10".into(),
            last_ip: "10.200.255.250".into(),
            gateway: Some("10.200.0.1".into()),
            linux: None,
            vmapi: Box::new(|_| {}),
            image_file: None,
        }
    }
}

pub struct Dc {
    pub vmapi: VmapiClient<Channel>,
    pub cnapi: CnapiClient<Channel>,
    pub napi: NapiClient<Channel>,
    pub papi: PapiClient<Channel>,
    pub imgapi: ImgapiClient<Channel>,
    pub owner: String,
    pub login: String,
    pub image_uuid: String,
    pub package_uuid: String,
    pub network_uuid: String,
    pub servers: Vec<Uuid>,
    pub sims: Vec<Arc<SimBackend>>,
    pub vmapi_config: vmapi::Config,
    pub vmapi_addr: SocketAddr,
    vmapi_shutdown: CancellationToken,
    vmapi_task: Option<tokio::task::JoinHandle<vmapi::Result<()>>>,
    pub shutdown: CancellationToken,
    pub _dir: tempfile::TempDir,
    _moray: MorayFixture,
}

impl Drop for Dc {
    fn drop(&mut self) {
        self.vmapi_shutdown.cancel();
        self.shutdown.cancel();
    }
}

pub fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn grpc(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy()
}

impl Dc {
    pub async fn start(options: Options) -> Dc {
        let dir = tempfile::tempdir().expect("tempdir");
        let moray = MorayFixture::start().await;
        let shutdown = CancellationToken::new();
        let moray_url = moray.url().to_string();

        // Accounts.
        let ufds = ufds::start(
            ufds::Config {
                listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("UFDS starts");
        let login = format!("user{}", &Uuid::new_v4().simple().to_string()[..8]);
        let account = UfdsClient::new(grpc(ufds.addr))
            .create_account(ufds_pb::CreateAccountRequest {
                login: login.clone(),
                email: format!("{login}@example.com"),
                approved_for_provisioning: true,
                ..Default::default()
            })
            .await
            .expect("create account")
            .into_inner();

        // Packages.
        let papi_run = papi::start(
            papi::Config {
                listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("PAPI starts");
        let mut papi = PapiClient::new(grpc(papi_run.addr));
        let package = papi
            .create_package(papi_pb::CreatePackageRequest {
                uuid: String::new(),
                fields: Some(papi_pb::PackageFields {
                    name: Some("g1-small".into()),
                    version: Some("1.0.0".into()),
                    active: Some(true),
                    max_physical_memory: Some(256),
                    max_swap: Some(512),
                    quota: Some(2048),
                    cpu_cap: Some(100),
                    max_lwps: Some(4000),
                    zfs_io_priority: Some(100),
                    ..Default::default()
                }),
            })
            .await
            .expect("create package")
            .into_inner();

        // Images.
        let imgapi_run = imgapi::start(
            imgapi::Config {
                listen: "127.0.0.1:0".into(),
                http_listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                data_dir: dir.path().join("imgapi").display().to_string(),
                max_file_bytes: 256 * 1024 * 1024,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("IMGAPI starts");
        let mut imgapi = ImgapiClient::new(grpc(imgapi_run.addr));
        let data = match &options.image_file {
            Some(p) => std::fs::read(p).expect("image file"),
            None => b"a simulated image".to_vec(),
        };
        let image_uuid = Uuid::new_v4().to_string();
        let manifest = img_pb::Image {
            uuid: image_uuid.clone(),
            owner: account.uuid.clone(),
            name: "base-64".into(),
            version: "24.4.0".into(),
            r#type: "lxd".into(),
            os: "linux".into(),
            public: true,
            files: vec![img_pb::ImageFile {
                sha1: sha1_hex(&data),
                size: data.len() as u64,
                compression: "gzip".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut msgs = vec![img_pb::ImportImageRequest {
            part: Some(img_pb::import_image_request::Part::Header(
                img_pb::ImportImageHeader {
                    manifest: Some(manifest),
                    activate: true,
                },
            )),
        }];
        for chunk in data.chunks(256 * 1024) {
            msgs.push(img_pb::ImportImageRequest {
                part: Some(img_pb::import_image_request::Part::Chunk(chunk.to_vec())),
            });
        }
        imgapi
            .import_image(futures::stream::iter(msgs))
            .await
            .expect("import image");

        // Networks.
        let napi_run = napi::start(
            napi::Config {
                listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("NAPI starts");
        let mut napi = NapiClient::new(grpc(napi_run.addr));
        napi.create_nic_tag(napi_pb::CreateNicTagRequest {
            name: "admin".into(),
            mtu: None,
        })
        .await
        .expect("nic tag");
        let network = napi
            .create_network(napi_pb::CreateNetworkRequest {
                name: "admin".into(),
                subnet: options.subnet.clone(),
                provision_start_ip: options.first_ip.clone(),
                provision_end_ip: options.last_ip.clone(),
                nic_tag: "admin".into(),
                gateway: options.gateway.clone(),
                resolvers: vec![],
                ..Default::default()
            })
            .await
            .expect("network")
            .into_inner();

        // Compute: CNAPI and its agents.
        let settings = cnapi::service::Settings {
            heartbeat_lifetime: options.heartbeat * 10,
            reconcile_period: options.heartbeat,
            auto_setup: true,
            ..Default::default()
        };
        let cnapi_run = if options.cnapi_in_memory {
            cnapi::app::start(
                cnapi::store::MemoryStore::default(),
                settings,
                "127.0.0.1:0",
                shutdown.clone(),
            )
            .await
        } else {
            let store = cnapi::store::MorayStore::connect(&moray_url)
                .await
                .expect("CNAPI store");
            cnapi::app::start(store, settings, "127.0.0.1:0", shutdown.clone()).await
        }
        .expect("CNAPI starts");
        let cnapi_url = format!("http://{}", cnapi_run.addr);
        let mut servers = Vec::new();
        let mut sims = Vec::new();
        for n in 0..options.sim_nodes {
            let backend = Arc::new(SimBackend::in_memory(SimConfig {
                delays: options.sim_delays,
                nic_tags: vec!["admin".into()],
            }));
            let uuid = Uuid::new_v4();
            let ram_mib = options.node_ram_mib;
            cn_agent::agent::start(
                backend.clone(),
                move |agent_port| NodeFacts::Sim {
                    uuid,
                    hostname: format!("sim{n:04}"),
                    ram_mib,
                    cpus: 16,
                    disk_bytes: 4 << 40,
                    // The node claims a `broken` nic tag its backend does not have:
                    // a NIC on it makes machine_create fail on the node itself.
                    nic_tags: vec!["admin".into(), "broken".into()],
                    datacenter: "test".into(),
                    agent_port,
                    boot_time: 1_700_000_000,
                },
                AgentOptions {
                    cnapi_url: cnapi_url.clone(),
                    heartbeat_interval: options.heartbeat,
                    ..Default::default()
                },
                shutdown.clone(),
            )
            .await
            .expect("cn-agent starts");
            servers.push(uuid);
            sims.push(backend);
        }
        if let Some(linux) = &options.linux {
            let backend = Arc::new(
                cn_agent::linux::LinuxBackend::new(linux.config.clone()).expect("linux backend"),
            );
            let uuid = Uuid::new_v4();
            let state_dir = linux.config.state_dir.clone();
            let nic_tags = linux.config.bridges.clone();
            cn_agent::agent::start(
                backend,
                move |agent_port| NodeFacts::Real {
                    uuid,
                    state_dir,
                    nic_tags,
                    datacenter: "test".into(),
                    agent_port,
                },
                AgentOptions {
                    cnapi_url: cnapi_url.clone(),
                    heartbeat_interval: options.heartbeat,
                    ..Default::default()
                },
                shutdown.clone(),
            )
            .await
            .expect("linux cn-agent starts");
            servers.push(uuid);
        }
        let mut cnapi = CnapiClient::new(grpc(cnapi_run.addr));
        let expected = servers.len();
        eventually(
            "every server registered and set up",
            Duration::from_secs(60),
            || {
                let mut c = cnapi.clone();
                async move {
                    let Ok(list) = c
                        .list_servers(cnapi_pb::ListServersRequest {
                            setup: Some(true),
                            status: "running".into(),
                            ..Default::default()
                        })
                        .await
                    else {
                        return false;
                    };
                    list.into_inner().servers.len() == expected
                }
            },
        )
        .await;
        let _ = &mut cnapi;

        let mut vmapi_config = vmapi::Config {
            listen: "127.0.0.1:0".into(),
            moray_url,
            cnapi_url,
            napi_url: format!("http://{}", napi_run.addr),
            imgapi_url: format!("http://{}", imgapi_run.addr),
            imgapi_file_url: format!("http://{}", imgapi_run.http_addr),
            papi_url: format!("http://{}", papi_run.addr),
            ufds_url: format!("http://{}", ufds.addr),
            instance_id: format!("vmapi-test-{}", Uuid::new_v4()),
            job_lease_ms: 3000,
            reconcile_period_ms: 500,
            orphan_scan_ms: 1000,
            ..Default::default()
        };
        (options.vmapi)(&mut vmapi_config);
        let vmapi_shutdown = shutdown.child_token();
        let running = vmapi::start(vmapi_config.clone(), vmapi_shutdown.clone())
            .await
            .expect("VMAPI starts");
        Dc {
            vmapi: VmapiClient::new(grpc(running.addr)),
            cnapi,
            napi,
            papi,
            imgapi,
            owner: account.uuid,
            login,
            image_uuid,
            package_uuid: package.uuid,
            network_uuid: network.uuid,
            servers,
            sims,
            vmapi_addr: running.addr,
            vmapi_config,
            vmapi_shutdown,
            vmapi_task: Some(running.task),
            shutdown,
            _dir: dir,
            _moray: moray,
        }
    }

    /// Stops VMAPI (its in-flight steps are dropped where they stand) and starts it
    /// again with the same instance id, as a restart of the process would.
    pub async fn restart_vmapi(&mut self) {
        self.stop_vmapi().await;
        self.start_vmapi().await;
    }

    pub async fn stop_vmapi(&mut self) {
        self.vmapi_shutdown.cancel();
        if let Some(task) = self.vmapi_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    pub async fn start_vmapi(&mut self) {
        let mut config = self.vmapi_config.clone();
        config.listen = format!("127.0.0.1:{}", self.vmapi_addr.port());
        self.vmapi_shutdown = self.shutdown.child_token();
        let running = vmapi::start(config, self.vmapi_shutdown.clone())
            .await
            .expect("VMAPI starts again");
        self.vmapi = VmapiClient::new(grpc(running.addr));
        self.vmapi_task = Some(running.task);
    }

    pub fn create_request(&self, alias: &str) -> pb::CreateVmRequest {
        pb::CreateVmRequest {
            owner_uuid: self.owner.clone(),
            alias: alias.into(),
            image_uuid: self.image_uuid.clone(),
            billing_id: self.package_uuid.clone(),
            networks: vec![pb::NetworkSpec {
                ipv4_uuid: self.network_uuid.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    pub async fn wait_job(&self, job_uuid: &str) -> pb::Job {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .vmapi
                .clone()
                .wait_job(pb::WaitJobRequest {
                    uuid: job_uuid.to_string(),
                    timeout_ms: 30_000,
                })
                .await;
            match r {
                Ok(j) => {
                    let j = j.into_inner();
                    if matches!(j.execution.as_str(), "succeeded" | "failed" | "canceled") {
                        return j;
                    }
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {}
                Err(s) => panic!("wait job {job_uuid}: {s}"),
            }
            assert!(Instant::now() < deadline, "job {job_uuid} did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn vm(&self, uuid: &str) -> pb::Vm {
        self.vmapi
            .clone()
            .get_vm(pb::GetVmRequest {
                uuid: uuid.to_string(),
                owner_uuid: String::new(),
            })
            .await
            .expect("get vm")
            .into_inner()
    }

    /// NICs NAPI holds for the VM.
    pub async fn napi_nics(&self, vm_uuid: &str) -> Vec<napi_pb::Nic> {
        self.napi
            .clone()
            .list_nics(napi_pb::ListNicsRequest {
                belongs_to_uuid: Some(vm_uuid.to_string()),
                ..Default::default()
            })
            .await
            .expect("list nics")
            .into_inner()
            .nics
    }

    /// Unreserved RAM (MiB) per server, reservations included.
    pub async fn capacity(&self) -> std::collections::BTreeMap<String, i64> {
        self.cnapi
            .clone()
            .capacity(cnapi_pb::CapacityRequest { servers: vec![] })
            .await
            .expect("capacity")
            .into_inner()
            .capacities
            .into_iter()
            .map(|c| (c.server_uuid, c.ram))
            .collect()
    }
}

/// Polls `check` until it holds or `timeout` passes, then fails naming `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Triton error name of a failed call, and its message.
pub fn error_of<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> (String, String) {
    let s = r.expect_err("the call must fail");
    (
        triton_common::status::error_name(&s)
            .unwrap_or("")
            .to_string(),
        s.message().to_string(),
    )
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
