//! A booter test bed: bridges (admin, another network, a rack behind a relay), NAPI and
//! CNAPI of a test datacenter with the admin networks on those bridges, dhcpd on the admin
//! bridge, and client namespaces plugged into the bridges.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dc_testkit::Dc;
use dc_testkit::linux::{BridgeSetup, Image, LinuxHost, Setup};
use tokio_util::sync::CancellationToken;
use triton_proto::napi::v1 as napi_pb;

pub mod napi_dc;

/// Debian's iPXE binaries, which dhcpd serves.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";
/// The platform the test's boot parameters name.
pub const PLATFORM: &str = "test-20261206";

pub struct Bed {
    pub host: LinuxHost,
    pub dc: Dc,
    pub booter: booter::Running,
    pub config: booter::Config,
    pub data_dir: tempfile::TempDir,
    pub admin_net: napi_pb::Network,
    pub rack_net: napi_pb::Network,
    pub other_net: napi_pb::Network,
    pub stop: CancellationToken,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[track_caller]
fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {out:?}");
    out
}

fn ip(args: &[&str]) {
    check(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args).output(),
    );
}

impl Bed {
    /// `stem`: two letters unique to the test file (names of links and namespaces).
    pub async fn start(stem: &str) -> Bed {
        for (program, package) in [
            ("/usr/sbin/dhclient", "isc-dhcp-client"),
            ("/usr/bin/tftp", "tftp-hpa"),
            ("/usr/sbin/dhcrelay", "isc-dhcp-relay"),
            ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
        ] {
            assert!(
                Path::new(program).exists(),
                "the booter tests need {program}: apt-get install {package} (scripts/lib.sh)"
            );
        }
        let host = LinuxHost::set_up(&Setup {
            who: "the booter tests",
            cgroup: "triton-test-",
            netns: &format!("b{stem}"),
            link: &format!("b{stem}"),
            bridges: &[
                BridgeSetup {
                    nic_tag: "admin",
                    stem: &format!("b{stem}a"),
                    net: 95,
                    seed: 6..8,
                },
                BridgeSetup {
                    nic_tag: "external",
                    stem: &format!("b{stem}x"),
                    net: 94,
                    seed: 8..10,
                },
                BridgeSetup {
                    nic_tag: "rack",
                    stem: &format!("b{stem}r"),
                    net: 93,
                    seed: 10..12,
                },
            ],
            create_bridges: false,
            image: Image::web(&["sh"]),
        });
        let dc = napi_dc::start(&["admin", "external"]).await;
        let mut napi = dc.napi();
        let network = |name: &str, tag: &str, net: u8, subnet: u8, gateway: u8| {
            napi_pb::CreateNetworkRequest {
                name: name.into(),
                subnet: format!("10.{net}.{subnet}.0/24"),
                provision_start_ip: format!("10.{net}.{subnet}.100"),
                provision_end_ip: format!("10.{net}.{subnet}.200"),
                nic_tag: tag.into(),
                gateway: Some(format!("10.{net}.{subnet}.{gateway}")),
                resolvers: vec![format!("10.{net}.{subnet}.53")],
                ..Default::default()
            }
        };
        let [a, x, r] = [0, 1, 2].map(|i| (host.bridges[i].net, host.bridges[i].subnet));
        let admin_net = napi
            .create_network(network("admin", "admin", a.0, a.1, 1))
            .await
            .unwrap()
            .into_inner();
        let other_net = napi
            .create_network(network("external", "external", x.0, x.1, 1))
            .await
            .unwrap()
            .into_inner();
        // The rack's network is an admin network (nic tag admin) behind a relay at .2.
        let rack_net = napi
            .create_network(network("admin-rack1", "admin", r.0, r.1, 2))
            .await
            .unwrap()
            .into_inner();

        let data_dir = tempfile::tempdir().unwrap();
        let os = data_dir.path().join("os").join(PLATFORM);
        std::fs::create_dir_all(&os).unwrap();
        std::fs::write(os.join("vmlinuz"), kernel_bytes()).unwrap();
        std::fs::write(os.join("initrd"), b"an initrd\n").unwrap();

        let server_ip = host.bridges[0].gateway();
        let config = booter::Config {
            server_ip: server_ip.to_string(),
            interface: host.bridges[0].name.clone(),
            tftp_listen: format!("{server_ip}:69"),
            http_listen: format!("{server_ip}:0"),
            napi_url: format!("http://{}", dc.addr(dc_testkit::Service::Napi)),
            cnapi_url: format!("http://{}", dc.addr(dc_testkit::Service::Cnapi)),
            admin_uuid: dc_testkit::ADMIN_UUID.into(),
            data_dir: data_dir.path().display().to_string(),
            ipxe_dir: IPXE_DIR.into(),
            resolvers: vec!["10.0.0.53".into()],
            dns_domain: "test.example".into(),
            lease_time_secs: 3600,
            ..booter::Config::default()
        };
        let stop = CancellationToken::new();
        let booter = booter::start(config.clone(), stop.clone())
            .await
            .expect("dhcpd starts");
        Bed {
            host,
            dc,
            booter,
            config,
            data_dir,
            admin_net,
            rack_net,
            other_net,
            stop,
        }
    }

