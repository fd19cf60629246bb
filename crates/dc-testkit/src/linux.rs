//! The host side of linux compute nodes for tests and benches: root and busybox checks,
//! a temp dir, a free /24 per bridge with the host on its .1, a `LinuxConfig` whose names
//! are unique to the run (each test has its own prefixes, so tests running in parallel
//! never collide), a busybox image, and cleanup on drop (also when the test fails).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cn_agent::linux::LinuxConfig;
use cn_agent::{ImageSource, InstanceSpec, NicSpec};
use uuid::Uuid;

use crate::run;

/// What differs between the tests' hosts.
pub struct Setup<'a> {
    /// Who needs root and busybox, for the messages of the checks.
    pub who: &'a str,
    /// The start of the cgroup parent, before the run's id (`triton-test-`).
    pub cgroup: &'a str,
    /// The start of the netns prefix, before the run's id.
    pub netns: &'a str,
    /// The start of the link prefix, before the first 3 characters of the run's id.
    pub link: &'a str,
    /// The bridges to make; the first one's is what `remove_all` is given.
    pub bridges: &'a [BridgeSetup<'a>],
    /// Whether the backend makes missing bridges itself (the test's are made here either way).
    pub create_bridges: bool,
    /// The image to build.
    pub image: Image<'a>,
}

/// A bridge of the host for a nic tag.
pub struct BridgeSetup<'a> {
    /// The nic tag it carries.
    pub nic_tag: &'a str,
    /// The start of its name, before the run's id.
    pub stem: &'a str,
    /// The second octet of its 10.X.Y.0/24.
    pub net: u8,
    /// Which two hex digits of the run's id seed its third octet.
    pub seed: std::ops::Range<usize>,
}

/// The busybox test image: directories, applets, the web root's index and, when given,
/// `/sbin/init`.
pub struct Image<'a> {
    /// Directories made under the root.
    pub dirs: &'a [&'a str],
    /// busybox applets linked in `/bin`.
    pub applets: &'a [&'a str],
    /// `/www/index.html`.
    pub index: &'a str,
    /// `/sbin/init`, when the image has one.
    pub init: Option<&'a str>,
}

impl<'a> Image<'a> {
    /// An image of busybox's `applets` with `/www/index.html` [`NODE_PAGE`] for httpd, a
    /// mount point `/mnt`, and no `/sbin/init` (instances name their pid 1).
    pub fn web(applets: &'a [&'a str]) -> Image<'a> {
        Image {
            dirs: &["bin", "www", "etc", "tmp", "mnt"],
            applets,
            index: NODE_PAGE,
            init: None,
        }
    }
}

/// The page every instance of [`LinuxHost::node`]'s image serves on port 80.
pub const NODE_PAGE: &str = "hello from a triton instance\n";

/// pid 1 ignores SIGTERM unless it handles it: this one does, so a stop takes a moment
/// instead of the whole grace period.
const NODE_INIT: &str =
    "#!/bin/sh\n/bin/httpd -f -p 80 -h /www &\ntrap 'kill $!; exit 0' TERM\nwait\n";

/// A linux compute node of a test datacenter ([`crate::Options::linux`]).
#[derive(Clone)]
pub struct LinuxNode {
    /// Its backend's config.
    pub config: LinuxConfig,
    /// The third octet of its first bridge's 10.99.N.0/24.
    pub subnet: u8,
}

/// A bridge the host made for the test.
pub struct Bridge {
    /// The nic tag it carries.
    pub nic_tag: String,
    /// Its name (run-unique).
    pub name: String,
    /// 10.`net`.`subnet`.0/24
    pub net: u8,
    /// The third octet of its subnet.
    pub subnet: u8,
}

impl Bridge {
    /// The host's address on it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, self.subnet, 1)
    }

    /// The address of the `n`th instance on it.
    pub fn ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, self.subnet, 10 + n)
    }
}

/// Everything a test made on the host; dropping it removes all of it.
pub struct LinuxHost {
    /// The `linux` backend's config: run-unique names, the bridges.
    pub config: LinuxConfig,
    /// The busybox image.
    pub image: ImageSource,
    /// The bridges made, in the order asked for.
    pub bridges: Vec<Bridge>,
    /// The temp dir the state and the image live in.
    pub dir: tempfile::TempDir,
}

