//! The host's nftables rules for instances, in two tables of the agent's own (named from
//! its `netns_prefix`, so agents with other prefixes, CoaL's and the tests', never touch
//! each other's):
//!
//! * `<netns_prefix>guard` (family `bridge`): anti-spoofing on every instance port. The
//!   base chain `prerouting` looks the frame's input port up in the map `ports`; each NIC
//!   has a chain `port-<host veth>` that lets through only frames from the NIC's MAC, IPv4
//!   from its address (or a DHCP discover from 0.0.0.0 when it has none), ARP with its MAC
//!   and address as sender, and drops DHCP server replies (udp source port 67), IPv6 and
//!   every other protocol. A NIC's chain and map element are added and removed together,
//!   in one `nft -f -` transaction.
//! * `<netns_prefix>host` (family `inet`): what arrives on the bridge of a non-admin nic tag
//!   for an address of this host is dropped, except replies (conntrack established or
//!   related), ICMP echo requests and UDP and TCP to the host services tenants use (the
//!   agent's `linux.tenant_services`: CNS's DNS in CoaL); what would be forwarded from such
//!   a bridge to the admin bridge is dropped too (except replies). Made again, atomically,
//!   at every start.
//!
//! Both tables live in the kernel: an agent restart keeps them, and `leftovers` removes
//! them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The nic tag of the admin network: its bridge stays open to the host.
pub const ADMIN_TAG: &str = "admin";

#[derive(Debug, Clone)]
pub struct Firewall {
    /// Family `bridge`: per-port anti-spoofing.
    pub guard_table: String,
    /// Family `inet`: tenant bridges to the host and to the admin bridge.
    pub host_table: String,
    /// The bridge of the admin nic tag, if there is one.
    pub admin_bridge: Option<String>,
    /// The bridges of every other nic tag (the admin bridge never among them).
    pub tenant_bridges: Vec<String>,
    /// Host addresses and ports tenant bridges may reach, over UDP and TCP (a datacenter
    /// DNS server such as CNS).
    pub tenant_services: Vec<SocketAddrV4>,
}

/// What a port may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// The host end of the NIC's veth.
    pub port: String,
    /// `aa:bb:cc:dd:ee:ff`, lower case.
    pub mac: String,
    /// Its addresses; none means it gets one by DHCP.
    pub ips: Vec<Ipv4Addr>,
}

/// Names nft reads as identifiers: letters, digits, `-`, `_` and `.`; anything else
/// becomes `_`.
fn ident(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The table names of an agent with this `netns_prefix`.
pub fn table_names(netns_prefix: &str) -> (String, String) {
    let p = ident(netns_prefix);
    (format!("{p}guard"), format!("{p}host"))
}

/// `aa:bb:cc:dd:ee:ff` in lower case, or an error naming the field.
pub fn normalize_mac(mac: &str) -> Result<String> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(Error::invalid(
            "nics[].mac",
            format!("{mac:?} is not six colon-separated hex bytes"),
        ));
    }
    Ok(mac.to_ascii_lowercase())
}

fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("{{ {} }}", quoted.join(", "))
}

impl Firewall {
    pub fn new(netns_prefix: &str, bridges: &BTreeMap<String, String>) -> Firewall {
        let (guard_table, host_table) = table_names(netns_prefix);
        let admin_bridge = bridges.get(ADMIN_TAG).cloned();
        let mut tenant_bridges: Vec<String> = bridges
            .iter()
            .filter(|(tag, _)| tag.as_str() != ADMIN_TAG)
            .map(|(_, b)| b.clone())
            .filter(|b| Some(b) != admin_bridge.as_ref())
            .collect();
        tenant_bridges.sort();
        tenant_bridges.dedup();
        Firewall {
            guard_table,
            host_table,
            admin_bridge,
            tenant_bridges,
            tenant_services: Vec::new(),
        }
    }

    fn port_chain(port: &str) -> String {
        format!("port-{}", ident(port))
    }

    /// The guard table with its map and base chain, kept as they are when they exist
    /// (the ports' chains and elements with them).
    fn guard_base(&self) -> String {
        let t = &self.guard_table;
        format!(
            "table bridge {t} {{\n  map ports {{ type ifname : verdict ; }}\n  chain prerouting {{ type filter hook prerouting priority -200 ; policy accept ; }}\n}}\nflush chain bridge {t} prerouting\nadd rule bridge {t} prerouting iifname vmap @ports\n"
        )
    }

