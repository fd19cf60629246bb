//! Networking of instances: a named network namespace per running instance, owned by the
//! instance's user namespace ([`make_netns`]: root inside manages its own interfaces,
//! addresses, routes and firewall, as in a SmartOS zone with an exclusive IP stack) and
//! named as `ip netns` names them, so it exists before pid 1 starts and the NICs are
//! configured when the image's init runs; one veth pair per NIC with the host end in the
//! Linux bridge of the NIC's nic tag, and the NIC's MAC, address, MTU and default route
//! inside. Each host end is guarded by nftables rules (see [`super::firewall`]) from
//! before it is up until it is removed. The guard is on the host side of the veth, out of
//! the instance's reach: an instance that takes another address or MAC loses its traffic,
//! nobody else's. A fabric NIC (nic tag `sdc_overlay`) is plugged into its vnet's bridge
//! of the overlay ([`super::overlay`]), made on first use, guarded the same way; one whose
//! network has `internet_nat` gets the node's NAT of its vnet ([`Network::ensure_nat`]).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::command::{run, run_input};
use super::firewall::{Firewall, PortRules, normalize_mac};
use super::held::HeldChild;
use super::idmap::RANGE_SIZE;
use super::overlay::{Hold, Nat, Overlay, fabric_vnet, is_fabric_tag};
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
    /// Host addresses and ports tenant bridges may reach (UDP and TCP).
    pub tenant_services: Vec<std::net::SocketAddrV4>,
    /// Create a bridge that does not exist yet (else a missing bridge is an error).
    pub create_bridges: bool,
    /// The node's overlay, for fabric NICs; none: a fabric NIC is an unknown nic tag.
    pub overlay: Option<Arc<Overlay>>,
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
        let mut firewall = Firewall::new(&self.netns_prefix, &self.bridges);
        firewall.tenant_services = self.tenant_services.clone();
        if self.overlay.is_some() {
            // The vnets' bridges are tenants' too.
            firewall
                .tenant_bridges
                .push(format!("{}*", super::overlay::BRIDGE_PREFIX));
        }
        firewall
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

    /// Checks that every NIC's tag has a bridge (a fabric NIC: that the node has an
    /// overlay and the NIC a vnet), before anything is built.
    pub fn check_tags(&self, nics: &[NicSpec]) -> Result<()> {
        for (i, nic) in nics.iter().enumerate() {
            if is_fabric_tag(&nic.nic_tag) && self.overlay.is_some() {
                fabric_vnet(&format!("nics[{i}]"), &nic.nic_tag, nic.vnet_id)?;
                continue;
            }
            self.bridge_for(&nic.nic_tag)?;
        }
        Ok(())
    }

    /// The bridge `nic` is plugged into, made if it is not there (`index`: its place
    /// among the instance's NICs, for errors).
    /// A fabric NIC's comes with a hold: its vnet's devices stay until it is dropped.
    fn bridge_of(&self, nic: &NicSpec, index: usize) -> Result<(String, Option<Hold>)> {
        if let (true, Some(overlay)) = (is_fabric_tag(&nic.nic_tag), &self.overlay) {
            let vnet = fabric_vnet(&format!("nics[{index}]"), &nic.nic_tag, nic.vnet_id)?;
            let (bridge, hold) = overlay.hold(vnet)?;
            return Ok((bridge, Some(hold)));
        }
        let bridge = self.bridge_for(&nic.nic_tag)?;
        self.ensure_bridge(bridge)?;
        Ok((bridge.to_string(), None))
    }

    /// For a fabric NIC with `internet_nat` and a gateway: its vnet's NAT on this node
    /// (the gateway answered here, what the instance sends through it masqueraded out of
    /// the node's NAT address), made unless it is there. A node with no `[overlay]`
    /// `nat_ip` logs a warning and plugs the NIC in anyway: its instance reaches only its
    /// fabric.
    pub fn ensure_nat(&self, uuid: Uuid, nic: &NicSpec, index: usize) -> Result<()> {
        let (Some(overlay), true, true, Some(gateway)) = (
            &self.overlay,
            nic.internet_nat,
            is_fabric_tag(&nic.nic_tag),
            nic.gateway,
        ) else {
            return Ok(());
        };
        let Some(config) = &overlay.config().nat else {
            tracing::warn!(%uuid, nic = index, %gateway, "the NIC's network has internet_nat, but this node has no NAT ([overlay] nat_ip): the instance reaches only its fabric");
            return Ok(());
        };
        let vnet = fabric_vnet(&format!("nics[{index}]"), &nic.nic_tag, nic.vnet_id)?;
        let bridge = self.bridges.get(&config.nic_tag).ok_or_else(|| {
            Error::invalid(
                "overlay.nat_nic_tag",
                format!(
                    "{:?} is not a nic tag of this node (nic_tags)",
                    config.nic_tag
                ),
            )
        })?;
        self.ensure_bridge(bridge)?;
        overlay.ensure_nat(
            vnet,
            &Nat {
                gateway,
                prefix: nic.prefix_len,
                external_bridge: bridge.clone(),
                external_ip: config.ip,
                external_prefix: config.prefix,
                external_gateway: config.gateway,
            },
        )?;
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

    /// Creates the instance's network namespace, owned by the instance's user namespace
    /// `userns` ([`make_netns`]), with every NIC configured. Links and a namespace left
    /// from an earlier run are removed first.
    pub fn setup(&self, uuid: Uuid, nics: &[NicSpec], userns: &OwnedFd) -> Result<()> {
        self.check_tags(nics)?;
        self.remove_links(uuid)?;
        make_netns(&self.netns_path(uuid), userns)?;
        let all: Vec<(usize, &NicSpec)> = nics.iter().enumerate().collect();
        self.plug(uuid, &all, true)
    }

    /// Plugs one NIC in (also into a running instance).
    pub fn add_nic(&self, uuid: Uuid, nic: &NicSpec, index: usize) -> Result<()> {
        self.plug(uuid, &[(index, nic)], false)
    }

    /// Plugs `nics` (each with its index among the instance's NICs) into the instance's
    /// namespace: three commands whatever their number, one `nft -f -` transaction that
    /// guards their host ends (before they exist: the rules key on the name), one
    /// `ip -batch` on the host (the veth pairs, the inner ends made in the namespace with
    /// the NIC's MAC and MTU, the host ends into their bridges and up) and one in the
    /// namespace (addresses, links up, routes and the per-NIC source routing tables).
    /// `fresh`: the namespace was just made, so no rule of an earlier NIC is left in it.
    fn plug(&self, uuid: Uuid, nics: &[(usize, &NicSpec)], fresh: bool) -> Result<()> {
        let ns = self.netns_name(uuid);
        let mut ports = Vec::new();
        let mut unknown_macs = Vec::new();
        let mut create = String::new();
        let mut attach = String::new();
        let mut inside = String::new();
        // The vnets' devices of fabric NICs stay until the NICs are their ports.
        let mut holds = Vec::new();
        for &(index, nic) in nics {
            let (bridge, hold) = self.bridge_of(nic, index)?;
            if hold.is_some() {
                // Made while the vnet is held, so no prune takes it meanwhile.
                self.ensure_nat(uuid, nic, index)?;
            }
            holds.extend(hold);
            let host = self.host_link(uuid, nic, index);
            let inner = nic.interface_name(index);
            if Path::new("/sys/class/net").join(&host).exists() {
                run("ip", &["link", "del", "dev", &host])?;
            }
            let mtu = match nic.mtu {
                0 => String::new(),
                mtu => format!(" mtu {mtu}"),
            };
            let mac = match nic.mac.is_empty() {
                true => String::new(),
                false => format!(" address {}", normalize_mac(&nic.mac)?),
            };
            create.push_str(&format!(
                "link add name {host}{mtu} type veth peer name {inner}{mtu}{mac} netns {ns}\n"
            ));
            attach.push_str(&format!("link set dev {host} master {bridge} up\n"));
            let ips: Vec<std::net::Ipv4Addr> = nic.ip.into_iter().collect();
            if nic.mac.is_empty() {
                unknown_macs.push((host.clone(), inner.clone(), ips));
            } else {
                ports.push(PortRules {
                    port: host.clone(),
                    mac: normalize_mac(&nic.mac)?,
                    ips,
                });
            }
            if let Some(ip) = nic.ip {
                inside.push_str(&format!(
                    "address add {ip}/{} dev {inner}\n",
                    nic.prefix_len
                ));
            }
            inside.push_str(&format!("link set dev {inner} up\n"));
            if let (true, Some(gw)) = (nic.primary, nic.gateway) {
                inside.push_str(&format!("route replace default via {gw} dev {inner}\n"));
            }
            if let Some(ip) = nic.ip {
                if !fresh {
                    clear_rules(&ns, index);
                }
                inside.push_str(&source_route(
                    &inner,
                    ip,
                    nic.prefix_len,
                    nic.gateway,
                    index,
                ));
            }
            if nic.vlan_id != 0 && !is_fabric_tag(&nic.nic_tag) {
                tracing::warn!(%uuid, vlan_id = nic.vlan_id, "VLAN tagging is not implemented; the NIC is untagged");
            }
        }
        let firewall = self.firewall();
        if unknown_macs.is_empty() {
            // Guarded before the ports exist, then made, put in their bridges and set up.
            firewall.guard(&ports)?;
            create.push_str(&attach);
            if let Err(e) = run_input("ip", &["-batch", "-"], &create) {
                // No rules left for ports that were not made (a name taken inside, ...).
                let names: Vec<String> = ports.into_iter().map(|p| p.port).collect();
                if let Err(cleanup) = firewall.unguard(&names) {
                    tracing::warn!(%uuid, error = %cleanup.chain(), "guard rules of ports not made are left");
                }
                return Err(e);
            }
        } else {
            // The kernel picks the MACs of NICs without one: made first, guarded with
            // what it picked, then set up.
            run_input("ip", &["-batch", "-"], &create)?;
            for (port, inner, ips) in unknown_macs {
                let mac = link_mac(&ns, &inner)?;
                ports.push(PortRules { port, mac, ips });
            }
            firewall.guard(&ports)?;
            run_input("ip", &["-batch", "-"], &attach)?;
        }
        run_input("ip", &["-n", &ns, "-batch", "-"], &inside)?;
        Ok(())
    }

    /// Unplugs one NIC (its veth pair goes with its host end).
    pub fn remove_nic(&self, uuid: Uuid, nic: &NicSpec, index: usize) -> Result<()> {
        let host = self.host_link(uuid, nic, index);
        if Path::new("/sys/class/net").join(&host).exists() {
            run("ip", &["link", "del", "dev", &host])?;
        }
        self.firewall().unguard(&[host])?;
        self.prune_overlay();
        Ok(())
    }

    /// Removes the overlay devices of vnets with no instance NIC left on the node.
    fn prune_overlay(&self) {
        if let Some(overlay) = &self.overlay
            && let Err(e) = overlay.prune()
        {
            tracing::warn!(error = %e.chain(), "overlay devices of unused vnets are left");
        }
    }

    /// Removes the namespace, every host link of the instance and their guard rules
    /// (also those of links already gone).
    pub fn teardown(&self, uuid: Uuid) -> Result<()> {
        self.remove_links(uuid)?;
        let firewall = self.firewall();
        let stem = self.link_stem(uuid);
        let ports: Vec<String> = firewall
            .guarded_ports()?
            .into_iter()
            .filter(|p| p.starts_with(&stem))
            .collect();
        firewall.unguard(&ports)?;
        self.prune_overlay();
        Ok(())
    }

    /// Removes every host link of the instance (one `ip -batch`) and its namespace.
    fn remove_links(&self, uuid: Uuid) -> Result<()> {
        let links = self.existing_host_links(uuid);
        if !links.is_empty() {
            let script: String = links
                .iter()
                .map(|link| format!("link del dev {link}\n"))
                .collect();
            if let Err(e) = run_input("ip", &["-batch", "-"], &script) {
                // Deleting one end of a veth removes the other; it may be gone already.
                if links
                    .iter()
                    .any(|l| Path::new("/sys/class/net").join(l).exists())
                {
                    return Err(e);
                }
            }
        }
        remove_netns(&self.netns_path(uuid))
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
/// The lines of an `ip -batch` in the namespace.
fn source_route(
    dev: &str,
    ip: std::net::Ipv4Addr,
    prefix_len: u8,
    gateway: Option<std::net::Ipv4Addr>,
    index: usize,
) -> String {
    let len = u32::from(prefix_len.min(32));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let network = format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(ip) & mask));
    let table = 100 + index;
    let mut lines = format!("route replace {network} dev {dev} src {ip} table {table}\n");
    if let Some(gw) = gateway {
        lines.push_str(&format!(
            "route replace default via {gw} dev {dev} table {table}\n"
        ));
    }
    lines.push_str(&format!("rule add from {ip}/32 table {table}\n"));
    lines
}

