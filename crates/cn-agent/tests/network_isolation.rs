//! The linux backend's network isolation, with real instances on a tenant bridge (nic tag
//! `external`) and the admin bridge of a test of its own: an instance cannot send with
//! another's IP or MAC, nor as a DHCP server; it reaches its neighbours and pings its
//! gateway, but no port of the host on any of its addresses and nothing on the admin
//! network; the nftables rules of a NIC go with it.
//!
//! Packets are sent and received from inside the instances' network namespaces (a thread
//! of the test in the namespace: `setns(2)`), and addresses or MACs changed there with
//! `ip`, as root in the instance could.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use cn_agent::linux::LinuxBackend;
use cn_agent::linux::firewall::table_names;
use cn_agent::{InstanceSpec, NicSpec, ZoneBackend};
use uuid::Uuid;

/// A safety net for waits that end on an event; never what a check depends on.
const WAIT: Duration = Duration::from_secs(10);

mod common;

use common::{Host as Net, serves_page, set_recv_timeout};
use dc_testkit::linux::{BridgeSetup, Image, LinuxHost, Setup};
use dc_testkit::run;

impl Net {
    fn new() -> Net {
        Net(LinuxHost::set_up(&Setup {
            who: "this test",
            cgroup: "triton-test-",
            netns: "tn",
            link: "n",
            bridges: &[
                BridgeSetup {
                    nic_tag: "admin",
                    stem: "tna",
                    net: 98,
                    seed: 8..10,
                },
                BridgeSetup {
                    nic_tag: "external",
                    stem: "tne",
                    net: 99,
                    seed: 6..8,
                },
            ],
            create_bridges: false,
            image: Image::web(&["sh", "httpd", "sleep", "ip", "ping", "nc", "cat", "printf"]),
        }))
    }

    fn admin_bridge(&self) -> &str {
        &self.bridges[0].name
    }

    fn tenant_bridge(&self) -> &str {
        &self.bridges[1].name
    }

    fn gateway(&self) -> Ipv4Addr {
        self.bridges[1].gateway()
    }

    fn admin_address(&self) -> Ipv4Addr {
        self.bridges[0].gateway()
    }

    fn tenant_nic(&self, n: u8) -> NicSpec {
        self.nic(1, n)
    }

    fn admin_nic(&self, n: u8) -> NicSpec {
        self.nic(0, n)
    }

    fn spec(&self, name: &str, nic: NicSpec) -> InstanceSpec {
        self.0.spec(name, vec![nic])
    }

    /// A host whose backend has made instances a, b and c on the tenant bridge (its NICs
    /// 0, 1 and 2) and z on the admin bridge (its NIC 0): the host, the backend, and each
    /// instance's UUID and NIC in that order.
    async fn with_abcz() -> (Net, LinuxBackend, [(Uuid, NicSpec); 4]) {
        let h = Net::new();
        let b = h.backend_with_image().await;
        let nics = [
            ("a", h.tenant_nic(0)),
            ("b", h.tenant_nic(1)),
            ("c", h.tenant_nic(2)),
            ("z", h.admin_nic(0)),
        ];
        let mut created = Vec::new();
        for (name, nic) in nics {
            let spec = h.spec(name, nic.clone());
            created.push((spec.uuid, nic));
            b.create(spec)
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
        }
        let created = created.try_into().unwrap();
        (h, b, created)
    }

    fn netns(&self, uuid: Uuid) -> String {
        format!("{}{uuid}", self.config.netns_prefix)
    }

    /// `ip ...` inside the instance's network namespace.
    fn ip_in(&self, uuid: Uuid, args: &[&str]) {
        let ns = self.netns(uuid);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Whether `ping` from inside the instance gets an answer from `to`.
    fn pings(&self, uuid: Uuid, to: Ipv4Addr) -> bool {
        let to = to.to_string();
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns(uuid),
                "/bin/busybox",
                "ping",
                "-c",
                "3",
                "-W",
                "2",
                &to,
            ])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Whether a command inside exits 0, or None if it is still running after `limit`
    /// (then zlogin is killed).
    fn ends_inside(&self, uuid: Uuid, argv: &[&str], limit: Duration) -> Option<bool> {
        let mut child = self
            .zlogin_command(uuid, argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status.success());
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole ruleset, as `nft list ruleset` prints it.
    fn ruleset() -> String {
        run("nft", &["list", "ruleset"])
    }
}

/// Runs `f` on a thread inside the network namespace `/run/netns/<ns>`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) on an open namespace file; it changes only this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}", path.display());
        f()
    })
    .join()
    .unwrap()
}

