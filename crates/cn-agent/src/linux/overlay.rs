//! The overlay data plane of fabric networks, as illumos's `overlay(7D)` with varpd's
//! `svp` plugin does it on SmartOS, built from Linux's VXLAN devices:
//!
//! * per vnet a bridge `vb<vnet_id>` and a VXLAN device `vx<vnet_id>` in it (VNI the vnet
//!   id, the node's underlay address as source, UDP port 4789, learning off, the ARP
//!   proxy on, and the kernel told to report misses: `l2miss`, `l3miss`); an instance's
//!   fabric NIC is a port of its vnet's bridge. Made on first use ([`Overlay::ensure`]),
//!   removed when the vnet's last instance port on the node goes ([`Overlay::prune`]).
//! * learning on demand ([`Overlay::start`]): a thread reads the kernel's miss notices
//!   (netlink, [`super::netlink`]); an ARP request for an address the VXLAN device has no
//!   answer for is a VL3 lookup at Portolan (a neighbour entry address -> MAC on the
//!   device and a forwarding entry MAC -> underlay address), a frame for a MAC it has no
//!   forwarding entry for is a VL2 lookup (the forwarding entry). NOTFOUND installs
//!   nothing: the packet is dropped, as in Triton. Broadcast and multicast frames are
//!   never looked up (the device drops them: no default forwarding entry).
//! * the log: every 0.75 to 1 s (at once again while Portolan has more), the node's log
//!   entries (LOG with its underlay address): a VL2 entry removes the MAC's forwarding entry, a VL3
//!   entry looks the address up again and replaces (or removes) its entries; then
//!   LOG_RM of every id handled.
//!
//! * NAT for `internet_nat` networks ([`Overlay::ensure_nat`]): a namespace per vnet with
//!   the network's gateway in the vnet's bridge, joined to the node's NAT hub, a namespace
//!   with the node's one NAT address on its external bridge (`[overlay]` `nat_ip`); both
//!   masquerade, so every fabric of the node goes out as that address. The gateway is
//!   never looked up at Portolan.
//! * the VXLAN port ([`VXLAN_TABLE`]): while the node has vnet devices, UDP 4789 is taken
//!   only when addressed to the underlay address from the underlay network.
//! * one SVP connection, kept; Portolan's name resolved again every 30 s; after a
//!   failure no new connection before a backoff (100 ms doubling to 5 s).
//!
//! Entries live in the kernel with the devices, so what was learned outlives an agent
//! restart. Neighbour entries are permanent until the log or a new answer replaces
//! them; forwarding entries age out of the VXLAN device when unused (300 s) and are
//! learned again on the next miss.
//!
//! Everything can run inside a given network namespace ([`Overlay::new`] with `netns`):
//! commands run on a thread that entered it, and the netlink sockets are opened there.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portolan_client::client::{SvpClient, Vl3Answer};
use portolan_client::svp::{LogEntry, Underlay};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::command::{run, run_input};
use super::netlink::{MissKind, Socket};
use crate::error::{Error, Result};

/// The nic tag of fabric NICs (NAPI's `sdc_overlay`; Triton's NICs may carry
/// `sdc_overlay/<vnet_id>`).
pub const OVERLAY_TAG: &str = "sdc_overlay";
/// The nic tag of the node's underlay NIC.
pub const UNDERLAY_TAG: &str = "sdc_underlay";
/// The UDP port of VXLAN (IANA), where every node takes it.
pub const VXLAN_PORT: u16 = 4789;
/// Largest VXLAN network id (24 bits).
pub const MAX_VNET_ID: u32 = (1 << 24) - 1;
/// Bytes of log asked for at once (a VL3 entry is 44 bytes, a VL2 entry 32).
const LOG_BYTES: u32 = 64 * 1024;
/// How long an SVP answer may take.
const SVP_TIMEOUT: Duration = Duration::from_secs(5);
/// The log is asked for this often (plus up to [`LOG_JITTER_MS`], so the nodes do not
/// ask together), and at once again while Portolan has more: a mapping that moved or
/// went is gone from the node within about a second.
const LOG_INTERVAL: Duration = Duration::from_millis(750);
const LOG_JITTER_MS: usize = 250;
/// A NOTFOUND answer is not asked again for this long (an instance ARPs once a second).
const NEGATIVE_TTL: Duration = Duration::from_millis(500);

/// `[overlay]` of cn-agent's config: absent, the node has no overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConfig {
    /// The node's underlay address: the source of its VXLAN traffic, and how Portolan
    /// knows the node (NAPI's `portolan_underlay_mappings`).
    pub underlay_ip: Ipv4Addr,
    /// Portolan's SVP address, `host:port` (Triton's port is 1296).
    pub portolan: String,
    /// The node's NAT of `internet_nat` fabric networks; none: their instances reach
    /// only their fabric from this node.
    #[serde(default)]
    pub nat: Option<NatConfig>,
}

/// The NAT of a node's `internet_nat` fabric networks (`[overlay]` `nat_ip`,
/// `nat_gateway`, `nat_nic_tag`): one address of the node's own on the external network,
/// shared by all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatConfig {
    /// The node's NAT address and the external network's prefix length.
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The external network's gateway.
    pub gateway: Ipv4Addr,
    /// The nic tag of the external network (its bridge on the node, from `nic_tags`).
    pub nic_tag: String,
}

impl NatConfig {
    /// Parses `nat_ip` (`a.b.c.d/len`), `nat_gateway` and `nat_nic_tag` (empty:
    /// `external`), naming the key whose text is not an address; an empty address is
    /// 0.0.0.0 (prefix length 0), which [`NatConfig::validate`] refuses. The config loader
    /// tries each key alone, so what involves two keys is checked by `validate`, when the
    /// agent starts.
    pub fn parse(ip: &str, gateway: &str, nic_tag: &str) -> Result<NatConfig> {
        let bad_ip = || {
            Error::invalid(
                "overlay.nat_ip",
                format!("{ip:?} is not an IPv4 address with a prefix length (a.b.c.d/len)"),
            )
        };
        let (addr, prefix) = match ip {
            "" => (Ipv4Addr::UNSPECIFIED, 0),
            ip => {
                let (addr, len) = ip.split_once('/').ok_or_else(bad_ip)?;
                (
                    addr.parse().map_err(|_| bad_ip())?,
                    len.parse().map_err(|_| bad_ip())?,
                )
            }
        };
        let gateway = match gateway {
            "" => Ipv4Addr::UNSPECIFIED,
            gw => gw.parse().map_err(|_| {
                Error::invalid(
                    "overlay.nat_gateway",
                    format!("{gw:?} is not an IPv4 address"),
                )
            })?,
        };
        Ok(NatConfig {
            ip: addr,
            prefix,
            gateway,
            nic_tag: match nic_tag {
                "" => "external".into(),
                tag => tag.into(),
            },
        })
    }

