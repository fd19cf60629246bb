//! What the DNS tests share: a zone like the ones CNS builds, a server on loopback, and
//! `dig`.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
