//! NOTIFY (RFC 1996) and the checks after a transfer (reference 1.10).
//!
//! - On every commit, and every `RECHECK` (Triton's `min_notify_interval`), each zone's
//!   NOTIFY goes to every peer known to be behind it (from the peers table) and, when
//!   the zone's serial changed since the last pass, to the configured secondaries
//!   (`TransferAcl::notify_hosts`). Never to 127.0.0.1 or ::1.
//! - A NOTIFY is tried `NOTIFY_TRIES` times, waiting 1, 2 then 4 s for the answer; a
//!   peer whose NOTIFYs failed `MAX_NOTIFY_FAILURES` times in a row is left out
//!   (`using_notify` false) until a transfer of its own shows it current again.
//! - `PROBE_DELAY` after a transfer to a peer other than the local host, its SOA is
//!   asked: the serial it has goes in the peers table, and if it is current `goodxfer`
//!   counts one (a peer still behind or silent is asked again after 2, 4 and 8 s, as a
//!   secondary may apply a transfer a moment after it ends); then its version (`version.server`, else `version.bind`, class CH).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::Server;
use super::acl::is_local;
use super::transfer::serial_lt;
use crate::zone::Zone;

/// NOTIFYs and SOA checks in flight at once; more wait for the next pass.
pub const MAX_IN_FLIGHT: usize = 64;
/// Sends of one NOTIFY before it counts as failed.
const NOTIFY_TRIES: u32 = 3;
/// The wait for the first answer; doubled for each retry.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Consecutive failures before a peer gets no more NOTIFYs (Triton's
/// `MAX_NOTIFY_FAILURES`).
pub const MAX_NOTIFY_FAILURES: u32 = 5;
/// How often peers still behind are sent NOTIFY again.
const RECHECK: Duration = Duration::from_secs(5);
/// How often the peers' host names are looked up again.
const RESOLVE: Duration = Duration::from_secs(60);
/// The wait after a transfer before asking the peer which serial it has.
const PROBE_DELAY: Duration = Duration::from_secs(1);
/// SOA checks after one transfer, the wait doubling each time, while the peer is behind.
const PROBE_TRIES: u32 = 4;

/// The NOTIFYs and SOA checks in flight, and each peer's consecutive NOTIFY failures.
pub(super) struct Probes {
    permits: Arc<Semaphore>,
    in_flight: Mutex<HashSet<(SocketAddr, Name, Kind)>>,
    failures: Mutex<HashMap<IpAddr, u32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Notify,
    Check,
}

impl Probes {
    pub(super) fn new() -> Probes {
        Probes {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            in_flight: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn in_flight(&self) -> MutexGuard<'_, HashSet<(SocketAddr, Name, Kind)>> {
        match self.in_flight.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn failures(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        match self.failures.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs `work` for `target` and `zone` unless the same is already in flight or too
    /// much is.
    fn start<F>(&self, server: &Arc<Server>, target: SocketAddr, zone: &Name, kind: Kind, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let key = (target, zone.clone(), kind);
        if !self.in_flight().insert(key.clone()) {
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.in_flight().remove(&key);
            tracing::debug!(peer = %target, zone = %zone, "too many NOTIFYs in flight; next pass");
            return;
        };
        let server = server.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = server.shutdown.cancelled() => {}
                _ = work => {}
            }
            server.probes.in_flight().remove(&key);
            drop(permit);
        });
    }

    /// After a transfer of `zone` to `ip`: check which serial it has, and its version.
    pub(super) fn after_transfer(&self, server: Arc<Server>, ip: IpAddr, zone: Arc<Zone>) {
        let target = SocketAddr::new(ip, server.acl.notify_port());
        let work = {
            let server = server.clone();
            let zone = zone.clone();
            async move {
                // A secondary may apply the transfer a moment after it ends: a peer
                // still behind (or silent) is asked again, a bounded number of times.
                let mut delay = PROBE_DELAY;
                for _ in 0..PROBE_TRIES {
                    tokio::time::sleep(delay).await;
                    if check(&server, target, &zone).await {
                        break;
                    }
                    delay *= 2;
                }
            }
        };
        self.start(&server, target, &zone.origin, Kind::Check, work);
    }
}

/// The NOTIFY loop: a pass on every commit and every `RECHECK`; peer names resolved
/// every `RESOLVE`.
pub(super) async fn run(server: Arc<Server>) {
    let mut commits = server.zones.subscribe();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolve = tokio::time::interval(RESOLVE);
    resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notified: BTreeMap<Name, u32> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = server.shutdown.cancelled() => return,
            _ = resolve.tick() => {
                server.acl.resolve().await;
                continue;
            }
            r = commits.changed() => if r.is_err() {
                return;
            },
            _ = recheck.tick() => {}
        }
        pass(&server, &mut notified);
    }
}

