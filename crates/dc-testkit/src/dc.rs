//! [`Dc`]: the services a test asked for, started in-process on loopback ports on one
//! real PostgreSQL and Moray, and the clients to reach them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cn_agent::agent::AgentOptions;
use cn_agent::sim::{SimBackend, SimConfig, SimDelays};
use cn_agent::sysinfo::NodeFacts;
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

use crate::linux::LinuxNode;
use crate::{eventually, sha1_hex};

/// The account NAPI's seeded networks (`coal_networks`) belong to, as in CoaL.
pub const ADMIN_UUID: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

/// A service of the test datacenter, for [`Dc::addr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// UFDS (gRPC).
    Ufds,
    /// PAPI (gRPC).
    Papi,
    /// IMGAPI (gRPC).
    Imgapi,
    /// IMGAPI's HTTP file server.
    ImgapiFiles,
    /// NAPI (gRPC).
    Napi,
    /// CNAPI (gRPC).
    Cnapi,
    /// VMAPI (gRPC); its address stays across restarts.
    Vmapi,
    /// CloudAPI's plain HTTP listener.
    Cloudapi,
    /// Portolan's SVP listener.
    Portolan,
    /// Portolan's gRPC (health) listener.
    PortolanHealth,
    /// CNS's admin gRPC API.
    Cns,
    /// CNS's DNS (UDP and TCP).
    CnsDns,
    /// CMon's HTTPS listener.
    Cmon,
    /// VolAPI (gRPC).
    Volapi,
}

pub(crate) type Configure<C> = Box<dyn Fn(&mut C) + Send + Sync>;

