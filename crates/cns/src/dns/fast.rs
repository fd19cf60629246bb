//! The common UDP query, answered from pre-encoded bytes.
//!
//! Most queries are one plain question (class IN, no compression, at most an EDNS OPT
//! of version 0) for a name whose answer does not change until the next commit. For
//! those, each UDP worker keeps the answer `answer::handle` gave for the lower-cased
//! question, split after the question: the flags, the section counts and the rest of the
//! message (the tail). A query is answered by writing the header with its id, its own
//! question bytes (its case kept) and the tail; names in the tail that were compressed
//! against the question point at the same offsets, since the question's layout is the
//! same whatever its case. An OPT record (1232 bytes, version 0) is added when the query
//! had one, as the full path does.
//!
//! Everything else takes the full path: other opcodes and classes, SOA (a secondary
//! checking its serial is counted in the peers table), AXFR and IXFR, malformed
//! messages, and an answer that does not fit the client's size (the full path drops the
//! additional section or sets TC). The entries are made from one `ZoneSet` snapshot and
//! dropped when the snapshot changes (every commit), and when there are `MAX_ENTRIES`.

use std::collections::HashMap;
use std::sync::Arc;

use super::answer::{self, Handled, Transport, UDP_MAX, UDP_MIN};
use crate::zone::ZoneSet;

/// Entries per worker before they are all dropped (random names cannot grow it further).
const MAX_ENTRIES: usize = 100_000;

const QTYPE_SOA: u16 = 6;
const QTYPE_IXFR: u16 = 251;
const QTYPE_AXFR: u16 = 252;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// One question's answer, without id, question and OPT.
struct Entry {
    /// AA from the full answer.
    aa: u8,
    rcode: u8,
    /// ANCOUNT, NSCOUNT, ARCOUNT.
    counts: [u16; 3],
    tail: Box<[u8]>,
}

/// A UDP worker's answers, valid for one snapshot.
pub struct Cache {
    set: Option<Arc<ZoneSet>>,
    entries: HashMap<Box<[u8]>, Entry>,
    key: Vec<u8>,
}

/// A plain question, as the query spelled it.
struct Plain {
    rd: bool,
    cd: bool,
    /// End of the question (name, type, class) in the query.
    question_end: usize,
    /// End of the name.
    name_end: usize,
    qtype: u16,
    /// The client's EDNS UDP size, if it sent OPT.
    edns: Option<u16>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::new()
    }
}

impl Cache {
    pub fn new() -> Cache {
        Cache {
            set: None,
            entries: HashMap::new(),
            key: Vec::with_capacity(260),
        }
    }

    /// Writes the answer to `query` into `out` and gives true, or gives false when the
    /// query must take the full path.
    pub fn answer(&mut self, set: &Arc<ZoneSet>, query: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(plain) = parse(query) else {
            return false;
        };
        if !self.set.as_ref().is_some_and(|s| Arc::ptr_eq(s, set)) {
            self.entries.clear();
            self.set = Some(set.clone());
        }
        self.key.clear();
        self.key
            .extend(query[12..plain.name_end].iter().map(u8::to_ascii_lowercase));
        self.key.extend_from_slice(&plain.qtype.to_be_bytes());
        if !self.entries.contains_key(self.key.as_slice()) {
            let Some(entry) = make_entry(set, &self.key) else {
                return false;
            };
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
            self.entries
                .insert(self.key.clone().into_boxed_slice(), entry);
        }
        let Some(entry) = self.entries.get(self.key.as_slice()) else {
            return false;
        };
        let limit = usize::from(plain.edns.map_or(UDP_MIN, |s| s.clamp(UDP_MIN, UDP_MAX)));
        let question = &query[12..plain.question_end];
        let opt = plain.edns.is_some();
        if 12 + question.len() + entry.tail.len() + if opt { 11 } else { 0 } > limit {
            return false;
        }
        let additional = entry.counts[2] + u16::from(opt);
        out.clear();
        out.extend_from_slice(&query[..2]);
        out.push(0x80 | entry.aa | u8::from(plain.rd));
        out.push(if plain.cd { 0x10 } else { 0 } | entry.rcode);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&entry.counts[0].to_be_bytes());
        out.extend_from_slice(&entry.counts[1].to_be_bytes());
        out.extend_from_slice(&additional.to_be_bytes());
        out.extend_from_slice(question);
        out.extend_from_slice(&entry.tail);
        if opt {
            // Root name, OPT, our size, extended rcode 0, version 0, no flags, no data.
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&UDP_MAX.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        true
    }
}

