//! CNS's DNS query path (`dns::answer::handle`) on arbitrary bytes, as UDP and as TCP
//! requests, over a zone with every record type CNS makes (A, AAAA, TXT, SRV, CNAME, NS,
//! PTR) and a journal, so that AXFR and IXFR requests build their messages too.
//!
//! The UDP fast path (`dns::fast::Cache`) is asked first: when it answers, its answer
//! must decode to the full path's.
//!
//! What must hold: it returns (no panic, no hang on compression loops or truncated
//! names); nothing is sent only for input shorter than a header or a response (QR set);
//! every answer decodes, carries the request's id with QR set, and fits: 1232 bytes over
//! UDP, 512 when the request has no EDNS; every transfer message decodes and fits in
//! 65535 bytes, and the transfer's first and last records are the zone's SOA.
#![no_main]

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use cns::dns::answer::{Handled, Transport, UDP_MAX, UDP_MIN, handle};
use cns::dns::fast::Cache;
use cns::dns::transfer::{Plan, all_messages};
use cns::zone::{NS_TTL, SoaFields, TTL, Zone, ZoneSet, Zones};
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};
use libfuzzer_sys::fuzz_target;

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap_or_else(|_| Name::root())
}

fn zone(serial: u32, extra: u32) -> Zone {
    let origin = name("coal.example.");
    let inst = name("a.inst.u.coal.example.");
    let svc = name("web.svc.u.coal.example.");
    let r = |owner: &Name, data| {
        let ttl = if matches!(data, RData::NS(_)) {
            NS_TTL
        } else {
            TTL
        };
        Record::from_rdata(owner.clone(), ttl, data)
    };
    let mut records = vec![
        r(&origin, RData::NS(NS(name("cns.coal.example.")))),
        r(&inst, RData::A(A(Ipv4Addr::new(10, 0, 0, 5)))),
        r(&inst, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
        r(&inst, RData::TXT(TXT::new(vec!["a".into()]))),
        r(&svc, RData::SRV(SRV::new(0, 10, 80, inst.clone()))),
        r(
            &name("c.cmon.coal.example."),
            RData::CNAME(CNAME(name("cmon.coal.example."))),
        ),
        r(
            &name("cmon.coal.example."),
            RData::A(A(Ipv4Addr::new(10, 0, 0, 9))),
        ),
        r(
            &name("l1.coal.example."),
            RData::CNAME(CNAME(name("l2.coal.example."))),
        ),
        r(
            &name("l2.coal.example."),
            RData::CNAME(CNAME(name("l1.coal.example."))),
        ),
    ];
    for i in 0..extra {
        records.push(r(&svc, RData::A(A(Ipv4Addr::from(0x0a01_0000 + i)))));
    }
    let soa = SoaFields {
        mname: name("cns.coal.example."),
        rname: name("hostmaster.example."),
    };
    Zone::new(origin, serial, soa).with_records(records)
}

fn zones() -> &'static (Zones, Arc<ZoneSet>) {
    static ZONES: OnceLock<(Zones, Arc<ZoneSet>)> = OnceLock::new();
    ZONES.get_or_init(|| {
        let zones = Zones::new(10);
        let _ = zones.commit(zone(1, 0));
        let _ = zones.commit(zone(2, 3));
        let _ = zones.commit(zone(3, 120));
        let reverse = Zone::new(
            name("0.0.10.in-addr.arpa."),
            1,
            SoaFields {
                mname: name("cns.coal.example."),
                rname: name("hostmaster.example."),
            },
        )
        .with_records([Record::from_rdata(
            name("5.0.0.10.in-addr.arpa."),
            TTL,
            RData::PTR(PTR(name("a.inst.u.coal.example."))),
        )]);
        let _ = zones.commit(reverse);
        let set = zones.snapshot();
        (zones, set)
    })
}

fuzz_target!(|data: &[u8]| {
    let (zones, set) = zones();
    let has_edns = Message::from_vec(data)
        .map(|m| m.extensions().is_some())
        .unwrap_or(false);
    // The UDP fast path gives the full path's answer, or leaves the query to it.
    thread_local! {
        static CACHE: RefCell<(Cache, Vec<u8>)> = RefCell::new((Cache::new(), Vec::new()));
    }
    CACHE.with_borrow_mut(|(cache, out)| {
        if cache.answer(set, data, out) {
            let Handled::Reply(full) = handle(set, data, Transport::Udp) else {
                panic!("the fast path answered what the full path does not");
            };
            let fast = Message::from_vec(out).expect("the fast answer decodes");
            let full = Message::from_vec(&full.bytes).expect("the answer decodes");
            assert_eq!(fast, full);
            assert_eq!(&out[..2], &data[..2]);
        }
    });
    for transport in [Transport::Udp, Transport::Tcp] {
        match handle(set, data, transport) {
            Handled::Drop => {
                assert!(
                    data.len() < 12 || data[2] & 0x80 != 0,
                    "a request with a header got no answer"
                );
            }
            Handled::Reply(reply) => {
                let limit = match (transport, has_edns) {
                    (Transport::Tcp, _) => 65_535,
                    (Transport::Udp, true) => usize::from(UDP_MAX),
                    (Transport::Udp, false) => usize::from(UDP_MIN),
                };
                assert!(
                    reply.bytes.len() <= limit,
                    "{} > {limit}",
                    reply.bytes.len()
                );
                let m = Message::from_vec(&reply.bytes).expect("the answer decodes");
                assert_eq!(m.message_type(), MessageType::Response);
                assert_eq!(
                    &reply.bytes[..2],
                    &data[..2],
                    "the answer has the request's id"
                );
            }
            Handled::Transfer(t) => {
                let plan = Plan::for_request(zones, &t.zone, t.ixfr_from);
                let messages = all_messages(&t.request, &t.zone, &plan);
                let mut first = None;
                let mut last = None;
                for bytes in &messages {
                    assert!(bytes.len() <= 65_535);
                    let m = Message::from_vec(bytes).expect("a transfer message decodes");
                    assert_eq!(m.id(), t.request.id());
                    if first.is_none() {
                        first = m.answers().first().cloned();
                    }
                    last = m.answers().last().cloned().or(last);
                }
                let soa = t.zone.soa_record();
                assert_eq!(first.as_ref(), Some(&soa));
                assert_eq!(last.as_ref(), Some(&soa));
            }
        }
    }
});