/// A third octet of 10.`net` from `start` on that no route on this machine uses yet.
fn free_subnet(routes: &str, net: u8, start: u8) -> u8 {
    let mut s = start;
    while routes.contains(&format!("10.{net}.{s}.")) {
        s = s.wrapping_add(1);
    }
    s
}

impl LinuxHost {
    /// Checks for root and busybox, makes the bridges and the image.
    pub fn set_up(setup: &Setup) -> LinuxHost {
        let who = setup.who;
        // SAFETY: geteuid(2) has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "{who} needs root");
        assert!(
            Path::new("/bin/busybox").exists(),
            "{who} builds its image from /bin/busybox: apt-get install busybox-static"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let id = Uuid::new_v4().simple().to_string();
        let routes = run("ip", &["-4", "route", "show"]);
        let bridges: Vec<Bridge> = setup
            .bridges
            .iter()
            .map(|b| Bridge {
                nic_tag: b.nic_tag.to_string(),
                name: format!("{}{}", b.stem, &id[..6]),
                net: b.net,
                subnet: free_subnet(
                    &routes,
                    b.net,
                    u8::from_str_radix(&id[b.seed.clone()], 16).expect("hex digits"),
                ),
            })
            .collect();
        let config = LinuxConfig {
            state_dir: dir.path().join("state"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: format!("{}{}", setup.cgroup, &id[..6]),
            netns_prefix: format!("{}{}-", setup.netns, &id[..6]),
            link_prefix: format!("{}{}", setup.link, &id[..3]),
            bridges: bridges
                .iter()
                .map(|b| (b.nic_tag.clone(), b.name.clone()))
                .collect(),
            create_bridges: setup.create_bridges,
            tenant_services: Vec::new(),
            volmount_bin: Some(volmount_bin()),
        };
        let image = ImageSource {
            image_uuid: Uuid::new_v4(),
            path: build_image(dir.path(), &setup.image),
        };
        let host = LinuxHost {
            config,
            image,
            bridges,
            dir,
        };
        // The bridges are the test's; the host gets the .1 of each subnet.
        for b in &host.bridges {
            let name = b.name.as_str();
            run("ip", &["link", "add", "name", name, "type", "bridge"]);
            run(
                "ip",
                &["addr", "add", &format!("{}/24", b.gateway()), "dev", name],
            );
            run("ip", &["link", "set", "dev", name, "up"]);
        }
        host
    }

    /// The host of one compute node of a test datacenter: a bridge for `nic_tag` on a
    /// free 10.99.N.0/24, names starting with `stem` (`triton-<stem>t-` cgroups,
    /// `<stem>t` netns, `<stem>b` bridge), and an image whose init serves [`NODE_PAGE`]
    /// over HTTP on port 80.
    pub fn node(stem: &str, nic_tag: &str) -> LinuxHost {
        LinuxHost::set_up(&Setup {
            who: "a test with a linux compute node",
            cgroup: &format!("triton-{stem}t-"),
            netns: &format!("{stem}t"),
            link: stem,
            bridges: &[BridgeSetup {
                nic_tag,
                stem: &format!("{stem}b"),
                net: 99,
                seed: 6..8,
            }],
            create_bridges: false,
            image: Image {
                dirs: &["bin", "sbin", "www", "etc", "tmp"],
                applets: &[
                    "sh", "httpd", "hostname", "sleep", "cat", "ls", "ip", "ps", "ping",
                ],
                index: NODE_PAGE,
                init: Some(NODE_INIT),
            },
        })
    }

    /// The host of cn-agent's own linux tests and bench: one bridge for nic tag `admin` on
    /// a free 10.99.N.0/24 (which the backend may also make itself), names from the
    /// letter `stem` (`triton-test-` cgroups, `t<stem>` netns, `<stem>` links, `t<stem>b`
    /// bridge), and an image of busybox's `applets` whose `/www` holds [`NODE_PAGE`].
    pub fn admin(who: &str, stem: char, applets: &[&str]) -> LinuxHost {
        LinuxHost::set_up(&Setup {
            who,
            cgroup: "triton-test-",
            netns: &format!("t{stem}"),
            link: &stem.to_string(),
            bridges: &[BridgeSetup {
                nic_tag: "admin",
                stem: &format!("t{stem}b"),
                net: 99,
                seed: 6..8,
            }],
            create_bridges: true,
            image: Image::web(applets),
        })
    }

    /// The `n`th instance's NIC on bridge `bridge` (in the order asked for): primary, on
    /// the bridge's nic tag at .10+n, with the host's .1 as its gateway and resolver.
    pub fn nic(&self, bridge: usize, n: u8) -> NicSpec {
        let b = &self.bridges[bridge];
        NicSpec {
            interface: String::new(),
            mac: format!("02:{:02x}:00:{:02x}:00:{n:02x}", b.net, b.subnet),
            ip: Some(b.ip(n)),
            prefix_len: 24,
            gateway: Some(b.gateway()),
            resolvers: vec![b.gateway()],
            nic_tag: b.nic_tag.clone(),
            vlan_id: 0,
            mtu: 0,
            primary: true,
            vnet_id: 0,
            internet_nat: false,
            network_uuid: String::new(),
        }
    }

    /// An instance of the host's image named `hostname` with `nics`, httpd as pid 1
    /// ([`crate::node::instance_spec`]).
    pub fn spec(&self, hostname: &str, nics: Vec<NicSpec>) -> InstanceSpec {
        crate::node::instance_spec(
            self.image.image_uuid,
            hostname,
            nics,
            crate::node::httpd_init(),
        )
    }

    /// A compute node on this host, for [`crate::Options::linux`].
    pub fn node_options(&self) -> LinuxNode {
        LinuxNode {
            config: self.config.clone(),
            subnet: self.subnet(),
        }
    }

    /// A `linux` zone backend on this host.
    pub fn backend(&self) -> cn_agent::linux::LinuxBackend {
        cn_agent::linux::LinuxBackend::new(self.config.clone()).expect("linux backend")
    }

    /// The first bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridges[0].name
    }

    /// The third octet of the first bridge's subnet.
    pub fn subnet(&self) -> u8 {
        self.bridges[0].subnet
    }

    /// The address of the `n`th instance on the first bridge.
    pub fn ip(&self, n: u8) -> Ipv4Addr {
        self.bridges[0].ip(n)
    }

    /// The image's gzip'd tar.
    pub fn image_tarball(&self) -> Vec<u8> {
        std::fs::read(&self.image.path).expect("read the image tarball")
    }

    /// The test's cgroup directories (one on cgroup v2, one per controller on v1).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return vec![root.join(&self.config.cgroup_parent)];
        }
        ["memory", "cpu", "cpuacct", "pids"]
            .iter()
            .map(|c| root.join(c).join(&self.config.cgroup_parent))
            .collect()
    }

    /// The memory limit of instance `uuid`'s cgroup, in bytes.
    pub fn memory_limit(&self, uuid: &str) -> Option<u64> {
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new(&self.config.cgroup_parent).join(uuid);
        let file = if root.join("cgroup.controllers").exists() {
            root.join(rel).join("memory.max")
        } else {
            root.join("memory").join(rel).join("memory.limit_in_bytes")
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
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
}

impl Drop for LinuxHost {
    fn drop(&mut self) {
        cn_agent::linux::leftovers::remove_all(&self.config, &self.bridges[0].name);
        for b in &self.bridges[1..] {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &b.name])
                .output();
        }
    }
}