/// What to start. `Options::default()` is Moray alone; set the services a test needs
/// (each brings what it depends on: compute brings UFDS, PAPI, IMGAPI and NAPI;
/// CloudAPI brings the same), or start from [`Options::vmapi`] or
/// [`Options::cloudapi`].
pub struct Options {
    /// UFDS: accounts and keys.
    pub ufds: bool,
    /// PAPI: packages.
    pub papi: bool,
    /// IMGAPI: images, over gRPC and HTTP.
    pub imgapi: bool,
    /// NAPI: nic tags, networks and NICs.
    pub napi: bool,
    /// Portolan: SVP lookups on the fabric buckets ([`Service::Portolan`], [`Dc::svp`]).
    pub portolan: bool,
    /// CNAPI, its nodes (`sim_nodes` and `linux`) and VMAPI.
    pub compute: bool,
    /// CloudAPI in front (its VMAPI is the one of `compute`, or none: machine
    /// endpoints answer 503).
    pub cloudapi: bool,
    /// CloudAPI serves HTTPS too, with a certificate made by `openssl req`.
    pub tls: bool,
    /// CMon on HTTPS (brings compute), with its self-signed certificate
    /// ([`Dc::cmon_cert`]); CloudAPI lists it as its `cmon` service.
    pub cmon: bool,
    /// CNS following VMAPI, UFDS, NAPI and CNAPI (brings compute), serving
    /// [`crate::naming::CNS_ZONE`] ([`Dc::cns`], [`Dc::cns_dns_addr`]).
    pub cns: bool,
    /// VolAPI (brings compute, its nodes carrying `sdc_overlay` unless a test lists it
    /// among `broken_nic_tags`; VMAPI and CloudAPI
    /// get its URL), the
    /// `sdc_volume_nfs_*` packages and an `nfsserver` image ([`Dc::volapi`]).
    pub volapi: bool,
    /// An approved account, a package, an active public image and an `admin` network,
    /// made through the services' APIs ([`Dc::seed`]).
    pub seed: Option<Seed>,
    /// NAPI seeds CoaL's networks (owned by [`ADMIN_UUID`]); with a linux node, the
    /// external network is its host's bridge subnet, so the host reaches instances.
    pub coal_networks: bool,
    /// NAPI gives every account its default fabric (`My-Fabric-VLAN`,
    /// `My-Fabric-Network`) and sets its `default_network`, following UFDS's accounts
    /// every 100 ms (NAPI's `fabrics.enabled`).
    pub default_fabrics: bool,
    /// How many simulated compute nodes `compute` starts.
    pub sim_nodes: usize,
    /// Each sim node's RAM in MiB.
    pub node_ram_mib: u64,
    /// The nic tags the sim nodes have.
    pub nic_tags: Vec<String>,
    /// Nic tags the sim nodes claim but do not have: a NIC on one makes machine_create
    /// fail on the node itself.
    pub broken_nic_tags: Vec<String>,
    /// How long each of the sim nodes' operations takes.
    pub sim_delays: SimDelays,
    /// The agents' heartbeat interval; CNAPI's lifetime and reconcile period follow it.
    pub heartbeat: Duration,
    /// CNAPI keeps servers in memory instead of Moray (scale runs: CNAPI's Moray
    /// round trips per allocation are CNAPI's cost, not VMAPI's).
    pub cnapi_in_memory: bool,
    /// The datacenter name the nodes and CloudAPI report.
    pub datacenter: String,
    /// One linux compute node ([`crate::linux::LinuxHost::node_options`]; the test keeps its
    /// `LinuxHost`, which removes what it made on drop).
    pub linux: Option<LinuxNode>,
    /// Changes to Moray's config before it starts (e.g. a change log kept for 0 s, to test
    /// a feed's resync answer).
    pub configure_moray: Configure<moray::Config>,
    /// Changes to UFDS's config before it starts.
    pub configure_ufds: Configure<ufds::Config>,
    /// Changes to PAPI's config before it starts.
    pub configure_papi: Configure<papi::Config>,
    /// Changes to NAPI's config before it starts.
    pub configure_napi: Configure<napi::Config>,
    /// Changes to Portolan's config before it starts.
    pub configure_portolan: Configure<portolan::Config>,
    /// Changes to VMAPI's config before it starts (also kept for restarts).
    pub configure_vmapi: Configure<vmapi::Config>,
    /// Changes to CloudAPI's config before it starts.
    pub configure_cloudapi: Configure<cloudapi::Config>,
    /// Changes to CNS's config before it starts.
    pub configure_cns: Configure<cns::Config>,
    /// Changes to CMon's config before it starts.
    pub configure_cmon: Configure<cmon::Config>,
    /// Changes to VolAPI's config before it starts (also kept for restarts).
    pub configure_volapi: Configure<volapi::Config>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ufds: false,
            papi: false,
            imgapi: false,
            napi: false,
            portolan: false,
            compute: false,
            cloudapi: false,
            tls: false,
            cns: false,
            cmon: false,
            volapi: false,
            seed: None,
            coal_networks: false,
            default_fabrics: false,
            sim_nodes: 2,
            node_ram_mib: 16384,
            nic_tags: vec!["admin".into()],
            broken_nic_tags: vec![],
            sim_delays: SimDelays::default(),
            heartbeat: Duration::from_millis(300),
            cnapi_in_memory: false,
            datacenter: "test".into(),
            linux: None,
            configure_moray: Box::new(|_| {}),
            configure_ufds: Box::new(|_| {}),
            configure_papi: Box::new(|_| {}),
            configure_napi: Box::new(|_| {}),
            configure_portolan: Box::new(|_| {}),
            configure_vmapi: Box::new(|_| {}),
            configure_cloudapi: Box::new(|_| {}),
            configure_cns: Box::new(|_| {}),
            configure_cmon: Box::new(|_| {}),
            configure_volapi: Box::new(|_| {}),
        }
    }
}

impl Options {
    /// One service alone on Moray: UFDS, PAPI, IMGAPI, NAPI or Portolan (IMGAPI's files
    /// come with IMGAPI, Portolan's health port with Portolan; for any other, Moray
    /// alone).
    pub fn only(service: Service) -> Options {
        Options {
            ufds: service == Service::Ufds,
            papi: service == Service::Papi,
            imgapi: matches!(service, Service::Imgapi | Service::ImgapiFiles),
            napi: service == Service::Napi,
            portolan: matches!(service, Service::Portolan | Service::PortolanHealth),
            ..Options::default()
        }
    }

