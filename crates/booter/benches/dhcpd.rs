//! `cargo bench -p booter --bench dhcpd`: DORA exchanges per second, `perfdhcp` (Kea's,
//! Debian `kea-admin`) against dhcpd and against ISC Kea's `kea-dhcp4` (memfile) on the
//! same bridge and namespace, in the same run.
//!
//! Set-up: a bridge with the host on 10.91.0.1/16 and a namespace on it where perfdhcp
//! runs (10.91.255.254, `-l eth0`: broadcast, as PXE ROMs). dhcpd runs in this process on
//! a test datacenter (NAPI and CNAPI on one PostgreSQL and Moray; the admin network is
//! 10.91.0.0/16), Kea from a temp dir with a pool over the same range; one at a time.
//! For the bench's length the machine's `net.core.rmem_default` is 4 MiB, so perfdhcp's
//! one socket for all its clients holds a burst of answers (put back after).
//!
//! Per server, at `DHCPD_BENCH_RATE` (4000) exchanges initiated per second:
//! * first contact: `DHCPD_BENCH_EXCHANGES` (1000) exchanges from MACs drawn out of 16M
//!   (`-R 16777216`), nearly all new: dhcpd creates each one's admin NIC in NAPI
//!   (how many were made is printed);
//! * repeat: the same number of exchanges from a list of `DHCPD_BENCH_EXCHANGES` MACs
//!   (perfdhcp draws from it at random) after warm-up passes over the list: for dhcpd
//!   until NAPI holds a NIC for every MAC of it, for Kea four passes (about 98% of the
//!   list). dhcpd answers both from the NICs it follows from NAPI's `WatchNics`.
//!
//! Printed per pass: 4-way exchanges/s as perfdhcp reports them, the drops of
//! DISCOVER-OFFER and REQUEST-ACK, how many answers of them the kernel dropped at
//! perfdhcp's own socket (its namespace's UDP `RcvbufErrors`), and perfdhcp's delays
//! (answered exchanges). perfdhcp, NAPI, CNAPI, Moray and PostgreSQL all run on this
//! machine and take CPU from the server measured.

// Benches fail by panicking, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

triton_common::global_allocator!();

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use dc_testkit::Dc;
use dc_testkit::bench::{env_or, runtime};
use tokio_util::sync::CancellationToken;
use triton_proto::napi::v1 as napi_pb;

#[path = "../tests/common/napi_dc.rs"]
mod napi_dc;

const RANGE_START: &str = "10.91.0.10";
const RANGE_END: &str = "10.91.255.250";

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bridge and namespace; removed on drop.
struct Net {
    bridge: String,
    ns: String,
    /// The machine's `net.core.rmem_default` before the bench raised it, put back on drop.
    rmem_default: String,
}

const RMEM_DEFAULT: &str = "/proc/sys/net/core/rmem_default";