/// A UDP receiver at `addr` inside namespace `ns`: what it got before the datagram
/// "end" (then a short drain, so a late datagram is not missed either).
fn receiver(ns: &str, addr: SocketAddr) -> std::thread::JoinHandle<Vec<String>> {
    let path = Path::new("/run/netns").join(ns);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) on an open namespace file; it changes only this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        let mut ended = false;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text == "end" {
                        ended = true;
                        socket
                            .set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                    } else {
                        got.push(format!("{text} from {from}"));
                    }
                }
                Err(_) if ended => return got,
                Err(e) => panic!("no \"end\" at {addr}: {e}; got {got:?}"),
            }
        }
    });
    ready_rx.recv().unwrap();
    handle
}

/// Sends `what` from `from` (an address of the namespace) to `to`, inside `ns`.
fn send_from(ns: &str, from: SocketAddr, to: SocketAddr, what: &str) {
    let what = what.to_string();
    in_netns(ns, move || {
        let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
        s.send_to(what.as_bytes(), to).unwrap();
    });
}

/// Whether a TCP connection to `to` from inside namespace `ns` is accepted.
fn connects_from(ns: &str, to: SocketAddr) -> bool {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok()
    })
}

fn http_get(ns: Option<&str>, to: SocketAddr) -> bool {
    let get = move || serves_page(to, Duration::from_secs(2));
    match ns {
        Some(ns) => in_netns(ns, get),
        None => get(),
    }
}

/// ICMP echo requests seen in namespace `ns` (a raw ICMP socket, as tcpdump would see
/// them arrive) until `stop` is sent, and for 300 ms after: (source, ICMP length).
struct EchoWatch {
    stop: std::sync::mpsc::Sender<()>,
    seen: std::thread::JoinHandle<Vec<(Ipv4Addr, usize)>>,
}

impl EchoWatch {
    fn start(ns: &str) -> EchoWatch {
        let path = Path::new("/run/netns").join(ns);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let seen = std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on an open namespace file changes only this thread; the
            // socket calls use a buffer and a timeval we own.
            unsafe {
                assert_eq!(libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET), 0);
                let sock = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
                assert!(sock >= 0, "raw socket: {}", std::io::Error::last_os_error());
                set_recv_timeout(
                    sock,
                    libc::timeval {
                        tv_sec: 0,
                        tv_usec: 100_000,
                    },
                );
                ready_tx.send(()).unwrap();
                let mut seen = Vec::new();
                let mut until: Option<std::time::Instant> = None;
                let mut buf = [0u8; 2048];
                loop {
                    if until.is_none() && stopped.try_recv().is_ok() {
                        until = Some(std::time::Instant::now() + Duration::from_millis(300));
                    }
                    if until.is_some_and(|t| std::time::Instant::now() >= t) {
                        libc::close(sock);
                        return seen;
                    }
                    let n = libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 20 {
                        continue;
                    }
                    let n = n as usize;
                    let header = usize::from(buf[0] & 0x0f) * 4;
                    // type 8: echo request.
                    if n > header && buf[header] == 8 {
                        let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                        seen.push((from, n - header));
                    }
                }
            }
        });
        ready_rx.recv().unwrap();
        EchoWatch { stop, seen }
    }

    fn finish(self) -> Vec<(Ipv4Addr, usize)> {
        self.stop.send(()).unwrap();
        self.seen.join().unwrap()
    }
}

