//! The zones CNS serves, as one shared contract: the follower (`follow/`, `names.rs`)
//! computes each zone's records and commits them here; the DNS server (`dns/`) reads
//! snapshots, and the changes between serials for IXFR, and wakes on every commit for
//! NOTIFY.
//!
//! A zone at a serial is immutable (`Arc<Zone>`); a commit builds the next one and
//! swaps it in, so a transfer in progress keeps answering from the serial it began at.
//! Names are absolute and lower-case (CNS's zones are built from lower-cased parts; a
//! query's name is lower-cased before a look-up).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::sync::watch;

/// TTL of every record but NS (Triton's `consts.TTL`).
pub const TTL: u32 = 30;
/// TTL of NS records (`consts.NS_TTL`).
pub const NS_TTL: u32 = 3600;

/// What a zone's SOA says besides its serial (reference 1.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoaFields {
    /// MNAME: `my_name`, or the first peer of a hidden primary.
    pub mname: Name,
    /// RNAME: the hostmaster with `@` made a `.`.
    pub rname: Name,
}

/// One zone at one serial.
#[derive(Clone, Debug)]
pub struct Zone {
    pub origin: Name,
    pub serial: u32,
    pub soa: SoaFields,
    /// Every record but the SOA (the apex NS set included), by owner name and type.
    pub records: BTreeMap<Name, BTreeMap<RecordType, Vec<Record>>>,
}

impl Zone {
    /// An empty zone (no records yet) at `serial`.
    pub fn new(origin: Name, serial: u32, soa: SoaFields) -> Zone {
        Zone {
            origin,
            serial,
            soa,
            records: BTreeMap::new(),
        }
    }

    /// The zone's SOA record at its serial (refresh 30, retry 60, expire 2592000,
    /// minimum 30; TTL 30).
    pub fn soa_record(&self) -> Record {
        soa_record(&self.origin, &self.soa, self.serial)
    }

    /// The records of `name` (absolute, lower-case), by type; `None`: no such name.
    pub fn name(&self, name: &Name) -> Option<&BTreeMap<RecordType, Vec<Record>>> {
        self.records.get(name)
    }

    /// Every record but the SOA, in name order (AXFR's body).
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.values().flat_map(|t| t.values().flatten())
    }

    /// The same zone holding exactly `records` (SOA records among them are ignored).
    pub fn with_records(&self, records: impl IntoIterator<Item = Record>) -> Zone {
        let mut zone = Zone::new(self.origin.clone(), self.serial, self.soa.clone());
        for r in records {
            if r.record_type() == RecordType::SOA {
                continue;
            }
            let set = zone
                .records
                .entry(r.name().to_lowercase())
                .or_default()
                .entry(r.record_type())
                .or_default();
            if !set.contains(&r) {
                set.push(r);
            }
        }
        zone
    }
}

/// The SOA record of `origin` with `fields` at `serial`.
pub fn soa_record(origin: &Name, fields: &SoaFields, serial: u32) -> Record {
    Record::from_rdata(
        origin.clone(),
        TTL,
        RData::SOA(SOA::new(
            fields.mname.clone(),
            fields.rname.clone(),
            serial,
            30,
            60,
            2_592_000,
            30,
        )),
    )
}

/// What changed in one zone from serial `from` to serial `to` (one IXFR step; the
/// SOAs are not in it).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<Record>,
    pub added: Vec<Record>,
}

