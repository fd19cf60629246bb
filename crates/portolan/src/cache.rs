//! A short-lived cache of VL2 and VL3 answers (found and not found), as Triton's
//! Portolan keeps one (an LRU of 10 s there).
//!
//! An answer is kept for `cache_ttl_ms` (1 s by default; 0 turns the cache off), and
//! dropped sooner when a LOG reply carries an entry about it: a node drains its log and
//! then asks again, and that question must reach Moray. A VL2 entry drops the MAC's VL2
//! answer and every VL3 answer that named the MAC on that vnet; a VL3 entry drops the
//! address's VL3 answer. When the cache holds `cache_entries` answers it is emptied.
//! Another Portolan's cache is not told: with several, an answer may be up to
//! `cache_ttl_ms` old.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use portolan_client::buckets::to_v6;
use portolan_client::svp::{LogEntry, Underlay};

type Vl3 = Option<([u8; 6], Underlay)>;

#[derive(Debug, Default)]
struct Maps {
    vl2: HashMap<([u8; 6], u32), (Instant, Option<Underlay>)>,
    vl3: HashMap<(Ipv6Addr, u32), (Instant, Vl3)>,
}

/// The answers of the last `ttl`.
#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    max: usize,
    maps: Mutex<Maps>,
}

impl Cache {
    /// A cache keeping answers for `ttl` (none when zero), at most `max` of them.
    pub fn new(ttl: Duration, max: usize) -> Cache {
        Cache {
            ttl,
            max: max.max(1),
            maps: Mutex::default(),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps half-changed.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.ttl
    }

    fn make_room(&self, maps: &mut Maps) {
        if maps.vl2.len() + maps.vl3.len() >= self.max {
            maps.vl2.clear();
            maps.vl3.clear();
        }
    }

    /// The VL2 answer for `mac` on `vnet_id`, if one is fresh.
    pub fn vl2(&self, mac: [u8; 6], vnet_id: u32) -> Option<Option<Underlay>> {
        if self.ttl.is_zero() {
            return None;
        }
        let maps = self.maps();
        let (at, answer) = maps.vl2.get(&(mac, vnet_id))?;
        self.fresh(*at).then_some(*answer)
    }

    /// Keeps a VL2 answer.
    pub fn put_vl2(&self, mac: [u8; 6], vnet_id: u32, answer: Option<Underlay>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut maps = self.maps();
        self.make_room(&mut maps);
        maps.vl2.insert((mac, vnet_id), (Instant::now(), answer));
    }

    /// The VL3 answer for `ip` on `vnet_id`, if one is fresh.
    pub fn vl3(&self, ip: Ipv6Addr, vnet_id: u32) -> Option<Vl3> {
        if self.ttl.is_zero() {
            return None;
        }
        let maps = self.maps();
        let (at, answer) = maps.vl3.get(&(ip, vnet_id))?;
        self.fresh(*at).then_some(*answer)
    }

    /// Keeps a VL3 answer.
    pub fn put_vl3(&self, ip: Ipv6Addr, vnet_id: u32, answer: Vl3) {
        if self.ttl.is_zero() {
            return;
        }
        let mut maps = self.maps();
        self.make_room(&mut maps);
        maps.vl3.insert((ip, vnet_id), (Instant::now(), answer));
    }

    /// Drops the answers the log entries are about.
    pub fn forget(&self, entries: &[LogEntry]) {
        if self.ttl.is_zero() || entries.is_empty() {
            return;
        }
        let mut maps = self.maps();
        for e in entries {
            match *e {
                LogEntry::Vl2 { mac, vnet_id, .. } => {
                    maps.vl2.remove(&(mac, vnet_id));
                    maps.vl3.retain(|(_, vnet), (_, answer)| {
                        !(*vnet == vnet_id && matches!(answer, Some((m, _)) if *m == mac))
                    });
                }
                LogEntry::Vl3 { ip, vnet_id, .. } => {
                    maps.vl3.remove(&(to_v6(ip), vnet_id));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn node() -> Underlay {
        Underlay {
            ip: "10.88.0.1".parse().unwrap(),
            port: 4789,
        }
    }

    #[test]
    fn log_entries_drop_the_answers_they_name() {
        let cache = Cache::new(Duration::from_secs(3600), 100);
        let ip = to_v6("192.168.0.5".parse().unwrap());
        let other = to_v6("192.168.0.6".parse().unwrap());
        cache.put_vl2(MAC, 7, Some(node()));
        cache.put_vl3(ip, 7, Some((MAC, node())));
        cache.put_vl3(other, 7, None);
        assert_eq!(cache.vl2(MAC, 7), Some(Some(node())));
        assert_eq!(cache.vl2(MAC, 8), None);

        cache.forget(&[LogEntry::Vl2 {
            id: Uuid::new_v4(),
            mac: MAC,
            vnet_id: 7,
        }]);
        assert_eq!(cache.vl2(MAC, 7), None);
        assert_eq!(cache.vl3(ip, 7), None, "named the MAC");
        assert_eq!(cache.vl3(other, 7), Some(None));

        cache.forget(&[LogEntry::Vl3 {
            id: Uuid::new_v4(),
            ip: "192.168.0.6".parse().unwrap(),
            vlan: 0,
            vnet_id: 7,
        }]);
        assert_eq!(cache.vl3(other, 7), None);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing_and_a_full_cache_empties() {
        let off = Cache::new(Duration::ZERO, 100);
        off.put_vl2(MAC, 7, None);
        assert_eq!(off.vl2(MAC, 7), None);

        let small = Cache::new(Duration::from_secs(3600), 2);
        small.put_vl2(MAC, 1, None);
        small.put_vl2(MAC, 2, None);
        small.put_vl2(MAC, 3, None);
        assert_eq!(small.vl2(MAC, 1), None);
        assert_eq!(small.vl2(MAC, 3), Some(None));
    }
}