fn set_forwarding(dev: &str, on: bool) {
    let path = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
    std::fs::write(&path, if on { "1" } else { "0" }).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_cannot_spoof_or_reach_the_host_or_the_admin_network() {
    let (h, _b, [(a, nic_a), (bb, nic_b), (c, nic_c), (z, nic_z)]) = Net::with_abcz().await;
    let [ip_a, ip_b, ip_c, ip_z] = [&nic_a, &nic_b, &nic_c, &nic_z].map(|n| n.ip.unwrap());
    let mac_a = nic_a.mac.clone();
    let (ns_b, ns_c) = (h.netns(bb), h.netns(c));

    // What works: neighbours, the gateway, the instance's own web server from the host.
    assert!(h.pings(a, ip_b), "a pings b");
    assert!(h.pings(bb, ip_a), "b pings a");
    assert!(h.pings(a, h.gateway()), "a pings its gateway");
    assert!(
        http_get(None, SocketAddr::from((ip_a, 80))),
        "the host reaches a's httpd"
    );
    assert!(
        http_get(Some(&h.netns(a)), SocketAddr::from((ip_b, 80))),
        "a reaches b's httpd"
    );

    // B sends to C from its own address: received (the path works); then with A's
    // address, as a DHCP server, with A's MAC, and with both: none of those received.
    let at_c = SocketAddr::from((ip_c, 9999));
    let got = receiver(&ns_c, at_c);
    send_from(&ns_b, SocketAddr::from((ip_b, 0)), at_c, "b as itself");
    h.ip_in(bb, &["addr", "add", &format!("{ip_a}/32"), "dev", "eth0"]);
    send_from(&ns_b, SocketAddr::from((ip_a, 0)), at_c, "b with a's ip");
    send_from(
        &ns_b,
        SocketAddr::from((ip_b, 67)),
        at_c,
        "b as a dhcp server",
    );
    h.ip_in(bb, &["link", "set", "dev", "eth0", "address", &mac_a]);
    send_from(&ns_b, SocketAddr::from((ip_b, 0)), at_c, "b with a's mac");
    send_from(
        &ns_b,
        SocketAddr::from((ip_a, 0)),
        at_c,
        "b with a's ip and mac",
    );
    h.ip_in(
        bb,
        &[
            "link",
            "set",
            "dev",
            "eth0",
            "address",
            &h.tenant_nic(1).mac,
        ],
    );
    h.ip_in(bb, &["addr", "del", &format!("{ip_a}/32"), "dev", "eth0"]);
    send_from(&ns_b, SocketAddr::from((ip_b, 0)), at_c, "end");
    let got = got.join().unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!("b as itself from {ip_b}:")),
        "{got:?}"
    );
    // Nor does the host get a ping from a spoofed address: B pings the gateway as A.
    h.ip_in(bb, &["addr", "add", &format!("{ip_a}/32"), "dev", "eth0"]);
    let spoofed_ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns_b,
            "/bin/busybox",
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-I",
            &ip_a.to_string(),
            &h.gateway().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!spoofed_ping.status.success(), "{spoofed_ping:?}");
    h.ip_in(bb, &["addr", "del", &format!("{ip_a}/32"), "dev", "eth0"]);
    assert!(h.pings(bb, h.gateway()), "b as itself pings the gateway");

    // No port of the host answers an instance, on the tenant bridge's address or on the
    // admin address, while both answer the host.
    for host_addr in [h.gateway(), h.admin_address()] {
        let listener = TcpListener::bind((host_addr, 0)).unwrap();
        let at = listener.local_addr().unwrap();
        assert!(
            TcpStream::connect_timeout(&at, WAIT).is_ok(),
            "the host connects to {at}"
        );
        assert!(
            !connects_from(&h.netns(a), at),
            "a connects to the host's {at}"
        );
    }

    // The admin network is not reached through the host either: with forwarding on for
    // the two bridges, Z on the admin network reaches A's httpd, A does not reach Z's.
    set_forwarding(h.admin_bridge(), true);
    set_forwarding(h.tenant_bridge(), true);
    let z_to_a = http_get(Some(&h.netns(z)), SocketAddr::from((ip_a, 80)));
    let a_to_z = http_get(Some(&h.netns(a)), SocketAddr::from((ip_z, 80)));
    set_forwarding(h.admin_bridge(), false);
    set_forwarding(h.tenant_bridge(), false);
    assert!(
        z_to_a,
        "z (admin network) reaches a's httpd through the host"
    );
    assert!(!a_to_z, "a reaches z's httpd on the admin network");
    assert!(
        http_get(None, SocketAddr::from((ip_z, 80))),
        "the host reaches z on the admin network"
    );

    // A restarted agent keeps the rules: B still cannot use A's address.
    let b = h.backend();
    let (guard, host_table) = table_names(&h.config.netns_prefix);
    let port_a = b.network().existing_host_links(a);
    assert_eq!(port_a.len(), 1, "{port_a:?}");
    assert!(
        Net::ruleset().contains(&format!("chain port-{}", port_a[0])),
        "{}",
        Net::ruleset()
    );
    let got = receiver(&ns_c, at_c);
    h.ip_in(bb, &["addr", "add", &format!("{ip_a}/32"), "dev", "eth0"]);
    send_from(
        &ns_b,
        SocketAddr::from((ip_a, 0)),
        at_c,
        "b with a's ip, after a restart",
    );
    h.ip_in(bb, &["addr", "del", &format!("{ip_a}/32"), "dev", "eth0"]);
    send_from(&ns_b, SocketAddr::from((ip_b, 0)), at_c, "end");
    assert_eq!(got.join().unwrap(), Vec::<String>::new());

    // Stop and destroy: no chain, map element or mention of their ports is left.
    let ports: Vec<String> = [a, bb, c, z]
        .iter()
        .flat_map(|u| b.network().existing_host_links(*u))
        .collect();
    assert_eq!(ports.len(), 4, "{ports:?}");
    b.shutdown(a, Duration::from_secs(1)).await.expect("stop a");
    let rules = Net::ruleset();
    assert!(!rules.contains(&port_a[0]), "a stopped: {rules}");
    for u in [a, bb, c, z] {
        b.destroy(u).await.expect("destroy");
    }
    let rules = Net::ruleset();
    for port in &ports {
        assert!(!rules.contains(port.as_str()), "{port} left in {rules}");
    }
    assert!(rules.contains(&format!("table bridge {guard}")), "{rules}");
    // The agent's own tables go with the leftovers.
    cn_agent::linux::leftovers::remove_all(&h.config, h.admin_bridge());
    let rules = Net::ruleset();
    assert!(
        !rules.contains(&guard) && !rules.contains(&host_table),
        "{rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_of_ports_gone_while_the_agent_was_down_are_removed_at_start() {
    let h = Net::new();
    let b = h.backend_with_image().await;
    let a = b
        .create(h.spec("a", h.tenant_nic(0)))
        .await
        .expect("create")
        .spec
        .uuid;
    let port = b.network().existing_host_links(a).remove(0);
    assert!(Net::ruleset().contains(&format!("chain port-{port}")));
    // The veth goes without the agent (as with the namespace removed by hand).
    run("ip", &["link", "del", &port]);
    let b = h.backend();
    let rules = Net::ruleset();
    assert!(!rules.contains(&port), "{port} left in {rules}");
    b.destroy(a).await.expect("destroy");
}

