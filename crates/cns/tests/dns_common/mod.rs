//! What the DNS tests share: a zone like the ones CNS builds, a server on loopback,
//! `dig`, and Debian's Knot as a secondary.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;

use cns::dns::{self, TransferAcl};
use cns::peers::Peers;
use cns::zone::{NS_TTL, SoaFields, TTL, Zone, Zones};
use hickory_proto::rr::rdata::{A, NS, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ZONE: &str = "coal.example.";
pub const ACCOUNT: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// The instance name of VM number `i`: `<uuid>.inst.<account>.coal.example.`
pub fn inst(i: u32) -> String {
    format!(
        "{:08x}-0000-4000-8000-000000000000.inst.{ACCOUNT}.{ZONE}",
        i
    )
}

/// VM number `i`'s address: 10.<i / 65536 % 256>.<i / 256 % 256>.<i % 256>, from 10.0.1.0.
pub fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 0)) + i)
}

/// coal.example at `serial` with instances `vms` (A and TXT each) and a service
/// `web.svc.<account>` on all of them (A and SRV port 80).
pub fn zone(serial: u32, vms: impl IntoIterator<Item = u32>) -> Zone {
    let origin = name(ZONE);
    let soa = SoaFields {
        mname: name("cns.coal.example."),
        rname: name("hostmaster.example."),
    };
    let svc = name(&format!("web.svc.{ACCOUNT}.{ZONE}"));
    let mut records = vec![Record::from_rdata(
        origin.clone(),
        NS_TTL,
        RData::NS(NS(name("cns.coal.example."))),
    )];
    for i in vms {
        let owner = name(&inst(i));
        records.push(Record::from_rdata(owner.clone(), TTL, RData::A(A(ip(i)))));
        records.push(Record::from_rdata(
            owner.clone(),
            TTL,
            RData::TXT(TXT::new(vec![format!("vm {i}")])),
        ));
        records.push(Record::from_rdata(svc.clone(), TTL, RData::A(A(ip(i)))));
        records.push(Record::from_rdata(
            svc.clone(),
            TTL,
            RData::SRV(SRV::new(0, 10, 80, owner)),
        ));
    }
    Zone::new(origin, serial, soa).with_records(records)
}

/// A DNS server on 127.0.0.1 (`port` 0: any) over `zones`.
pub struct Server {
    pub addr: SocketAddr,
    pub zones: Arc<Zones>,
    pub acl: Arc<TransferAcl>,
    pub peers: Peers,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(zones: Arc<Zones>, acl: Arc<TransferAcl>, port: u16) -> Server {
        let peers = Peers::new();
        let listener = dns::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .await
            .unwrap();
        let addr = listener.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (zones, acl, peers, shutdown) =
                (zones.clone(), acl.clone(), peers.clone(), shutdown.clone());
            async move {
                listener.serve(zones, acl, peers, shutdown).await.unwrap();
            }
        });
        Server {
            addr,
            zones,
            acl,
            peers,
            shutdown,
            task,
        }
    }

    /// A server over [`zone`] serial 1 (instances 0 to 2) that `secondary` may transfer
    /// from.
    pub async fn for_secondary(secondary: Ipv4Addr) -> Server {
        let zones = Arc::new(Zones::new(100));
        zones.commit(zone(1, 0..3)).unwrap();
        let acl = Arc::new(TransferAcl::new(&[secondary.to_string()], &[]).unwrap());
        Server::start(zones, acl, 0).await
    }

    /// Stops the server and waits until its sockets are closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }

    /// `dig @server -p port ARGS` (one try, 2 s), its output.
    pub async fn dig(&self, args: &[&str]) -> String {
        dig(self.addr, args).await
    }
}

/// `dig @addr -p port +time=2 +tries=1 ARGS`, its standard output.
pub async fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args);
    let out = cmd.output().await.expect("dig (Debian's dnsutils) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The answer lines of dig's `+short` or `+noall +answer` output.
pub fn lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_string)
        .collect()
}

/// Whether a program is on the PATH (the tests need Debian's knot, nsd and dnsutils:
/// `scripts/lib.sh` installs them).
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run scripts/test once, or apt-get install knot nsd dnsutils dnsperf"
    );
}

/// Knot's address: another loopback address than the server's, so that its transfers
/// come from an address that is not the local host (which gets no NOTIFY).
pub const KNOT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// For a secondary (`program`, required): a temp dir and an address on `ip` whose port
/// is free for both UDP and TCP.
async fn secondary_place(program: &str, ip: Ipv4Addr) -> (tempfile::TempDir, SocketAddr) {
    require(program);
    let dir = tempfile::tempdir().unwrap();
    let port = cns::dns::bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .await
        .unwrap()
        .local_addr()
        .port();
    (dir, SocketAddr::new(IpAddr::V4(ip), port))
}