/// Removes the rules an earlier NIC at `index` left in namespace `ns` (its table went with
/// its device, its rule did not).
fn clear_rules(ns: &str, index: usize) {
    let table = (100 + index).to_string();
    while run("ip", &["-n", ns, "rule", "del", "table", &table]).is_ok() {}
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

/// Where `ip netns` keeps its names.
const NETNS_RUN_DIR: &str = "/run/netns";

/// What a namespace of an instance is set to before its first NIC: no ARP answer for one
/// NIC's address on another (see [`Network::plug`]), a server on port 80 or a `ping`
/// (ICMP datagram socket) without capabilities, as Docker sets them. Root inside cannot
/// change them (`/proc/sys` is read-only there).
fn sysctls() -> [(&'static std::ffi::CStr, Vec<u8>); 4] {
    [
        (c"/proc/sys/net/ipv4/conf/all/arp_ignore", b"1".to_vec()),
        (c"/proc/sys/net/ipv4/conf/all/arp_announce", b"2".to_vec()),
        (
            c"/proc/sys/net/ipv4/ip_unprivileged_port_start",
            b"0".to_vec(),
        ),
        // Every group of the instance, as the instance's user namespace sees them (the
        // child writes it from inside).
        (
            c"/proc/sys/net/ipv4/ping_group_range",
            format!("0 {}", RANGE_SIZE - 1).into_bytes(),
        ),
    ]
}

/// sendto(2) of `buf` on the socket `fd` to the address `to` (a `sockaddr_in`, a
/// `sockaddr_ll`, ...: the kernel reads its family); answers the bytes sent. It
/// allocates nothing, so a forked child may call it before it execs or exits.
pub fn send_to<A>(fd: RawFd, buf: &[u8], to: &A) -> std::io::Result<usize> {
    // SAFETY: sendto(2) from a buffer and an address borrowed for the call, each with
    // its length.
    let n = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (to as *const A).cast(),
            std::mem::size_of::<A>() as libc::socklen_t,
        )
    };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

/// Makes the instance's network namespace, owned by its user namespace `userns`, and
/// names it `path` (`/run/netns/<name>`) as `ip netns add` would, so `ip netns` and
/// `ip -n` work on it as on any other and `ip netns del` removes it.
///
/// A forked child joins `userns`, unshares a network namespace (which the user namespace
/// it is in then owns: root inside has `CAP_NET_ADMIN` and `CAP_NET_RAW` over its own
/// network stack and over nothing of the host's), sets the namespace's sysctls and sets
/// `lo` up; the agent bind-mounts `/proc/<child>/ns/net` on `path` and kills the child.
/// The host's root keeps every capability over the namespace, which is how the agent
/// still configures the NICs in it.
pub fn make_netns(path: &Path, userns: &OwnedFd) -> Result<()> {
    prepare_run_dir()?;
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(path)
    {
        return Err(Error::io(path, e));
    }
    let made = bind_new_netns(path, userns);
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// `/run/netns` exists and is a shared mount point, as iproute2 makes it (so a namespace
/// bound or unbound there shows in every mount namespace that sees it).
fn prepare_run_dir() -> Result<()> {
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    let c_dir = c"/run/netns";
    let mut bound = false;
    loop {
        // SAFETY: mount(2) with NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"".as_ptr(),
                c_dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || bound {
            return Err(Error::io(dir, e));
        }
        // Not a mount point yet: made one, a bind of itself.
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                c_dir.as_ptr(),
                c_dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(Error::io(dir, std::io::Error::last_os_error()));
        }
        bound = true;
    }
}

/// Steps of the child of [`bind_new_netns`], as it reports a failure.
const CHILD_STEPS: [&str; 5] = [
    "",
    "setns(user)",
    "unshare(CLONE_NEWNET)",
    "a sysctl",
    "setting lo up",
];

fn bind_new_netns(path: &Path, userns: &OwnedFd) -> Result<()> {
    let fail = |what: String| Error::Command {
        command: format!("making network namespace {}", path.display()),
        output: what,
    };
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(&path.display().to_string(), "contains a NUL byte"))?;
    let sysctls = sysctls();
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut lo: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in lo.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the child makes system calls only, on memory prepared above.
    let child = unsafe {
        HeldChild::spawn(|| {
            let step = child_make_netns(userns.as_raw_fd(), &sysctls, &mut lo);
            let errno = *libc::__errno_location();
            let mut report = [0u8; 5];
            report[0] = step;
            report[1..].copy_from_slice(&errno.to_le_bytes());
            report
        })
    }
    .map_err(|(step, e)| fail(format!("{step}: {e}")))?;
    let Some(report) = child.answer::<5>() else {
        return Err(fail("the child ended without an answer".into()));
    };
    if report[0] != 0 {
        let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
        let step = CHILD_STEPS.get(usize::from(report[0])).unwrap_or(&"?");
        return Err(fail(format!(
            "{step}: {}",
            std::io::Error::from_raw_os_error(errno)
        )));
    }
    let source = std::ffi::CString::new(format!("/proc/{}/ns/net", child.pid()))
        .map_err(|_| fail("pid path".into()))?;
    // SAFETY: mount(2) with NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"none".as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The child's side of [`bind_new_netns`]: 0 when done, else the failed step (errno
/// tells why).
///
/// # Safety
/// Raw system calls only: callable between fork and exec.
unsafe fn child_make_netns(
    userns: libc::c_int,
    sysctls: &[(&std::ffi::CStr, Vec<u8>)],
    lo: &mut libc::ifreq,
) -> u8 {
    // SAFETY: system calls on descriptors and memory the caller owns.
    unsafe {
        if libc::setns(userns, libc::CLONE_NEWUSER) < 0 {
            return 1;
        }
        if libc::unshare(libc::CLONE_NEWNET) < 0 {
            return 2;
        }
        // /proc/sys/net is the namespace's of the process that opens it.
        for (file, value) in sysctls {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return 3;
            }
            let n = libc::write(fd, value.as_ptr().cast(), value.len());
            libc::close(fd);
            if n < 0 {
                return 3;
            }
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return 4;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, lo as *mut libc::ifreq);
        if rc == 0 {
            lo.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, lo as *mut libc::ifreq);
        }
        libc::close(sock);
        if rc < 0 {
            return 4;
        }
    }
    0
}

/// Removes a namespace's name (as `ip netns del`): its bind mount, detached, and the
/// file. What is not there is fine.
fn remove_netns(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(&path.display().to_string(), "contains a NUL byte"))?;
    // SAFETY: umount2(2) on a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } < 0 {
        let e = std::io::Error::last_os_error();
        // EINVAL: not a mount point (a name whose namespace was never bound).
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(Error::io(path, e));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}