/// Root in an instance owns its network stack (the namespace belongs to the instance's
/// user namespace): busybox's ping (raw sockets) works, and so do changes of its own
/// addresses and MAC, made from inside through zlogin. The guard on the host side of the
/// veth still lets nothing spoofed through: a third instance receives nothing sent with
/// a neighbour's address or MAC, and the host and the admin network stay out of reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_manages_its_own_stack_but_cannot_spoof_through_it() {
    let (h, b, [(a, nic_a), (bb, nic_b), (c, nic_c), (z, nic_z)]) = Net::with_abcz().await;
    let [ip_a, ip_b, ip_c, ip_z] = [&nic_a, &nic_b, &nic_c, &nic_z].map(|n| n.ip.unwrap());
    let (mac_a, mac_b) = (nic_a.mac.clone(), nic_b.mac.clone());
    let (ip_a_s, ip_b_s, ip_c_s) = (ip_a.to_string(), ip_b.to_string(), ip_c.to_string());
    let gateway = h.gateway().to_string();

    // busybox's ping (a raw socket: CAP_NET_RAW over its own namespace) from inside, as
    // the instance's root: the gateway and a neighbour answer.
    assert!(
        h.works_inside(a, &["ping", "-c", "1", "-W", "5", &gateway]),
        "a pings its gateway: {:?}",
        h.zlogin(a, &["ping", "-c", "1", "-W", "5", &gateway])
    );
    assert!(
        h.works_inside(a, &["ping", "-c", "1", "-W", "5", &ip_b_s]),
        "a pings b"
    );
    // The namespace is the instance's: its root may change it (an address on lo, a
    // route), which root in the host's namespace only could before.
    h.inside(a, &["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]);
    h.inside(
        a,
        &["ip", "route", "add", "198.51.100.0/24", "via", &gateway],
    );
    let routes = h.inside(a, &["ip", "route", "show"]);
    assert!(routes.contains("198.51.100.0/24"), "{routes}");
    // Its sysctls are set, and /proc/sys stays read-only.
    assert_eq!(
        h.inside(a, &["cat", "/proc/sys/net/ipv4/ping_group_range"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "65535"]
    );
    assert!(!h.works_inside(a, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]));

    // B takes A's address and pings C from it: C sees B's own echo (77-byte payloads
    // mark the spoofed ones), none from A's address.
    let watch = EchoWatch::start(&h.netns(c));
    assert!(
        h.works_inside(bb, &["ping", "-c", "1", "-W", "5", &ip_c_s]),
        "b pings c as itself"
    );
    h.inside(
        bb,
        &["ip", "addr", "add", &format!("{ip_a}/32"), "dev", "eth0"],
    );
    assert!(
        !h.works_inside(
            bb,
            &[
                "ping", "-c", "2", "-W", "2", "-s", "77", "-I", &ip_a_s, &ip_c_s
            ]
        ),
        "b's ping with a's address answered"
    );
    h.inside(
        bb,
        &["ip", "addr", "del", &format!("{ip_a}/32"), "dev", "eth0"],
    );
    let seen = watch.finish();
    assert!(seen.contains(&(ip_b, 64)), "c saw b's own ping: {seen:?}");
    assert!(
        seen.iter().all(|(from, _)| *from != ip_a),
        "c received a ping from a's address, sent by b: {seen:?}"
    );

    // B takes A's MAC: nothing it sends reaches C; with its own MAC back, it does.
    let watch = EchoWatch::start(&h.netns(c));
    h.inside(bb, &["ip", "link", "set", "dev", "eth0", "address", &mac_a]);
    assert!(
        !h.works_inside(bb, &["ping", "-c", "2", "-W", "2", "-s", "77", &ip_c_s]),
        "b's ping with a's MAC answered"
    );
    h.inside(bb, &["ip", "link", "set", "dev", "eth0", "address", &mac_b]);
    assert!(
        h.works_inside(bb, &["ping", "-c", "1", "-W", "5", &ip_c_s]),
        "b with its own MAC again pings c"
    );
    let seen = watch.finish();
    assert!(seen.contains(&(ip_b, 64)), "c saw b's own ping: {seen:?}");
    assert!(
        !seen.iter().any(|(_, len)| *len == 8 + 77),
        "c received a ping b sent with a's MAC: {seen:?}"
    );
    // A still has its traffic: B's attempts took nothing from it.
    assert!(h.works_inside(a, &["ping", "-c", "1", "-W", "5", &ip_c_s]));

    // The host and the admin network stay out of reach from inside: no host port on the
    // tenant bridge's or the admin address takes a connection, and Z's httpd on the admin
    // network is not reached through the host, while Z reaches A's.
    for host_addr in [h.gateway(), h.admin_address()] {
        let listener = TcpListener::bind((host_addr, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let at = listener.local_addr().unwrap();
        let port = at.port().to_string();
        let tried = h.ends_inside(a, &["nc", "-w", "2", &host_addr.to_string(), &port], WAIT);
        assert_eq!(tried, Some(false), "a's connect to the host's {at}");
        assert!(
            listener.accept().is_err(),
            "the host's {at} took a connection from a"
        );
    }
    let get = |ip: Ipv4Addr| format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80");
    set_forwarding(h.admin_bridge(), true);
    set_forwarding(h.tenant_bridge(), true);
    let z_to_a = h.zlogin(z, &["sh", "-c", &get(ip_a)]);
    let a_to_z = h.ends_inside(a, &["sh", "-c", &get(ip_z)], WAIT);
    set_forwarding(h.admin_bridge(), false);
    set_forwarding(h.tenant_bridge(), false);
    assert!(
        String::from_utf8_lossy(&z_to_a.stdout).contains("hello from a triton instance"),
        "z (admin network) reaches a's httpd through the host: {z_to_a:?}"
    );
    assert_eq!(
        a_to_z,
        Some(false),
        "a's connect to z's httpd on the admin network"
    );

    for u in [a, bb, c, z] {
        b.destroy(u).await.expect("destroy");
    }
}
