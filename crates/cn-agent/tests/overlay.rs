//! The linux backend with an overlay: a real instance's fabric NIC is a port of its vnet's
//! bridge (made for it), guarded like every NIC, and the vnet's devices go with the
//! instance; a fabric NIC with `internet_nat` gets the node's NAT and reaches outside.
//! Learning across nodes is tested in `crates/dc-testkit/tests/fabrics.rs`.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;

use cn_agent::linux::LinuxBackend;
use cn_agent::linux::overlay::{
    NatConfig, Overlay, OverlayConfig, VXLAN_TABLE, bridge_name, nat_hub, nat_netns, vxlan_name,
};
use cn_agent::{NicSpec, ZoneBackend};
use dc_testkit::linux::LinuxHost;
use dc_testkit::run;
use tokio_util::sync::CancellationToken;

fn fabric_nic(vnet_id: u32) -> NicSpec {
    NicSpec {
        mac: "02:77:00:00:00:0a".into(),
        ip: Some(Ipv4Addr::new(10, 77, 0, 10)),
        prefix_len: 24,
        nic_tag: "sdc_overlay".into(),
        vlan_id: 2,
        mtu: 1400,
        primary: true,
        vnet_id,
        ..Default::default()
    }
}

/// Removes the vnet's devices however the test ends.
struct Devices(u32);