impl Net {
    fn up(id: &str) -> Net {
        let routes = run(&["ip", "-4", "route", "show"]);
        assert!(
            !routes.contains("10.91."),
            "10.91.0.0/16 is in use on this machine: the bench needs it"
        );
        // perfdhcp takes the answers of its thousand clients on one socket (a PXE client
        // has its own) with the default receive buffer, about 90 packets: a burst of
        // OFFERs for one CreateNics batch overflowed it (RcvbufErrors in its namespace).
        // It gets dhcpd's 4 MiB, for both servers alike. rmem_default cannot be set inside
        // a namespace on this kernel, so it is the machine's, for the bench's length.
        let rmem_default = std::fs::read_to_string(RMEM_DEFAULT)
            .unwrap_or_else(|e| panic!("reading {RMEM_DEFAULT}: {e}"));
        std::fs::write(RMEM_DEFAULT, "4194304")
            .unwrap_or_else(|e| panic!("writing {RMEM_DEFAULT} (the bench runs as root): {e}"));
        let net = Net {
            bridge: format!("bdb{id}"),
            ns: format!("bdn{id}"),
            rmem_default,
        };
        let (veth, peer) = (format!("bdv{id}"), format!("bdp{id}"));
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        run(&["ip", "addr", "add", "10.91.0.1/16", "dev", &net.bridge]);
        run(&["ip", "link", "set", &net.bridge, "up"]);
        run(&["ip", "netns", "add", &net.ns]);
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", &veth, "master", &net.bridge, "up"]);
        run(&["ip", "link", "set", &peer, "netns", &net.ns]);
        let ns = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", net.ns.as_str()];
            all.extend(args);
            run(&all);
        };
        ns(&["ip", "link", "set", &peer, "name", "eth0"]);
        ns(&["ip", "addr", "add", "10.91.255.254/16", "dev", "eth0"]);
        ns(&["ip", "link", "set", "eth0", "up"]);
        ns(&["ip", "link", "set", "lo", "up"]);
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::fs::write(RMEM_DEFAULT, self.rmem_default.trim());
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// One perfdhcp pass's figures.
#[derive(Debug, Default)]
struct Pass {
    rate: f64,
    drops_offer: u64,
    drops_ack: u64,
    sent: u64,
    /// DISCOVER to OFFER, answered ones: average and most, ms.
    offer_avg_ms: f64,
    offer_max_ms: f64,
    /// REQUEST to ACK, average, ms.
    ack_avg_ms: f64,
    /// Answers the kernel dropped at perfdhcp's socket for a full receive buffer: lost
    /// at the client, not by the server (counted in the drops above too).
    client_drops: u64,
}

/// `/proc/net/snmp`'s UDP `RcvbufErrors` of perfdhcp's namespace.
fn client_rcvbuf_errors(net: &Net) -> u64 {
    let snmp = run(&["ip", "netns", "exec", &net.ns, "cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let at = names.and_then(|n| n.split_whitespace().position(|n| n == "RcvbufErrors"));
    at.and_then(|at| values?.split_whitespace().nth(at)?.parse().ok())
        .unwrap_or_else(|| panic!("no UDP RcvbufErrors count in /proc/net/snmp:\n{snmp}"))
}

fn perfdhcp(net: &Net, rate: usize, exchanges: usize, clients: &[&str]) -> Pass {
    let rate = rate.to_string();
    let n = exchanges.to_string();
    let mut args = vec![
        "ip", "netns", "exec", &net.ns, "perfdhcp", "-4", "-l", "eth0", "-r", &rate, "-n", &n,
        "-d", "2", "-W", "2000000",
    ];
    args.extend(clients);
    let before = client_rcvbuf_errors(net);
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // perfdhcp exits 3 when packets were dropped; its report is there either way.
    assert!(
        text.contains("Rate:"),
        "perfdhcp {args:?}: {}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pass = Pass {
        client_drops: client_rcvbuf_errors(net) - before,
        ..Pass::default()
    };
    let mut section = "";
    for line in text.lines() {
        let l = line.trim();
        if l.contains("DISCOVER-OFFER") {
            section = "offer";
        } else if l.contains("REQUEST-ACK") {
            section = "ack";
        }
        let num = |l: &str| -> f64 {
            l.split(':')
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        if l.starts_with("Rate:") {
            pass.rate = num(l);
        } else if l.starts_with("drops:") {
            match section {
                "offer" => pass.drops_offer = num(l) as u64,
                "ack" => pass.drops_ack = num(l) as u64,
                _ => {}
            }
        } else if l.starts_with("avg delay:") {
            match section {
                "offer" => pass.offer_avg_ms = num(l),
                "ack" => pass.ack_avg_ms = num(l),
                _ => {}
            }
        } else if l.starts_with("max delay:") && section == "offer" {
            pass.offer_max_ms = num(l);
        } else if l.starts_with("sent packets:") && section == "offer" {
            pass.sent = num(l) as u64;
        }
    }
    pass
}

fn print(server: &str, pass: &str, p: &Pass) {
    println!(
        "| {server} | {pass} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
        p.rate,
        p.sent,
        p.drops_offer,
        p.drops_ack,
        p.client_drops,
        p.offer_avg_ms,
        p.offer_max_ms,
        p.ack_avg_ms
    );
}

fn mac_list(dir: &Path, n: usize) -> String {
    let path = dir.join("macs.txt");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..n {
        writeln!(
            f,
            "02:bd:00:{:02x}:{:02x}:{:02x}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        )
        .unwrap();
    }
    path.display().to_string()
}

async fn admin_nics(dc: &Dc, network: &str) -> usize {
    let mut total = 0;
    let mut offset = 0;
    loop {
        let page = dc
            .napi()
            .list_nics(napi_pb::ListNicsRequest {
                network_uuid: Some(network.into()),
                limit: Some(1000),
                offset,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .nics
            .len();
        total += page;
        offset += page as u32;
        if page < 1000 {
            return total;
        }
    }
}

fn kea(dir: &Path, bridge: &str) -> Child {
    let conf = dir.join("kea-dhcp4.conf");
    let leases = dir.join("kea-leases4.csv");
    std::fs::write(
        &conf,
        format!(
            r#"{{"Dhcp4": {{
  "interfaces-config": {{"interfaces": ["{bridge}"], "dhcp-socket-type": "raw"}},
  "lease-database": {{"type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0}},
  "valid-lifetime": 86400,
  "subnet4": [{{"id": 1, "subnet": "10.91.0.0/16",
    "pools": [{{"pool": "{RANGE_START} - {RANGE_END}"}}],
    "option-data": [{{"name": "routers", "data": "10.91.0.1"}},
                    {{"name": "domain-name-servers", "data": "10.91.0.53"}}]}}],
  "loggers": [{{"name": "kea-dhcp4", "output_options": [{{"output": "{log}"}}], "severity": "WARN"}}]
}}}}"#,
            leases = leases.display(),
            log = dir.join("kea.log").display()
        ),
    )
    .unwrap();
    Command::new("kea-dhcp4")
        .arg("-c")
        .arg(&conf)
        .env("KEA_PIDFILE_DIR", dir)
        .env("KEA_LOCKFILE_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    for (program, package) in [
        ("/usr/sbin/perfdhcp", "kea-admin"),
        ("/usr/sbin/kea-dhcp4", "kea-dhcp4-server"),
    ] {
        assert!(
            Path::new(program).exists(),
            "the dhcpd bench needs {program}: apt-get install {package}"
        );
    }
    let rate = env_or("DHCPD_BENCH_RATE", 4000);
    let exchanges = env_or("DHCPD_BENCH_EXCHANGES", 1000);
    let id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let net = Net::up(id);
    let dir = tempfile::tempdir().unwrap();
    let macs = mac_list(dir.path(), exchanges);
    let fresh = ["-R", "16777216"];
    let list = ["-M", macs.as_str()];
    println!(
        "perfdhcp -r {rate} -n {exchanges}, broadcast from a namespace on the bridge\n\n\
         | server | pass | 4-way exchanges/s | DISCOVERs sent | drops DISCOVER-OFFER | drops REQUEST-ACK | of them at perfdhcp's socket | DISCOVER-OFFER avg ms | DISCOVER-OFFER max ms | REQUEST-ACK avg ms |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );

    runtime().block_on(async {
        let dc = napi_dc::start(&["admin"]).await;
        let mut napi = dc.napi();
        let admin = napi
            .create_network(napi_pb::CreateNetworkRequest {
                name: "admin".into(),
                subnet: "10.91.0.0/16".into(),
                provision_start_ip: RANGE_START.into(),
                provision_end_ip: RANGE_END.into(),
                nic_tag: "admin".into(),
                gateway: Some("10.91.0.1".into()),
                resolvers: vec!["10.91.0.53".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let stop = CancellationToken::new();
        let booter = booter::start(
            booter::Config {
                server_ip: "10.91.0.1".into(),
                interface: net.bridge.clone(),
                tftp_listen: String::new(),
                http_listen: "10.91.0.1:0".into(),
                napi_url: format!("http://{}", dc.addr(dc_testkit::Service::Napi)),
                cnapi_url: format!("http://{}", dc.addr(dc_testkit::Service::Cnapi)),
                admin_uuid: dc_testkit::ADMIN_UUID.into(),
                data_dir: dir.path().display().to_string(),
                ..booter::Config::default()
            },
            stop.clone(),
        )
        .await
        .unwrap();
        eprintln!("[bench] dhcpd: first contact");
        let p = tokio::task::block_in_place(|| perfdhcp(&net, rate, exchanges, &fresh));
        let made = admin_nics(&dc, &admin.uuid).await;
        print("dhcpd", &format!("first contact ({made} NICs made)"), &p);
        eprintln!("[bench] dhcpd: warm-up over the list of {exchanges} MACs");
        let mut passes = 0;
        while admin_nics(&dc, &admin.uuid).await < made + exchanges {
            passes += 1;
            assert!(
                passes <= 30,
                "the warm-up did not reach every MAC of the list"
            );
            tokio::task::block_in_place(|| perfdhcp(&net, rate, exchanges, &list));
        }
        eprintln!("[bench] dhcpd: repeat");
        let p = tokio::task::block_in_place(|| perfdhcp(&net, rate, exchanges, &list));
        print("dhcpd", "repeat (every MAC known)", &p);
        stop.cancel();
        let _ = booter.task.await;

        eprintln!("[bench] Kea: first contact");
        let mut k = kea(dir.path(), &net.bridge);
        // Kea is up when it answers: a pass of 10 exchanges without a drop.
        let mut tries = 0;
        while perfdhcp(&net, 100, 10, &fresh).drops_offer > 0 {
            tries += 1;
            assert!(
                tries < 30,
                "Kea does not answer; see {}",
                dir.path().join("kea.log").display()
            );
        }
        let p = tokio::task::block_in_place(|| perfdhcp(&net, rate, exchanges, &fresh));
        print("kea-dhcp4 (memfile)", "first contact", &p);
        eprintln!("[bench] Kea: warm-up and repeat");
        for _ in 0..4 {
            tokio::task::block_in_place(|| perfdhcp(&net, rate, exchanges, &list));
        }
        let p = tokio::task::block_in_place(|| perfdhcp(&net, rate, exchanges, &list));
        print("kea-dhcp4 (memfile)", "repeat", &p);
        let _ = k.kill();
        let _ = k.wait();
    });
}
