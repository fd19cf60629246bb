//! The secondaries CNS has seen (reference 1.10): the DNS side (`dns/`) records each
//! transfer, SOA check and NOTIFY here; the admin API's ListPeers and DeletePeer read and
//! forget them. Kept in memory: after a restart a peer reappears at its next transfer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The counters a peer has (Triton's names).
pub const COUNTERS: [&str; 5] = ["soa", "ixfr", "axfr", "goodxfer", "notify_failures"];

/// What CNS knows of one secondary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// zone (no trailing dot) -> the last serial the peer is known to have.
    pub serials: BTreeMap<String, u32>,
    /// The version it answered to `version.server`/`version.bind`, if probed.
    pub version: String,
    /// False once NOTIFYs to it failed too often (reference 1.10).
    pub using_notify: bool,
    /// Whether it has asked for IXFR.
    pub using_ixfr: bool,
    /// `soa`, `ixfr`, `axfr`, `goodxfer`, `notify_failures`.
    pub counters: BTreeMap<String, u64>,
}

/// The peers table, shared between the DNS server and the admin API.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    inner: Arc<Mutex<BTreeMap<IpAddr, Peer>>>,
}

impl Peers {
    pub fn new() -> Peers {
        Peers::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<IpAddr, Peer>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Changes `address`'s entry, making it (NOTIFY on) when new.
    pub fn update<R>(&self, address: IpAddr, edit: impl FnOnce(&mut Peer) -> R) -> R {
        let mut peers = self.lock();
        let peer = peers.entry(address).or_insert_with(|| Peer {
            using_notify: true,
            ..Peer::default()
        });
        edit(peer)
    }

    /// Adds one to `counter` of `address`.
    pub fn count(&self, address: IpAddr, counter: &str) {
        self.update(address, |p| {
            *p.counters.entry(counter.to_string()).or_default() += 1;
        });
    }

    /// Records that `address` has `zone` at `serial`.
    pub fn set_serial(&self, address: IpAddr, zone: &str, serial: u32) {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        self.update(address, |p| {
            p.serials.insert(zone, serial);
        });
    }

    /// One peer's state.
    pub fn get(&self, address: IpAddr) -> Option<Peer> {
        self.lock().get(&address).cloned()
    }

    /// Every peer, by address.
    pub fn all(&self) -> BTreeMap<IpAddr, Peer> {
        self.lock().clone()
    }

    /// Forgets `address`; false when it was not known.
    pub fn remove(&self, address: IpAddr) -> bool {
        self.lock().remove(&address).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serials_and_counters_and_forgets() {
        let peers = Peers::new();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        peers.count(a, "axfr");
        peers.count(a, "axfr");
        peers.set_serial(a, "Coal.Example.", 7);
        let p = peers.get(a).unwrap();
        assert_eq!(p.counters["axfr"], 2);
        assert_eq!(p.serials["coal.example"], 7);
        assert!(p.using_notify);
        assert!(peers.remove(a));
        assert!(!peers.remove(a));
        assert!(peers.all().is_empty());
    }
}