impl Change {
    /// The difference between two states of one zone.
    pub fn between(old: &Zone, new: &Zone) -> Change {
        let old_set: BTreeSet<_> = old.iter().map(RecordKey::of).collect();
        let new_set: BTreeSet<_> = new.iter().map(RecordKey::of).collect();
        Change {
            from: old.serial,
            to: new.serial,
            removed: old
                .iter()
                .filter(|r| !new_set.contains(&RecordKey::of(r)))
                .cloned()
                .collect(),
            added: new
                .iter()
                .filter(|r| !old_set.contains(&RecordKey::of(r)))
                .cloned()
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// A record's identity for diffs: name, type, TTL and data, compared by their wire form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RecordKey(Name, u16, u32, String);

impl RecordKey {
    fn of(r: &Record) -> RecordKey {
        RecordKey(
            r.name().to_lowercase(),
            u16::from(r.record_type()),
            r.ttl(),
            r.data().to_string(),
        )
    }
}

/// Every zone CNS serves, at their current serials.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    pub zones: BTreeMap<Name, Arc<Zone>>,
}

impl ZoneSet {
    /// The zone `name` is in: the longest origin that is `name` or a suffix of it.
    pub fn find(&self, name: &Name) -> Option<&Arc<Zone>> {
        let name = name.to_lowercase();
        let mut candidate = Some(name);
        while let Some(n) = candidate {
            if let Some(z) = self.zones.get(&n) {
                return Some(z);
            }
            candidate = if n.is_root() {
                None
            } else {
                Some(n.base_name())
            };
        }
        None
    }
}

/// The shared, swappable zones and their recent history.
pub struct Zones {
    current: RwLock<Arc<ZoneSet>>,
    /// Per zone, the retained steps, oldest first (IXFR).
    journal: RwLock<BTreeMap<Name, VecDeque<Change>>>,
    /// At most this many steps a zone keeps in memory (CNS's `journal_max`; its
    /// journal policy drops more, with `forget_steps`).
    keep: usize,
    generation: watch::Sender<u64>,
}

impl Zones {
    /// No zones yet; each zone keeps its last `keep` steps for IXFR.
    pub fn new(keep: usize) -> Zones {
        Zones {
            current: RwLock::new(Arc::new(ZoneSet::default())),
            journal: RwLock::new(BTreeMap::new()),
            keep: keep.max(1),
            generation: watch::channel(0).0,
        }
    }

    /// The zones as they are now; cheap, and unchanged by later commits.
    pub fn snapshot(&self) -> Arc<ZoneSet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Steps from `serial` to the zone's current serial, in order; `None` when `serial`
    /// is not a retained starting point (the caller answers with AXFR) and an empty list
    /// when `serial` is current.
    pub fn changes_since(&self, origin: &Name, serial: u32) -> Option<Vec<Change>> {
        let current = self.snapshot().zones.get(origin)?.serial;
        if serial == current {
            return Some(Vec::new());
        }
        let journal = match self.journal.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let steps = journal.get(origin)?;
        let start = steps.iter().position(|c| c.from == serial)?;
        let out: Vec<Change> = steps.iter().skip(start).cloned().collect();
        (out.last().map(|c| c.to) == Some(current)).then_some(out)
    }

    /// Wakes on every commit (the value is a commit counter): the NOTIFY loop's signal.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Restores a zone and its retained steps as persisted (at start-up), without
    /// counting as a change.
    pub fn restore(&self, zone: Zone, steps: Vec<Change>) {
        let origin = zone.origin.clone();
        self.swap(|set| {
            set.zones.insert(origin.clone(), Arc::new(zone));
        });
        let mut journal = match self.journal.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        journal.insert(origin, steps.into_iter().collect());
    }

    /// Makes `zone` current. Its serial must be higher than the zone's current one (a new
    /// zone may have any). Gives the step from the previous state (empty for a new zone),
    /// which the caller has persisted or persists; wakes subscribers.
    pub fn commit(&self, zone: Zone) -> Result<Change, StaleSerial> {
        let origin = zone.origin.clone();
        let previous = self.snapshot().zones.get(&origin).cloned();
        let change = match &previous {
            Some(old) if old.serial >= zone.serial => {
                return Err(StaleSerial {
                    zone: origin.to_string(),
                    current: old.serial,
                    offered: zone.serial,
                });
            }
            Some(old) => Change::between(old, &zone),
            None => Change {
                from: zone.serial,
                to: zone.serial,
                removed: Vec::new(),
                added: Vec::new(),
            },
        };
        self.swap(|set| {
            set.zones.insert(origin.clone(), Arc::new(zone));
        });
        if previous.is_some() {
            let mut journal = match self.journal.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let steps = journal.entry(origin).or_default();
            steps.push_back(change.clone());
            while steps.len() > self.keep {
                steps.pop_front();
            }
        }
        self.generation.send_modify(|g| *g += 1);
        Ok(change)
    }

    /// Forgets `origin`'s steps from the serials `froms` (the journal's collection):
    /// an IXFR from one of them gets the whole zone.
    pub fn forget_steps(&self, origin: &Name, froms: &[u32]) {
        let mut journal = match self.journal.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(steps) = journal.get_mut(origin) {
            steps.retain(|c| !froms.contains(&c.from));
        }
    }

    /// Stops serving `origin` (a zone taken out of the config) and forgets its steps;
    /// wakes subscribers. False when it was not served.
    pub fn remove(&self, origin: &Name) -> bool {
        if !self.snapshot().zones.contains_key(origin) {
            return false;
        }
        self.swap(|set| {
            set.zones.remove(origin);
        });
        let mut journal = match self.journal.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        journal.remove(origin);
        self.generation.send_modify(|g| *g += 1);
        true
    }

    fn swap(&self, edit: impl FnOnce(&mut ZoneSet)) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = ZoneSet::clone(&guard);
        edit(&mut next);
        *guard = Arc::new(next);
    }
}

/// A commit whose serial does not move the zone forward.
#[derive(Debug, thiserror::Error)]
#[error("zone {zone}: serial {offered} does not follow the current serial {current}")]
pub struct StaleSerial {
    pub zone: String,
    pub current: u32,
    pub offered: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn zone(serial: u32, ips: &[[u8; 4]]) -> Zone {
        let soa = SoaFields {
            mname: name("cns.coal.example."),
            rname: name("hostmaster.example."),
        };
        Zone::new(name("coal.example."), serial, soa).with_records(ips.iter().map(|ip| {
            Record::from_rdata(
                name("a.inst.coal.example."),
                TTL,
                RData::A(A::from(std::net::Ipv4Addr::from(*ip))),
            )
        }))
    }

    #[test]
    fn commits_keep_steps_for_ixfr_and_refuse_going_back() {
        let zones = Zones::new(2);
        zones.commit(zone(10, &[[10, 0, 0, 1]])).unwrap();
        let step = zones.commit(zone(11, &[[10, 0, 0, 2]])).unwrap();
        assert_eq!((step.removed.len(), step.added.len()), (1, 1));
        zones
            .commit(zone(12, &[[10, 0, 0, 2], [10, 0, 0, 3]]))
            .unwrap();
        zones.commit(zone(13, &[[10, 0, 0, 3]])).unwrap();
        let origin = name("coal.example.");
        // Only the last two steps are kept: from 11 and from 12.
        assert!(zones.changes_since(&origin, 10).is_none());
        assert_eq!(zones.changes_since(&origin, 11).unwrap().len(), 2);
        assert_eq!(zones.changes_since(&origin, 13).unwrap(), Vec::new());
        assert!(zones.commit(zone(13, &[])).is_err());
        let found = zones.snapshot();
        let z = found.find(&name("A.Inst.Coal.Example.")).unwrap();
        assert_eq!(z.serial, 13);
        assert_eq!(z.iter().count(), 1);
    }
}
