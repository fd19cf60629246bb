//! cn-agent's configuration: `/etc/triton/cn-agent.toml` (or `--config`), every key
//! overridable by `CN_AGENT_<KEY>` (nested: `CN_AGENT_LINUX__CGROUP_PARENT`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sim::SimDelays;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Linux,
    Sim,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Server UUID, zones, images (linux) or simulated state (sim).
    pub state_dir: PathBuf,
    pub backend: BackendKind,
    /// Task API address; Triton's cn-agent port is 5309.
    pub listen: String,
    /// Who may call the task API (CNAPI's address), and reflection (`[grpc]`;
    /// `CN_AGENT_GRPC__ALLOW_FROM` takes comma-separated CIDRs).
    pub grpc: triton_common::grpc::ServerConfig,
    /// How CNAPI reaches the task API; empty means `http://<listen address>`, which is
    /// only reachable from elsewhere when `listen` names a real address (not 0.0.0.0).
    /// With the sim backend, node `i` advertises this URL's port + `i` (as it listens
    /// on `listen`'s port + `i`).
    pub advertise_url: String,
    /// CNAPI's gRPC URL; empty means no registration and no heartbeats.
    pub cnapi_url: String,
    pub datacenter: String,
    /// Fixed server UUID; empty means the one in `<state_dir>/server_uuid`, made once.
    pub server_uuid: String,
    pub heartbeat_interval_ms: u64,
    /// Boot instances whose autoboot is set when the agent starts.
    pub autoboot: bool,
    /// `"<nic tag>=<bridge>"`: the Linux bridge each nic tag's NICs are plugged into.
    pub nic_tags: Vec<String>,
    pub linux: LinuxSection,
    pub sim: SimSection,
    /// The overlay of fabric networks (linux backend): `underlay_ip` and `portolan`;
    /// absent, the node has none and takes no fabric NICs. `nat_ip` (`a.b.c.d/len`),
    /// `nat_gateway` and `nat_nic_tag` (default `external`): the node's NAT address for
    /// `internet_nat` fabric networks; empty, their instances reach only their fabric.
    #[serde(with = "optional_overlay")]
    pub overlay: Option<crate::linux::overlay::OverlayConfig>,
}

/// `[overlay]` in a config file. The config loader knows a key only if the defaults,
/// written out, have it: no overlay is written as the section with empty values, and
/// read back from it.
mod optional_overlay {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::linux::overlay::{NatConfig, OverlayConfig};

    #[derive(Default, Serialize, Deserialize)]
    struct Section {
        #[serde(default)]
        underlay_ip: String,
        #[serde(default)]
        portolan: String,
        #[serde(default)]
        nat_ip: String,
        #[serde(default)]
        nat_gateway: String,
        #[serde(default)]
        nat_nic_tag: String,
    }