    /// VMAPI's datacenter: every service but CloudAPI, two sim nodes (nic tag `admin`,
    /// and a `broken` one they claim but lack), seeded.
    pub fn vmapi() -> Options {
        Options {
            compute: true,
            seed: Some(Seed::default()),
            broken_nic_tags: vec!["broken".into()],
            ..Options::default()
        }
    }

    /// CloudAPI's datacenter: CloudAPI on UFDS, PAPI, IMGAPI and NAPI with CoaL's
    /// networks; with `compute` one sim node (64 GiB, nic tags `admin` and `external`).
    pub fn cloudapi() -> Options {
        Options {
            cloudapi: true,
            coal_networks: true,
            sim_nodes: 1,
            node_ram_mib: 65536,
            nic_tags: vec!["admin".into(), "external".into()],
            datacenter: "coal-test".into(),
            ..Options::default()
        }
    }
}

/// An active, public package `name` 1.0.0 with `ram` MiB of memory and twice that of swap,
/// 10 GiB of disk, a whole CPU, 4000 LWPs and I/O priority 100; a test changes what it
/// needs (`PackageFields { quota: .., ..package_fields(name, ram) }`) and hands it to
/// [`Dc::create_package`].
pub fn package_fields(name: &str, ram: u64) -> papi_pb::PackageFields {
    papi_pb::PackageFields {
        name: Some(name.into()),
        version: Some("1.0.0".into()),
        active: Some(true),
        max_physical_memory: Some(ram),
        max_swap: Some(ram * 2),
        quota: Some(10240),
        cpu_cap: Some(100),
        max_lwps: Some(4000),
        zfs_io_priority: Some(100),
        ..Default::default()
    }
}

/// What [`Options::seed`] makes: the admin network's range and the image's file.
pub struct Seed {
    /// `/16` or `/24` admin network, e.g. "10.200.0.0/16".
    pub subnet: String,
    /// The first address handed out.
    pub first_ip: String,
    /// The last address handed out.
    pub last_ip: String,
    /// The network's gateway.
    pub gateway: Option<String>,
    /// The image's file (for sim nodes any bytes do).
    pub image_file: Option<PathBuf>,
}

impl Default for Seed {
    fn default() -> Self {
        Seed {
            subnet: "10.200.0.0/16".into(),
            first_ip: "10.200.0.10".into(),
            last_ip: "10.200.255.250".into(),
            gateway: Some("10.200.0.1".into()),
            image_file: None,
        }
    }
}

/// The seeded records' ids.
pub struct Seeded {
    /// The account's uuid.
    pub owner: String,
    /// The account's login.
    pub login: String,
    /// The active public image's uuid.
    pub image_uuid: String,
    /// The package's uuid (`g1-small`, 256 MiB).
    pub package_uuid: String,
    /// The `admin` network's uuid.
    pub network_uuid: String,
}

/// A running test datacenter; dropping it stops every service.
pub struct Dc {
    pub(crate) addrs: Vec<(Service, SocketAddr)>,
    vmapi: Option<VmapiClient<Channel>>,
    /// NAPI's logic, for tests that call it directly.
    pub napi_app: Option<napi::Napi>,
    seeded: Option<Seeded>,
    /// The compute nodes' uuids: the sim nodes', then the linux node's.
    pub servers: Vec<Uuid>,
    /// The sim nodes' backends: what is on their instances' disks.
    pub sims: Vec<Arc<SimBackend>>,
    vmapi_config: Option<vmapi::Config>,
    vmapi_run: Restartable<vmapi::Result<()>>,
    pub(crate) volapi_config: Option<volapi::Config>,
    pub(crate) volapi_run: Restartable<volapi::Result<()>>,
    /// The configuration CloudAPI runs with.
    pub cloudapi_config: Option<cloudapi::Config>,
    pub(crate) tls_addr: Option<SocketAddr>,
    /// Cancelled on drop: every service and agent stops.
    pub shutdown: CancellationToken,
    /// A temp dir the datacenter's files live in (IMGAPI's data, certificates).
    pub dir: tempfile::TempDir,
    moray: MorayFixture,
}

impl Drop for Dc {
    fn drop(&mut self) {
        self.vmapi_run.shutdown.cancel();
        self.volapi_run.shutdown.cancel();
        self.shutdown.cancel();
    }
}