    /// Checks the NAT, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        if !(1..=30).contains(&self.prefix) {
            return Err(Error::invalid(
                "overlay.nat_ip",
                format!("the prefix length must be 1 to 30, not {}", self.prefix),
            ));
        }
        for (key, ip) in [
            ("overlay.nat_ip", self.ip),
            ("overlay.nat_gateway", self.gateway),
        ] {
            unicast(key, ip)?;
        }
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        if self.gateway == self.ip || (self.gateway.to_bits() ^ self.ip.to_bits()) & mask != 0 {
            return Err(Error::invalid(
                "overlay.nat_gateway",
                format!(
                    "{} is not another address of {}/{}'s network",
                    self.gateway, self.ip, self.prefix
                ),
            ));
        }
        if self.nic_tag.is_empty() {
            return Err(Error::invalid("overlay.nat_nic_tag", "is empty"));
        }
        Ok(())
    }
}

/// Fails naming `field` unless `ip` is a unicast address of a host (not loopback).
fn unicast(field: &str, ip: Ipv4Addr) -> Result<()> {
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(Error::invalid(
            field,
            format!("{ip} is not a unicast address"),
        ));
    }
    Ok(())
}

impl OverlayConfig {
    /// Checks the config, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.underlay_ip.is_unspecified()
            || self.underlay_ip.is_multicast()
            || self.underlay_ip.is_broadcast()
        {
            return Err(Error::invalid(
                "overlay.underlay_ip",
                format!("{} is not a unicast address", self.underlay_ip),
            ));
        }
        let port_ok = self
            .portolan
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(Error::invalid(
                "overlay.portolan",
                format!("{:?} is not host:port", self.portolan),
            ));
        }
        if let Some(nat) = &self.nat {
            nat.validate()?;
        }
        Ok(())
    }
}

/// The interface of this node (in this thread's network namespace) that holds `ip`.
pub fn interface_of(ip: Ipv4Addr) -> Result<String> {
    Ok(address_of(ip)?.0)
}

/// The interface of this node (in this thread's network namespace) that holds `ip`, and
/// the network of that address (`a.b.c.d/len`).
fn address_of(ip: Ipv4Addr) -> Result<(String, String)> {
    let out = run(
        "ip",
        &["-o", "-4", "addr", "show", "to", &format!("{ip}/32")],
    )?;
    let not_here = || {
        Error::invalid(
            "overlay.underlay_ip",
            format!("{ip} is not an address of this node"),
        )
    };
    let line = out.lines().next().ok_or_else(not_here)?;
    let mut words = line.split_whitespace();
    let interface = words.nth(1).ok_or_else(not_here)?.to_string();
    let prefix = words
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split_once('/'))
        .and_then(|(_, len)| len.parse::<u8>().ok())
        .filter(|len| *len <= 32)
        .ok_or_else(not_here)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let net = Ipv4Addr::from_bits(ip.to_bits() & mask);
    Ok((interface, format!("{net}/{prefix}")))
}

/// The nftables table (family `inet`, in the node's namespace) that keeps the node's
/// VXLAN port to its underlay: the kernel's VXLAN socket takes UDP 4789 on every address
/// of the node (`local` is only the source of what it sends), so what is not addressed to
/// an underlay address from its network is dropped. Its set `underlay` holds one
/// `address . network` element per overlay of the namespace; the table is made with the
/// first vnet's devices and removed with the last overlay's last ones.
pub const VXLAN_TABLE: &str = "triton_vxlan";

/// Adds this node's underlay (`ip`, from `net`) to [`VXLAN_TABLE`], making the table if
/// it is not there. Idempotent.
fn guard_vxlan_port(ip: Ipv4Addr, net: &str) -> Result<()> {
    let t = VXLAN_TABLE;
    let script = format!(
        "table inet {t} {{\n\
         set underlay {{ type ipv4_addr . ipv4_addr ; flags interval ; }}\n\
         chain input {{ type filter hook input priority filter - 10 ; policy accept ; }}\n\
         }}\n\
         flush chain inet {t} input\n\
         add rule inet {t} input udp dport {VXLAN_PORT} ip daddr . ip saddr @underlay accept\n\
         add rule inet {t} input udp dport {VXLAN_PORT} counter drop\n\
         add element inet {t} underlay {{ {ip} . {net} }}\n"
    );
    run_input("nft", &["-f", "-"], &script).map(|_| ())
}

/// Removes this node's underlay from [`VXLAN_TABLE`], and the table when no other
/// overlay's is left in it.
fn unguard_vxlan_port(ip: Ipv4Addr, net: &str) -> Result<()> {
    let t = VXLAN_TABLE;
    if run("nft", &["list", "table", "inet", t]).is_err() {
        return Ok(());
    }
    let _ = run(
        "nft",
        &[
            "delete",
            "element",
            "inet",
            t,
            "underlay",
            &format!("{{ {ip} . {net} }}"),
        ],
    );
    let left = run("nft", &["list", "set", "inet", t, "underlay"])?;
    if !left.contains("elements") {
        run("nft", &["delete", "table", "inet", t])?;
    }
    Ok(())
}

/// Whether a NIC with this nic tag is a fabric NIC.
pub fn is_fabric_tag(nic_tag: &str) -> bool {
    nic_tag == OVERLAY_TAG || nic_tag.starts_with("sdc_overlay/")
}

/// The vnet of a fabric NIC: its `vnet_id`, else the one its tag names
/// (`sdc_overlay/<vnet_id>`). An error names the field.
pub fn fabric_vnet(field: &str, nic_tag: &str, vnet_id: u32) -> Result<u32> {
    let vnet = match (vnet_id, nic_tag.strip_prefix("sdc_overlay/")) {
        (0, Some(n)) => n.parse::<u32>().map_err(|_| {
            Error::invalid(
                &format!("{field}.nic_tag"),
                format!("{nic_tag:?} does not end in a vnet id"),
            )
        })?,
        (v, _) => v,
    };
    if vnet == 0 || vnet > MAX_VNET_ID {
        return Err(Error::invalid(
            &format!("{field}.vnet_id"),
            format!("a fabric NIC needs a vnet id from 1 to {MAX_VNET_ID}, not {vnet}"),
        ));
    }
    Ok(vnet)
}

/// What the names of the vnets' bridges start with.
pub const BRIDGE_PREFIX: &str = "vb";

/// The bridge of vnet `vnet`.
pub fn bridge_name(vnet: u32) -> String {
    format!("{BRIDGE_PREFIX}{vnet}")
}

/// The VXLAN device of vnet `vnet`.
pub fn vxlan_name(vnet: u32) -> String {
    format!("vx{vnet}")
}

/// The vnet of a VXLAN device name of ours.
fn vnet_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("vx")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A NIC on its way into a vnet's bridge ([`Overlay::hold`]).
pub struct Hold {
    overlay: Arc<Overlay>,
    vnet: u32,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut users = self.overlay.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = users.get_mut(&self.vnet) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&self.vnet);
            }
        }
    }
}

/// The indexes of a vnet's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Devices {
    vxlan: u32,
    /// 0 when the bridge is not there.
    bridge: u32,
}

