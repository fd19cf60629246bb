//! Fabrics on two compute nodes made of network namespaces, for tests and benches of the
//! overlay (`cn_agent::linux::overlay`) with Portolan.
//!
//! A [`Lab`] is a set of namespaces: "the switch", with an underlay bridge, and nodes
//! ([`Lab::node`]), each with an underlay address on a veth into it. Instances
//! ([`Lab::instance`]) are namespaces with a veth into their vnet's bridge on their node.
//! [`nic_row`] and [`underlay_row`] write what NAPI writes for Portolan; [`fetch`],
//! [`serve`] and [`ping`] are what an instance does. Everything is removed when the
//! [`Lab`] is dropped. [`TwoNodes::start`] is the usual start: Portolan on Moray and two
//! nodes with their underlay rows written and their overlays started.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cn_agent::linux::net::send_to;
use cn_agent::linux::overlay::{Overlay, OverlayConfig, vxlan_name};
use moray_client::EtagCondition;
use moray_client::MorayClient;
use portolan_client::buckets::{
    Buckets, CnNetEvent, LogRecord, RECORD_VERSION, UnderlayMapping, VXLAN_PORT, VnetMacIp,
    ip_text, mac_number, vnet_mac_ip_key,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Dc, Options, Service, run};

/// The TCP port [`serve`] listens on and [`fetch`] connects to.
pub const PORT: u16 = 8080;

/// Runs `f` on a thread inside the named network namespace.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: setns(2) on a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// The named network namespace, open.
pub fn ns_fd(ns: &str) -> OwnedFd {
    std::fs::File::open(format!("/run/netns/{ns}"))
        .expect("open the namespace")
        .into()
}

/// What the server at `ip` in `from`'s network answers, or why there is none.
pub fn fetch(from: &str, ip: Ipv4Addr, timeout: Duration) -> Result<String, String> {
    in_ns(from, move || {
        let addr = SocketAddr::from((ip, PORT));
        let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        Ok(text)
    })
}

/// [`fetch`] from async code, on a blocking thread so that the runtime goes on.
pub async fn fetch_from(from: &str, ip: Ipv4Addr, timeout: Duration) -> Result<String, String> {
    let from = from.to_string();
    tokio::task::spawn_blocking(move || fetch(&from, ip, timeout))
        .await
        .expect("fetch thread")
}

/// A server in namespace `ns` on `ip` that answers every connection with `name`.
pub fn serve(ns: &str, ip: Ipv4Addr, name: &'static str) {
    let listener = in_ns(ns, move || TcpListener::bind((ip, PORT)).expect("bind"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(name.as_bytes());
        }
    });
}

/// A server in namespace `ns` on `ip` that answers every connection with the address it
/// came from (what a host beyond a NAT sees).
pub fn serve_peer(ns: &str, ip: Ipv4Addr) {
    let listener = in_ns(ns, move || TcpListener::bind((ip, PORT)).expect("bind"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().map(|a| a.ip().to_string());
            let _ = conn.write_all(peer.unwrap_or_default().as_bytes());
        }
    });
}

/// One ICMP echo from namespace `from` to `ip`: the time from sending the request to
/// its reply, `None` when none came within `timeout`. The request waits in the
/// kernel while the address is resolved (ARP), so on a cold neighbour table this is the
/// first packet's time including the resolution.
pub fn ping(from: &str, ip: Ipv4Addr, seq: u16, timeout: Duration) -> Option<Duration> {
    in_ns(from, move || {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let id = (std::process::id() as u16) ^ 0x5a5a;
        let mut req = [0u8; 24];
        req[0] = 8;
        req[4..6].copy_from_slice(&id.to_be_bytes());
        req[6..8].copy_from_slice(&seq.to_be_bytes());
        req[8..].copy_from_slice(b"triton fabrics!!");
        let sum = checksum(&req);
        req[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: sockaddr_in is plain data; all zeroes is valid.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from(ip).to_be();
        let start = Instant::now();
        send_to(sock.as_raw_fd(), &req, &to).expect("send echo");
        let mut buf = [0u8; 1500];
        loop {
            let left = timeout.checked_sub(start.elapsed())?;
            let mut pfd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().max(1) as libc::c_int;
            // SAFETY: poll(2) on one descriptor we own.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: recv(2) into a buffer we own.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let packet = &buf[..n as usize];
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let Some(icmp) = packet.get(ihl..ihl + 8) else {
                continue;
            };
            if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
                return Some(start.elapsed());
            }
        }
    })
}