    pub fn serialize<S: Serializer>(v: &Option<OverlayConfig>, s: S) -> Result<S::Ok, S::Error> {
        let nat = v.as_ref().and_then(|c| c.nat.as_ref());
        Section {
            underlay_ip: v
                .as_ref()
                .map(|c| c.underlay_ip.to_string())
                .unwrap_or_default(),
            portolan: v.as_ref().map(|c| c.portolan.clone()).unwrap_or_default(),
            nat_ip: nat
                .map(|n| format!("{}/{}", n.ip, n.prefix))
                .unwrap_or_default(),
            nat_gateway: nat.map(|n| n.gateway.to_string()).unwrap_or_default(),
            nat_nic_tag: nat.map(|n| n.nic_tag.clone()).unwrap_or_default(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OverlayConfig>, D::Error> {
        let Section {
            underlay_ip,
            portolan,
            nat_ip,
            nat_gateway,
            nat_nic_tag,
        } = Option::<Section>::deserialize(d)?.unwrap_or_default();
        // Parsed first, so a bad text is named by its own key (the loader tries each
        // key alone).
        let nat = match nat_ip.is_empty() && nat_gateway.is_empty() {
            true => None,
            false => Some(
                NatConfig::parse(&nat_ip, &nat_gateway, &nat_nic_tag)
                    .map_err(|e| D::Error::custom(e.to_string()))?,
            ),
        };
        if underlay_ip.is_empty() && portolan.is_empty() {
            return Ok(None);
        }
        let underlay_ip = underlay_ip.parse().map_err(|_| {
            D::Error::custom(format!(
                "underlay_ip: {underlay_ip:?} is not an IPv4 address"
            ))
        })?;
        Ok(Some(OverlayConfig {
            underlay_ip,
            portolan,
            nat,
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinuxSection {
    pub cgroup_root: PathBuf,
    pub cgroup_parent: String,
    pub netns_prefix: String,
    pub link_prefix: String,
    pub create_bridges: bool,
    /// `host:port`s of this host that instances on tenant bridges may reach over UDP and
    /// TCP (CoaL: CNS's DNS, `10.99.99.7:53`); every other host port is closed to them.
    pub tenant_services: Vec<std::net::SocketAddrV4>,
    /// The `volmount` program (instances' NFS volumes); empty: `volmount` beside the
    /// cn-agent executable.
    pub volmount_bin: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimSection {
    /// Simulated compute nodes in this process, each with its own UUID and listener
    /// (ports from `listen`'s port upwards, or all picked when it is 0).
    pub nodes: u32,
    pub hostname_prefix: String,
    pub ram_mib: u64,
    pub cpus: u32,
    pub disk_gib: u64,
    pub delays: SimDelays,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/cn-agent"),
            backend: BackendKind::Linux,
            listen: "0.0.0.0:5309".into(),
            grpc: triton_common::grpc::ServerConfig::default(),
            advertise_url: String::new(),
            cnapi_url: String::new(),
            datacenter: "coal".into(),
            server_uuid: String::new(),
            heartbeat_interval_ms: 5000,
            autoboot: true,
            nic_tags: vec!["admin=br-admin".into(), "external=br-external".into()],
            linux: LinuxSection::default(),
            sim: SimSection::default(),
            overlay: None,
        }
    }
}

impl Default for LinuxSection {
    fn default() -> Self {
        LinuxSection {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "triton".into(),
            netns_prefix: "triton-".into(),
            link_prefix: "z".into(),
            create_bridges: true,
            tenant_services: Vec::new(),
            volmount_bin: PathBuf::new(),
        }
    }
}

impl Default for SimSection {
    fn default() -> Self {
        SimSection {
            nodes: 1,
            hostname_prefix: "sim".into(),
            ram_mib: 256 * 1024,
            cpus: 48,
            disk_gib: 4096,
            delays: SimDelays::default(),
        }
    }
}

impl Config {
    /// The URL simulated node `node` advertises: `advertise_url` with its port moved up
    /// by `node`; empty (the bound address) when `advertise_url` is.
    pub fn sim_advertise_url(&self, node: u32) -> Result<String> {
        let url = &self.advertise_url;
        if url.is_empty() {
            return Ok(String::new());
        }
        let bad = || {
            Error::invalid(
                "advertise_url",
                format!("{url:?} is not scheme://host:port"),
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let port = u16::try_from(u32::from(port) + node).map_err(|_| bad())?;
        Ok(format!("{scheme}://{host}:{port}{path}"))
    }

    /// The `nic_tags` entries as tag -> bridge.
    pub fn bridges(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (i, entry) in self.nic_tags.iter().enumerate() {
            let Some((tag, bridge)) = entry.split_once('=') else {
                return Err(Error::invalid(
                    &format!("nic_tags[{i}]"),
                    format!("{entry:?} is not \"<tag>=<bridge>\""),
                ));
            };
            out.insert(tag.trim().to_string(), bridge.trim().to_string());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use triton_common::config::load_env;
    use triton_common::config_text::load_text;

    use super::*;

    #[test]
    fn file_and_environment_set_the_keys() {
        let c: Config = load_text(
            "cn-agent",
            "backend = \"sim\"\nnic_tags = [\"admin=br0\"]\n[sim]\nnodes = 3\n[sim.delays]\nboot = 250\n",
            &[("CN_AGENT_CNAPI_URL", "http://10.0.0.1:8080")],
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Sim);
        assert_eq!(c.sim.nodes, 3);
        assert_eq!(c.sim.delays.boot, std::time::Duration::from_millis(250));
        assert_eq!(c.cnapi_url, "http://10.0.0.1:8080");
        assert_eq!(c.bridges().unwrap()["admin"], "br0");
        let bad = Config {
            nic_tags: vec!["nobridge".into()],
            ..Default::default()
        };
        assert!(bad.bridges().is_err());
    }

    #[test]
    fn the_overlay_section_is_read_from_a_file() {
        let c: Config = load_text(
            "cn-agent",
            "[overlay]\nunderlay_ip = \"10.99.100.22\"\nportolan = \"10.99.99.7:1296\"\n",
            &[],
        )
        .unwrap();
        let overlay = c.overlay.unwrap();
        assert_eq!(overlay.underlay_ip.to_string(), "10.99.100.22");
        assert_eq!(overlay.portolan, "10.99.99.7:1296");
        let none: Config = load_env("cn-agent", &[]).unwrap();
        assert_eq!(none.overlay, None);
        let e = load_text::<Config>("cn-agent", "[overlay]\nunderlay_ip = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("overlay.underlay_ip") && e.contains("\"nowhere\""),
            "{e}"
        );
        // The node's fabric NAT, and a bad one named.
        let with_nat = "[overlay]\nunderlay_ip = \"10.99.100.22\"\nportolan = \"10.99.99.7:1296\"\nnat_ip = \"10.88.88.253/24\"\nnat_gateway = \"10.88.88.2\"\n";
        let c: Config = load_text("cn-agent", with_nat, &[]).unwrap();
        let nat = c.overlay.unwrap().nat.unwrap();
        assert_eq!(
            (nat.ip.to_string(), nat.prefix),
            ("10.88.88.253".into(), 24)
        );
        assert_eq!(nat.gateway.to_string(), "10.88.88.2");
        assert_eq!(nat.nic_tag, "external");
        // A gateway outside nat_ip's network: refused when the agent starts (the
        // overlay's check), naming the key; text that is no address: at load.
        let far_gateway = with_nat.replace("10.88.88.2\"", "10.77.0.1\"");
        let c: Config = load_text("cn-agent", &far_gateway, &[]).unwrap();
        let e = c.overlay.unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("overlay.nat_gateway"), "{e}");
        let bad_nat = with_nat.replace("10.88.88.253/24", "nowhere");
        let e = load_text::<Config>("cn-agent", &bad_nat, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlay.nat_ip") && e.contains("nowhere"), "{e}");
    }

    #[test]
    fn the_overlay_keys_come_from_the_environment_too() {
        let c: Config = load_env(
            "cn-agent",
            &[
                ("CN_AGENT_OVERLAY__UNDERLAY_IP", "192.0.2.9"),
                ("CN_AGENT_OVERLAY__PORTOLAN", "10.99.99.30:1296"),
            ],
        )
        .unwrap();
        let overlay = c.overlay.unwrap();
        assert_eq!(overlay.underlay_ip.to_string(), "192.0.2.9");
        assert_eq!(overlay.portolan, "10.99.99.30:1296");
        let e = load_env::<Config>(
            "cn-agent",
            &[("CN_AGENT_OVERLAY__UNDERLAY_IP", "not-an-ip")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("CN_AGENT_OVERLAY__UNDERLAY_IP") || e.contains("overlay.underlay_ip"),
            "{e}"
        );
    }

    #[test]
    fn sim_nodes_advertise_consecutive_ports() {
        let mut c = Config::default();
        assert_eq!(c.sim_advertise_url(3).unwrap(), "");
        c.advertise_url = "http://cn-agent-sim:5400".into();
        assert_eq!(c.sim_advertise_url(0).unwrap(), "http://cn-agent-sim:5400");
        assert_eq!(c.sim_advertise_url(2).unwrap(), "http://cn-agent-sim:5402");
        c.advertise_url = "http://[fd00::1]:5400/".into();
        assert_eq!(c.sim_advertise_url(1).unwrap(), "http://[fd00::1]:5401/");
        c.advertise_url = "cn-agent-sim:5400".into();
        assert!(c.sim_advertise_url(0).is_err());
        c.advertise_url = "http://cn-agent-sim:65535".into();
        assert!(c.sim_advertise_url(1).is_err());
    }
}
