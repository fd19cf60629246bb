//! The query path (reference 1.9): one request's bytes in, the answer's bytes out (or a
//! transfer to stream, or nothing). Pure: it reads a `ZoneSet` snapshot and touches no
//! socket, so the fuzz target and the unit tests call it as the server does.
//!
//! The rules, in order:
//! - a response (QR set) is dropped; bytes that are not a DNS message get FORMERR when
//!   they carry a header (and are dropped when they do not);
//! - EDNS version other than 0: BADVERS; an opcode other than QUERY: NOTIMP (Triton drops
//!   them, which leaves a client waiting); not exactly one question: FORMERR; a class
//!   other than IN (or ANY): REFUSED;
//! - `version._cns_meta` TXT: the server's version at TTL 0; any other `*._cns_meta`:
//!   NXDOMAIN;
//! - a name in no zone: SERVFAIL, so a stub resolver moves on to its next server;
//! - AXFR and IXFR: a transfer (`transfer.rs`; the caller checks the ACL);
//! - SOA at the apex: the SOA, with the NS set in authority; NS at the apex: the NS set;
//! - records of the asked type: the answer with the NS set in authority, and for SRV the
//!   targets' A and AAAA in the additional section;
//! - a CNAME: the CNAME, followed within CNS's zones (at most 8 steps) to the target's
//!   records of the asked type;
//! - the name exists (or has names below it) but not that type: NODATA, SOA in
//!   authority; the name does not exist: NXDOMAIN, SOA in authority;
//! - ANY (RFC 8482): one RRset, the name's lowest-numbered type (A before AAAA, TXT, SRV;
//!   at the apex the NS set), never the whole node.
//!
//! Every answer from a zone has AA set. Over UDP an answer is at most 512 bytes, or the
//! client's EDNS size within [512, 1232]; one that does not fit loses its additional
//! section first, then its answer and authority with TC set, so the client retries on
//! TCP.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{Zone, ZoneSet};

/// The largest UDP answer without EDNS (RFC 1035).
pub const UDP_MIN: u16 = 512;
/// The largest UDP answer CNS sends whatever the client's EDNS says: the DNS flag day
/// 2020 size, which does not fragment on the paths CNS serves.
pub const UDP_MAX: u16 = 1232;
/// The largest message over TCP (its two-byte length prefix).
pub const TCP_MAX: usize = 65_535;
/// How many CNAMEs an answer follows.
const MAX_CNAME_CHAIN: usize = 8;

/// What the server does with one request.
#[derive(Debug)]
pub enum Handled {
    /// Send these bytes back.
    Reply(Reply),
    /// AXFR or IXFR of `zone` was asked; the caller checks the ACL and streams it.
    Transfer(TransferRequest),
    /// Send nothing.
    Drop,
}

/// An answer, and whether it was an SOA query at a zone's apex (a secondary checking its
/// serial: the peers table counts them).
#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub soa_of: Option<Name>,
}

/// A transfer asked for.
#[derive(Debug)]
pub struct TransferRequest {
    pub request: Message,
    pub zone: Arc<Zone>,
    /// IXFR: the serial the client has (from its SOA in the authority section).
    pub ixfr_from: Option<u32>,
}

/// Where the request came in: UDP answers are bounded by the client's EDNS size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The text of `version._cns_meta`.
pub fn version_text() -> String {
    format!("triton-rs cns {}", env!("CARGO_PKG_VERSION"))
}