/// A service of the test datacenter that a test stops and starts again: its run's
/// shutdown token (a child of the datacenter's) and task.
pub(crate) struct Restartable<T> {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<T>>,
}

impl<T> Restartable<T> {
    fn new(parent: &CancellationToken) -> Self {
        Restartable {
            shutdown: parent.child_token(),
            task: None,
        }
    }

    /// A fresh shutdown token (a child of `parent`) for the next run.
    pub(crate) fn next_run(&mut self, parent: &CancellationToken) -> CancellationToken {
        self.shutdown = parent.child_token();
        self.shutdown.clone()
    }

    /// The run's task, started with the token [`Restartable::next_run`] gave.
    pub(crate) fn running(&mut self, task: tokio::task::JoinHandle<T>) {
        self.task = Some(task);
    }

    /// Cancels the run and waits (up to 30 s) for its task to end.
    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

/// A service of the test datacenter: on a free port of 127.0.0.1, on its Moray.
fn on_moray(service: &mut triton_common::service_config::ServiceConfig, moray_url: &str) {
    service.listen = "127.0.0.1:0".into();
    service.moray_url = moray_url.into();
}

pub(crate) fn grpc(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy()
}

impl Dc {
    /// Starts what `options` asks for; returns once every compute node is set up.
    pub async fn start(mut options: Options) -> Dc {
        options.compute |= options.cns;
        options.compute |= options.cmon;
        options.compute |= options.volapi;
        // Volumes live on fabric networks: the sim nodes carry the overlay.
        if options.volapi
            && !options
                .nic_tags
                .iter()
                .chain(&options.broken_nic_tags)
                .any(|t| t == "sdc_overlay")
        {
            options.nic_tags.push("sdc_overlay".into());
        }
        // VMAPI is configured with VolAPI's URL before either starts.
        let volapi_port = options.volapi.then(crate::volumes::hold_port);
        if let Some(held) = &volapi_port {
            let port = held.local_addr().expect("held port").port();
            let configure = std::mem::replace(&mut options.configure_vmapi, Box::new(|_| {}));
            options.configure_vmapi = Box::new(move |c| {
                c.volapi_url = format!("http://127.0.0.1:{port}");
                configure(c);
            });
        }
        if options.compute || options.cloudapi {
            options.ufds = true;
            options.papi = true;
            options.imgapi = true;
            options.napi = true;
        }
        if options.seed.is_some() {
            options.ufds = true;
            options.papi = true;
            options.imgapi = true;
            options.napi = true;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let moray = MorayFixture::start_with(|c| (options.configure_moray)(c)).await;
        let shutdown = CancellationToken::new();
        let moray_url = moray.url().to_string();
        let mut dc = Dc {
            addrs: Vec::new(),
            vmapi: None,
            napi_app: None,
            seeded: None,
            servers: Vec::new(),
            sims: Vec::new(),
            vmapi_config: None,
            vmapi_run: Restartable::new(&shutdown),
            volapi_config: None,
            volapi_run: Restartable::new(&shutdown),
            cloudapi_config: None,
            tls_addr: None,
            shutdown: shutdown.clone(),
            dir,
            moray,
        };

        if options.ufds {
            let mut config = ufds::Config::default();
            on_moray(&mut config.service, &moray_url);
            (options.configure_ufds)(&mut config);
            let running = ufds::start(config, shutdown.clone())
                .await
                .expect("UFDS starts");
            dc.addrs.push((Service::Ufds, running.addr));
        }
        if options.papi {
            let mut config = papi::Config::default();
            on_moray(&mut config.service, &moray_url);
            (options.configure_papi)(&mut config);
            let running = papi::start(config, shutdown.clone())
                .await
                .expect("PAPI starts");
            dc.addrs.push((Service::Papi, running.addr));
        }
        if options.imgapi {
            let mut config = imgapi::Config {
                http_listen: "127.0.0.1:0".into(),
                data_dir: dc.dir.path().join("imgapi").display().to_string(),
                max_file_bytes: 256 * 1024 * 1024,
                ..Default::default()
            };
            on_moray(&mut config.service, &moray_url);
            let running = imgapi::start(config, shutdown.clone())
                .await
                .expect("IMGAPI starts");
            dc.addrs.push((Service::Imgapi, running.addr));
            dc.addrs.push((Service::ImgapiFiles, running.http_addr));
        }
        if options.napi {
            let mut config = napi::Config::default();
            on_moray(&mut config.service, &moray_url);
            if options.coal_networks {
                config.admin_uuid = ADMIN_UUID.into();
                config.seed.enabled = true;
                if let Some(linux) = &options.linux {
                    // The external network is the test bridge's subnet, so the host
                    // reaches instances on their IPs.
                    let s = linux.subnet;
                    config.seed.external.subnet = format!("10.99.{s}.0/24");
                    config.seed.external.provision_start_ip = format!("10.99.{s}.10");
                    config.seed.external.provision_end_ip = format!("10.99.{s}.250");
                    config.seed.external.gateway = format!("10.99.{s}.1");
                }
            }
            if options.default_fabrics
                && let Some((_, ufds)) = dc.addrs.iter().find(|(s, _)| *s == Service::Ufds)
            {
                config.fabrics.enabled = true;
                config.fabrics.ufds_url = format!("http://{ufds}");
                config.fabrics.follow_interval_ms = 100;
            }
            (options.configure_napi)(&mut config);
            let running = napi::start(config, shutdown.clone())
                .await
                .expect("NAPI starts");
            dc.addrs.push((Service::Napi, running.addr));
            dc.napi_app = Some(running.app);
        }
        if options.portolan {
            let mut config = portolan::Config {
                svp_listen: "127.0.0.1:0".into(),
                ..Default::default()
            };
            on_moray(&mut config.service, &moray_url);
            (options.configure_portolan)(&mut config);
            let running = portolan::start(config, shutdown.clone())
                .await
                .expect("Portolan starts");
            dc.addrs.push((Service::Portolan, running.svp_addr));
            dc.addrs.push((Service::PortolanHealth, running.addr));
        }
        if let Some(seed) = &options.seed {
            dc.seeded = Some(dc.seed_records(seed).await);
        }
        if options.compute {
            dc.start_compute(&options, &moray_url).await;
        }
        if options.cns {
            dc.start_cns(&options).await;
        }
        if options.cmon {
            dc.start_cmon(&mut options).await;
        }
        if let Some(held) = volapi_port {
            dc.start_volapi(&options, held).await;
        }
        if options.cloudapi {
            dc.start_cloudapi(&options).await;
        }
        dc
    }

    async fn seed_records(&self, seed: &Seed) -> Seeded {
        let login = format!("user{}", &Uuid::new_v4().simple().to_string()[..8]);
        let account = self
            .ufds()
            .create_account(ufds_pb::CreateAccountRequest {
                login: login.clone(),
                email: format!("{login}@example.com"),
                approved_for_provisioning: true,
                ..Default::default()
            })
            .await
            .expect("create account")
            .into_inner();
        let package = self
            .create_package(papi_pb::PackageFields {
                quota: Some(2048),
                ..package_fields("g1-small", 256)
            })
            .await;
        let data = match &seed.image_file {
            Some(p) => std::fs::read(p).expect("image file"),
            None => b"a simulated image".to_vec(),
        };
        let image = self
            .image("base-64", "24.4.0", true, &account.uuid, data)
            .await;
        let mut napi = self.napi();
        napi.create_nic_tag(napi_pb::CreateNicTagRequest {
            name: "admin".into(),
            mtu: None,
        })
        .await
        .expect("nic tag");
        let network = napi
            .create_network(napi_pb::CreateNetworkRequest {
                name: "admin".into(),
                subnet: seed.subnet.clone(),
                provision_start_ip: seed.first_ip.clone(),
                provision_end_ip: seed.last_ip.clone(),
                nic_tag: "admin".into(),
                gateway: seed.gateway.clone(),
                resolvers: vec![],
                ..Default::default()
            })
            .await
            .expect("network")
            .into_inner();
        Seeded {
            owner: account.uuid,
            login,
            image_uuid: image.uuid,
            package_uuid: package.uuid,
            network_uuid: network.uuid,
        }
    }

    /// CNAPI, its agents and VMAPI.
    async fn start_compute(&mut self, options: &Options, moray_url: &str) {
        let shutdown = self.shutdown.clone();
        // Nodes' underlay addresses become their underlay NICs in NAPI (and so
        // Portolan's underlay rows), as in CoaL.
        let underlay = self
            .addrs
            .iter()
            .find(|(s, _)| *s == Service::Napi)
            .map(|(_, addr)| cnapi::underlay::UnderlaySettings {
                napi_url: format!("http://{addr}"),
                admin_uuid: ADMIN_UUID.into(),
            });
        let settings = cnapi::service::Settings {
            heartbeat_lifetime: options.heartbeat * 10,
            reconcile_period: options.heartbeat,
            auto_setup: true,
            underlay,
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
            let store = cnapi::store::MorayStore::connect(moray_url)
                .await
                .expect("CNAPI store");
            cnapi::app::start(store, settings, "127.0.0.1:0", shutdown.clone()).await
        }
        .expect("CNAPI starts");
        self.addrs.push((Service::Cnapi, cnapi_run.addr));
        let cnapi_url = format!("http://{}", cnapi_run.addr);
        let agent_options = || AgentOptions {
            cnapi_url: cnapi_url.clone(),
            heartbeat_interval: options.heartbeat,
            ..Default::default()
        };
        let claimed: Vec<String> = options
            .nic_tags
            .iter()
            .chain(&options.broken_nic_tags)
            .cloned()
            .collect();
        for n in 0..options.sim_nodes {
            let backend = Arc::new(SimBackend::in_memory(SimConfig {
                delays: options.sim_delays,
                nic_tags: options.nic_tags.clone(),
            }));
            let uuid = Uuid::new_v4();
            let ram_mib = options.node_ram_mib;
            let nic_tags = claimed.clone();
            let datacenter = options.datacenter.clone();
            cn_agent::agent::start(
                backend.clone(),
                move |agent_port| NodeFacts::Sim {
                    uuid,
                    hostname: format!("sim{n:04}"),
                    ram_mib,
                    cpus: 16,
                    disk_bytes: 4 << 40,
                    nic_tags,
                    datacenter,
                    agent_port,
                    boot_time: 1_700_000_000,
                },
                agent_options(),
                shutdown.clone(),
            )
            .await
            .expect("cn-agent starts");
            self.servers.push(uuid);
            self.sims.push(backend);
        }
        if let Some(linux) = &options.linux {
            let linux = &linux.config;
            let backend =
                Arc::new(cn_agent::linux::LinuxBackend::new(linux.clone()).expect("linux backend"));
            let uuid = Uuid::new_v4();
            let state_dir = linux.state_dir.clone();
            let nic_tags = linux.bridges.clone();
            let datacenter = options.datacenter.clone();
            cn_agent::agent::start(
                backend,
                move |agent_port| NodeFacts::Real {
                    uuid,
                    state_dir,
                    nic_tags,
                    datacenter,
                    agent_port,
                },
                agent_options(),
                shutdown.clone(),
            )
            .await
            .expect("linux cn-agent starts");
            self.servers.push(uuid);
        }
        let cnapi = self.cnapi();
        let expected = self.servers.len();
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

        let url = |s| format!("http://{}", self.addr(s));
        let mut config = vmapi::Config {
            listen: "127.0.0.1:0".into(),
            moray_url: moray_url.to_string(),
            cnapi_url,
            napi_url: url(Service::Napi),
            imgapi_url: url(Service::Imgapi),
            imgapi_file_url: url(Service::ImgapiFiles),
            papi_url: url(Service::Papi),
            ufds_url: url(Service::Ufds),
            instance_id: format!("vmapi-test-{}", Uuid::new_v4()),
            job_lease_ms: 3000,
            reconcile_period_ms: 500,
            orphan_scan_ms: 1000,
            ..Default::default()
        };
        (options.configure_vmapi)(&mut config);
        self.vmapi_config = Some(config);
        self.start_vmapi().await;
    }

    async fn start_cloudapi(&mut self, options: &Options) {
        let url = |s| format!("http://{}", self.addr(s));
        let mut config = cloudapi::Config {
            listen: "127.0.0.1:0".into(),
            datacenter: options.datacenter.clone(),
            ufds_url: url(Service::Ufds),
            papi_url: url(Service::Papi),
            imgapi_url: url(Service::Imgapi),
            napi_url: url(Service::Napi),
            // Without compute nothing listens there: machine endpoints answer 503.
            vmapi_url: self
                .try_addr(Service::Vmapi)
                .map(|a| format!("http://{a}"))
                .unwrap_or_else(|| "http://127.0.0.1:9".into()),
            cnapi_url: "http://127.0.0.1:9".into(),
            // With CNS, machines carry dns_names for accounts with triton_cns_enabled.
            cns_url: self
                .try_addr(Service::Cns)
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
            volapi_url: self
                .try_addr(Service::Volapi)
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
            ..Default::default()
        };
        if options.tls {
            let (cert, key) = crate::cloudapi::self_signed_certificate(self.dir.path());
            config.tls_listen = "127.0.0.1:0".into();
            config.tls_cert = cert.display().to_string();
            config.tls_key = key.display().to_string();
        }
        (options.configure_cloudapi)(&mut config);
        let running = cloudapi::start(config.clone(), self.shutdown.clone())
            .await
            .expect("CloudAPI starts");
        self.addrs.push((
            Service::Cloudapi,
            running.addr.expect("plain HTTP listener"),
        ));
        self.tls_addr = running.tls_addr;
        self.cloudapi_config = Some(config);
    }

    /// Where `service` listens, if it runs.
    pub fn try_addr(&self, service: Service) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .rev()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| *a)
    }

