//! The linux test host shared by the linux tests: root and busybox checks, a temp dir,
//! a free /24 per bridge, the bridges with the host on their .1, a `LinuxConfig` whose
//! names are unique to the run (each test has its own prefixes, so tests running in
//! parallel never collide), the busybox test image, and cleanup on drop (also when the
//! test fails).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cn_agent::ImageSource;
use cn_agent::linux::LinuxConfig;
use uuid::Uuid;

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
    pub create_bridges: bool,
    pub image: Image<'a>,
}

/// A bridge of the host for a nic tag.
pub struct BridgeSetup<'a> {
    pub nic_tag: &'a str,
    /// The start of its name, before the run's id.
    pub stem: &'a str,
    /// The second octet of its 10.X.Y.0/24.
    pub net: u8,
    /// Which two hex digits of the run's id seed its third octet.
    pub seed: std::ops::Range<usize>,
}

/// The busybox test image: directories, applets, and the web root's index.
pub struct Image<'a> {
    pub dirs: &'a [&'a str],
    pub applets: &'a [&'a str],
    pub index: &'a str,
}

pub struct Bridge {
    pub nic_tag: String,
    pub name: String,
    /// 10.`net`.`subnet`.0/24
    pub net: u8,
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

pub struct Host {
    pub config: LinuxConfig,
    pub image: ImageSource,
    pub bridges: Vec<Bridge>,
    pub dir: tempfile::TempDir,
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A third octet of 10.`net` from `start` on that no route on this machine uses yet.
fn free_subnet(routes: &str, net: u8, start: u8) -> u8 {
    let mut s = start;
    while routes.contains(&format!("10.{net}.{s}.")) {
        s = s.wrapping_add(1);
    }
    s
}

impl Host {
    pub fn set_up(setup: &Setup) -> Host {
        let who = setup.who;
        // SAFETY: geteuid(2) has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "{who} needs root");
        assert!(
            Path::new("/bin/busybox").exists(),
            "{who} builds its image from /bin/busybox: apt-get install busybox-static"
        );
        let dir = tempfile::tempdir().unwrap();
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
                    u8::from_str_radix(&id[b.seed.clone()], 16).unwrap(),
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
        };
        let image = ImageSource {
            image_uuid: Uuid::new_v4(),
            path: build_image(dir.path(), &setup.image),
        };
        let host = Host {
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
}

impl Drop for Host {
    fn drop(&mut self) {
        cn_agent::linux::leftovers::remove_all(&self.config, &self.bridges[0].name);
        for b in &self.bridges[1..] {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &b.name])
                .output();
        }
    }
}

/// busybox, its applets, and a web root for httpd as pid 1.
pub fn build_image(dir: &Path, image: &Image) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in image.dirs {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in image.applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), image.index).unwrap();
    let tarball = dir.join("image.tar.gz");
    run(
        "tar",
        &[
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            root.to_str().unwrap(),
            ".",
        ],
    );
    tarball
}