/// A VXLAN packet's UDP payload (what goes to port 4789) carrying, on VNI `vni`, an
/// Ethernet frame from `src_mac` to `to.mac` with an IPv4 UDP datagram from `src_ip`
/// port 4000 to `to.ip` port `port` holding `payload`.
pub fn vxlan_udp(
    vni: u32,
    to: &Instance,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(&to.mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&to.ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    // No UDP checksum (allowed over IPv4).
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Sends one UDP datagram from namespace `from` to `to`.
pub fn send_udp(from: &str, to: SocketAddr, data: Vec<u8>) {
    in_ns(from, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
        s.send_to(&data, to).expect("send a UDP datagram");
    })
}

/// A UDP socket in namespace `ns` bound to `at`, waiting at most `timeout` per read.
pub fn udp_listener(ns: &str, at: SocketAddr, timeout: Duration) -> std::net::UdpSocket {
    in_ns(ns, move || {
        let s = std::net::UdpSocket::bind(at).expect("bind a UDP listener");
        s.set_read_timeout(Some(timeout)).expect("read timeout");
        s
    })
}

/// The next datagram `socket` receives, `None` when none came within its timeout.
pub fn received(socket: &std::net::UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An instance on a fabric: its namespace (once made), address, MAC and vnet.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its network namespace; empty until [`Lab::instance`] makes it.
    pub ns: String,
    /// Its address on the fabric.
    pub ip: Ipv4Addr,
    /// Its NIC's MAC.
    pub mac: [u8; 6],
    /// Its fabric's vnet id.
    pub vnet: u32,
}

impl Instance {
    /// An instance not made yet.
    pub fn new(ip: Ipv4Addr, mac: [u8; 6], vnet: u32) -> Instance {
        Instance {
            ns: String::new(),
            ip,
            mac,
            vnet,
        }
    }
}

/// `mac` as `ip` and `bridge` print it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The namespaces and what is in them; all removed on drop (a node's devices go with
/// its namespace, a veth with either end's).
pub struct Lab {
    id: String,
    namespaces: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if !std::path::Path::new("/run/netns").join(ns).exists() {
                continue;
            }
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

impl Default for Lab {
    fn default() -> Lab {
        Lab::new()
    }
}

impl Lab {
    /// The switch, with its underlay bridge. Needs root.
    pub fn new() -> Lab {
        // SAFETY: geteuid(2) has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "fabrics need root");
        let id = Uuid::new_v4().simple().to_string()[..6].to_string();
        let mut lab = Lab {
            id,
            namespaces: Vec::new(),
        };
        let switch = lab.netns("sw");
        ip_in(&switch, &["link", "add", "ul", "type", "bridge"]);
        ip_in(&switch, &["link", "set", "ul", "up"]);
        lab
    }

    /// A new namespace of the lab, with its loopback up.
    pub fn netns(&mut self, what: &str) -> String {
        let name = format!("fab{}-{what}", self.id);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip_in(&name, &["link", "set", "lo", "up"]);
        name
    }

    /// Removes namespace `ns` (made by someone else) with the lab's.
    pub fn adopt(&mut self, ns: String) {
        self.namespaces.push(ns);
    }

    /// Node `n`: its namespace, with `198.18.0.<n>` on a veth into the switch.
    pub fn node(&mut self, n: u8) -> (String, Ipv4Addr) {
        let ns = self.netns(&format!("n{n}"));
        let switch = format!("fab{}-sw", self.id);
        let ip = Ipv4Addr::new(198, 18, 0, n);
        let port = format!("sw{n}");
        ip_in(
            &switch,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &ns,
            ],
        );
        ip_in(&switch, &["link", "set", &port, "master", "ul", "up"]);
        ip_in(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "ul0"]);
        ip_in(&ns, &["link", "set", "ul0", "up"]);
        (ns, ip)
    }

    /// Instance `name` on `node`'s bridge of its vnet (made by the node's overlay); its
    /// host end is `h<name>` on the node.
    pub fn instance(&mut self, name: &str, node: &str, overlay: &Overlay, i: Instance) -> Instance {
        let ns = self.netns(name);
        let bridge = overlay.ensure(i.vnet).expect("the vnet's bridge");
        let host = format!("h{name}");
        ip_in(
            node,
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        ip_in(node, &["link", "set", &host, "master", &bridge, "up"]);
        ip_in(
            &ns,
            &[
                "link",
                "set",
                "eth0",
                "address",
                &mac_text(i.mac),
                "mtu",
                "1400",
                "up",
            ],
        );
        ip_in(
            &ns,
            &["addr", "add", &format!("{}/24", i.ip), "dev", "eth0"],
        );
        Instance { ns, ..i }
    }
}

/// The overlay of the node in namespace `ns`, not started, asking Portolan at `portolan`
/// (an address, or a host name and port).
pub fn overlay(ns: &str, underlay_ip: Ipv4Addr, portolan: impl ToString) -> Arc<Overlay> {
    Overlay::new(
        OverlayConfig {
            underlay_ip,
            portolan: portolan.to_string(),
            nat: None,
        },
        Some(ns_fd(ns)),
    )
    .expect("overlay")
}

/// A compute node of [`TwoNodes`]: its namespace, underlay address, server UUID and
/// overlay, started until `stop` is cancelled.
pub struct Node {
    /// The node's network namespace.
    pub ns: String,
    /// Its underlay address (on `ul0`).
    pub underlay: Ipv4Addr,
    /// Its server UUID, as Portolan's rows name it.
    pub cn: Uuid,
    /// Its overlay.
    pub overlay: Arc<Overlay>,
    /// Ends the overlay's learning and log (as cn-agent stopping).
    pub stop: CancellationToken,
    portolan: SocketAddr,
}

impl Node {
    /// A new overlay in place of the stopped one, started, as a restarted cn-agent makes
    /// it (it finds the vnets' devices in the kernel).
    pub fn restart(&mut self) {
        self.stop.cancel();
        self.stop = CancellationToken::new();
        self.overlay = overlay(&self.ns, self.underlay, self.portolan);
        self.overlay
            .start(self.stop.clone())
            .expect("the overlay starts again");
    }
}

/// Portolan on Moray (a [`Dc`] of Portolan alone) and two compute nodes of a [`Lab`],
/// their underlay rows written and their overlays started: where a fabrics test or
/// bench begins.
pub struct TwoNodes {
    /// Node 1 (`198.18.0.1`) and node 2 (`198.18.0.2`).
    pub nodes: [Node; 2],
    /// The lab the nodes are in, for instances and more namespaces.
    pub lab: Lab,
    /// The fabric buckets, as NAPI writes them.
    pub buckets: Buckets,
    /// Portolan's SVP address.
    pub svp: SocketAddr,
    /// The datacenter: Moray and Portolan.
    pub dc: Dc,
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop.cancel();
        }
    }
}