    /// The host table's script: removed and made again in one transaction.
    pub fn host_script(&self) -> String {
        let t = &self.host_table;
        let mut s = format!("table inet {t} {{ }}\ndelete table inet {t}\n");
        if self.tenant_bridges.is_empty() {
            return s;
        }
        let tenants = quoted_list(&self.tenant_bridges);
        s.push_str(&format!("table inet {t} {{\n"));
        s.push_str(&format!(
            "  chain input {{\n    type filter hook input priority filter ; policy accept ;\n    iifname {tenants} jump from-tenant\n  }}\n"
        ));
        s.push_str(
            "  chain from-tenant {\n    ct state established,related accept\n    icmp type echo-request accept\n",
        );
        for svc in &self.tenant_services {
            let (ip, port) = (svc.ip(), svc.port());
            s.push_str(&format!(
                "    ip daddr {ip} udp dport {port} accept\n    ip daddr {ip} tcp dport {port} accept\n"
            ));
        }
        s.push_str("    counter drop\n  }\n");
        s.push_str(
            "  chain forward {\n    type filter hook forward priority filter ; policy accept ;\n",
        );
        if let Some(admin) = &self.admin_bridge {
            s.push_str(&format!(
                "    iifname {tenants} oifname \"{admin}\" ct state established,related accept\n    iifname {tenants} oifname \"{admin}\" counter drop\n"
            ));
        }
        s.push_str("  }\n}\n");
        s
    }

    /// At the agent's start: the guard table (kept as it is when there: running
    /// instances' ports stay guarded), the host table made again, and the chains of ports
    /// that no longer exist removed.
    pub fn install(&self) -> Result<()> {
        let mut script = self.guard_base();
        script.push_str(&self.host_script());
        nft_script(&script)?;
        let stale: Vec<String> = self
            .guarded_ports()?
            .into_iter()
            .filter(|p| !std::path::Path::new("/sys/class/net").join(p).exists())
            .collect();
        if !stale.is_empty() {
            tracing::info!(ports = ?stale, "removing the guard rules of ports that are gone");
            self.unguard(&stale)?;
        }
        Ok(())
    }

    /// The script that (re)makes the chain of one port and its map element.
    pub fn guard_script(&self, rules: &PortRules) -> String {
        self.guard_all_script(std::slice::from_ref(rules))
    }

    /// The script that (re)makes the chains of several ports and their map elements, in
    /// one transaction.
    pub fn guard_all_script(&self, ports: &[PortRules]) -> String {
        let mut s = self.guard_base();
        for rules in ports {
            self.push_port(&mut s, rules);
        }
        s
    }

    fn push_port(&self, s: &mut String, rules: &PortRules) {
        let t = &self.guard_table;
        let c = Self::port_chain(&rules.port);
        let mac = &rules.mac;
        s.push_str(&format!(
            "add chain bridge {t} {c}\nflush chain bridge {t} {c}\n"
        ));
        let mut rule = |r: &str| s.push_str(&format!("add rule bridge {t} {c} {r}\n"));
        rule(&format!("ether saddr != {mac} counter drop"));
        rule("ether type ip ip protocol udp udp sport 67 counter drop");
        if rules.ips.is_empty() {
            rule(&format!(
                "ether type arp arp saddr ether {mac} arp saddr ip 0.0.0.0 accept"
            ));
            rule(
                "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
            );
        } else {
            let ips: Vec<String> = rules.ips.iter().map(Ipv4Addr::to_string).collect();
            let ips = format!("{{ {} }}", ips.join(", "));
            rule(&format!(
                "ether type arp arp saddr ether {mac} arp saddr ip {ips} accept"
            ));
            rule(&format!("ether type ip ip saddr {ips} accept"));
        }
        rule("counter drop");
        s.push_str(&format!(
            "add element bridge {t} ports {{ \"{}\" : jump {c} }}\n",
            rules.port
        ));
    }

    /// Guards ports before they are up, so nothing unguarded gets through. The rules key
    /// on the port's name: they may be made before the port exists. One transaction.
    pub fn guard(&self, ports: &[PortRules]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        nft_script(&self.guard_all_script(ports))
    }

    /// Removes the chains and map elements of `ports`; what is not there is fine.
    pub fn unguard(&self, ports: &[String]) -> Result<()> {
        if ports.is_empty() || !self.guard_table_exists() {
            return Ok(());
        }
        let t = &self.guard_table;
        // Added first so that each delete finds what it deletes (nft 1.0.6 has no
        // `destroy`): the transaction removes exactly these, existing or not.
        let mut s = self.guard_base();
        for port in ports {
            let c = Self::port_chain(port);
            s.push_str(&format!(
                "add chain bridge {t} {c}\nadd element bridge {t} ports {{ \"{port}\" : jump {c} }}\ndelete element bridge {t} ports {{ \"{port}\" }}\nflush chain bridge {t} {c}\ndelete chain bridge {t} {c}\n"
            ));
        }
        nft_script(&s)
    }