/// The overlay of one node.
pub struct Overlay {
    config: OverlayConfig,
    /// The node's network namespace; `None`: the agent's own.
    netns: Option<OwnedFd>,
    /// Requests to the kernel, opened in the node's namespace.
    kernel: Socket,
    /// A packet socket in the node's namespace, for gratuitous ARP into the bridges.
    packet: OwnedFd,
    /// vnet -> its devices, for the vnets that have them.
    devices: Mutex<BTreeMap<u32, Devices>>,
    /// Held while devices are made or removed.
    setup: Mutex<()>,
    /// vnet -> NICs being plugged into its bridge now ([`Overlay::hold`]): not pruned.
    users: Mutex<HashMap<u32, usize>>,
    svp: tokio::sync::Mutex<Connection>,
    /// Addresses answered on the node itself (the NAT gateways of [`Overlay::ensure_nat`]):
    /// never looked up at Portolan.
    local: Mutex<std::collections::HashSet<(u32, Ipv4Addr)>>,
    /// Misses answered NOTFOUND, and when.
    negative: Mutex<HashMap<(u32, MissKind), Instant>>,
    /// The underlay network this overlay's element of [`VXLAN_TABLE`] names, while it is
    /// there.
    guarded: Mutex<Option<String>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Overlay {
    /// The overlay of the node whose network namespace is `netns` (`None`: this
    /// process's). Finds the vnets' devices already there (made before a restart).
    pub fn new(config: OverlayConfig, netns: Option<OwnedFd>) -> Result<Arc<Overlay>> {
        config.validate()?;
        let (kernel, packet) = in_netns(netns.as_ref(), || {
            let kernel = Socket::requests().map_err(|e| Error::io("netlink", e))?;
            Ok((kernel, packet_socket()?))
        })?;
        let seed = u64::from(config.underlay_ip.to_bits()) ^ u64::from(std::process::id());
        let overlay = Overlay {
            config,
            netns,
            kernel,
            packet,
            devices: Mutex::new(BTreeMap::new()),
            setup: Mutex::new(()),
            users: Mutex::new(HashMap::new()),
            svp: tokio::sync::Mutex::new(Connection::new(seed)),
            local: Mutex::new(std::collections::HashSet::new()),
            negative: Mutex::new(HashMap::new()),
            guarded: Mutex::new(None),
        };
        let found = overlay.in_netns(list_vxlans)?;
        tracing::info!(vnets = ?found.keys().collect::<Vec<_>>(), "overlay devices found");
        let any = !found.is_empty();
        *overlay.devices() = found;
        if any {
            // Devices from before a restart (or an agent without the guard).
            overlay.guard_port()?;
        }
        Ok(Arc::new(overlay))
    }

    /// Puts the node's underlay in [`VXLAN_TABLE`] unless this overlay did already.
    fn guard_port(&self) -> Result<()> {
        let mut guarded = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        if guarded.is_some() {
            return Ok(());
        }
        let ip = self.config.underlay_ip;
        let net = self.in_netns(|| {
            let (_, net) = address_of(ip)?;
            guard_vxlan_port(ip, &net)?;
            Ok(net)
        })?;
        tracing::info!(underlay = %ip, from = %net, table = VXLAN_TABLE, "VXLAN port kept to the underlay");
        *guarded = Some(net);
        Ok(())
    }

    /// Takes the node's underlay out of [`VXLAN_TABLE`] (once its last vnet's devices
    /// went).
    fn unguard_port(&self) -> Result<()> {
        let mut guarded = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        let Some(net) = guarded.clone() else {
            return Ok(());
        };
        let ip = self.config.underlay_ip;
        self.in_netns(|| unguard_vxlan_port(ip, &net))?;
        *guarded = None;
        Ok(())
    }

    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Devices>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vnets with devices on the node.
    pub fn vnets(&self) -> Vec<u32> {
        self.devices().keys().copied().collect()
    }

    /// Runs `f` in the node's network namespace (on a thread of its own when that is not
    /// this process's).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        in_netns(self.netns.as_ref(), f)
    }

    /// The bridge of `vnet`, made if it is not there, kept from [`Overlay::prune`] until
    /// the [`Hold`] is dropped (once the NIC is a port of it).
    pub fn hold(self: &Arc<Self>, vnet: u32) -> Result<(String, Hold)> {
        *self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(vnet)
            .or_default() += 1;
        let hold = Hold {
            overlay: self.clone(),
            vnet,
        };
        Ok((self.ensure(vnet)?, hold))
    }

    /// The bridge of `vnet`, with its VXLAN device, made if it is not there.
    pub fn ensure(&self, vnet: u32) -> Result<String> {
        if vnet == 0 || vnet > MAX_VNET_ID {
            return Err(Error::invalid(
                "vnet_id",
                format!("must be 1 to {MAX_VNET_ID}, not {vnet}"),
            ));
        }
        let _held = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        let bridge = bridge_name(vnet);
        let vxlan = vxlan_name(vnet);
        let local = self.config.underlay_ip;
        // The port is closed to all but the underlay before the first device opens it.
        self.guard_port()?;
        let devices = self.in_netns(|| {
            let mut script = String::new();
            if ifindex(&bridge).is_none() {
                script.push_str(&format!(
                    "link add name {bridge} type bridge\nlink set dev {bridge} addrgenmode none\nlink set dev {bridge} up\n"
                ));
            }
            if ifindex(&vxlan).is_none() {
                script.push_str(&format!(
                    "link add name {vxlan} type vxlan id {vnet} local {local} dstport {VXLAN_PORT} nolearning proxy l2miss l3miss\nlink set dev {vxlan} addrgenmode none\n"
                ));
            }
            // Tenants' frames stay out of the node's IP firewall and conntrack even with
            // br_netfilter loaded (accounts' subnets overlap).
            script.push_str(&format!(
                "link set dev {bridge} type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0\n\
                 link set dev {vxlan} master {bridge} up\n"
            ));
            run_input("ip", &["-batch", "-"], &script)?;
            match (ifindex(&vxlan), ifindex(&bridge)) {
                (Some(vxlan), Some(bridge)) => Ok(Devices { vxlan, bridge }),
                _ => Err(Error::Command {
                    command: format!("ip link add {vxlan}"),
                    output: "the devices are not there after they were made".into(),
                }),
            }
        })?;
        if self.devices().insert(vnet, devices).is_none() {
            tracing::info!(vnet, %bridge, %vxlan, "overlay devices made");
        }
        Ok(bridge)
    }

