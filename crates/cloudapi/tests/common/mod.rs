//! A datacenter for one test, in-process on loopback ports: a real PostgreSQL, Moray on
//! it, UFDS, PAPI, IMGAPI and NAPI (seeded with CoaL's networks), and CloudAPI in front;
//! tenants with SSH keys in their own `$HOME/.ssh`, and the real `triton` CLI (npm
//! `triton@7`) run against CloudAPI exactly as a tenant runs it.

#![allow(dead_code)] // each test binary uses part of it

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ring::signature::KeyPair as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::imgapi::v1 as imgapi;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::papi::v1 as papi;
use triton_proto::papi::v1::papi_client::PapiClient;
use triton_proto::ufds::v1 as ufds;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_testkit::MorayFixture;

pub const ADMIN_UUID: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

pub struct Stack {
    pub cloudapi: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub ufds: UfdsClient<Channel>,
    pub papi: PapiClient<Channel>,
    pub imgapi: ImgapiClient<Channel>,
    pub napi: NapiClient<Channel>,
    /// VMAPI, when the stack has compute.
    pub vmapi: Option<triton_proto::vmapi::v1::vmapi_client::VmapiClient<Channel>>,
    pub cloudapi_config: cloudapi::Config,
    pub dir: tempfile::TempDir,
    pub compute: Compute,
    /// The simulated node's backend (with `Compute::Sim`): what is on its instances'
    /// disks.
    pub sim: Option<std::sync::Arc<cn_agent::sim::SimBackend>>,
    shutdown: CancellationToken,
    _moray: MorayFixture,
}

#[derive(Default)]
pub struct Options {
    /// Serve HTTPS too, with a certificate made by `openssl req`.
    pub tls: bool,
    /// CNAPI, cn-agents and VMAPI behind CloudAPI, so machines can be made.
    pub compute: Compute,
}