    fn guard_table_exists(&self) -> bool {
        Command::new("nft")
            .args(["list", "table", "bridge", &self.guard_table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Ports that have a chain or a map element in the guard table now.
    pub fn guarded_ports(&self) -> Result<Vec<String>> {
        if !self.guard_table_exists() {
            return Ok(Vec::new());
        }
        let out = nft(&["-j", "list", "table", "bridge", &self.guard_table])?;
        let doc: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Command {
            command: format!("nft -j list table bridge {}", self.guard_table),
            output: format!("not JSON: {e}"),
        })?;
        let mut ports = Vec::new();
        for item in doc
            .get("nftables")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(name) = item
                .get("chain")
                .and_then(|c| c.get("name"))
                .and_then(|n| n.as_str())
                .and_then(|n| n.strip_prefix("port-"))
            {
                ports.push(name.to_string());
            }
            if let Some(elems) = item
                .get("map")
                .filter(|m| m.get("name").and_then(|n| n.as_str()) == Some("ports"))
                .and_then(|m| m.get("elem"))
                .and_then(|e| e.as_array())
            {
                for e in elems {
                    if let Some(key) = e.get(0).and_then(|k| k.as_str()) {
                        ports.push(key.to_string());
                    }
                }
            }
        }
        ports.sort();
        ports.dedup();
        Ok(ports)
    }
}

/// Removes both tables of an agent with this `netns_prefix` (best effort).
pub fn remove_tables(netns_prefix: &str) {
    let (guard, host) = table_names(netns_prefix);
    for (family, table) in [("bridge", guard), ("inet", host)] {
        let _ = Command::new("nft")
            .args(["delete", "table", family, &table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn nft(args: &[&str]) -> Result<String> {
    super::command::run("nft", args)
}

/// Runs `script` as one nft transaction (`nft -f -`): all of it or nothing.
pub fn nft_script(script: &str) -> Result<()> {
    let fail = |output: String| Error::Command {
        command: "nft -f -".into(),
        output,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: "nft -f - (is Debian's nftables installed?)".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(format!("writing the script: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridges() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("admin".to_string(), "br-admin".to_string()),
            ("external".to_string(), "br-ext".to_string()),
            ("internal".to_string(), "br-int".to_string()),
        ])
    }

    #[test]
    fn names_come_from_the_prefix() {
        assert_eq!(
            table_names("coal-"),
            ("coal-guard".to_string(), "coal-host".to_string())
        );
        assert_eq!(table_names("a b/").0, "a_b_guard");
    }

    #[test]
    fn every_bridge_but_the_admin_one_is_a_tenant_bridge() {
        let f = Firewall::new("x-", &bridges());
        assert_eq!(f.admin_bridge.as_deref(), Some("br-admin"));
        assert_eq!(f.tenant_bridges, vec!["br-ext", "br-int"]);
        let script = f.host_script();
        assert!(
            script.contains("iifname { \"br-ext\", \"br-int\" } jump from-tenant"),
            "{script}"
        );
        assert!(
            script.contains("oifname \"br-admin\" counter drop"),
            "{script}"
        );
        // Only admin: the table is removed and nothing made.
        let only_admin = Firewall::new(
            "x-",
            &BTreeMap::from([("admin".to_string(), "br0".to_string())]),
        );
        assert_eq!(
            only_admin.host_script(),
            "table inet x-host { }\ndelete table inet x-host\n"
        );
        // A tenant tag on the admin bridge does not close the admin network.
        let shared = Firewall::new(
            "x-",
            &BTreeMap::from([
                ("admin".to_string(), "br0".to_string()),
                ("external".to_string(), "br0".to_string()),
            ]),
        );
        assert!(shared.tenant_bridges.is_empty());
    }

    #[test]
    fn tenant_services_are_open_on_their_port_only() {
        let mut f = Firewall::new("x-", &bridges());
        f.tenant_services = vec!["10.99.99.7:53".parse().unwrap()];
        let s = f.host_script();
        let chain = s.split("chain from-tenant").nth(1).unwrap();
        let opened = chain
            .find("ip daddr 10.99.99.7 udp dport 53 accept")
            .unwrap();
        assert!(
            chain.contains("ip daddr 10.99.99.7 tcp dport 53 accept"),
            "{s}"
        );
        assert!(opened < chain.find("counter drop").unwrap(), "{s}");
        assert!(
            !Firewall::new("x-", &bridges())
                .host_script()
                .contains("dport")
        );
    }

    #[test]
    fn a_port_without_an_address_may_only_ask_for_one() {
        let f = Firewall::new("x-", &bridges());
        let s = f.guard_script(&PortRules {
            port: "z12345670".into(),
            mac: "02:00:00:00:00:01".into(),
            ips: vec![],
        });
        assert!(s.contains(
            "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept"
        ));
        assert!(!s.contains("ip saddr {"));
        let s = f.guard_script(&PortRules {
            port: "z12345670".into(),
            mac: "02:00:00:00:00:01".into(),
            ips: vec![Ipv4Addr::new(10, 0, 0, 5)],
        });
        assert!(
            s.contains("ether type ip ip saddr { 10.0.0.5 } accept"),
            "{s}"
        );
        assert!(!s.contains("udp dport 67 accept"), "{s}");
    }

    #[test]
    fn macs_are_checked() {
        assert_eq!(
            normalize_mac("02:AB:00:00:00:01").unwrap(),
            "02:ab:00:00:00:01"
        );
        for bad in [
            "",
            "02:ab:00:00:00",
            "02:ab:00:00:00:0g",
            "02:ab:00:00:00:01; drop",
        ] {
            let e = normalize_mac(bad).unwrap_err().to_string();
            assert!(e.contains("nics[].mac"), "{e}");
        }
    }
}