    /// The NAT of a fabric network with `internet_nat` on this node (in place of Triton's
    /// NAT zone), made or completed:
    ///
    /// * the node's NAT hub, a network namespace [`nat_hub`] made with the node's first
    ///   NAT: one leg (`ext0`, node end `nx<underlay hex>`) on `nat.external_bridge`
    ///   holding `nat.external_ip`, its default route via `nat.external_gateway`, and
    ///   nftables that forward only from the vnets' legs out of `ext0` (and the answers
    ///   back), masquerading them as `nat.external_ip`; nothing else enters it.
    /// * `vnet`'s NAT, a namespace [`nat_netns`]: one leg (`fab0`, node end `ng<vnet>`) in
    ///   the vnet's bridge holding the gateway of each of its NAT'd networks, one (`ext0`)
    ///   into the hub on a link-local /31 of its own ([`transit`]), and nftables that
    ///   forward only from those networks' addresses to the hub, masquerading them as
    ///   its /31 address, and take nothing but pings of the gateways.
    ///
    /// The gateway is answered on the node (never looked up at Portolan). Idempotent; the
    /// hub's external settings are those of the first call. `vnet`'s NAT goes with its
    /// devices ([`Overlay::prune`]) or [`Overlay::remove_nat`], the hub with the last.
    pub fn ensure_nat(&self, vnet: u32, nat: &Nat) -> Result<String> {
        nat.validate()?;
        let bridge = self.ensure(vnet)?;
        let _held = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        let underlay = self.config.underlay_ip;
        let hub = nat_hub(underlay);
        let ns = nat_netns(underlay, vnet);
        self.in_netns(|| {
            ensure_hub(underlay, nat)?;
            ensure_vnet_nat(&hub, &ns, vnet, &bridge)?;
            let subnet = nat.subnet();
            let has = run("ip", &["-n", &ns, "-o", "-4", "addr", "show", "dev", "fab0"])?;
            if !has.contains(&format!(" {}/{} ", nat.gateway, nat.prefix)) {
                run(
                    "ip",
                    &[
                        "-n",
                        &ns,
                        "addr",
                        "add",
                        &format!("{}/{}", nat.gateway, nat.prefix),
                        "dev",
                        "fab0",
                    ],
                )?;
            }
            let elements = format!(
                "add element ip triton_nat nets {{ {subnet} }}\nadd element ip triton_nat gateways {{ {} }}\n",
                nat.gateway
            );
            run_input("ip", &["netns", "exec", &ns, "nft", "-f", "-"], &elements)?;
            Ok(())
        })?;
        let new = self
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((vnet, nat.gateway));
        if new {
            tracing::info!(vnet, gateway = %nat.gateway, external = %nat.external_ip, netns = %ns, "fabric NAT ready");
        }
        Ok(ns)
    }