    /// Where `service` listens; fails the test if it was not asked for.
    #[track_caller]
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.try_addr(service).unwrap_or_else(|| {
            panic!("{service:?} is not started in this test datacenter: set it in Options")
        })
    }

    /// A new SVP connection to Portolan.
    pub async fn svp(&self) -> portolan_client::client::SvpClient {
        portolan_client::client::SvpClient::connect(self.addr(Service::Portolan))
            .await
            .expect("connect to Portolan's SVP port")
    }

    /// Moray's URL.
    pub fn moray_url(&self) -> String {
        self.moray.url().to_string()
    }

    /// Waits until Moray's change log no longer holds changes up to `position` (a trim ran:
    /// see `configure_moray` and [`triton_testkit::keep_no_change_log`]), so that a feed
    /// asked for an older position answers resync.
    pub async fn change_log_trimmed_through(&self, position: u64) {
        self.moray.change_log_trimmed_through(position).await;
    }

    /// The Moray fixture (its PostgreSQL, stopping Moray).
    pub fn moray(&mut self) -> &mut MorayFixture {
        &mut self.moray
    }

    /// The seeded records; fails the test without [`Options::seed`].
    #[track_caller]
    pub fn seed(&self) -> &Seeded {
        self.seeded
            .as_ref()
            .expect("this test datacenter has no seeded records: set Options::seed")
    }

    /// VMAPI (the one now running, after a restart).
    #[track_caller]
    pub fn vmapi(&self) -> VmapiClient<Channel> {
        self.vmapi
            .clone()
            .expect("this test datacenter has no VMAPI: set Options::compute")
    }

    /// Stops VMAPI (its in-flight steps are dropped where they stand) and starts it
    /// again with the same instance id, as a restart of the process would.
    pub async fn restart_vmapi(&mut self) {
        self.stop_vmapi().await;
        self.start_vmapi().await;
    }

    /// Stops VMAPI and waits (up to 30 s) for it to end.
    pub async fn stop_vmapi(&mut self) {
        self.vmapi_run.stop().await;
    }

    /// Starts VMAPI (again, on its port if it ran before).
    pub async fn start_vmapi(&mut self) {
        let mut config = self
            .vmapi_config
            .clone()
            .expect("this test datacenter has no VMAPI: set Options::compute");
        if let Some(addr) = self.try_addr(Service::Vmapi) {
            config.listen = format!("127.0.0.1:{}", addr.port());
        }
        let shutdown = self.vmapi_run.next_run(&self.shutdown);
        let running = vmapi::start(config, shutdown).await.expect("VMAPI starts");
        self.addrs.push((Service::Vmapi, running.addr));
        self.vmapi = Some(VmapiClient::new(grpc(running.addr)));
        self.vmapi_run.running(running.task);
    }

    /// A request for a VM of the seeded account, package, image and network.
    pub fn create_request(&self, alias: &str) -> pb::CreateVmRequest {
        let seed = self.seed();
        pb::CreateVmRequest {
            owner_uuid: seed.owner.clone(),
            alias: alias.into(),
            image_uuid: seed.image_uuid.clone(),
            billing_id: seed.package_uuid.clone(),
            networks: vec![pb::NetworkSpec {
                ipv4_uuid: seed.network_uuid.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Waits (up to 2 minutes, across VMAPI restarts) for job `job_uuid` to end.
    pub async fn wait_job(&self, job_uuid: &str) -> pb::Job {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .vmapi()
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

    /// A VM as VMAPI holds it.
    pub async fn vm(&self, uuid: &str) -> pb::Vm {
        self.vmapi()
            .get_vm(pb::GetVmRequest {
                uuid: uuid.to_string(),
                owner_uuid: String::new(),
            })
            .await
            .expect("GetVm")
            .into_inner()
    }

    /// NICs NAPI holds for the VM.
    pub async fn napi_nics(&self, vm_uuid: &str) -> Vec<napi_pb::Nic> {
        self.napi()
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
        self.cnapi()
            .capacity(cnapi_pb::CapacityRequest { servers: vec![] })
            .await
            .expect("capacity")
            .into_inner()
            .capacities
            .into_iter()
            .map(|c| (c.server_uuid, c.ram))
            .collect()
    }

    /// Seeds a public (or, with `owners`, private) active package.
    pub async fn package(&self, name: &str, ram: u64, owners: &[&str]) -> papi_pb::Package {
        let owner_uuids = (!owners.is_empty()).then(|| papi_pb::UuidList {
            uuids: owners.iter().map(|s| s.to_string()).collect(),
        });
        self.create_package(papi_pb::PackageFields {
            owner_uuids,
            ..package_fields(name, ram)
        })
        .await
    }

    /// Creates a package with `fields` (PAPI picks its uuid); [`package_fields`] gives the
    /// usual ones.
    pub async fn create_package(&self, fields: papi_pb::PackageFields) -> papi_pb::Package {
        self.papi()
            .create_package(papi_pb::CreatePackageRequest {
                uuid: String::new(),
                fields: Some(fields),
            })
            .await
            .expect("CreatePackage")
            .into_inner()
    }

    /// Imports and activates an image whose file is `data` (gzip'd tar for real nodes).
    pub async fn image(
        &self,
        name: &str,
        version: &str,
        public: bool,
        owner: &str,
        data: Vec<u8>,
    ) -> img_pb::Image {
        let manifest = img_pb::Image {
            v: 2,
            uuid: Uuid::new_v4().to_string(),
            owner: owner.into(),
            name: name.into(),
            version: version.into(),
            public,
            r#type: "lxd".into(),
            os: "linux".into(),
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
        self.imgapi()
            .import_image(futures::stream::iter(msgs))
            .await
            .expect("ImportImage")
            .into_inner()
    }
}

/// `Dc::name()`: a client of the service, for each gRPC service of the datacenter.
macro_rules! clients {
    ($($(#[$doc:meta])* $name:ident: $client:ident = $service:ident;)*) => {
        impl Dc {
            $(
                $(#[$doc])*
                #[track_caller]
                pub fn $name(&self) -> $client<Channel> {
                    $client::new(grpc(self.addr(Service::$service)))
                }
            )*
        }
    };
}

clients! {
    /// A UFDS client.
    ufds: UfdsClient = Ufds;
    /// A PAPI client.
    papi: PapiClient = Papi;
    /// An IMGAPI client.
    imgapi: ImgapiClient = Imgapi;
    /// A NAPI client.
    napi: NapiClient = Napi;
    /// A CNAPI client.
    cnapi: CnapiClient = Cnapi;
}
