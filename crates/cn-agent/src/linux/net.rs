//! Networking of instances: a named network namespace per running instance
//! (`ip netns`, so it exists before pid 1 starts and the NICs are configured when the
//! image's init runs), one veth pair per NIC with the host end in the Linux bridge of the
//! NIC's nic tag, and the NIC's MAC, address, MTU and default route inside. Each host end
//! is guarded by nftables rules (see [`super::firewall`]) from before it is up until it
//! is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::command::run;
use super::firewall::{Firewall, PortRules, normalize_mac};
use crate::backend::NicSpec;
use crate::error::{Error, Result};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone)]
pub struct Network {
    /// `ip netns` names are `<netns_prefix><uuid>`.
    pub netns_prefix: String,
    /// Host ends of veths are `<link_prefix><first 8 hex of uuid><nic number>`.
    pub link_prefix: String,
    /// nic tag -> bridge name.
    pub bridges: BTreeMap<String, String>,
    /// Create a bridge that does not exist yet (else a missing bridge is an error).
    pub create_bridges: bool,
}

impl Network {
    pub fn netns_name(&self, uuid: Uuid) -> String {
        format!("{}{uuid}", self.netns_prefix)
    }

    pub fn netns_path(&self, uuid: Uuid) -> PathBuf {
        Path::new("/run/netns").join(self.netns_name(uuid))
    }

    /// The agent's nftables rules (tables named from `netns_prefix`).
    pub fn firewall(&self) -> Firewall {
        Firewall::new(&self.netns_prefix, &self.bridges)
    }

    /// At the agent's start: the guard table kept (running instances' ports stay guarded),
    /// the host table made again, stale ports' rules removed.
    pub fn install_firewall(&self) -> Result<()> {
        self.firewall().install()
    }

    fn link_stem(&self, uuid: Uuid) -> String {
        let hex = uuid.simple().to_string();
        format!("{}{}", self.link_prefix, &hex[..8])
    }

    /// The host end of the veth of `nic` (the `index`th NIC of the instance).
    pub fn host_link(&self, uuid: Uuid, nic: &NicSpec, index: usize) -> String {
        let interface = nic.interface_name(index);
        let number = interface
            .strip_prefix("eth")
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .unwrap_or_else(|| index.to_string());
        format!("{}{number}", self.link_stem(uuid))
    }

