//! CNS's records in Moray, and the conversion between its records' data
//! ([`names::Data`]) and DNS records.
//!
//! - `cns_config`, key `config`: the live [`Settings`](crate::config::Settings).
//! - `cns_zones`, key the zone's name: a [`ZoneRecord`], the zone at its serial.
//! - `cns_changes`, key `<zone>/<from serial>`: a [`StepRecord`], one IXFR step.

use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};
use serde::{Deserialize, Serialize};

use crate::names::Data;
use crate::zone::{self, Change, SoaFields, Zone};

/// One record as stored: owner name (no trailing dot), TTL and data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub name: String,
    pub ttl: u32,
    #[serde(flatten)]
    pub data: Data,
}

/// A zone at a serial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub zone: String,
    pub serial: u32,
    pub mname: String,
    pub rname: String,
    pub records: Vec<StoredRecord>,
}

/// One IXFR step of a zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub zone: String,
    pub from: u32,
    pub to: u32,
    pub removed: Vec<StoredRecord>,
    pub added: Vec<StoredRecord>,
    /// When it was committed (ms since the epoch; 0 in steps written before it was
    /// kept, which the journal's age limit then drops).
    #[serde(default)]
    pub at_ms: i64,
}

/// An absolute DNS name from a name without its trailing dot.
pub fn name(s: &str) -> Result<Name, String> {
    let text = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_str(&text).map_err(|e| format!("{s:?} is not a DNS name: {e}"))
}

/// A name without its trailing dot, lower-case.
pub fn text(n: &Name) -> String {
    let s = n.to_lowercase().to_ascii();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// The DNS record of `name` with `data` (TTL: NS 3600, the rest 30).
pub fn to_record(owner: &str, data: &Data) -> Result<Record, String> {
    let (ttl, rdata) = match data {
        Data::A { ip } => (zone::TTL, RData::A(A(*ip))),
        Data::Aaaa { ip } => (zone::TTL, RData::AAAA(AAAA(*ip))),
        Data::Txt { text } => (zone::TTL, RData::TXT(TXT::new(vec![text.clone()]))),
        Data::Srv {
            priority,
            weight,
            port,
            target,
        } => (
            zone::TTL,
            RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        ),
        Data::Cname { target } => (zone::TTL, RData::CNAME(CNAME(name(target)?))),
        Data::Ptr { target } => (zone::TTL, RData::PTR(PTR(name(target)?))),
        Data::Ns { target } => (zone::NS_TTL, RData::NS(NS(name(target)?))),
    };
    Ok(Record::from_rdata(name(owner)?, ttl, rdata))
}

/// The data of a DNS record CNS makes; `None` for another kind.
pub fn from_record(r: &Record) -> Option<StoredRecord> {
    let data = match r.data() {
        RData::A(a) => Data::A { ip: a.0 },
        RData::AAAA(a) => Data::Aaaa { ip: a.0 },
        RData::TXT(t) => Data::Txt {
            text: t
                .txt_data()
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        },
        RData::SRV(s) => Data::Srv {
            priority: s.priority(),
            weight: s.weight(),
            port: s.port(),
            target: text(s.target()),
        },
        RData::CNAME(c) => Data::Cname { target: text(&c.0) },
        RData::PTR(p) => Data::Ptr { target: text(&p.0) },
        RData::NS(n) => Data::Ns { target: text(&n.0) },
        _ => return None,
    };
    Some(StoredRecord {
        name: text(r.name()),
        ttl: r.ttl(),
        data,
    })
}

fn records(stored: &[StoredRecord], what: &str) -> Result<Vec<Record>, String> {
    stored
        .iter()
        .map(|s| {
            to_record(&s.name, &s.data)
                .map(|mut r| {
                    r.set_ttl(s.ttl);
                    r
                })
                .map_err(|e| format!("{what}: {e}"))
        })
        .collect()
}

impl ZoneRecord {
    pub fn of(zone: &Zone) -> ZoneRecord {
        ZoneRecord {
            zone: text(&zone.origin),
            serial: zone.serial,
            mname: text(&zone.soa.mname),
            rname: text(&zone.soa.rname),
            records: zone.iter().filter_map(from_record).collect(),
        }
    }

    pub fn to_zone(&self) -> Result<Zone, String> {
        let what = format!("zone {}", self.zone);
        let soa = SoaFields {
            mname: name(&self.mname).map_err(|e| format!("{what}: {e}"))?,
            rname: name(&self.rname).map_err(|e| format!("{what}: {e}"))?,
        };
        let origin = name(&self.zone).map_err(|e| format!("{what}: {e}"))?;
        Ok(Zone::new(origin, self.serial, soa).with_records(records(&self.records, &what)?))
    }
}

impl StepRecord {
    pub fn key(zone: &str, from: u32) -> String {
        format!("{zone}/{from:010}")
    }

    pub fn of(zone: &str, change: &Change, at_ms: i64) -> StepRecord {
        StepRecord {
            zone: zone.to_string(),
            from: change.from,
            to: change.to,
            removed: change.removed.iter().filter_map(from_record).collect(),
            added: change.added.iter().filter_map(from_record).collect(),
            at_ms,
        }
    }

    pub fn to_change(&self) -> Result<Change, String> {
        let what = format!("zone {} step {}", self.zone, self.from);
        Ok(Change {
            from: self.from,
            to: self.to,
            removed: records(&self.removed, &what)?,
            added: records(&self.added, &what)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_record_round_trips() {
        let datas = vec![
            Data::A {
                ip: "10.0.0.1".parse().unwrap(),
            },
            Data::Aaaa {
                ip: "2001:db8::1".parse().unwrap(),
            },
            Data::Txt {
                text: "verifying:abc".into(),
            },
            Data::Srv {
                priority: 1,
                weight: 5,
                port: 80,
                target: "web.inst.x.example.com".into(),
            },
            Data::Cname {
                target: "cmon.example.com".into(),
            },
            Data::Ptr {
                target: "a.example.com".into(),
            },
            Data::Ns {
                target: "ns1.example.com".into(),
            },
        ];
        for data in datas {
            let r = to_record("x.example.com", &data).unwrap();
            let back = from_record(&r).unwrap();
            assert_eq!(back.data, data);
            assert_eq!(back.name, "x.example.com");
            let json = serde_json::to_value(&back).unwrap();
            let again: StoredRecord = serde_json::from_value(json).unwrap();
            assert_eq!(again, back);
        }
        assert_eq!(
            to_record(
                "x.example.com",
                &Data::Ns {
                    target: "n.example".into()
                }
            )
            .unwrap()
            .ttl(),
            zone::NS_TTL
        );
    }
}