/// busybox, its applets, a web root for httpd and, when given, `/sbin/init`.
pub fn build_image(dir: &Path, image: &Image) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in image.dirs {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir in the image");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in image.applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .expect("link an applet");
    }
    std::fs::write(root.join("www/index.html"), image.index).expect("write the index");
    if let Some(init) = image.init {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join("sbin/init");
        std::fs::create_dir_all(root.join("sbin")).expect("mkdir sbin");
        std::fs::write(&path, init).expect("write init");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod init");
    }
    let tarball = dir.join("image.tar.gz");
    run(
        "tar",
        &[
            "-czf",
            tarball.to_str().expect("utf-8 path"),
            "-C",
            root.to_str().expect("utf-8 path"),
            ".",
        ],
    );
    tarball
}

/// Whether `ip` answers one ping within 2 seconds.
pub fn pings(ip: &str) -> bool {
    std::process::Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether `ip` answers HTTP on port 80 with [`NODE_PAGE`].
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
    String::from_utf8_lossy(&buf).contains(NODE_PAGE.trim())
}

/// The `volmount` program the workspace builds (instances' NFS volumes): in the target
/// directory, beside `deps/` where test executables live; built first if missing.
pub fn volmount_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable in <target>/<profile>/deps");
    let bin = profile.join("volmount");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "volmount", "--bin", "volmount"])
            .status()
            .expect("cargo build -p volmount");
        assert!(status.success(), "cargo build -p volmount failed");
    }
    bin
}
