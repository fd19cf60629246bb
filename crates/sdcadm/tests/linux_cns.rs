//! A second linux compute node's network namespace, made as `coal up --linux-cns 2`
//! makes it, on bridges of the test's own (as root): what a process started in it the
//! way CoaL starts that node's cn-agent sees, and what it reaches.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dc_testkit::linux::{BridgeSetup, Image, LinuxHost, Setup};
use sdcadm::coal::cns::{self, Names};
use sdcadm::coal::process::{self, Netns};
use sdcadm::deploy::Bridge;

/// Removes the node's namespace (and with it its veths) when the test ends.
struct NodeNetns(String);

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

#[test]
fn a_second_node_has_its_own_links_the_host_cgroups_and_reaches_the_host() {
    let host = LinuxHost::set_up(&Setup {
        who: "the linux compute node namespace test",
        cgroup: "triton-cnst-",
        netns: "cnst",
        link: "cnst",
        bridges: &[
            BridgeSetup {
                nic_tag: "admin",
                stem: "cnsa",
                net: 99,
                seed: 6..8,
            },
            BridgeSetup {
                nic_tag: "external",
                stem: "cnse",
                net: 88,
                seed: 8..10,
            },
            BridgeSetup {
                nic_tag: cns::UNDERLAY_TAG,
                stem: "cnsu",
                net: 100,
                seed: 10..12,
            },
        ],
        create_bridges: false,
        image: Image {
            dirs: &["bin", "www"],
            applets: &["sh"],
            index: "",
            init: None,
        },
    });
    let bridges: Vec<Bridge> = host
        .bridges
        .iter()
        .map(|b| Bridge {
            name: b.name.clone(),
            nic_tag: b.nic_tag.clone(),
            address: format!("{}/24", b.gateway()),
        })
        .collect();
    let names = Names {
        cgroup_parent: "triton-cnst".into(),
        netns_prefix: "cnst-".into(),
        link_prefix: "cn".into(),
    };
    let mut cn = cns::plan(2, "cn-agent", &names, &bridges)
        .unwrap()
        .pop()
        .unwrap();
    // The test's own namespace name, not CoaL's (a CoaL may be running).
    let ns = format!("cnsn{}", &host.bridges[0].name[4..]);
    cn.netns = Some(ns.clone());
    let _cleanup = NodeNetns(ns.clone());
    let admin_host = host.bridges[0].gateway();
    let underlay_host = host.bridges[2].gateway();
    assert_eq!(cn.admin_ip.octets()[3], 22);

    let made = cns::set_up(&cn, &bridges).unwrap();
    assert!(
        made.contains(&format!("network namespace {ns}")),
        "{made:?}"
    );
    assert!(
        made.iter().any(|m| m.starts_with(&format!("veth {ns}-ul"))),
        "{made:?}"
    );
    // A second time finds everything made.
    assert_eq!(cns::set_up(&cn, &bridges).unwrap(), Vec::<String>::new());

    // Started as CoaL starts the node's cn-agent.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let script = format!(
        "echo links: $(ls /sys/class/net); echo cgroups: $(ls /sys/fs/cgroup | wc -l); \
         /bin/busybox ping -c1 -W2 {admin_host} >/dev/null && echo admin ok; \
         /bin/busybox ping -c1 -W2 {underlay_host} >/dev/null && echo underlay ok"
    );
    let args = vec!["-c".to_string(), script];
    let (_, mut child) = process::spawn(&process::Spawn {
        program: std::path::Path::new("/bin/sh"),
        args: &args,
        env: &[],
        log: &log,
        run_as: None,
        cwd: dir.path(),
        netns: Some(&Netns {
            path: cn.netns_path().unwrap(),
            park: dir.path().join("cgroup"),
        }),
    })
    .unwrap();
    let status = child.wait().unwrap();
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {out}");
    let links = out
        .lines()
        .find_map(|l| l.strip_prefix("links: "))
        .unwrap_or_default();
    let mut links: Vec<&str> = links.split_whitespace().collect();
    links.sort();
    let mut want = vec![
        "lo",
        "underlay0",
        "up-admin",
        "up-external",
        &bridges[0].name,
        &bridges[1].name,
    ];
    want.sort();
    assert_eq!(links, want, "{out}");
    let host_cgroups = std::fs::read_dir("/sys/fs/cgroup").unwrap().count();
    assert!(
        out.contains(&format!("cgroups: {host_cgroups}\n")),
        "{out} (the host has {host_cgroups})"
    );
    assert!(out.contains("admin ok\n"), "{out}");
    assert!(out.contains("underlay ok\n"), "{out}");
    // The host reaches the node's agent address on the admin bridge.
    assert!(dc_testkit::linux::pings(&cn.admin_ip.to_string()));
    // The host's mounts are untouched by the node's.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir.path().join("cgroup").display().to_string()));
}