    pub fn server_ip(&self) -> Ipv4Addr {
        self.host.bridges[0].gateway()
    }

    /// A namespace `name` with `eth0` (MAC `mac`) plugged into bridge `bridge`.
    pub fn client(&self, name: &str, bridge: usize, mac: &str) -> Client {
        let ns = format!("{}{name}", self.host.config.netns_prefix);
        let outside = format!("{}{name}", self.host.config.link_prefix);
        let inside = format!("{outside}i");
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&[
            "link",
            "set",
            &outside,
            "master",
            &self.host.bridges[bridge].name,
            "up",
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        let dir = self.host.dir.path().join(format!("client-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let c = Client { ns, dir };
        c.run(&["ip", "link", "set", &inside, "name", "eth0"]);
        c.run(&["ip", "link", "set", "eth0", "address", mac]);
        c.run(&["ip", "link", "set", "eth0", "up"]);
        c.run(&["ip", "link", "set", "lo", "up"]);
        c
    }
}

/// The lease a client's script wrote (its `env`) into `out`, under the client's names
/// for the address, router, resolvers, boot file, server id, hostname and domain (a
/// value in single quotes, as dhclient's, unquoted); `None` without the file.
fn given(out: &Path, names: [&str; 7]) -> Option<Given> {
    let env = std::fs::read_to_string(out).ok()?;
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .trim_matches('\'')
            .to_string()
    };
    let [ip, router, dns, boot_file, server, hostname, domain] = names.map(get);
    Some(Given {
        ip,
        router,
        dns,
        boot_file,
        server,
        hostname,
        domain,
    })
}

/// Bytes that stand for a kernel: a few blocks of every byte value.
pub fn kernel_bytes() -> Vec<u8> {
    (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A network namespace of the test.
pub struct Client {
    pub ns: String,
    pub dir: PathBuf,
}

/// What a DHCP client was given, from its script's environment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Given {
    pub ip: String,
    pub router: String,
    pub dns: String,
    pub boot_file: String,
    pub server: String,
    pub hostname: String,
    pub domain: String,
}

impl Client {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        let out = check(
            &format!("{} {}", self.ns, args.join(" ")),
            self.cmd(args).output(),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// busybox `udhcpc` for one lease (3 DISCOVERs, 1 s apart), with `extra` arguments;
    /// `None` when it got none. The script sets the address on eth0.
    pub fn udhcpc(&self, extra: &[&str]) -> Option<Given> {
        let (out, script) = self.hook("udhcpc", |out| {
            format!(
                "#!/bin/sh\n\
                 [ \"$1\" = bound ] || exit 0\n\
                 env > {out}\n\
                 /bin/busybox ip addr flush dev \"$interface\"\n\
                 /bin/busybox ip addr add \"$ip/$mask\" dev \"$interface\"\n",
                out = out.display()
            )
        });
        let mut args = vec![
            "/bin/busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-f",
            "-t",
            "3",
            "-T",
            "1",
            "-s",
            script.to_str().unwrap(),
        ];
        args.extend(extra);
        let status = self.cmd(&args).output().unwrap();
        if !status.status.success() {
            return None;
        }
        given(
            &out,
            [
                "ip",
                "router",
                "dns",
                "boot_file",
                "serverid",
                "hostname",
                "domain",
            ],
        )
    }

    /// ISC `dhclient -1` (one try); `None` when it got no lease.
    pub fn dhclient(&self) -> Option<Given> {
        let (out, script) = self.hook("dhclient", |out| {
            format!(
                "#!/bin/sh\ncase \"$reason\" in BOUND|REBOOT) env > {} ;; esac\nexit 0\n",
                out.display()
            )
        });
        let pid = self.dir.join("dhclient.pid");
        let lease = self.dir.join("dhclient.leases");
        let run = self
            .cmd(&[
                "dhclient",
                "-1",
                "-4",
                "-sf",
                script.to_str().unwrap(),
                "-pf",
                pid.to_str().unwrap(),
                "-lf",
                lease.to_str().unwrap(),
                "eth0",
            ])
            .output()
            .unwrap();
        // dhclient forks to keep the lease: stop it.
        if let Ok(p) = std::fs::read_to_string(&pid) {
            let _ = Command::new("kill").arg(p.trim()).output();
        }
        if !run.status.success() {
            return None;
        }
        given(
            &out,
            [
                "new_ip_address",
                "new_routers",
                "new_domain_name_servers",
                "new_filename",
                "new_dhcp_server_identifier",
                "new_host_name",
                "new_domain_name",
            ],
        )
    }

    /// tftp-hpa's `get` of `remote` from `server` in octet mode: the file's bytes, or the
    /// client's output when it failed.
    pub fn tftp_get(&self, server: Ipv4Addr, remote: &str) -> Result<Vec<u8>, String> {
        let server = server.to_string();
        self.fetch("tftp.out", |local| {
            ["tftp", "-m", "binary", &server, "-c", "get", remote, local].map(String::from)
        })
    }

    /// busybox `tftp -g` with blksize `blksize` (and tsize): the file's bytes, or the
    /// client's output when it failed.
    pub fn busybox_tftp_get(
        &self,
        server: Ipv4Addr,
        remote: &str,
        blksize: u32,
    ) -> Result<Vec<u8>, String> {
        let (server, blksize) = (server.to_string(), blksize.to_string());
        self.fetch("tftp-bb.out", |local| {
            [
                "/bin/busybox",
                "tftp",
                "-g",
                "-b",
                &blksize,
                "-r",
                remote,
                "-l",
                local,
                &server,
            ]
            .map(String::from)
        })
    }

    /// The path of `name` in the namespace's directory, any file of an earlier run there
    /// removed.
    fn fresh(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A DHCP client's hook script `<client>.sh`, made of `script` given the fresh file
    /// `<client>.env` it writes the lease's environment to: (the env file, the script).
    fn hook(&self, client: &str, script: impl FnOnce(&Path) -> String) -> (PathBuf, PathBuf) {
        let out = self.fresh(&format!("{client}.env"));
        let path = self.dir.join(format!("{client}.sh"));
        write_script(&path, &script(&out));
        (out, path)
    }

    /// A client run in the namespace that fetches into the file `name` of its directory
    /// (`args` given that file's path, and removed before): the file's bytes, or the
    /// client's output when it failed.
    fn fetch<const N: usize>(
        &self,
        name: &str,
        args: impl FnOnce(&str) -> [String; N],
    ) -> Result<Vec<u8>, String> {
        let local = self.fresh(name);
        let args = args(local.to_str().unwrap());
        let out = self
            .cmd(&args.each_ref().map(String::as_str))
            .output()
            .unwrap();
        read_back(&local, &out)
    }
}

fn read_back(local: &Path, out: &Output) -> Result<Vec<u8>, String> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match std::fs::read(local) {
        Ok(b) if out.status.success() && !text.contains("Error") => Ok(b),
        _ => Err(text),
    }
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
