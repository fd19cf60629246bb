//! Fabrics on two compute nodes made of network namespaces, for tests and benches of the
//! overlay (`cn_agent::linux::overlay`) with Portolan.
//!
//! A [`Lab`] is a set of namespaces: "the switch", with an underlay bridge, and nodes
//! ([`Lab::node`]), each with an underlay address on a veth into it. Instances
//! ([`Lab::instance`]) are namespaces with a veth into their vnet's bridge on their node.
//! [`nic_row`] and [`underlay_row`] write what NAPI writes for Portolan; [`fetch`],
//! [`serve`] and [`ping`] are what an instance does. Everything is removed when the
//! [`Lab`] is dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cn_agent::linux::overlay::{Overlay, OverlayConfig, vxlan_name};
use moray_client::EtagCondition;
use portolan_client::buckets::{
    Buckets, RECORD_VERSION, UnderlayMapping, VXLAN_PORT, VnetMacIp, ip_text, mac_number,
    vnet_mac_ip_key,
};
use uuid::Uuid;

use crate::run;

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

/// A server in namespace `ns` on `ip` that answers every connection with `name`.
pub fn serve(ns: &str, ip: Ipv4Addr, name: &'static str) {
    let listener = in_ns(ns, move || TcpListener::bind((ip, PORT)).expect("bind"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(name.as_bytes());
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
        // SAFETY: sendto(2) from a buffer and an address we own.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert!(n >= 0, "send echo: {}", std::io::Error::last_os_error());
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
        run(
            "ip",
            &["-n", &switch, "link", "add", "ul", "type", "bridge"],
        );
        run("ip", &["-n", &switch, "link", "set", "ul", "up"]);
        lab
    }

    /// A new namespace of the lab, with its loopback up.
    pub fn netns(&mut self, what: &str) -> String {
        let name = format!("fab{}-{what}", self.id);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
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
        run(
            "ip",
            &[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "ul0",
                "netns", &ns,
            ],
        );
        run(
            "ip",
            &["-n", &switch, "link", "set", &port, "master", "ul", "up"],
        );
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "ul0"],
        );
        run("ip", &["-n", &ns, "link", "set", "ul0", "up"]);
        (ns, ip)
    }

    /// Instance `name` on `node`'s bridge of its vnet (made by the node's overlay); its
    /// host end is `h<name>` on the node.
    pub fn instance(&mut self, name: &str, node: &str, overlay: &Overlay, i: Instance) -> Instance {
        let ns = self.netns(name);
        let bridge = overlay.ensure(i.vnet).expect("the vnet's bridge");
        let host = format!("h{name}");
        run(
            "ip",
            &[
                "-n", node, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        );
        run(
            "ip",
            &["-n", node, "link", "set", &host, "master", &bridge, "up"],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
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
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", i.ip),
                "dev",
                "eth0",
            ],
        );
        Instance { ns, ..i }
    }
}

/// The overlay of the node in namespace `ns`, not started.
pub fn overlay(ns: &str, underlay_ip: Ipv4Addr, portolan: SocketAddr) -> Arc<Overlay> {
    Overlay::new(
        OverlayConfig {
            underlay_ip,
            portolan: portolan.to_string(),
        },
        Some(ns_fd(ns)),
    )
    .expect("overlay")
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

/// Empties the neighbour table of instance namespace `ns`.
pub fn flush_neighbours(ns: &str) {
    run("ip", &["-n", ns, "neigh", "flush", "all"]);
}