    /// Host links of the instance that exist now.
    pub fn existing_host_links(&self, uuid: Uuid) -> Vec<String> {
        let stem = self.link_stem(uuid);
        let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
            return Vec::new();
        };
        let mut links: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.starts_with(&stem))
            .collect();
        links.sort();
        links
    }

    pub fn bridge_for(&self, nic_tag: &str) -> Result<&str> {
        self.bridges
            .get(nic_tag)
            .map(String::as_str)
            .ok_or_else(|| Error::UnknownNicTag(nic_tag.to_string()))
    }

    /// Checks that every NIC's tag has a bridge, before anything is built.
    pub fn check_tags(&self, nics: &[NicSpec]) -> Result<()> {
        for nic in nics {
            self.bridge_for(&nic.nic_tag)?;
        }
        Ok(())
    }

    fn ensure_bridge(&self, bridge: &str) -> Result<()> {
        if Path::new("/sys/class/net").join(bridge).exists() {
            return Ok(());
        }
        if !self.create_bridges {
            return Err(Error::Command {
                command: format!("bridge {bridge}"),
                output: "does not exist and create_bridges is off".into(),
            });
        }
        match run("ip", &["link", "add", "name", bridge, "type", "bridge"]) {
            Ok(_) => {}
            // Another task created it meanwhile.
            Err(_) if Path::new("/sys/class/net").join(bridge).exists() => {}
            Err(e) => return Err(e),
        }
        run("ip", &["link", "set", "dev", bridge, "up"])?;
        tracing::info!(bridge, "created bridge");
        Ok(())
    }

    /// Creates the instance's network namespace with every NIC configured. Anything
    /// stale from an earlier run is removed first.
    pub fn setup(&self, uuid: Uuid, nics: &[NicSpec]) -> Result<()> {
        self.check_tags(nics)?;
        self.teardown(uuid)?;
        let ns = self.netns_name(uuid);
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["-n", &ns, "link", "set", "dev", "lo", "up"])?;
        // An instance with two NICs on one bridge must not answer ARP for one NIC's
        // address on the other ("ARP flux"): peers would cache the wrong MAC, and lose
        // the address once that NIC is removed.
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ],
        )?;
        for (index, nic) in nics.iter().enumerate() {
            self.add_nic(uuid, nic, index)?;
        }
        Ok(())
    }

    /// Plugs one NIC in (also into a running instance).
    pub fn add_nic(&self, uuid: Uuid, nic: &NicSpec, index: usize) -> Result<()> {
        let bridge = self.bridge_for(&nic.nic_tag)?;
        self.ensure_bridge(bridge)?;
        let ns = self.netns_name(uuid);
        let host = self.host_link(uuid, nic, index);
        let inner = nic.interface_name(index);
        if Path::new("/sys/class/net").join(&host).exists() {
            run("ip", &["link", "del", "dev", &host])?;
        }
        run(
            "ip",
            &[
                "link", "add", "name", &host, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ],
        )?;
        let mtu = nic.mtu.to_string();
        if nic.mtu > 0 {
            run("ip", &["link", "set", "dev", &host, "mtu", &mtu])?;
            run(
                "ip",
                &["-n", &ns, "link", "set", "dev", &inner, "mtu", &mtu],
            )?;
        }
        if !nic.mac.is_empty() {
            run(
                "ip",
                &["-n", &ns, "link", "set", "dev", &inner, "address", &nic.mac],
            )?;
        }
        // Guarded before the port is in the bridge and up.
        let mac = match nic.mac.is_empty() {
            true => link_mac(&ns, &inner)?,
            false => normalize_mac(&nic.mac)?,
        };
        self.firewall().guard(&PortRules {
            port: host.clone(),
            mac,
            ips: nic.ip.into_iter().collect(),
        })?;
        run("ip", &["link", "set", "dev", &host, "master", bridge, "up"])?;
        if let Some(ip) = nic.ip {
            let cidr = format!("{ip}/{}", nic.prefix_len);
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", &inner])?;
        }
        run("ip", &["-n", &ns, "link", "set", "dev", &inner, "up"])?;
        if let (true, Some(gw)) = (nic.primary, nic.gateway) {
            let gw = gw.to_string();
            run(
                "ip",
                &[
                    "-n", &ns, "route", "replace", "default", "via", &gw, "dev", &inner,
                ],
            )?;
        }
        if let Some(ip) = nic.ip {
            source_route(&ns, &inner, ip, nic.prefix_len, nic.gateway, index)?;
        }
        if nic.vlan_id != 0 {
            tracing::warn!(%uuid, vlan_id = nic.vlan_id, "VLAN tagging is not implemented; the NIC is untagged");
        }
        Ok(())
    }

    /// Unplugs one NIC (its veth pair goes with its host end).
    pub fn remove_nic(&self, uuid: Uuid, nic: &NicSpec, index: usize) -> Result<()> {
        let host = self.host_link(uuid, nic, index);
        if Path::new("/sys/class/net").join(&host).exists() {
            run("ip", &["link", "del", "dev", &host])?;
        }
        self.firewall().unguard(&[host])
    }

    /// Removes the namespace, every host link of the instance and their guard rules
    /// (also those of links already gone).
    pub fn teardown(&self, uuid: Uuid) -> Result<()> {
        for link in self.existing_host_links(uuid) {
            if let Err(e) = run("ip", &["link", "del", "dev", &link]) {
                // Deleting one end of a veth removes the other; it may be gone already.
                if Path::new("/sys/class/net").join(&link).exists() {
                    return Err(e);
                }
            }
        }
        if self.netns_path(uuid).exists() {
            run("ip", &["netns", "del", &self.netns_name(uuid)])?;
        }
        let firewall = self.firewall();
        let stem = self.link_stem(uuid);
        let ports: Vec<String> = firewall
            .guarded_ports()?
            .into_iter()
            .filter(|p| p.starts_with(&stem))
            .collect();
        firewall.unguard(&ports)
    }

    /// Bytes (received, sent) by the instance over all its NICs, from the host ends.
    pub fn counters(&self, uuid: Uuid) -> (u64, u64) {
        let mut rx = 0;
        let mut tx = 0;
        for link in self.existing_host_links(uuid) {
            let stats = Path::new("/sys/class/net").join(&link).join("statistics");
            let read = |name: &str| {
                std::fs::read_to_string(stats.join(name))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // What the host end sends, the instance receives.
            rx += read("tx_bytes");
            tx += read("rx_bytes");
        }
        (rx, tx)
    }
}

/// What the NIC's address sends leaves through the NIC: a routing table of its own (100 +
/// its index: its network, and its gateway as default) chosen by source address. With two
/// NICs on one network the main table sends everything through the first, and the guard
/// (which lets a port send only its own NIC's address) would drop the second's replies.
fn source_route(
    ns: &str,
    dev: &str,
    ip: std::net::Ipv4Addr,
    prefix_len: u8,
    gateway: Option<std::net::Ipv4Addr>,
    index: usize,
) -> Result<()> {
    let len = u32::from(prefix_len.min(32));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let network = format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(ip) & mask));
    let table = (100 + index).to_string();
    let from = format!("{ip}/32");
    let src = ip.to_string();
    run(
        "ip",
        &[
            "-n", ns, "route", "replace", &network, "dev", dev, "src", &src, "table", &table,
        ],
    )?;
    if let Some(gw) = gateway {
        let gw = gw.to_string();
        run(
            "ip",
            &[
                "-n", ns, "route", "replace", "default", "via", &gw, "dev", dev, "table", &table,
            ],
        )?;
    }
    // A rule left by an earlier NIC at this index (its table went with its device).
    while run("ip", &["-n", ns, "rule", "del", "table", &table]).is_ok() {}
    run(
        "ip",
        &["-n", ns, "rule", "add", "from", &from, "table", &table],
    )?;
    Ok(())
}

/// The MAC the kernel gave `dev` in namespace `ns`.
fn link_mac(ns: &str, dev: &str) -> Result<String> {
    let out = run("ip", &["-n", ns, "-o", "link", "show", "dev", dev])?;
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default();
    normalize_mac(mac)
}