impl TwoNodes {
    /// Starts Portolan and the two nodes. Needs root.
    pub async fn start() -> TwoNodes {
        let dc = Dc::start(Options::only(Service::Portolan)).await;
        let svp = dc.addr(Service::Portolan);
        let buckets = Buckets::new(
            MorayClient::connect(&dc.moray_url())
                .await
                .expect("connect to Moray"),
        );
        let mut lab = Lab::new();
        let mut node = async |n: u8| {
            let (ns, underlay) = lab.node(n);
            let cn = Uuid::new_v4();
            underlay_row(&buckets, cn, underlay).await;
            let stop = CancellationToken::new();
            let overlay = overlay(&ns, underlay, svp);
            overlay
                .start(stop.clone())
                .unwrap_or_else(|e| panic!("node {n}'s overlay starts: {e}"));
            Node {
                ns,
                underlay,
                cn,
                overlay,
                stop,
                portolan: svp,
            }
        };
        let n1 = node(1).await;
        let n2 = node(2).await;
        TwoNodes {
            nodes: [n1, n2],
            lab,
            buckets,
            svp,
            dc,
        }
    }
}

/// Writes what NAPI writes for a node's underlay NIC: its row in
/// `portolan_underlay_mappings`.
pub async fn underlay_row(buckets: &Buckets, cn: Uuid, ip: Ipv4Addr) {
    buckets
        .underlay_mappings
        .put(
            &cn.to_string(),
            &UnderlayMapping {
                cn_uuid: cn,
                ip: ip_text(ip.into()),
                port: VXLAN_PORT,
            },
            EtagCondition::Any,
        )
        .await
        .expect("underlay row");
}