impl Drop for Devices {
    fn drop(&mut self) {
        for dev in [vxlan_name(self.0), bridge_name(self.0)] {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &dev])
                .output();
        }
    }
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[tokio::test]
async fn a_fabric_nic_joins_its_vnets_bridge_guarded_and_its_devices_go_with_it() {
    let h = LinuxHost::admin("the overlay test", 'v', &["sh", "httpd", "sleep"]);
    // A vnet id of this run's own, so parallel runs never share devices.
    let vnet = 0x70_0000 + u32::from(uuid::Uuid::new_v4().as_bytes()[0]) * 256 + 7;
    let _devices = Devices(vnet);
    let overlay = Overlay::new(
        OverlayConfig {
            underlay_ip: Ipv4Addr::LOCALHOST,
            portolan: "127.0.0.1:9".into(),
            nat: None,
        },
        None,
    )
    .expect("overlay");
    let b = LinuxBackend::with_overlay(h.config.clone(), Some(overlay.clone()))
        .expect("linux backend with an overlay");
    b.image_ensure_present(h.image.clone()).await.unwrap();

    // A vnet whose NIC is being plugged in is not pruned; once nothing holds it and no
    // port is in its bridge, it is.
    let (bridge, hold) = overlay.hold(vnet).unwrap();
    overlay.prune().unwrap();
    assert!(link_exists(&bridge), "a held vnet was pruned");
    drop(hold);
    overlay.prune().unwrap();
    assert!(!link_exists(&bridge), "an unused vnet's bridge is left");

    // A fabric NIC must name its fabric.
    let err = b
        .create(h.spec("novnet", vec![fabric_nic(0)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nics[0].vnet_id"), "{err}");

    let nic = fabric_nic(vnet);
    let spec = h.spec("fab", vec![nic.clone()]);
    let uuid = spec.uuid;
    b.create(spec).await.expect("an instance with a fabric NIC");
    let port = b.network().host_link(uuid, &nic, 0);
    let bridge = bridge_name(vnet);
    let ports = run("ip", &["-o", "link", "show", "master", &bridge]);
    assert!(ports.contains(&port), "{port} is not in {bridge}: {ports}");
    assert!(ports.contains(&vxlan_name(vnet)), "{ports}");
    assert!(
        b.network()
            .firewall()
            .guarded_ports()
            .unwrap()
            .contains(&port),
        "the fabric port is guarded"
    );
    let host_table = b.network().firewall().host_table;
    let rules = run("nft", &["list", "table", "inet", &host_table]);
    assert!(
        rules.contains("\"vb*\""),
        "vnet bridges are tenant bridges: {rules}"
    );
    assert_eq!(overlay.vnets().iter().filter(|v| **v == vnet).count(), 1);

    b.destroy(uuid).await.expect("destroy");
    assert!(!link_exists(&bridge), "{bridge} is left");
    assert!(!link_exists(&vxlan_name(vnet)), "the VXLAN device is left");
    assert!(!overlay.vnets().contains(&vnet));

    // Without an overlay a fabric NIC is an unknown nic tag, as before.
    let plain = h.backend();
    let err = plain
        .create(h.spec("nooverlay", vec![fabric_nic(vnet)]))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ValidationFailedError", "{err}");
    assert!(err.to_string().contains("sdc_overlay"), "{err}");
}

/// A veth on the host holding a test underlay address; removed on drop.
struct Underlay {
    link: String,
    ip: Ipv4Addr,
}

impl Underlay {
    fn new() -> Underlay {
        let id = uuid::Uuid::new_v4().as_bytes()[0];
        let link = format!("ulv{id:02x}");
        let ip = Ipv4Addr::new(198, 19, id, 1);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &link])
            .output();
        run(
            "ip",
            &[
                "link",
                "add",
                &link,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{link}p"),
            ],
        );
        run("ip", &["addr", "add", &format!("{ip}/32"), "dev", &link]);
        run("ip", &["link", "set", &link, "up"]);
        Underlay { link, ip }
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        forget_underlay(self.ip);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

#[tokio::test]
async fn a_node_with_an_overlay_reports_the_fabric_nic_tag_on_its_underlay_interface() {
    use cn_agent::config::{BackendKind, Config, LinuxSection};
    use triton_proto::cnagent::v1 as pb;
    use triton_proto::cnagent::v1::cn_agent_client::CnAgentClient;

    let h = LinuxHost::admin("the overlay sysinfo test", 'u', &["sh"]);
    let underlay = Underlay::new();
    let config = |overlay| Config {
        state_dir: h.config.state_dir.clone(),
        backend: BackendKind::Linux,
        listen: "127.0.0.1:0".into(),
        autoboot: false,
        nic_tags: vec![format!("admin={}", h.bridge())],
        linux: LinuxSection {
            cgroup_root: h.config.cgroup_root.clone(),
            cgroup_parent: h.config.cgroup_parent.clone(),
            netns_prefix: h.config.netns_prefix.clone(),
            link_prefix: h.config.link_prefix.clone(),
            create_bridges: true,
            ..Default::default()
        },
        overlay,
        ..Default::default()
    };
    let tags = |running: &cn_agent::agent::Running| {
        let url = running.agent_url.clone();
        let link = underlay.link.clone();
        async move {
            let mut c = CnAgentClient::connect(url).await.unwrap();
            let sysinfo = c
                .get_sysinfo(pb::GetSysinfoRequest {})
                .await
                .unwrap()
                .into_inner();
            let json: serde_json::Value = serde_json::from_str(&sysinfo.sysinfo_json).unwrap();
            let mut all: Vec<String> = Vec::new();
            for key in ["Network Interfaces", "Virtual Network Interfaces"] {
                if let Some(nic) = json[key].get(&link) {
                    all.extend(
                        nic["NIC Names"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|t| t.as_str().unwrap().to_string()),
                    );
                }
            }
            all
        }
    };

    // Without an overlay the node reports no fabric tag.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = cn_agent::agent::start_configured(config(None), shutdown.clone())
        .await
        .expect("agent starts");
    assert!(tags(&running[0]).await.is_empty());
    shutdown.cancel();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let with = Some(OverlayConfig {
        underlay_ip: underlay.ip,
        portolan: "127.0.0.1:9".into(),
        nat: None,
    });
    let running = cn_agent::agent::start_configured(config(with), shutdown.clone())
        .await
        .expect("agent with an overlay starts");
    let mut got = tags(&running[0]).await;
    got.sort();
    assert_eq!(got, vec!["sdc_overlay", "sdc_underlay"]);
    shutdown.cancel();

    // An underlay address the node does not have stops the agent, naming the key.
    let wrong = Some(OverlayConfig {
        underlay_ip: Ipv4Addr::new(198, 19, 255, 254),
        portolan: "127.0.0.1:9".into(),
        nat: None,
    });
    let Err(err) = cn_agent::agent::start_configured(config(wrong), CancellationToken::new()).await
    else {
        panic!("an agent started with an underlay address the node does not have");
    };
    assert!(err.to_string().contains("overlay.underlay_ip"), "{err}");
}

/// An external network on the host for a NAT test: a bridge and, on it, a namespace
/// holding the network's gateway; both removed on drop.
struct Outside {
    bridge: String,
    ns: String,
}

impl Outside {
    fn new(gateway_cidr: &str) -> Outside {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let o = Outside {
            bridge: format!("tx{id}"),
            ns: format!("tout{id}"),
        };
        run("ip", &["link", "add", &o.bridge, "type", "bridge"]);
        run("ip", &["link", "set", &o.bridge, "up"]);
        run("ip", &["netns", "add", &o.ns]);
        let host_end = format!("to{id}");
        run(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &o.ns,
            ],
        );
        run("ip", &["link", "set", &host_end, "master", &o.bridge, "up"]);
        run(
            "ip",
            &["-n", &o.ns, "addr", "add", gateway_cidr, "dev", "eth0"],
        );
        run("ip", &["-n", &o.ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &o.ns, "link", "set", "lo", "up"]);
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Takes a test underlay's element out of the node's VXLAN table (an overlay that found
/// another test's devices in the host's namespace put it there), and the table once
/// empty.
fn forget_underlay(ip: Ipv4Addr) {
    let element = format!("{{ {} . {}/32 }}", ip, ip);
    let _ = std::process::Command::new("nft")
        .args([
            "delete",
            "element",
            "inet",
            VXLAN_TABLE,
            "underlay",
            &element,
        ])
        .output();
    let left = std::process::Command::new("nft")
        .args(["list", "set", "inet", VXLAN_TABLE, "underlay"])
        .output();
    let empty = left.is_ok_and(|o| {
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("elements")
    });
    if empty {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", VXLAN_TABLE])
            .output();
    }
}

/// Removes a NAT test's namespaces and its underlay's element of the VXLAN table however
/// the test ends.
struct NatLeft(Ipv4Addr, [u32; 2]);

impl Drop for NatLeft {
    fn drop(&mut self) {
        let mut names: Vec<String> = self.1.iter().map(|v| nat_netns(self.0, *v)).collect();
        names.push(nat_hub(self.0));
        for ns in names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .output();
        }
        forget_underlay(self.0);
    }
}

/// Provisioning with `internet_nat`: an instance whose fabric NIC has it (its gateway,
/// its vnet) reaches a server outside the overlay (a namespace on the node's external
/// bridge), seen there as the node's NAT address; an instance of another fabric with
/// the same subnet and gateway whose NIC has no `internet_nat` does not get out. The
/// vnet's NAT and the node's hub go with the instance. The node's VXLAN port is kept to
/// its underlay while it has vnets.
#[tokio::test]
async fn an_internet_nat_nic_reaches_outside_through_the_nodes_nat() {
    let h = common::Host::admin(
        "the overlay NAT test",
        'w',
        &["sh", "httpd", "sleep", "ping", "nc"],
    );
    let underlay = Underlay::new();
    let outside = Outside::new("198.51.100.1/24");
    dc_testkit::fabric::serve_peer(&outside.ns, Ipv4Addr::new(198, 51, 100, 1));
    let base = 0x71_0000 + u32::from(uuid::Uuid::new_v4().as_bytes()[0]) * 256;
    let (vnet_a, vnet_b) = (base + 8, base + 9);
    let _devices = (Devices(vnet_a), Devices(vnet_b));
    let _nat = NatLeft(underlay.ip, [vnet_a, vnet_b]);
    let nat_ip = Ipv4Addr::new(198, 51, 100, 10);
    let overlay = Overlay::new(
        OverlayConfig {
            underlay_ip: underlay.ip,
            portolan: "127.0.0.1:9".into(),
            nat: Some(NatConfig {
                ip: nat_ip,
                prefix: 24,
                gateway: Ipv4Addr::new(198, 51, 100, 1),
                nic_tag: "external".into(),
            }),
        },
        None,
    )
    .expect("overlay");
    let mut config = h.config.clone();
    config
        .bridges
        .insert("external".into(), outside.bridge.clone());
    let b = LinuxBackend::with_overlay(config, Some(overlay.clone()))
        .expect("linux backend with an overlay");
    b.image_ensure_present(h.image.clone()).await.unwrap();

    let nic = |vnet: u32, last: u8, internet_nat: bool| NicSpec {
        mac: format!("02:77:00:00:01:{last:02x}"),
        ip: Some(Ipv4Addr::new(10, 77, 0, last)),
        gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
        internet_nat,
        ..fabric_nic(vnet)
    };
    let a = h.spec("nat-a", vec![nic(vnet_a, 11, true)]);
    let a_uuid = a.uuid;
    b.create(a)
        .await
        .expect("an instance with an internet_nat NIC");
    let bb = h.spec("nat-b", vec![nic(vnet_b, 12, false)]);
    let b_uuid = bb.uuid;
    b.create(bb).await.expect("an instance without");
    let exists = |ns: String| std::path::Path::new("/run/netns").join(ns).exists();
    assert!(
        exists(nat_netns(underlay.ip, vnet_a)),
        "vnet A's NAT is made"
    );
    assert!(
        !exists(nat_netns(underlay.ip, vnet_b)),
        "vnet B, without internet_nat, has no NAT"
    );
    let table = run("nft", &["list", "table", "inet", VXLAN_TABLE]);
    assert!(table.contains(&underlay.ip.to_string()), "{table}");

    let fetch = ["sh", "-c", "nc -w 3 198.51.100.1 8080 </dev/null"];
    assert!(
        h.works_inside(a_uuid, &["ping", "-c", "1", "-W", "3", "10.77.0.1"]),
        "a pings its gateway"
    );
    assert_eq!(
        h.inside(a_uuid, &fetch).trim(),
        nat_ip.to_string(),
        "a reaches the outside server, seen as the node's NAT address"
    );
    assert!(
        !h.works_inside(b_uuid, &["ping", "-c", "1", "-W", "2", "198.51.100.1"]),
        "b, without internet_nat, pinged outside"
    );
    let out = h.zlogin(b_uuid, &fetch);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "b fetched from outside: {out:?}"
    );

    b.destroy(a_uuid).await.expect("destroy a");
    assert!(!exists(nat_netns(underlay.ip, vnet_a)), "A's NAT is left");
    assert!(!exists(nat_hub(underlay.ip)), "the node's NAT hub is left");
    b.destroy(b_uuid).await.expect("destroy b");
    let tables = run("nft", &["list", "tables"]);
    let ours = format!("{} . ", underlay.ip);
    assert!(
        !tables.contains(VXLAN_TABLE)
            || !run("nft", &["list", "table", "inet", VXLAN_TABLE]).contains(&ours),
        "the node's underlay is left in {VXLAN_TABLE}"
    );
}