/// The compute side of the test datacenter.
#[derive(Default)]
pub enum Compute {
    /// No VMAPI: machine endpoints answer 503.
    #[default]
    None,
    /// One simulated compute node (cn-agent's `sim` backend).
    Sim,
    /// One real node: cn-agent's `linux` backend, instances on a test bridge.
    Linux(Box<LinuxHost>),
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Stack {
        triton_cli();
        let moray = MorayFixture::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let shutdown = CancellationToken::new();
        let moray_url = moray.url().to_string();
        let ufds = ::ufds::start(
            ::ufds::Config {
                listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("UFDS starts")
        .addr;
        let papi = ::papi::start(
            ::papi::Config {
                listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("PAPI starts");
        let imgapi = ::imgapi::start(
            ::imgapi::Config {
                listen: "127.0.0.1:0".into(),
                http_listen: "127.0.0.1:0".into(),
                moray_url: moray_url.clone(),
                data_dir: dir.path().join("imgapi").display().to_string(),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("IMGAPI starts");
        let mut napi_config = napi::Config {
            listen: "127.0.0.1:0".into(),
            moray_url: moray_url.clone(),
            admin_uuid: ADMIN_UUID.into(),
            ..Default::default()
        };
        napi_config.seed.enabled = true;
        if let Compute::Linux(host) = &options.compute {
            // The external network is the test bridge's subnet, so the host reaches
            // instances on their IPs.
            let s = host.subnet;
            napi_config.seed.external.subnet = format!("10.99.{s}.0/24");
            napi_config.seed.external.provision_start_ip = format!("10.99.{s}.10");
            napi_config.seed.external.provision_end_ip = format!("10.99.{s}.250");
            napi_config.seed.external.gateway = format!("10.99.{s}.1");
        }
        let napi = napi::start(napi_config, shutdown.clone())
            .await
            .expect("NAPI starts");
        let (vmapi_addr, sim) = match &options.compute {
            Compute::None => (None, None),
            compute => {
                let (addr, sim) = start_compute(
                    compute,
                    &moray_url,
                    ufds,
                    papi.addr,
                    imgapi.addr,
                    imgapi.http_addr,
                    napi.addr,
                    &shutdown,
                )
                .await;
                (Some(addr), sim)
            }
        };

        let mut config = cloudapi::Config {
            listen: "127.0.0.1:0".into(),
            datacenter: "coal-test".into(),
            ufds_url: format!("http://{ufds}"),
            papi_url: format!("http://{}", papi.addr),
            imgapi_url: format!("http://{}", imgapi.addr),
            napi_url: format!("http://{}", napi.addr),
            // Without compute nothing listens there: machine endpoints answer 503.
            vmapi_url: vmapi_addr
                .map(|a| format!("http://{a}"))
                .unwrap_or_else(|| "http://127.0.0.1:9".into()),
            cnapi_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        };
        if options.tls {
            let (cert, key) = self_signed_certificate(dir.path());
            config.tls_listen = "127.0.0.1:0".into();
            config.tls_cert = cert.display().to_string();
            config.tls_key = key.display().to_string();
        }
        let running = cloudapi::start(config.clone(), shutdown.clone())
            .await
            .expect("CloudAPI starts");
        let connect = |addr: SocketAddr| async move {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("client connects")
        };
        Stack {
            cloudapi: running.addr.expect("plain HTTP listener"),
            tls: running.tls_addr,
            ufds: UfdsClient::new(connect(ufds).await),
            papi: PapiClient::new(connect(papi.addr).await),
            imgapi: ImgapiClient::new(connect(imgapi.addr).await),
            napi: NapiClient::new(connect(napi.addr).await),
            vmapi: match vmapi_addr {
                Some(a) => Some(triton_proto::vmapi::v1::vmapi_client::VmapiClient::new(
                    connect(a).await,
                )),
                None => None,
            },
            cloudapi_config: config,
            dir,
            compute: options.compute,
            sim,
            shutdown,
            _moray: moray,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.cloudapi)
    }

    /// An account with an SSH key of `key_type` (`rsa`, `ecdsa-256`, `ecdsa-384`,
    /// `ecdsa-521`, `ed25519`) in its own `$HOME/.ssh`, registered in UFDS.
    pub async fn tenant(&self, login: &str, key_type: &str) -> Tenant {
        let account = self
            .ufds
            .clone()
            .create_account(ufds::CreateAccountRequest {
                login: login.into(),
                email: format!("{login}@example.com"),
                approved_for_provisioning: true,
                ..Default::default()
            })
            .await
            .expect("CreateAccount")
            .into_inner();
        let home = tempfile::tempdir().expect("home dir");
        let ssh = home.path().join(".ssh");
        std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
        let key_path = ssh.join(format!("id_{}", key_type.replace('-', "_")));
        ssh_keygen(&key_path, key_type);
        let public = std::fs::read_to_string(key_path.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", key_path.display())))
            .expect("public key");
        let key = self
            .ufds
            .clone()
            .create_key(ufds::CreateKeyRequest {
                account: account.uuid.clone(),
                name: "id".into(),
                key: public.trim().into(),
            })
            .await
            .expect("CreateKey")
            .into_inner();
        Tenant {
            login: login.into(),
            uuid: account.uuid,
            home,
            key_path,
            fingerprint: key.fingerprint,
            url: self.url(),
            insecure: false,
        }
    }

    /// Seeds a public package.
    pub async fn package(&self, name: &str, ram: u64, owners: &[&str]) -> papi::Package {
        self.papi
            .clone()
            .create_package(papi::CreatePackageRequest {
                uuid: String::new(),
                fields: Some(papi::PackageFields {
                    name: Some(name.into()),
                    version: Some("1.0.0".into()),
                    active: Some(true),
                    max_physical_memory: Some(ram),
                    max_swap: Some(ram * 2),
                    quota: Some(10240),
                    cpu_cap: Some(100),
                    max_lwps: Some(4000),
                    zfs_io_priority: Some(100),
                    owner_uuids: if owners.is_empty() {
                        None
                    } else {
                        Some(papi::UuidList {
                            uuids: owners.iter().map(|s| s.to_string()).collect(),
                        })
                    },
                    ..Default::default()
                }),
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
    ) -> imgapi::Image {
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &data);
        let sha1: String = sha1.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let manifest = imgapi::Image {
            v: 2,
            uuid: uuid::Uuid::new_v4().to_string(),
            owner: owner.into(),
            name: name.into(),
            version: version.into(),
            public,
            r#type: "lxd".into(),
            os: "linux".into(),
            files: vec![imgapi::ImageFile {
                sha1,
                size: data.len() as u64,
                compression: "gzip".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut msgs = vec![imgapi::ImportImageRequest {
            part: Some(imgapi::import_image_request::Part::Header(
                imgapi::ImportImageHeader {
                    manifest: Some(manifest),
                    activate: true,
                },
            )),
        }];
        msgs.push(imgapi::ImportImageRequest {
            part: Some(imgapi::import_image_request::Part::Chunk(data)),
        });
        self.imgapi
            .clone()
            .import_image(futures::stream::iter(msgs))
            .await
            .expect("ImportImage")
            .into_inner()
    }
}

impl Stack {
    /// A VM as VMAPI holds it.
    pub async fn vm(&self, uuid: &str) -> triton_proto::vmapi::v1::Vm {
        self.vmapi
            .clone()
            .expect("a stack with compute")
            .get_vm(triton_proto::vmapi::v1::GetVmRequest {
                uuid: uuid.into(),
                owner_uuid: String::new(),
            })
            .await
            .expect("GetVm")
            .into_inner()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_compute(
    compute: &Compute,
    moray_url: &str,
    ufds: SocketAddr,
    papi: SocketAddr,
    imgapi: SocketAddr,
    imgapi_http: SocketAddr,
    napi: SocketAddr,
    shutdown: &CancellationToken,
) -> (
    SocketAddr,
    Option<std::sync::Arc<cn_agent::sim::SimBackend>>,
) {
    let mut sim = None;
    use triton_proto::cnapi::v1 as cnapi_pb;
    let heartbeat = Duration::from_millis(300);
    let settings = cnapi::service::Settings {
        heartbeat_lifetime: heartbeat * 10,
        reconcile_period: heartbeat,
        auto_setup: true,
        ..Default::default()
    };
    let store = cnapi::store::MorayStore::connect(moray_url)
        .await
        .expect("CNAPI store");
    let cnapi_run = cnapi::app::start(store, settings, "127.0.0.1:0", shutdown.clone())
        .await
        .expect("CNAPI starts");
    let cnapi_url = format!("http://{}", cnapi_run.addr);
    let uuid = uuid::Uuid::new_v4();
    let options = cn_agent::agent::AgentOptions {
        cnapi_url: cnapi_url.clone(),
        heartbeat_interval: heartbeat,
        ..Default::default()
    };
    match compute {
        Compute::None => unreachable!("no compute asked for"),
        Compute::Sim => {
            let backend = std::sync::Arc::new(cn_agent::sim::SimBackend::in_memory(
                cn_agent::sim::SimConfig {
                    delays: cn_agent::sim::SimDelays::default(),
                    nic_tags: vec!["admin".into(), "external".into()],
                },
            ));
            sim = Some(backend.clone());
            cn_agent::agent::start(
                backend,
                move |agent_port| cn_agent::sysinfo::NodeFacts::Sim {
                    uuid,
                    hostname: "sim0".into(),
                    ram_mib: 65536,
                    cpus: 16,
                    disk_bytes: 4 << 40,
                    nic_tags: vec!["admin".into(), "external".into()],
                    datacenter: "coal-test".into(),
                    agent_port,
                    boot_time: 1_700_000_000,
                },
                options,
                shutdown.clone(),
            )
            .await
            .expect("sim cn-agent starts");
        }
        Compute::Linux(host) => {
            let backend = std::sync::Arc::new(
                cn_agent::linux::LinuxBackend::new(host.config.clone()).expect("linux backend"),
            );
            let state_dir = host.config.state_dir.clone();
            let nic_tags = host.config.bridges.clone();
            cn_agent::agent::start(
                backend,
                move |agent_port| cn_agent::sysinfo::NodeFacts::Real {
                    uuid,
                    state_dir,
                    nic_tags,
                    datacenter: "coal-test".into(),
                    agent_port,
                },
                options,
                shutdown.clone(),
            )
            .await
            .expect("linux cn-agent starts");
        }
    }
    let cnapi_client = triton_proto::cnapi::v1::cnapi_client::CnapiClient::new(
        tonic::transport::Endpoint::from_shared(cnapi_url.clone())
            .expect("url")
            .connect_lazy(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = cnapi_client
            .clone()
            .list_servers(cnapi_pb::ListServersRequest {
                setup: Some(true),
                status: "running".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().servers.len())
            .unwrap_or(0);
        if up == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the compute node did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let vmapi_run = vmapi::start(
        vmapi::Config {
            listen: "127.0.0.1:0".into(),
            moray_url: moray_url.into(),
            cnapi_url,
            napi_url: format!("http://{napi}"),
            imgapi_url: format!("http://{imgapi}"),
            imgapi_file_url: format!("http://{imgapi_http}"),
            papi_url: format!("http://{papi}"),
            ufds_url: format!("http://{ufds}"),
            instance_id: format!("vmapi-test-{uuid}"),
            job_lease_ms: 3000,
            reconcile_period_ms: 500,
            orphan_scan_ms: 1000,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("VMAPI starts");
    (vmapi_run.addr, sim)
}

/// A real compute node's host side: a bridge for the `external` nic tag on a free
/// 10.99.N.0/24, and run-unique names for cgroups, netns and links; dropping it removes
/// them all, also when a test fails. Needs root and /bin/busybox (busybox-static).
pub struct LinuxHost {
    pub config: cn_agent::linux::LinuxConfig,
    pub bridge: String,
    pub subnet: u8,
    _dir: tempfile::TempDir,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LinuxHost {
    pub fn new() -> LinuxHost {
        // SAFETY: geteuid(2) has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "real instances need root");
        assert!(
            Path::new("/bin/busybox").exists(),
            "the instance image is built from /bin/busybox: apt-get install busybox-static"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let routes = run("ip", &["-4", "route", "show"]);
        let mut subnet = u8::from_str_radix(&id[6..8], 16).unwrap_or(7);
        while routes.contains(&format!("10.99.{subnet}.")) {
            subnet = subnet.wrapping_add(1);
        }
        let bridge = format!("cb{}", &id[..6]);
        run("ip", &["link", "add", "name", &bridge, "type", "bridge"]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.99.{subnet}.1/24"),
                "dev",
                &bridge,
            ],
        );
        run("ip", &["link", "set", "dev", &bridge, "up"]);
        let config = cn_agent::linux::LinuxConfig {
            state_dir: dir.path().join("cn"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: format!("triton-ct-{}", &id[..6]),
            netns_prefix: format!("ct{}-", &id[..6]),
            link_prefix: format!("c{}", &id[..3]),
            bridges: [("external".to_string(), bridge.clone())].into(),
            create_bridges: false,
        };
        LinuxHost {
            config,
            bridge,
            subnet,
            _dir: dir,
        }
    }

    /// A gzip'd tar root: busybox, and an init that serves HTTP on port 80.
    pub fn image_tarball(&self) -> Vec<u8> {
        let root = self._dir.path().join("rootfs");
        for sub in ["bin", "sbin", "www", "etc", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "httpd", "hostname", "sleep", "cat", "ls", "ip", "ps"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        std::fs::write(
            root.join("www/index.html"),
            "hello from a triton instance\n",
        )
        .expect("index");
        let init = root.join("sbin/init");
        // pid 1 ignores SIGTERM unless it handles it: this one does, so a stop takes a
        // moment instead of the whole grace period.
        std::fs::write(
            &init,
            "#!/bin/sh\n/bin/httpd -f -p 80 -h /www &\ntrap 'kill $!; exit 0' TERM\nwait\n",
        )
        .expect("init");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let tarball = self._dir.path().join("image.tar.gz");
        run(
            "tar",
            &[
                "-czf",
                tarball.to_str().expect("utf-8"),
                "-C",
                root.to_str().expect("utf-8"),
                ".",
            ],
        );
        std::fs::read(&tarball).expect("read tarball")
    }

    /// The root of a running instance as the host sees it (`/proc/<pid>/root` of one of
    /// its processes).
    pub fn instance_root(&self, uuid: &str) -> Option<PathBuf> {
        self.cgroup_dirs().iter().find_map(|dir| {
            let procs = std::fs::read_to_string(dir.join(uuid).join("cgroup.procs")).ok()?;
            let pid = procs.lines().next()?.trim().to_string();
            Some(PathBuf::from(format!("/proc/{pid}/root")))
        })
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return vec![root.join(&self.config.cgroup_parent)];
        }
        ["memory", "cpu", "cpuacct", "pids"]
            .iter()
            .map(|c| root.join(c).join(&self.config.cgroup_parent))
            .collect()
    }
}

impl Drop for LinuxHost {
    fn drop(&mut self) {
        cn_agent::linux::leftovers::remove_all(&self.config, &self.bridge);
    }
}

/// Whether `ip` answers HTTP on port 80 with the instance's page.
pub async fn answers_http(ip: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(format!("{ip}:80")),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).contains("hello from a triton instance")
}

/// The `triton` CLI, or a failure saying how to install it.
pub fn triton_cli() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("triton");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the `triton` CLI is not installed: these tests drive the real node-triton client; \
         install it with `npm install -g triton@7` (node and npm are needed)"
    );
}

fn ssh_keygen(path: &Path, key_type: &str) {
    let mut cmd = std::process::Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", "cloudapi-test", "-f"])
        .arg(path);
    match key_type {
        "rsa" => cmd.args(["-t", "rsa", "-b", "2048", "-m", "PEM"]),
        "ecdsa-256" => cmd.args(["-t", "ecdsa", "-b", "256", "-m", "PEM"]),
        "ecdsa-384" => cmd.args(["-t", "ecdsa", "-b", "384", "-m", "PEM"]),
        "ecdsa-521" => cmd.args(["-t", "ecdsa", "-b", "521", "-m", "PEM"]),
        "ed25519" => cmd.args(["-t", "ed25519"]),
        other => panic!("unknown key type {other}"),
    };
    let out = cmd
        .output()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cloudapi-cert.pem");
    let key = dir.join("cloudapi-key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cloudapi.coal",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (install openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A tenant: an account, its key, and a `$HOME` the `triton` CLI finds the key in.
pub struct Tenant {
    pub login: String,
    pub uuid: String,
    pub home: tempfile::TempDir,
    pub key_path: PathBuf,
    /// MD5, colon-hex: the keyId the CLI signs with.
    pub fingerprint: String,
    pub url: String,
    pub insecure: bool,
}

/// What one `triton` run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// A list printed with `-j`: one JSON object per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The output as JSON (`-j`): one document, or one per line.
    pub fn json(&self) -> Value {
        if let Ok(v) = serde_json::from_str(&self.stdout) {
            return v;
        }
        Value::Array(
            self.stdout
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect(),
        )
    }
}

impl Tenant {
    /// Runs `triton <args>` as this tenant, in a fresh environment.
    pub async fn triton(&self, args: &[&str]) -> CliOutput {
        let mut cmd = tokio::process::Command::new(triton_cli());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TRITON_URL", &self.url)
            .env("TRITON_ACCOUNT", &self.login)
            .env("TRITON_KEY_ID", &self.fingerprint)
            .kill_on_drop(true);
        if self.insecure {
            cmd.env("TRITON_TLS_INSECURE", "1");
        }
        let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .expect("triton finishes within 10 minutes")
            .expect("triton runs");
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `triton <args>`, which must succeed.
    pub async fn ok(&self, args: &[&str]) -> CliOutput {
        let out = self.triton(args).await;
        assert!(
            out.success,
            "triton {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out
    }

    /// `triton <args>`, which must fail; its output.
    pub async fn fails(&self, args: &[&str]) -> CliOutput {
        let out = self.triton(args).await;
        assert!(
            !out.success,
            "triton {} should fail but printed:\n{}",
            args.join(" "),
            out.stdout
        );
        out
    }
}

// ------------------------------------------------------------------ raw HTTP

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    /// Asserts a Triton error body with `code` and `status`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        let body = self.json();
        assert_eq!(body["code"], code, "body: {}", self.body);
        body["message"].as_str().unwrap_or_default().to_string()
    }
}

/// Sends one HTTP/1.1 request (Connection: close) and reads the whole response.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to CloudAPI");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

/// An Ed25519 key made in the test, registered (or not) with an account, that signs
/// requests by hand.
impl Stack {
    /// A new key of `login`'s account (uuid `account`), registered in UFDS, and a
    /// function giving `Date` and `Authorization` headers signed with it now: for
    /// requests made by hand, where the CLI cannot send what a test needs.
    pub async fn hand_signer(
        &self,
        login: &str,
        account: &str,
    ) -> impl Fn() -> Vec<(&'static str, String)> + use<> {
        let key = HandKey::new();
        let fp = self
            .ufds
            .clone()
            .create_key(ufds::CreateKeyRequest {
                account: account.to_string(),
                name: "hand".into(),
                key: key.openssh.clone(),
            })
            .await
            .expect("key created")
            .into_inner()
            .fingerprint;
        let key_id = format!("/{login}/keys/{fp}");
        move || key.sign(&key_id, 0)
    }
}

pub struct HandKey {
    pub pair: ring::signature::Ed25519KeyPair,
    pub openssh: String,
}

impl HandKey {
    pub fn new() -> HandKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let mut blob = Vec::new();
        for part in [b"ssh-ed25519".as_slice(), pair.public_key().as_ref()] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        let openssh = format!(
            "ssh-ed25519 {} hand@test",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        HandKey { pair, openssh }
    }

    /// `Date` and `Authorization` headers for a request signed with this key as
    /// `key_id`, with the date `offset_secs` from now.
    pub fn sign(&self, key_id: &str, offset_secs: i64) -> Vec<(&'static str, String)> {
        let now = std::time::SystemTime::now();
        let when = if offset_secs >= 0 {
            now + Duration::from_secs(offset_secs as u64)
        } else {
            now - Duration::from_secs((-offset_secs) as u64)
        };
        let date = httpdate::fmt_http_date(when);
        let sig = self.pair.sign(format!("date: {date}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        vec![
            ("Date", date),
            (
                "Authorization",
                format!(
                    r#"Signature keyId="{key_id}",algorithm="ed25519-sha512",headers="date",signature="{sig}""#
                ),
            ),
        ]
    }
}