/// Writes what NAPI writes for a fabric NIC: its row in `portolan_vnet_mac_ip`.
pub async fn nic_row(buckets: &Buckets, i: &Instance, cn: Uuid, deleted: bool) {
    let row = VnetMacIp {
        mac: mac_number(i.mac),
        ip: ip_text(i.ip.into()),
        cn_uuid: cn,
        vnet_id: i.vnet,
        vlan_id: 2,
        version: RECORD_VERSION,
        deleted,
    };
    buckets
        .vnet_mac_ip
        .put(
            &vnet_mac_ip_key(i.ip.into(), i.vnet),
            &row,
            EtagCondition::Any,
        )
        .await
        .expect("put the NIC's row");
}

/// Writes what NAPI writes to tell node `cn` of a change on `vnet`: an entry of its log
/// in `portolan_cn_net_events`. Answers the entry's key.
pub async fn log_entry(buckets: &Buckets, cn: Uuid, vnet: u32, record: LogRecord) -> String {
    let key = Uuid::new_v4().to_string();
    buckets
        .cn_net_events
        .put(
            &key,
            &CnNetEvent {
                cn_uuid: cn,
                vnet_id: vnet,
                version: RECORD_VERSION,
                record,
            },
            EtagCondition::Any,
        )
        .await
        .expect("log entry");
    key
}

/// Waits (up to `wait`) until the node's agent has drained (removed) the log entry `key`.
pub async fn drained(buckets: &Buckets, key: &str, what: &str, wait: Duration) {
    let events = buckets.cn_net_events.clone();
    crate::eventually(what, wait, || {
        let events = events.clone();
        async move { events.get(key).await.expect("read the log").is_none() }
    })
    .await;
}

/// Whether the node's VXLAN device of `vnet` has a forwarding entry for `mac` (to a
/// remote node).
pub fn has_forwarding(node: &str, vnet: u32, mac: [u8; 6]) -> bool {
    run(
        "bridge",
        &["-n", node, "fdb", "show", "dev", &vxlan_name(vnet)],
    )
    .lines()
    // The VXLAN device's own entries name the remote node; the bridge's (learned from
    // frames that came through the device) do not.
    .any(|l| l.starts_with(&mac_text(mac)) && l.contains(" dst "))
}

/// Makes `node`'s overlay of `vnet` cold for `i`: its neighbour and forwarding entries
/// on the VXLAN device go, and so does the bridge's learned entry for its MAC.
pub fn forget(node: &str, vnet: u32, i: &Instance) {
    let vx = vxlan_name(vnet);
    let mac = mac_text(i.mac);
    let ip = i.ip.to_string();
    for args in [
        vec!["-n", node, "neigh", "del", &ip, "dev", &vx],
        vec!["-n", node, "fdb", "del", &mac, "dev", &vx, "self"],
    ] {
        let cmd = if args[2] == "neigh" { "ip" } else { "bridge" };
        let _ = std::process::Command::new(cmd)
            .args(&args)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `ip -n NS ARGS...`: `ip` on namespace `ns`.
fn ip_in(ns: &str, args: &[&str]) {
    let mut argv = vec!["-n", ns];
    argv.extend_from_slice(args);
    run("ip", &argv);
}

/// Empties the neighbour table of instance namespace `ns`.
pub fn flush_neighbours(ns: &str) {
    ip_in(ns, &["neigh", "flush", "all"]);
}