/// Handles one request's bytes.
pub fn handle(zones: &ZoneSet, packet: &[u8], transport: Transport) -> Handled {
    let request = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return format_error(packet),
    };
    if request.message_type() == MessageType::Response {
        return Handled::Drop;
    }
    let limit = match transport {
        Transport::Tcp => TCP_MAX,
        Transport::Udp => usize::from(
            request
                .extensions()
                .as_ref()
                .map_or(UDP_MIN, |e| e.max_payload().clamp(UDP_MIN, UDP_MAX)),
        ),
    };
    let mut response = response_to(&request);
    if request
        .extensions()
        .as_ref()
        .is_some_and(|e| e.version() != 0)
    {
        response.take_queries();
        return reply(response, ResponseCode::BADVERS, limit, None);
    }
    if request.op_code() != OpCode::Query {
        return reply(response, ResponseCode::NotImp, limit, None);
    }
    let [query] = request.queries() else {
        return reply(response, ResponseCode::FormErr, limit, None);
    };
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return reply(response, ResponseCode::Refused, limit, None);
    }
    let qname = query.name().to_lowercase();
    let qtype = query.query_type();

    if qname.iter().next_back() == Some(b"_cns_meta".as_slice()) {
        response.set_authoritative(true);
        let version = Name::from_ascii("version._cns_meta.").ok();
        if version.as_ref() != Some(&qname) {
            return reply(response, ResponseCode::NXDomain, limit, None);
        }
        if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            response.add_answer(Record::from_rdata(
                qname,
                0,
                RData::TXT(TXT::new(vec![version_text()])),
            ));
        }
        return reply(response, ResponseCode::NoError, limit, None);
    }

    let Some(zone) = zones.find(&qname) else {
        return reply(response, ResponseCode::ServFail, limit, None);
    };

    match qtype {
        RecordType::AXFR | RecordType::IXFR => {
            let ixfr_from = if qtype == RecordType::IXFR {
                let soa = request.name_servers().iter().find_map(|r| match r.data() {
                    RData::SOA(soa) => Some(soa.serial()),
                    _ => None,
                });
                match soa {
                    Some(serial) => Some(serial),
                    None => return reply(response, ResponseCode::FormErr, limit, None),
                }
            } else {
                None
            };
            return Handled::Transfer(TransferRequest {
                request,
                zone: zone.clone(),
                ixfr_from,
            });
        }
        _ => {}
    }

    response.set_authoritative(true);
    let apex = qname == zone.origin;
    if apex && qtype == RecordType::SOA {
        response.add_answer(zone.soa_record());
        response.add_name_servers(ns_set(zone));
        let origin = zone.origin.clone();
        return reply(response, ResponseCode::NoError, limit, Some(origin));
    }
    if apex && qtype == RecordType::NS {
        response.add_answers(ns_set(zone));
        return reply(response, ResponseCode::NoError, limit, None);
    }
    let code = lookup(zones, zone, &qname, qtype, &mut response);
    reply(response, code, limit, None)
}

