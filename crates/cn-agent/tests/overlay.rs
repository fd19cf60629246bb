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
