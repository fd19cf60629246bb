//! The linux backend with an overlay: a real instance's fabric NIC is a port of its vnet's
//! bridge (made for it), guarded like every NIC, and the vnet's devices go with the
//! instance. Learning across nodes is tested in `crates/dc-testkit/tests/fabrics.rs`.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use cn_agent::linux::LinuxBackend;
use cn_agent::linux::overlay::{Overlay, OverlayConfig, bridge_name, vxlan_name};
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
    });
    let Err(err) = cn_agent::agent::start_configured(config(wrong), CancellationToken::new()).await
    else {
        panic!("an agent started with an underlay address the node does not have");
    };
    assert!(err.to_string().contains("overlay.underlay_ip"), "{err}");
}