/// Debian's Knot as a secondary of one zone (`zone`, with its trailing dot) of the
/// primary at `primary`, on [`KNOT_IP`] and a free port (`addr`), in a temp dir.
pub struct Knot {
    pub addr: SocketAddr,
    pub zone: String,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Knot {
    pub async fn start(primary: SocketAddr, zone: &str) -> Knot {
        let (dir, addr) = secondary_place("knotd", KNOT_IP).await;
        let port = addr.port();
        let d = dir.path().display();
        let config = format!(
            r#"server:
    rundir: "{d}"
    listen: {KNOT_IP}@{port}
    identity: ""
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
remote:
  - id: cns
    address: {ip}@{primary_port}
    via: {KNOT_IP}
acl:
  - id: notify_from_cns
    address: 127.0.0.0/8
    action: notify
  - id: transfer_to_tests
    address: 127.0.0.0/8
    action: transfer
template:
  - id: default
    storage: "{d}/zones"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
zone:
  - domain: {zone}
    master: cns
    acl: [notify_from_cns, transfer_to_tests]
"#,
            ip = primary.ip(),
            primary_port = primary.port(),
        );
        let conf = dir.path().join("knot.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
        let child = tokio::process::Command::new("knotd")
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("knotd starts");
        Knot {
            addr,
            zone: zone.to_string(),
            dir,
            child,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("knot.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Knot's log lines of finished incoming transfers of `kind` (AXFR, IXFR).
    pub fn transfers(&self, kind: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("{kind}, incoming")) && l.contains("finished"))
            .count()
    }

    /// What Knot answers for `name` `A` (+short).
    pub async fn a(&self, name: &str) -> Vec<String> {
        lines(&dig(self.addr, &["+short", name, "A"]).await)
    }

    pub async fn serial(&self) -> Option<u32> {
        let out = dig(self.addr, &["+short", &self.zone, "SOA"]).await;
        out.split_whitespace().nth(2).and_then(|s| s.parse().ok())
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// NSD's address (another loopback address, so its transfers are a peer's).
pub const NSD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// Debian's NSD as a secondary of `zone` (with its trailing dot) of the primary at
/// `primary`, transferring by AXFR only (`request-xfr: AXFR`), on [`NSD_IP`] and a
/// free port, in a temp dir; its transfers go out from [`NSD_IP`].
pub struct Nsd {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Nsd {
    pub async fn start(primary: SocketAddr, zone: &str) -> Nsd {
        let (dir, addr) = secondary_place("nsd", NSD_IP).await;
        let port = addr.port();
        let d = dir.path().display();
        let server = nsd_server(dir.path(), NSD_IP, port, 1, 2);
        let config = format!(
            r#"{server}zone:
    name: {zone}
    zonefile: "{d}/secondary.zone"
    request-xfr: AXFR {ip}@{primary_port} NOKEY
    allow-notify: {ip} NOKEY
    outgoing-interface: {NSD_IP}
"#,
            ip = primary.ip(),
            primary_port = primary.port(),
        );
        let child = spawn_nsd(dir.path(), &config);
        Nsd { addr, dir, child }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nsd.log")).unwrap_or_default()
    }
}

/// NSD's `server:` and `remote-control:` sections: on `ip`:`port`, with its files in
/// `dir`, `processes` server processes (sharing the port by SO_REUSEPORT when more than
/// one), and no response rate limit (Debian's NSD limits answers to 200/s per client
/// network; a test or dnsperf is one client, and CNS has no limit).
pub fn nsd_server(dir: &Path, ip: Ipv4Addr, port: u16, processes: usize, verbosity: u8) -> String {
    let d = dir.display();
    let reuseport = if processes > 1 { "yes" } else { "no" };
    format!(
        r#"server:
    ip-address: {ip}
    port: {port}
    server-count: {processes}
    reuseport: {reuseport}
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    verbosity: {verbosity}
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
"#
    )
}

/// Debian's NSD in the foreground with `config` (written to `dir`/nsd.conf), its output
/// dropped; killed when the child is dropped.
pub fn spawn_nsd(dir: &Path, config: &str) -> tokio::process::Child {
    let conf = dir.join("nsd.conf");
    std::fs::write(&conf, config).unwrap();
    tokio::process::Command::new("nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nsd (scripts/lib.sh installs it)")
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