/// One pass: NOTIFY every peer behind, and the configured ones for zones that changed.
fn pass(server: &Arc<Server>, notified: &mut BTreeMap<Name, u32>) {
    let snapshot = server.zones.snapshot();
    let peers = server.peers.all();
    let port = server.acl.notify_port();
    let configured = server.acl.notify_hosts();
    notified.retain(|origin, _| snapshot.zones.contains_key(origin));
    for (origin, zone) in &snapshot.zones {
        let changed = notified.insert(origin.clone(), zone.serial) != Some(zone.serial);
        let key = peer_zone_key(origin);
        let mut targets = BTreeSet::new();
        for (ip, peer) in &peers {
            if is_local(*ip) || !peer.using_notify {
                continue;
            }
            if peer
                .serials
                .get(&key)
                .is_some_and(|s| serial_lt(*s, zone.serial))
            {
                targets.insert(SocketAddr::new(*ip, port));
            }
        }
        if changed {
            for target in &configured {
                if peers.get(&target.ip()).is_none_or(|p| p.using_notify) {
                    targets.insert(*target);
                }
            }
        }
        for target in targets {
            let work = {
                let server = server.clone();
                let zone = zone.clone();
                async move { notify(&server, target, &zone).await }
            };
            server
                .probes
                .start(server, target, origin, Kind::Notify, work);
        }
    }
}

/// The zone's name as the peers table keys it.
fn peer_zone_key(origin: &Name) -> String {
    origin
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Sends one NOTIFY for `zone` to `target` (with retries) and records the result.
async fn notify(server: &Arc<Server>, target: SocketAddr, zone: &Zone) {
    let mut message = Message::new();
    message
        .set_id(random_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Notify)
        .set_authoritative(true);
    message.add_query(Query::query(zone.origin.clone(), RecordType::SOA));
    message.add_answer(zone.soa_record());
    let answer = ask(server.local.ip(), target, &message, NOTIFY_TRIES).await;
    let ip = target.ip();
    let ok = answer.is_some_and(|a| a.response_code() == ResponseCode::NoError);
    if ok {
        tracing::debug!(peer = %target, zone = %zone.origin, serial = zone.serial, "NOTIFY acknowledged");
        server.probes.failures().remove(&ip);
        return;
    }
    let failures = {
        let mut all = server.probes.failures();
        let n = all.entry(ip).or_default();
        *n += 1;
        *n
    };
    server.peers.count(ip, "notify_failures");
    if failures >= MAX_NOTIFY_FAILURES {
        tracing::warn!(peer = %target, zone = %zone.origin, failures, "NOTIFY keeps failing; no more NOTIFY to this peer until it transfers again");
        server.peers.update(ip, |p| p.using_notify = false);
    } else {
        tracing::info!(peer = %target, zone = %zone.origin, failures, "NOTIFY not acknowledged");
    }
}

/// Asks `target` for `zone`'s SOA and its version, and records them; false when the
/// peer did not answer or is still behind.
async fn check(server: &Arc<Server>, target: SocketAddr, zone: &Zone) -> bool {
    let ip = target.ip();
    let mut soa = Message::new();
    soa.set_id(random_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    soa.add_query(Query::query(zone.origin.clone(), RecordType::SOA));
    let serial = ask(server.local.ip(), target, &soa, 2).await.and_then(|a| {
        a.answers().iter().find_map(|r| match r.data() {
            RData::SOA(s) => Some(s.serial()),
            _ => None,
        })
    });
    let Some(serial) = serial else {
        tracing::info!(peer = %target, zone = %zone.origin, "no SOA from the peer after its transfer");
        return false;
    };
    server
        .peers
        .set_serial(ip, &peer_zone_key(&zone.origin), serial);
    if serial_lt(serial, zone.serial) {
        tracing::warn!(peer = %target, zone = %zone.origin, serial, current = zone.serial, "peer still behind after its transfer");
        return false;
    }
    server.peers.count(ip, "goodxfer");
    server.peers.update(ip, |p| p.using_notify = true);
    server.probes.failures().remove(&ip);
    for name in ["version.server.", "version.bind."] {
        let Ok(name) = Name::from_ascii(name) else {
            continue;
        };
        let mut q = Message::new();
        q.set_id(random_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query);
        let mut query = Query::query(name, RecordType::TXT);
        query.set_query_class(DNSClass::CH);
        q.add_query(query);
        let text = ask(server.local.ip(), target, &q, 1).await.and_then(|a| {
            a.answers().iter().find_map(|r| match r.data() {
                RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
        });
        if let Some(text) = text {
            server.peers.update(ip, |p| p.version = text);
            break;
        }
    }
    true
}

/// Sends `message` to `target` over UDP from the server's IP, up to `tries` times,
/// and gives the answer with the same id.
async fn ask(local: IpAddr, target: SocketAddr, message: &Message, tries: u32) -> Option<Message> {
    let bytes = message.to_vec().ok()?;
    let from = match (local, target.ip()) {
        (IpAddr::V4(ip), IpAddr::V4(_)) => IpAddr::V4(ip),
        (IpAddr::V6(ip), IpAddr::V6(_)) => IpAddr::V6(ip),
        (_, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = match UdpSocket::bind(SocketAddr::new(from, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "binding a socket for NOTIFY");
            return None;
        }
    };
    if let Err(e) = socket.connect(target).await {
        tracing::debug!(peer = %target, error = %e, "connecting for NOTIFY");
        return None;
    }
    let mut buf = vec![0u8; 4096];
    let mut wait = FIRST_WAIT;
    for _ in 0..tries {
        if socket.send(&bytes).await.is_err() {
            tokio::time::sleep(wait).await;
        } else {
            let deadline = tokio::time::Instant::now() + wait;
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                let Ok(answer) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if answer.id() == message.id()
                    && answer.message_type() == MessageType::Response
                    && answer.op_code() == message.op_code()
                {
                    return Some(answer);
                }
            }
        }
        wait *= 2;
    }
    None
}

fn random_id() -> u16 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([b[0], b[1]])
}