    /// Removes `vnet`'s NAT namespace on this node, if there is one (and the hub with the
    /// last).
    pub fn remove_nat(&self, vnet: u32) {
        let _held = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        let underlay = self.config.underlay_ip;
        if let Err(e) = self.in_netns(|| {
            remove_vnet_nat(underlay, vnet);
            Ok(())
        }) {
            tracing::warn!(vnet, error = %e.chain(), "fabric NAT not removed");
        }
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(v, _)| *v != vnet);
    }

    /// Removes the devices of every vnet whose bridge has no port but its VXLAN device
    /// (its last instance NIC on the node went).
    pub fn prune(&self) -> Result<()> {
        let _held = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        let vnets: Vec<u32> = {
            let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            self.vnets()
                .into_iter()
                .filter(|v| users.get(v).copied().unwrap_or(0) == 0)
                .collect()
        };
        let removed = self.in_netns(|| {
            let mut removed = Vec::new();
            for vnet in vnets {
                let bridge = bridge_name(vnet);
                let ports =
                    run("ip", &["-o", "link", "show", "master", &bridge]).unwrap_or_default();
                let vxlan = vxlan_name(vnet);
                let others = ports
                    .lines()
                    .filter_map(|l| l.split(": ").nth(1))
                    .map(|n| n.split('@').next().unwrap_or(n))
                    .any(|n| n != vxlan && n != nat_leg(vnet));
                if others {
                    continue;
                }
                remove_vnet_nat(self.config.underlay_ip, vnet);
                let mut script = String::new();
                for dev in [&vxlan, &bridge] {
                    if ifindex(dev).is_some() {
                        script.push_str(&format!("link del dev {dev}\n"));
                    }
                }
                if !script.is_empty() {
                    run_input("ip", &["-batch", "-"], &script)?;
                }
                removed.push(vnet);
            }
            Ok(removed)
        })?;
        let none_left = {
            let mut devices = self.devices();
            for vnet in removed {
                devices.remove(&vnet);
                self.local
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|(v, _)| *v != vnet);
                tracing::info!(
                    vnet,
                    "overlay devices removed (no instance left on the vnet)"
                );
            }
            devices.is_empty()
        };
        if none_left {
            self.unguard_port()?;
        }
        Ok(())
    }

    /// Starts learning and the log on the runtime; both end with `shutdown`. What the
    /// miss thread or Portolan fails at is logged, and the work goes on.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Result<JoinHandle<()>> {
        let (tx, rx) = mpsc::channel::<(u32, MissKind)>(1024);
        let listener = {
            let socket = self.in_netns(|| {
                Socket::neighbour_notices(Duration::from_millis(250))
                    .map_err(|e| Error::io("netlink", e))
            })?;
            let stop = shutdown.clone();
            let names = NetnsNames::new(self.netns.as_ref().map(|fd| fd.as_raw_fd()));
            std::thread::Builder::new()
                .name("overlay-misses".into())
                .spawn(move || read_misses(socket, names, tx, stop))
                .map_err(|e| Error::Spawn {
                    command: "the overlay miss thread".into(),
                    source: e,
                })?
        };
        let learner = tokio::spawn(self.clone().learn(rx, shutdown.clone()));
        let log = tokio::spawn(self.clone().drain_log(shutdown));
        Ok(tokio::spawn(async move {
            let _ = learner.await;
            let _ = log.await;
            let _ = tokio::task::spawn_blocking(move || listener.join()).await;
        }))
    }

    async fn learn(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(u32, MissKind)>,
        stop: CancellationToken,
    ) {
        loop {
            let miss = tokio::select! {
                _ = stop.cancelled() => return,
                miss = rx.recv() => match miss {
                    Some(miss) => miss,
                    None => return,
                },
            };
            if let Err(e) = self.answer(miss.0, miss.1).await {
                tracing::warn!(vnet = miss.0, miss = ?miss.1, error = %e.chain(), "overlay lookup failed");
            }
        }
    }

    /// Looks a miss up at Portolan and installs what it answers.
    pub async fn answer(&self, vnet: u32, kind: MissKind) -> Result<()> {
        let Some(devices) = self.devices().get(&vnet).copied() else {
            return Ok(());
        };
        if let MissKind::L3(ip) = kind
            && self
                .local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(vnet, ip))
        {
            return Ok(());
        }
        {
            let mut negative = self.negative.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            negative.retain(|_, at| now.duration_since(*at) < NEGATIVE_TTL);
            if negative.contains_key(&(vnet, kind)) {
                return Ok(());
            }
        }
        let found = match kind {
            MissKind::L3(ip) => {
                let asked = Instant::now();
                let answer = self.vl3(ip, vnet).await?;
                let answered = asked.elapsed();
                if let Some(Vl3Answer { mac, underlay }) = answer {
                    self.install_l3(devices, ip, mac, underlay)?;
                    tracing::debug!(
                        vnet,
                        %ip,
                        lookup_us = answered.as_micros() as u64,
                        installed_us = asked.elapsed().saturating_sub(answered).as_micros() as u64,
                        "learned an overlay address"
                    );
                }
                answer.is_some()
            }
            MissKind::L2(mac) => {
                let answer = self.vl2(mac, vnet).await?;
                if let Some(underlay) = answer {
                    self.install_l2(devices.vxlan, mac, underlay)?;
                }
                answer.is_some()
            }
        };
        if !found {
            self.negative
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((vnet, kind), Instant::now());
        }
        Ok(())
    }

    fn install_l2(&self, index: u32, mac: [u8; 6], underlay: Underlay) -> Result<()> {
        let IpAddr::V4(ul) = underlay.ip.to_canonical() else {
            return Err(Error::invalid(
                "underlay",
                format!(
                    "{} is not IPv4, which this node's overlay uses",
                    underlay.ip
                ),
            ));
        };
        if ul == self.config.underlay_ip {
            // On this node: its bridge delivers it, and a stale entry to elsewhere goes.
            return self
                .kernel
                .remove_forwarding(index, mac)
                .map_err(|e| Error::io("netlink forwarding entry", e));
        }
        self.kernel
            .set_forwarding(index, mac, ul, underlay.port)
            .map_err(|e| Error::io("netlink forwarding entry", e))
    }

    /// The VXLAN device's entries for `ip`, then a gratuitous ARP for it into the bridge:
    /// the instance that asked takes the answer at once rather than at its next ARP
    /// request (a second later), and one that held an older MAC for `ip` takes the new.
    fn install_l3(
        &self,
        devices: Devices,
        ip: Ipv4Addr,
        mac: [u8; 6],
        underlay: Underlay,
    ) -> Result<()> {
        // Where the MAC lives first, so the first frame to it finds it.
        self.install_l2(devices.vxlan, mac, underlay)?;
        self.kernel
            .set_neighbour(devices.vxlan, ip, mac)
            .map_err(|e| Error::io("netlink neighbour entry", e))?;
        if devices.bridge != 0
            && let Err(e) = announce(&self.packet, devices.bridge, ip, mac)
        {
            tracing::debug!(%ip, error = %e, "gratuitous ARP not sent");
        }
        Ok(())
    }

    /// One SVP call on the connection to Portolan, made (again) when there is none: to
    /// the addresses Portolan's name resolved to (again every [`RESOLVE_EVERY`]), but not
    /// before the backoff of the last failure has passed (an error at once until then).
    /// A call that fails (a broken connection, no answer, a FATAL) spends the connection.
    async fn svp<T>(
        &self,
        call: impl AsyncFnOnce(
            &mut SvpClient,
        ) -> std::result::Result<T, portolan_client::client::SvpError>,
    ) -> Result<T> {
        let mut conn = self.svp.lock().await;
        conn.resolve(&self.config.portolan).await?;
        if conn.client.is_none() {
            conn.connect(&self.config.portolan).await?;
        }
        let Some(client) = conn.client.as_mut() else {
            return Err(Error::Command {
                command: "svp".into(),
                output: "no connection".into(),
            });
        };
        let result = call(client).await;
        match &result {
            Ok(_) => conn.failures = 0,
            Err(e) => {
                // A broken or confused connection is not used again.
                conn.client = None;
                conn.failed();
                tracing::warn!(error = %e, retry_in = ?conn.retry_in(), "SVP call failed; the connection is dropped");
            }
        }
        result.map_err(svp_error)
    }

    async fn vl3(&self, ip: Ipv4Addr, vnet: u32) -> Result<Option<Vl3Answer>> {
        self.svp(async |c| c.vl3(IpAddr::V4(ip), vnet).await).await
    }

    async fn vl2(&self, mac: [u8; 6], vnet: u32) -> Result<Option<Underlay>> {
        self.svp(async |c| c.vl2(mac, vnet).await).await
    }

    /// One round of the log: LOG, each entry applied, LOG_RM of them all. True when
    /// Portolan may have more.
    pub async fn drain_once(&self) -> Result<bool> {
        let ul = IpAddr::V4(self.config.underlay_ip);
        let entries = self.svp(async |c| c.log(ul, LOG_BYTES).await).await?;
        if entries.is_empty() {
            return Ok(false);
        }
        let used: usize = entries.iter().map(LogEntry::wire_len).sum();
        let mut ids: Vec<Uuid> = Vec::with_capacity(entries.len());
        for entry in &entries {
            self.apply(entry).await?;
            ids.push(entry.id());
        }
        self.svp(async |c| c.log_rm(&ids).await).await?;
        tracing::debug!(entries = ids.len(), "overlay log drained");
        Ok(used + 44 > LOG_BYTES as usize)
    }

    async fn apply(&self, entry: &LogEntry) -> Result<()> {
        match *entry {
            LogEntry::Vl2 { mac, vnet_id, .. } => {
                let Some(devices) = self.devices().get(&vnet_id).copied() else {
                    return Ok(());
                };
                self.kernel
                    .remove_forwarding(devices.vxlan, mac)
                    .map_err(|e| Error::io("netlink forwarding entry", e))
            }
            LogEntry::Vl3 { ip, vnet_id, .. } => {
                let Some(devices) = self.devices().get(&vnet_id).copied() else {
                    return Ok(());
                };
                let IpAddr::V4(ip) = ip.to_canonical() else {
                    return Ok(());
                };
                match self.vl3(ip, vnet_id).await? {
                    Some(Vl3Answer { mac, underlay }) => {
                        self.install_l3(devices, ip, mac, underlay)
                    }
                    None => self
                        .kernel
                        .remove_neighbour(devices.vxlan, ip)
                        .map_err(|e| Error::io("netlink neighbour entry", e)),
                }
            }
        }
    }

    async fn drain_log(self: Arc<Self>, stop: CancellationToken) {
        let mut rng = triton_common::rng::Rng::new(
            u64::from(self.config.underlay_ip.to_bits()) ^ std::process::id() as u64,
        );
        loop {
            let wait = match self.drain_once().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => LOG_INTERVAL + Duration::from_millis(rng.below(LOG_JITTER_MS) as u64),
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "overlay log round failed");
                    LOG_INTERVAL + Duration::from_millis(rng.below(LOG_JITTER_MS) as u64)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The NAT of one fabric network on a node ([`Overlay::ensure_nat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat {
    /// The fabric network's gateway address and prefix length.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// The node's external bridge, and the node's NAT address (shared by all its NAT'd
    /// networks: [`NatConfig`]), prefix length and gateway on the external network.
    pub external_bridge: String,
    pub external_ip: Ipv4Addr,
    pub external_prefix: u8,
    pub external_gateway: Ipv4Addr,
}

impl Nat {
    /// Checks the NAT, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        for (field, prefix) in [
            ("nat.prefix", self.prefix),
            ("nat.external_prefix", self.external_prefix),
        ] {
            if !(1..=30).contains(&prefix) {
                return Err(Error::invalid(
                    field,
                    format!("must be 1 to 30, not {prefix}"),
                ));
            }
        }
        for (field, ip) in [
            ("nat.gateway", self.gateway),
            ("nat.external_ip", self.external_ip),
            ("nat.external_gateway", self.external_gateway),
        ] {
            unicast(field, ip)?;
        }
        let name_ok = !self.external_bridge.is_empty()
            && self.external_bridge.len() < libc::IF_NAMESIZE
            && self
                .external_bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !name_ok {
            return Err(Error::invalid(
                "nat.external_bridge",
                format!("{:?} is not an interface name", self.external_bridge),
            ));
        }
        Ok(())
    }

    /// The fabric network, `a.b.c.d/n`.
    fn subnet(&self) -> String {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        format!(
            "{}/{}",
            Ipv4Addr::from(self.gateway.to_bits() & mask),
            self.prefix
        )
    }
}

/// The NAT namespace of `vnet` on the node with underlay address `underlay`.
pub fn nat_netns(underlay: Ipv4Addr, vnet: u32) -> String {
    format!("nat-{underlay}-{vnet}")
}

/// The NAT hub of the node with underlay address `underlay`: the namespace holding the
/// node's NAT address, shared by its vnets' NATs.
pub fn nat_hub(underlay: Ipv4Addr) -> String {
    format!("nat-{underlay}")
}

/// The node's end of a vnet NAT's leg in the vnet's bridge.
fn nat_leg(vnet: u32) -> String {
    format!("ng{vnet}")
}

/// The node's end of the hub's leg on the external bridge.
fn hub_leg(underlay: Ipv4Addr) -> String {
    format!("nx{:08x}", underlay.to_bits())
}

/// The hub's end of a vnet NAT's leg into it.
fn transit_leg(vnet: u32) -> String {
    format!("v{vnet}")
}

/// Transit /31s between a vnet's NAT and the hub: slot `n` is the hub's
/// `169.254.1.0 + 2n` and the vnet's the next, in 169.254.1.0 to 169.254.250.255
/// (link-local: never a destination beyond the link, never routed off the node).
const TRANSIT_SLOTS: u32 = 32_000;

/// The hub's and the vnet NAT's addresses of transit slot `slot`.
pub fn transit(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let hub = Ipv4Addr::new(169, 254, 1, 0).to_bits() + 2 * slot;
    (Ipv4Addr::from_bits(hub), Ipv4Addr::from_bits(hub + 1))
}

/// The slot of a hub address, if it is one.
fn transit_slot(ip: Ipv4Addr) -> Option<u32> {
    let off = ip
        .to_bits()
        .checked_sub(Ipv4Addr::new(169, 254, 1, 0).to_bits())?;
    (off % 2 == 0 && off / 2 < TRANSIT_SLOTS).then_some(off / 2)
}

fn netns_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

fn remove_nat_netns(ns: &str) {
    if netns_exists(ns)
        && let Err(e) = run("ip", &["netns", "del", ns])
    {
        tracing::warn!(netns = %ns, error = %e.chain(), "fabric NAT namespace not removed");
    }
}

/// Makes the node's NAT hub unless it is there (in the node's namespace).
fn ensure_hub(underlay: Ipv4Addr, nat: &Nat) -> Result<()> {
    let made = build_hub(underlay, nat);
    if made.is_err() {
        // Half made is not made: the next NAT starts again.
        remove_nat_netns(&nat_hub(underlay));
    }
    made
}

fn build_hub(underlay: Ipv4Addr, nat: &Nat) -> Result<()> {
    let hub = nat_hub(underlay);
    let leg = hub_leg(underlay);
    if netns_exists(&hub) && ifindex(&leg).is_some() {
        return Ok(());
    }
    remove_nat_netns(&hub);
    run("ip", &["netns", "add", &hub])?;
    let script = format!(
        "link add name {leg} type veth peer name ext0 netns {hub}\n\
         link set dev {leg} master {xbr} up\n",
        xbr = nat.external_bridge,
    );
    if let Err(e) = run_input("ip", &["-batch", "-"], &script) {
        remove_nat_netns(&hub);
        return Err(e);
    }
    let inner = format!(
        "link set dev lo up\n\
         addr add {xip}/{xp} dev ext0\n\
         link set dev ext0 up\n\
         route add default via {xgw} dev ext0\n",
        xip = nat.external_ip,
        xp = nat.external_prefix,
        xgw = nat.external_gateway,
    );
    run_input("ip", &["-n", &hub, "-batch", "-"], &inner)?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &hub,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    )?;
    let rules = "table ip triton_nat {\n\
         chain forward { type filter hook forward priority 0; policy drop;\n\
         ct state established,related accept\n\
         iifname \"v*\" oifname \"ext0\" accept\n}\n\
         chain input { type filter hook input priority 0; policy drop;\n\
         ct state established,related accept\n\
         iifname \"lo\" accept\n}\n\
         chain postrouting { type nat hook postrouting priority 100;\n\
         oifname \"ext0\" masquerade\n}\n}\n";
    run_input("ip", &["netns", "exec", &hub, "nft", "-f", "-"], rules)?;
    tracing::info!(netns = %hub, external = %nat.external_ip, bridge = %nat.external_bridge, "fabric NAT hub made");
    Ok(())
}

/// Makes `vnet`'s NAT namespace `ns` unless it is there, joined to `bridge` and to the
/// hub on a free transit slot (in the node's namespace).
fn ensure_vnet_nat(hub: &str, ns: &str, vnet: u32, bridge: &str) -> Result<()> {
    let made = build_vnet_nat(hub, ns, vnet, bridge);
    if made.is_err() {
        remove_nat_netns(ns);
    }
    made
}

fn build_vnet_nat(hub: &str, ns: &str, vnet: u32, bridge: &str) -> Result<()> {
    let leg = nat_leg(vnet);
    if netns_exists(ns) && ifindex(&leg).is_some() {
        return Ok(());
    }
    remove_nat_netns(ns);
    let used: std::collections::BTreeSet<u32> =
        run("ip", &["-n", hub, "-o", "-4", "addr", "show"])?
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace().skip_while(|w| *w != "inet");
                let addr = w.nth(1)?.split('/').next()?;
                transit_slot(addr.parse().ok()?)
            })
            .collect();
    let slot = (0..TRANSIT_SLOTS)
        .find(|n| !used.contains(n))
        .ok_or_else(|| Error::Command {
            command: format!("NAT of vnet {vnet}"),
            output: format!(
                "all {TRANSIT_SLOTS} transit addresses of the node's NAT hub are taken"
            ),
        })?;
    let (hub_ip, vnet_ip) = transit(slot);
    let transit = transit_leg(vnet);
    run("ip", &["netns", "add", ns])?;
    let script = format!(
        "link add name {leg} type veth peer name fab0 netns {ns}\n\
         link set dev {leg} master {bridge} up\n"
    );
    if let Err(e) = run_input("ip", &["-batch", "-"], &script) {
        remove_nat_netns(ns);
        return Err(e);
    }
    run(
        "ip",
        &[
            "-n", ns, "link", "add", "ext0", "type", "veth", "peer", "name", &transit, "netns", hub,
        ],
    )?;
    run_input(
        "ip",
        &["-n", hub, "-batch", "-"],
        &format!("addr add {hub_ip}/31 dev {transit}\nlink set dev {transit} up\n"),
    )?;
    let inner = format!(
        "link set dev lo up\n\
         link set dev fab0 mtu 1400 up\n\
         addr add {vnet_ip}/31 dev ext0\n\
         link set dev ext0 up\n\
         route add default via {hub_ip} dev ext0\n"
    );
    run_input("ip", &["-n", ns, "-batch", "-"], &inner)?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    )?;
    let rules = "table ip triton_nat {\n\
         set nets { type ipv4_addr; flags interval; }\n\
         set gateways { type ipv4_addr; }\n\
         chain forward { type filter hook forward priority 0; policy drop;\n\
         ct state established,related accept\n\
         iifname \"fab0\" oifname \"ext0\" ip saddr @nets accept\n}\n\
         chain input { type filter hook input priority 0; policy drop;\n\
         ct state established,related accept\n\
         iifname \"lo\" accept\n\
         iifname \"fab0\" ip daddr @gateways icmp type echo-request accept\n}\n\
         chain postrouting { type nat hook postrouting priority 100;\n\
         oifname \"ext0\" masquerade\n}\n}\n";
    run_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], rules)?;
    tracing::info!(vnet, netns = %ns, transit = %vnet_ip, "fabric NAT of a vnet made");
    Ok(())
}

/// Removes `vnet`'s NAT namespace, and the hub when no vnet's is left (in the node's
/// namespace).
fn remove_vnet_nat(underlay: Ipv4Addr, vnet: u32) {
    remove_nat_netns(&nat_netns(underlay, vnet));
    let hub = nat_hub(underlay);
    if !netns_exists(&hub) {
        return;
    }
    let prefix = format!("{hub}-");
    let others = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or(true);
    if !others {
        remove_nat_netns(&hub);
        tracing::info!(netns = %hub, "fabric NAT hub removed (no NAT'd vnet left)");
    }
}

/// Portolan's name is looked up again this often (as varpd's svp plugin does).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// The first wait after a failure; it doubles with each failure in a row, up to
/// [`BACKOFF_MAX`], plus up to a quarter more at random.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait after `failures` failures in a row (without the random part).
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    BACKOFF_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// The connection to Portolan, with what it was resolved to and its backoff.
struct Connection {
    client: Option<SvpClient>,
    /// The connected address.
    peer: Option<SocketAddr>,
    /// What Portolan's name resolved to, and when.
    addrs: Vec<SocketAddr>,
    resolved: Option<Instant>,
    /// Failures in a row, and no connecting before `retry_at`.
    failures: u32,
    retry_at: Option<Instant>,
    rng: triton_common::rng::Rng,
}

impl Connection {
    fn new(seed: u64) -> Connection {
        Connection {
            client: None,
            peer: None,
            addrs: Vec::new(),
            resolved: None,
            failures: 0,
            retry_at: None,
            rng: triton_common::rng::Rng::new(seed),
        }
    }

    /// Looks `portolan` (`host:port`) up when it has not been for [`RESOLVE_EVERY`]; a
    /// connection to an address it no longer resolves to is dropped. A failed lookup
    /// keeps the addresses known (an error only when there are none).
    async fn resolve(&mut self, portolan: &str) -> Result<()> {
        if self.resolved.is_some_and(|at| at.elapsed() < RESOLVE_EVERY) {
            return Ok(());
        }
        self.resolved = Some(Instant::now());
        match tokio::net::lookup_host(portolan).await {
            Ok(found) => {
                let found: Vec<SocketAddr> = found.collect();
                if found.is_empty() {
                    tracing::warn!(%portolan, "Portolan's name resolved to no address");
                } else {
                    if found != self.addrs {
                        tracing::info!(%portolan, addrs = ?found, "Portolan resolved");
                    }
                    if self.peer.is_some_and(|p| !found.contains(&p)) {
                        self.client = None;
                        self.peer = None;
                    }
                    self.addrs = found;
                }
            }
            Err(e) => tracing::warn!(%portolan, error = %e, "Portolan's name not resolved"),
        }
        if self.addrs.is_empty() {
            return Err(Error::invalid(
                "overlay.portolan",
                format!("{portolan:?} resolves to no address"),
            ));
        }
        Ok(())
    }

    /// Connects to the first address that answers, unless still backing off.
    async fn connect(&mut self, portolan: &str) -> Result<()> {
        if let Some(at) = self.retry_at
            && Instant::now() < at
        {
            return Err(Error::Command {
                command: "svp".into(),
                output: format!(
                    "Portolan at {portolan} failed {} times in a row; next try in {:?}",
                    self.failures,
                    at.saturating_duration_since(Instant::now())
                ),
            });
        }
        let mut last = None;
        for addr in self.addrs.clone() {
            match SvpClient::connect(addr).await {
                Ok(client) => {
                    self.client = Some(client.with_timeout(SVP_TIMEOUT));
                    self.peer = Some(addr);
                    self.retry_at = None;
                    if self.failures > 0 {
                        tracing::info!(%addr, "connected to Portolan again");
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        self.failed();
        // Failing to connect is a reason to look the name up again at once.
        self.resolved = None;
        Err(match last {
            Some(e) => svp_error(e),
            None => Error::invalid(
                "overlay.portolan",
                format!("{portolan:?} resolves to no address"),
            ),
        })
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let base = backoff(self.failures);
        let jitter = self.rng.below(base.as_millis() as usize / 4 + 1) as u64;
        self.retry_at = Some(Instant::now() + base + Duration::from_millis(jitter));
    }

    /// How long until the next connection may be tried.
    fn retry_in(&self) -> Duration {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

fn svp_error(e: portolan_client::client::SvpError) -> Error {
    Error::Command {
        command: "svp".into(),
        output: e.to_string(),
    }
}

/// Runs `f` in the network namespace `netns` (`None`: this thread's) on a thread of its
/// own, so no thread of the caller changes namespace.
fn in_netns<T: Send>(netns: Option<&OwnedFd>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(fd) = netns else {
        return f();
    };
    let fd = fd.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_netns(fd)?;
            f()
        })
        .join()
        .map_err(|_| Error::Join("a thread in the node's network namespace panicked".into()))?
    })
}

fn enter_netns(fd: i32) -> Result<()> {
    // SAFETY: setns(2) on a namespace descriptor the caller keeps open.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
        return Err(Error::io("setns", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The index of the device `name` in this thread's network namespace.
fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex(3) on a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of device `index` in this thread's network namespace.
fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname(3) into a buffer of IF_NAMESIZE.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    name.to_str().ok().map(str::to_string)
}

/// The VXLAN devices of ours in this thread's namespace, with their bridges.
fn list_vxlans() -> Result<BTreeMap<u32, Devices>> {
    let out = run("ip", &["-o", "link", "show", "type", "vxlan"])?;
    let mut found = BTreeMap::new();
    for line in out.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if let (Some(vnet), Some(vxlan)) = (vnet_of(name), ifindex(name)) {
            let bridge = ifindex(&bridge_name(vnet)).unwrap_or(0);
            found.insert(vnet, Devices { vxlan, bridge });
        }
    }
    Ok(found)
}

/// A raw packet socket (for sending only) in this thread's network namespace.
fn packet_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; protocol 0 receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("packet socket", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The gratuitous ARP of `ip` at `mac` (an ARP reply to everyone, sender and target
/// both `ip` at `mac`, as Linux takes a gratuitous reply).
pub fn garp_frame(ip: Ipv4Addr, mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&2u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&mac);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends the gratuitous ARP of `ip` out of the bridge with index `bridge` to its ports
/// (the VXLAN device drops it: it never leaves the node).
fn announce(packet: &OwnedFd, bridge: u32, ip: Ipv4Addr, mac: [u8; 6]) -> std::io::Result<()> {
    let frame = garp_frame(ip, mac);
    // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = 0x0806u16.to_be();
    to.sll_ifindex = bridge as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    super::net::send_to(packet.as_raw_fd(), &frame, &to)?;
    Ok(())
}

/// Device names by index, read in the node's namespace by the miss thread.
struct NetnsNames {
    netns: Option<i32>,
    cache: HashMap<u32, Option<u32>>,
}

impl NetnsNames {
    fn new(netns: Option<i32>) -> NetnsNames {
        NetnsNames {
            netns,
            cache: HashMap::new(),
        }
    }

    /// The vnet whose VXLAN device has index `index`, if it is one of ours.
    fn vnet(&mut self, index: u32) -> Option<u32> {
        if let Some(known) = self.cache.get(&index) {
            return *known;
        }
        let vnet = ifname(index).and_then(|n| vnet_of(&n));
        if vnet.is_some() {
            self.cache.insert(index, vnet);
        }
        vnet
    }
}

/// The miss thread: reads notices until `stop`, passing the misses of our VXLAN devices
/// on. Runs in the node's namespace (device names are looked up there).
fn read_misses(
    socket: Socket,
    mut names: NetnsNames,
    tx: mpsc::Sender<(u32, MissKind)>,
    stop: CancellationToken,
) {
    if let Some(fd) = names.netns
        && let Err(e) = enter_netns(fd)
    {
        tracing::error!(error = %e.chain(), "the overlay miss thread cannot enter the node's namespace");
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.is_cancelled() {
        let n = match socket.recv(&mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading overlay misses failed; learning stops");
                return;
            }
        };
        for miss in super::netlink::parse_misses(&buf[..n]) {
            let Some(vnet) = names.vnet(miss.ifindex) else {
                continue;
            };
            // A full queue drops the miss; the instance asks again.
            let _ = tx.try_send((vnet, miss.kind));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fabric_nics_name_their_vnet() {
        assert!(is_fabric_tag("sdc_overlay"));
        assert!(is_fabric_tag("sdc_overlay/42"));
        assert!(!is_fabric_tag("sdc_overlayx"));
        assert!(!is_fabric_tag("external"));
        assert_eq!(fabric_vnet("nics[0]", "sdc_overlay", 42).unwrap(), 42);
        assert_eq!(fabric_vnet("nics[0]", "sdc_overlay/77", 0).unwrap(), 77);
        let e = fabric_vnet("nics[1]", "sdc_overlay", 0).unwrap_err();
        assert!(e.to_string().contains("nics[1].vnet_id"), "{e}");
        let e = fabric_vnet("nics[0]", "sdc_overlay/x", 0).unwrap_err();
        assert!(e.to_string().contains("nics[0].nic_tag"), "{e}");
        assert!(fabric_vnet("nics[0]", "sdc_overlay", 1 << 24).is_err());
        assert_eq!(vnet_of("vx123"), Some(123));
        assert_eq!(vnet_of("vx"), None);
        assert_eq!(vnet_of("vxa1"), None);
    }

    #[test]
    fn nat_keys_are_checked_naming_the_key() {
        let nat = NatConfig::parse("10.88.88.22/24", "10.88.88.2", "").unwrap();
        assert_eq!(nat.ip, Ipv4Addr::new(10, 88, 88, 22));
        assert_eq!(nat.prefix, 24);
        assert_eq!(nat.nic_tag, "external");
        let parse = |ip: &str, gw: &str| {
            let nat = NatConfig::parse(ip, gw, "external")?;
            nat.validate()?;
            Ok::<_, Error>(nat)
        };
        for (ip, gw, key) in [
            ("", "10.88.88.2", "overlay.nat_ip"),
            ("10.88.88.22/24", "", "overlay.nat_gateway"),
            ("10.88.88.22", "10.88.88.2", "overlay.nat_ip"),
            ("10.88.88.22/33", "10.88.88.2", "overlay.nat_ip"),
            ("10.88.88.22/31", "10.88.88.23", "overlay.nat_ip"),
            ("nowhere/24", "10.88.88.2", "overlay.nat_ip"),
            ("10.88.88.22/24", "10.88.89.2", "overlay.nat_gateway"),
            ("10.88.88.22/24", "10.88.88.22", "overlay.nat_gateway"),
            ("10.88.88.22/24", "gw", "overlay.nat_gateway"),
            ("127.0.0.2/8", "127.0.0.1", "overlay.nat_ip"),
        ] {
            let e = parse(ip, gw).unwrap_err();
            assert!(e.to_string().contains(key), "{ip} {gw}: {e}");
        }
    }

    #[test]
    fn transit_slots_are_link_local_pairs() {
        assert_eq!(
            transit(0),
            (Ipv4Addr::new(169, 254, 1, 0), Ipv4Addr::new(169, 254, 1, 1))
        );
        let (hub, vnet) = transit(TRANSIT_SLOTS - 1);
        assert!(hub.is_link_local() && vnet.is_link_local());
        assert!(hub < Ipv4Addr::new(169, 254, 251, 0), "{hub}");
        assert_eq!(transit_slot(transit(77).0), Some(77));
        assert_eq!(transit_slot(transit(77).1), None);
        assert_eq!(transit_slot(Ipv4Addr::new(169, 254, 0, 2)), None);
        assert_eq!(hub_leg(Ipv4Addr::new(10, 99, 100, 7)), "nx0a636407");
    }

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(7), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let good = OverlayConfig {
            underlay_ip: "192.0.2.1".parse().unwrap(),
            portolan: "127.0.0.1:1296".into(),
            nat: None,
        };
        good.validate().unwrap();
        let e = OverlayConfig {
            underlay_ip: Ipv4Addr::UNSPECIFIED,
            ..good.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("overlay.underlay_ip"), "{e}");
        let e = OverlayConfig {
            portolan: "portolan".into(),
            ..good
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("overlay.portolan"), "{e}");
    }
}