/// Fills the answer for `qname`/`qtype` in `zone` (CNAMEs followed) and gives the code.
fn lookup(
    zones: &ZoneSet,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    response: &mut Message,
) -> ResponseCode {
    let mut name = qname.clone();
    let mut zone = zone;
    for _ in 0..=MAX_CNAME_CHAIN {
        let Some(node) = zone.name(&name) else {
            response.add_name_server(zone.soa_record());
            return if has_names_below(zone, &name) {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
        };
        let set = if qtype == RecordType::ANY {
            node.values().next()
        } else {
            node.get(&qtype)
        };
        if let Some(records) = set {
            response.add_answers(records.iter().cloned());
            response.add_name_servers(ns_set(zone));
            if qtype == RecordType::SRV {
                add_srv_targets(zones, records, response);
            }
            return ResponseCode::NoError;
        }
        let Some(cname) = node.get(&RecordType::CNAME) else {
            response.add_name_server(zone.soa_record());
            return ResponseCode::NoError;
        };
        response.add_answers(cname.iter().cloned());
        let target = cname.iter().find_map(|r| match r.data() {
            RData::CNAME(c) => Some(c.0.to_lowercase()),
            _ => None,
        });
        let Some(next) = target.as_ref().and_then(|t| zones.find(t)) else {
            // Out of CNS's zones: the client's resolver follows it.
            return ResponseCode::NoError;
        };
        zone = next;
        name = target.unwrap_or(name);
    }
    // A loop, or a chain longer than CNS follows: what was found so far.
    ResponseCode::NoError
}

/// Whether some name below `name` exists (an empty non-terminal such as
/// `inst.<account>.<zone>`: NODATA, not NXDOMAIN, so a resolver minimising its query names
/// goes on).
fn has_names_below(zone: &Zone, name: &Name) -> bool {
    use std::ops::Bound::{Excluded, Unbounded};
    // Names sort in DNSSEC canonical order, so a name's descendants follow it directly.
    zone.records
        .range::<Name, _>((Excluded(name), Unbounded))
        .next()
        .is_some_and(|(next, _)| name.zone_of(next))
}

/// The zone's NS records.
fn ns_set(zone: &Zone) -> Vec<Record> {
    zone.name(&zone.origin)
        .and_then(|n| n.get(&RecordType::NS))
        .cloned()
        .unwrap_or_default()
}

/// The A and AAAA records of the SRV records' targets, once per target.
fn add_srv_targets(zones: &ZoneSet, records: &[Record], response: &mut Message) {
    let mut seen: Vec<Name> = Vec::new();
    for r in records {
        let RData::SRV(srv) = r.data() else { continue };
        let target = srv.target().to_lowercase();
        if seen.contains(&target) {
            continue;
        }
        let found = zones.find(&target).and_then(|z| z.name(&target));
        if let Some(node) = found {
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = node.get(&t) {
                    response.add_additionals(set.iter().cloned());
                }
            }
        }
        seen.push(target);
    }
}

/// The response skeleton: id, opcode, RD and the question echoed, EDNS when asked.
pub(crate) fn response_to(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_checking_disabled(request.checking_disabled());
    response.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_MAX);
        response.set_edns(edns);
    }
    response
}

/// Encodes `response` with `code`, within `limit` bytes.
fn reply(mut response: Message, code: ResponseCode, limit: usize, soa_of: Option<Name>) -> Handled {
    response.set_response_code(code);
    match encode_within(&mut response, limit) {
        Some(bytes) => Handled::Reply(Reply { bytes, soa_of }),
        None => Handled::Drop,
    }
}

/// The message's bytes, at most `limit` long: without its additional section if it must,
/// else with only its question and TC set, else (a request of many questions) with TC set
/// and nothing but the header.
pub(crate) fn encode_within(response: &mut Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = encode(response)?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    if !response.additionals().is_empty() {
        response.take_additionals();
        let bytes = encode(response)?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    let mut truncated = response.truncate();
    truncated.set_response_code(response.response_code());
    let bytes = encode(&truncated)?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    truncated.take_queries();
    encode(&truncated)
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "failed to encode a DNS answer");
            None
        }
    }
}

/// FORMERR for bytes with a request's header that are not a message; nothing for
/// anything else (too short, or a response).
fn format_error(packet: &[u8]) -> Handled {
    let Some(header) = packet.get(..12) else {
        return Handled::Drop;
    };
    if header[2] & 0x80 != 0 {
        return Handled::Drop;
    }
    let opcode = (header[2] >> 3) & 0x0f;
    let mut bytes = vec![0u8; 12];
    bytes[..2].copy_from_slice(&header[..2]);
    bytes[2] = 0x80 | (opcode << 3) | (header[2] & 0x01);
    bytes[3] = ResponseCode::FormErr.low();
    Handled::Reply(Reply {
        bytes,
        soa_of: None,
    })
}

/// A query for tests and clients: `name` `qtype`, id `id`, EDNS with `udp_size` if given.
pub fn query(id: u16, name: &Name, qtype: RecordType, udp_size: Option<u16>) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    m.add_query(Query::query(name.clone(), qtype));
    if let Some(size) = udp_size {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        m.set_edns(edns);
    }
    m
}