/// The answer to the lower-cased question `key` (name in wire form, then type), from
/// the full path.
fn make_entry(set: &ZoneSet, key: &[u8]) -> Option<Entry> {
    let mut query = Vec::with_capacity(12 + key.len() + 2);
    query.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    query.extend_from_slice(key);
    query.extend_from_slice(&CLASS_IN.to_be_bytes());
    let Handled::Reply(reply) = answer::handle(set, &query, Transport::Tcp) else {
        return None;
    };
    let bytes = reply.bytes;
    let question_end = 12 + key.len() + 2;
    let pristine = reply.soa_of.is_none()
        && bytes.len() >= question_end
        && bytes[2] & 0x02 == 0
        && bytes[4..6] == [0, 1]
        && bytes[12..question_end] == query[12..];
    if !pristine {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    Some(Entry {
        aa: bytes[2] & 0x04,
        rcode: bytes[3] & 0x0f,
        counts: [count(6), count(8), count(10)],
        tail: bytes[question_end..].into(),
    })
}

/// The query's plain question, or None when it is anything else.
fn parse(q: &[u8]) -> Option<Plain> {
    let header = q.get(..12)?;
    // QR 0, opcode QUERY, AA and TC clear; RD as the client likes.
    if header[2] & 0xfe != 0 || header[3] & 0x0f != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let additional = count(10);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || additional > 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*q.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // A compression pointer or an extended label: the full path.
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at - 12 > 254 {
            return None;
        }
    }
    let name_end = at;
    let fixed = q.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if qclass != CLASS_IN || matches!(qtype, QTYPE_SOA | QTYPE_AXFR | QTYPE_IXFR) {
        return None;
    }
    let question_end = at + 4;
    let mut edns = None;
    if additional == 1 {
        // Root name, OPT, size, extended rcode 0, version 0, flags, data.
        let opt = q.get(question_end..question_end + 11)?;
        let rtype = u16::from_be_bytes([opt[1], opt[2]]);
        if opt[0] != 0 || rtype != TYPE_OPT || opt[5] != 0 || opt[6] != 0 {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if question_end + 11 + rdlen != q.len() || !plain_options(&q[question_end + 11..]) {
            return None;
        }
        edns = Some(u16::from_be_bytes([opt[3], opt[4]]));
    } else if question_end != q.len() {
        return None;
    }
    Some(Plain {
        rd: header[2] & 0x01 != 0,
        cd: header[3] & 0x10 != 0,
        question_end,
        name_end,
        qtype,
        edns,
    })
}

/// Whether an OPT record's data is options the full path reads as this path does: each a
/// code and a length whose data lies inside the record, none of them a Client Subnet
/// (which the full path parses, and may refuse).
fn plain_options(mut data: &[u8]) -> bool {
    const CLIENT_SUBNET: u16 = 8;
    while !data.is_empty() {
        let Some(head) = data.get(..4) else {
            return false;
        };
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if code == CLIENT_SUBNET || data.len() < 4 + len {
            return false;
        }
        data = &data[4 + len..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::query;
    use crate::zone::{NS_TTL, SoaFields, TTL, Zone};
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME, NS, SRV};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn set(serial: u32, extra: u32) -> Arc<ZoneSet> {
        let origin = name("coal.example.");
        let inst = name("a.inst.u.coal.example.");
        let svc = name("web.svc.u.coal.example.");
        let mut records = vec![
            Record::from_rdata(
                origin.clone(),
                NS_TTL,
                RData::NS(NS(name("ns.coal.example."))),
            ),
            Record::from_rdata(inst.clone(), TTL, RData::A(A(Ipv4Addr::new(10, 0, 0, 1)))),
            Record::from_rdata(
                svc.clone(),
                TTL,
                RData::SRV(SRV::new(0, 10, 80, inst.clone())),
            ),
            Record::from_rdata(
                name("c.cmon.coal.example."),
                TTL,
                RData::CNAME(CNAME(name("a.inst.u.coal.example."))),
            ),
        ];
        for i in 0..extra {
            records.push(Record::from_rdata(
                svc.clone(),
                TTL,
                RData::A(A(Ipv4Addr::from(0x0a01_0000 + i))),
            ));
        }
        let soa = SoaFields {
            mname: name("ns.coal.example."),
            rname: name("hostmaster.example."),
        };
        let zone = Zone::new(origin.clone(), serial, soa).with_records(records);
        let mut set = ZoneSet::default();
        set.zones.insert(origin, Arc::new(zone));
        Arc::new(set)
    }

    fn full(set: &ZoneSet, q: &[u8]) -> Vec<u8> {
        match answer::handle(set, q, Transport::Udp) {
            Handled::Reply(r) => r.bytes,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_answers_as_the_full_path() {
        let set = set(1, 0);
        let mut cache = Cache::new();
        let mut out = Vec::new();
        let asked = [
            ("a.inst.u.coal.example.", RecordType::A),
            ("A.Inst.U.COAL.example.", RecordType::A),
            ("a.inst.u.coal.example.", RecordType::AAAA),
            ("nope.coal.example.", RecordType::A),
            ("web.svc.u.coal.example.", RecordType::SRV),
            ("c.cmon.coal.example.", RecordType::A),
            ("coal.example.", RecordType::NS),
            ("example.org.", RecordType::A),
            ("version._cns_meta.", RecordType::TXT),
        ];
        for (qname, qtype) in asked {
            for edns in [None, Some(512), Some(4096)] {
                for id in [1u16, 0xbeef] {
                    let mut q = query(id, &name(qname), qtype, edns);
                    q.set_recursion_desired(id == 1);
                    let q = q.to_vec().unwrap();
                    assert!(cache.answer(&set, &q, &mut out), "{qname} {qtype} {edns:?}");
                    let fast = Message::from_vec(&out).unwrap();
                    let slow = Message::from_vec(&full(&set, &q)).unwrap();
                    // Names compare without case; the question keeps the client's.
                    assert_eq!(fast, slow, "{qname} {qtype} {edns:?}");
                    assert_eq!(fast.queries()[0].name().to_string(), qname);
                }
            }
        }
    }

    #[test]
    fn the_rest_takes_the_full_path() {
        let mut cache = Cache::new();
        let mut out = Vec::new();
        // 40 addresses do not fit 512 bytes.
        let big = set(1, 40);
        let q = query(1, &name("web.svc.u.coal.example."), RecordType::A, None);
        assert!(!cache.answer(&big, &q.to_vec().unwrap(), &mut out));
        let q = query(1, &name("coal.example."), RecordType::SOA, None);
        assert!(!cache.answer(&big, &q.to_vec().unwrap(), &mut out));
        let q = query(1, &name("coal.example."), RecordType::AXFR, None);
        assert!(!cache.answer(&big, &q.to_vec().unwrap(), &mut out));
        let mut v1 = query(
            1,
            &name("a.inst.u.coal.example."),
            RecordType::A,
            Some(1232),
        );
        v1.extensions_mut().as_mut().unwrap().set_version(1);
        assert!(!cache.answer(&big, &v1.to_vec().unwrap(), &mut out));
        let good = query(1, &name("a.inst.u.coal.example."), RecordType::A, None)
            .to_vec()
            .unwrap();
        for cut in 0..good.len() {
            assert!(!cache.answer(&big, &good[..cut], &mut out));
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(!cache.answer(&big, &longer, &mut out));
    }

    #[test]
    fn edns_options_are_answered_only_when_well_formed() {
        let small = set(1, 0);
        let mut cache = Cache::new();
        let mut out = Vec::new();
        let with_options = |options: &[u8]| {
            let mut q = query(1, &name("a.inst.u.coal.example."), RecordType::A, None)
                .to_vec()
                .unwrap();
            q[11] = 1;
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
            q.extend_from_slice(&u16::try_from(options.len()).unwrap().to_be_bytes());
            q.extend_from_slice(options);
            q
        };
        // A cookie (code 10, 8 bytes) as dig sends: the same answer as the full path.
        let cookie = with_options(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(cache.answer(&small, &cookie, &mut out));
        assert_eq!(
            Message::from_vec(&out).unwrap(),
            Message::from_vec(&full(&small, &cookie)).unwrap()
        );
        // Found by the fuzz target: an option whose length runs past the record's data,
        // which the full path answers with FORMERR.
        let overrun = with_options(&[0, 0, 0, 0, 0, 1, 1, 1, 0x61]);
        assert!(!cache.answer(&small, &overrun, &mut out));
        let formerr = Message::from_vec(&full(&small, &overrun)).unwrap();
        assert_eq!(formerr.response_code(), ResponseCode::FormErr);
        // A cut option header, and a Client Subnet option: the full path.
        assert!(!cache.answer(&small, &with_options(&[0, 10, 0]), &mut out));
        let subnet = with_options(&[0, 8, 0, 4, 0, 1, 0, 0]);
        assert!(!cache.answer(&small, &subnet, &mut out));
    }

    #[test]
    fn a_new_snapshot_drops_the_answers() {
        let mut cache = Cache::new();
        let mut out = Vec::new();
        let q = query(
            1,
            &name("web.svc.u.coal.example."),
            RecordType::A,
            Some(1232),
        )
        .to_vec()
        .unwrap();
        let before = set(1, 1);
        assert!(cache.answer(&before, &q, &mut out));
        assert_eq!(Message::from_vec(&out).unwrap().answers().len(), 1);
        let after = set(2, 3);
        assert!(cache.answer(&after, &q, &mut out));
        assert_eq!(Message::from_vec(&out).unwrap().answers().len(), 3);
    }
}
