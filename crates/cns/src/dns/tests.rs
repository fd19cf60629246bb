//! The answer rules (reference 1.9) and the transfers' shape (1.10), on the pure query
//! path: bytes in, bytes out.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::answer::{Handled, Transport, UDP_MIN, handle, query};
use super::transfer::{Plan, all_messages};
use crate::zone::{NS_TTL, SoaFields, TTL, Zone, ZoneSet, Zones};

const ACCOUNT: &str = "930896af-bf8c-48d4-885c-6573a94b1853";
const VM: &str = "4a6de1b8-4dbf-4b64-b1cb-1b5ab2b3e1d2";

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn inst() -> Name {
    name(&format!("{VM}.inst.{ACCOUNT}.coal.example."))
}

fn record(owner: &Name, data: RData) -> Record {
    let ttl = if matches!(data, RData::NS(_)) {
        NS_TTL
    } else {
        TTL
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// coal.example with one instance, a service of it (A and SRV), a CMON CNAME, and
/// `extra` more addresses on the service name.
fn forward(serial: u32, extra: usize) -> Zone {
    let origin = name("coal.example.");
    let soa = SoaFields {
        mname: name("cns.coal.example."),
        rname: name("hostmaster.example."),
    };
    let svc = name(&format!("web.svc.{ACCOUNT}.coal.example."));
    let mut records = vec![
        record(&origin, RData::NS(NS(name("cns.coal.example.")))),
        record(&origin, RData::NS(NS(name("ns2.example.net.")))),
        record(&inst(), RData::A(A(Ipv4Addr::new(10, 0, 0, 5)))),
        record(
            &inst(),
            RData::AAAA(AAAA(Ipv6Addr::from_str("fd00::5").unwrap())),
        ),
        record(&inst(), RData::TXT(TXT::new(vec![VM.to_string()]))),
        record(&svc, RData::A(A(Ipv4Addr::new(10, 0, 0, 5)))),
        record(&svc, RData::SRV(SRV::new(0, 10, 80, inst()))),
        record(&svc, RData::SRV(SRV::new(0, 10, 8080, inst()))),
        record(
            &name(&format!("{VM}.cmon.coal.example.")),
            RData::CNAME(CNAME(name("cmon.coal.example."))),
        ),
        record(
            &name("cmon.coal.example."),
            RData::A(A(Ipv4Addr::new(10, 0, 0, 9))),
        ),
        record(
            &name("out.coal.example."),
            RData::CNAME(CNAME(name("www.example.org."))),
        ),
        record(
            &name("loop1.coal.example."),
            RData::CNAME(CNAME(name("loop2.coal.example."))),
        ),
        record(
            &name("loop2.coal.example."),
            RData::CNAME(CNAME(name("loop1.coal.example."))),
        ),
    ];
    for i in 0..extra {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i as u32);
        records.push(record(&svc, RData::A(A(ip))));
    }
    Zone::new(origin, serial, soa).with_records(records)
}

fn reverse(serial: u32) -> Zone {
    let origin = name("0.0.10.in-addr.arpa.");
    let soa = SoaFields {
        mname: name("cns.coal.example."),
        rname: name("hostmaster.example."),
    };
    Zone::new(origin.clone(), serial, soa).with_records([
        record(&origin, RData::NS(NS(name("cns.coal.example.")))),
        record(&name("5.0.0.10.in-addr.arpa."), RData::PTR(PTR(inst()))),
    ])
}

fn zones(extra: usize) -> ZoneSet {
    let mut set = ZoneSet::default();
    for z in [forward(100, extra), reverse(100)] {
        set.zones.insert(z.origin.clone(), std::sync::Arc::new(z));
    }
    set
}

fn ask_bytes(set: &ZoneSet, bytes: &[u8], transport: Transport) -> Option<Message> {
    match handle(set, bytes, transport) {
        Handled::Reply(r) => Some(Message::from_vec(&r.bytes).unwrap()),
        Handled::Transfer(_) => panic!("a transfer, not an answer"),
        Handled::Drop => None,
    }
}

fn ask(set: &ZoneSet, qname: &str, qtype: RecordType) -> Message {
    // from_ascii keeps the case (from_str lower-cases, as IDNA does).
    let q = query(7, &Name::from_ascii(qname).unwrap(), qtype, None)
        .to_vec()
        .unwrap();
    ask_bytes(set, &q, Transport::Udp).expect("an answer")
}

fn types(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[test]
fn apex_soa_and_ns() {
    let set = zones(0);
    let soa = ask(&set, "coal.example.", RecordType::SOA);
    assert_eq!(soa.response_code(), ResponseCode::NoError);
    assert!(soa.authoritative());
    assert_eq!(soa.id(), 7);
    assert_eq!(types(soa.answers()), [RecordType::SOA]);
    let RData::SOA(fields) = soa.answers()[0].data() else {
        unreachable!()
    };
    assert_eq!(
        (fields.serial(), fields.refresh(), fields.retry()),
        (100, 30, 60)
    );
    assert_eq!(types(soa.name_servers()), [RecordType::NS, RecordType::NS]);

    let ns = ask(&set, "coal.example.", RecordType::NS);
    assert_eq!(types(ns.answers()), [RecordType::NS, RecordType::NS]);
    assert!(ns.answers().iter().all(|r| r.ttl() == 3600));
}

#[test]
fn an_instance_answers_with_ns_in_authority_whatever_the_case_asked() {
    let set = zones(0);
    let asked = format!("{VM}.INST.{ACCOUNT}.Coal.Example.").to_uppercase();
    let a = ask(&set, &asked, RecordType::A);
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert!(a.authoritative());
    assert_eq!(a.answers().len(), 1);
    assert_eq!(
        a.answers()[0].data(),
        &RData::A(A(Ipv4Addr::new(10, 0, 0, 5)))
    );
    assert_eq!(a.answers()[0].ttl(), 30);
    assert_eq!(types(a.name_servers()), [RecordType::NS, RecordType::NS]);
    // The question is echoed as asked.
    assert_eq!(a.queries()[0].name().to_string(), asked);
    let txt = ask(&set, &inst().to_string(), RecordType::TXT);
    assert_eq!(txt.answers()[0].data().to_string(), VM);
}

#[test]
fn nodata_and_nxdomain_carry_the_soa() {
    let set = zones(0);
    // The name exists, not the type.
    let nodata = ask(&set, &inst().to_string(), RecordType::SRV);
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());
    assert_eq!(types(nodata.name_servers()), [RecordType::SOA]);
    // A name with names below it but no records of its own.
    let between = ask(
        &set,
        &format!("inst.{ACCOUNT}.coal.example."),
        RecordType::A,
    );
    assert_eq!(between.response_code(), ResponseCode::NoError);
    assert_eq!(types(between.name_servers()), [RecordType::SOA]);
    // No such name.
    let missing = ask(&set, "nope.inst.coal.example.", RecordType::A);
    assert_eq!(missing.response_code(), ResponseCode::NXDomain);
    assert!(missing.authoritative());
    assert!(missing.answers().is_empty());
    assert_eq!(types(missing.name_servers()), [RecordType::SOA]);
    // SOA below the apex is an ordinary look-up.
    let below = ask(&set, "nope.coal.example.", RecordType::SOA);
    assert_eq!(below.response_code(), ResponseCode::NXDomain);
}

#[test]
fn outside_every_zone_is_servfail() {
    let set = zones(0);
    for qname in [
        "example.org.",
        "coal.example.org.",
        "1.0.0.11.in-addr.arpa.",
        ".",
    ] {
        let m = ask(&set, qname, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::ServFail, "{qname}");
        assert!(!m.authoritative(), "{qname}");
    }
}

#[test]
fn cname_is_followed_within_the_zones() {
    let set = zones(0);
    let m = ask(&set, &format!("{VM}.cmon.coal.example."), RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(types(m.answers()), [RecordType::CNAME, RecordType::A]);
    assert_eq!(m.answers()[1].name(), &name("cmon.coal.example."));
    // Asked for the CNAME itself.
    let c = ask(&set, &format!("{VM}.cmon.coal.example."), RecordType::CNAME);
    assert_eq!(types(c.answers()), [RecordType::CNAME]);
    // The target has no record of the type: NODATA after the CNAME.
    let nodata = ask(&set, &format!("{VM}.cmon.coal.example."), RecordType::AAAA);
    assert_eq!(types(nodata.answers()), [RecordType::CNAME]);
    assert_eq!(types(nodata.name_servers()), [RecordType::SOA]);
    // Out of CNS's zones: the CNAME alone.
    let out = ask(&set, "out.coal.example.", RecordType::A);
    assert_eq!(out.response_code(), ResponseCode::NoError);
    assert_eq!(types(out.answers()), [RecordType::CNAME]);
    // A loop ends.
    let lp = ask(&set, "loop1.coal.example.", RecordType::A);
    assert_eq!(lp.response_code(), ResponseCode::NoError);
    assert!(lp.answers().len() <= 9);
}

#[test]
fn srv_carries_the_targets_addresses() {
    let set = zones(0);
    let m = ask(
        &set,
        &format!("web.svc.{ACCOUNT}.coal.example."),
        RecordType::SRV,
    );
    assert_eq!(types(m.answers()), [RecordType::SRV, RecordType::SRV]);
    // Once per target, A and AAAA.
    assert_eq!(types(m.additionals()), [RecordType::A, RecordType::AAAA]);
    assert!(m.additionals().iter().all(|r| r.name() == &inst()));
}

#[test]
fn ptr_in_a_reverse_zone() {
    let set = zones(0);
    let m = ask(&set, "5.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.answers()[0].data(), &RData::PTR(PTR(inst())));
    let none = ask(&set, "6.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(none.response_code(), ResponseCode::NXDomain);
}

#[test]
fn any_gets_one_rrset() {
    let set = zones(0);
    let m = ask(&set, &inst().to_string(), RecordType::ANY);
    assert_eq!(types(m.answers()), [RecordType::A]);
    let apex = ask(&set, "coal.example.", RecordType::ANY);
    assert_eq!(types(apex.answers()), [RecordType::NS, RecordType::NS]);
}

#[test]
fn meta_version() {
    let set = zones(0);
    let v = ask(&set, "version._cns_meta.", RecordType::TXT);
    assert_eq!(v.response_code(), ResponseCode::NoError);
    assert_eq!(v.answers()[0].ttl(), 0);
    assert!(v.answers()[0].data().to_string().contains("cns"));
    let other = ask(&set, "other._cns_meta.", RecordType::TXT);
    assert_eq!(other.response_code(), ResponseCode::NXDomain);
}

#[test]
fn udp_answers_fit_the_clients_size_else_tc() {
    // 100 addresses on the service name: about 1.7 KB.
    let set = zones(100);
    let svc = name(&format!("web.svc.{ACCOUNT}.coal.example."));
    let sizes = [
        (None, 512),
        (Some(100), 512),
        (Some(1232), 1232),
        (Some(4096), 1232),
        (Some(65535), 1232),
    ];
    for (edns, limit) in sizes {
        let q = query(1, &svc, RecordType::A, edns).to_vec().unwrap();
        let Handled::Reply(r) = handle(&set, &q, Transport::Udp) else {
            panic!("no reply")
        };
        assert!(r.bytes.len() <= limit, "{edns:?}: {} bytes", r.bytes.len());
        let m = Message::from_vec(&r.bytes).unwrap();
        assert!(m.truncated(), "{edns:?}");
        assert!(m.answers().is_empty());
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.extensions().is_some(), edns.is_some());
    }
    // Over TCP the whole answer.
    let q = query(1, &svc, RecordType::A, None).to_vec().unwrap();
    let m = ask_bytes(&set, &q, Transport::Tcp).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 101);
    // 20 addresses fit in 1232 but not in 512.
    let set = zones(20);
    let q = query(1, &svc, RecordType::A, Some(1232)).to_vec().unwrap();
    assert_eq!(
        ask_bytes(&set, &q, Transport::Udp).unwrap().answers().len(),
        21
    );
}

#[test]
fn srv_additionals_go_before_the_answer_does() {
    // An SRV answer that fits only without its additional section keeps TC clear.
    let set = zones(0);
    let svc = name(&format!("web.svc.{ACCOUNT}.coal.example."));
    let q = query(1, &svc, RecordType::SRV, None).to_vec().unwrap();
    let m = ask_bytes(&set, &q, Transport::Udp).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 2);
}

#[test]
fn bad_requests_get_formerr_or_nothing() {
    let set = zones(0);
    let good = query(0x1234, &inst(), RecordType::A, None)
        .to_vec()
        .unwrap();
    // Too short for a header: dropped.
    assert!(ask_bytes(&set, &good[..11], Transport::Udp).is_none());
    // A truncated name: FORMERR with the request's id.
    let cut = ask_bytes(&set, &good[..good.len() - 8], Transport::Udp).unwrap();
    assert_eq!(cut.response_code(), ResponseCode::FormErr);
    assert_eq!(cut.id(), 0x1234);
    // A compression pointer to itself.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let m = ask_bytes(&set, &looped, Transport::Udp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // Two pointers to each other.
    let mut pair = good[..12].to_vec();
    pair.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    let m = ask_bytes(&set, &pair, Transport::Udp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // A response is never answered.
    let mut response = query(1, &inst(), RecordType::A, None);
    response.set_message_type(MessageType::Response);
    assert!(ask_bytes(&set, &response.to_vec().unwrap(), Transport::Udp).is_none());
    // No question, two questions.
    let mut none = query(1, &inst(), RecordType::A, None);
    none.take_queries();
    let m = ask_bytes(&set, &none.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    let mut two = query(1, &inst(), RecordType::A, None);
    two.add_query(two.queries()[0].clone());
    let m = ask_bytes(&set, &two.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
}

#[test]
fn other_opcodes_classes_and_edns_versions() {
    let set = zones(0);
    let mut notify = query(1, &name("coal.example."), RecordType::SOA, None);
    notify.set_op_code(OpCode::Notify);
    let m = ask_bytes(&set, &notify.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    assert_eq!(m.op_code(), OpCode::Notify);

    let mut chaos = query(1, &name("version.bind."), RecordType::TXT, None);
    chaos.queries_mut()[0].set_query_class(DNSClass::CH);
    let m = ask_bytes(&set, &chaos.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::Refused);

    let mut v1 = query(1, &inst(), RecordType::A, Some(1232));
    v1.extensions_mut().as_mut().unwrap().set_version(1);
    let m = ask_bytes(&set, &v1.to_vec().unwrap(), Transport::Udp).unwrap();
    // 16: BADVERS (hickory decodes the number as BADSIG, its TSIG twin).
    assert_eq!(
        u16::from(m.response_code()),
        u16::from(ResponseCode::BADVERS)
    );
    assert!(m.extensions().is_some());
}

fn transfer_of(
    set: &ZoneSet,
    qtype: RecordType,
    client_serial: Option<u32>,
) -> super::answer::TransferRequest {
    let mut q = query(9, &name("coal.example."), qtype, None);
    if let Some(serial) = client_serial {
        let z = set.zones.get(&name("coal.example.")).unwrap();
        q.add_name_server(crate::zone::soa_record(&z.origin, &z.soa, serial));
    }
    match handle(set, &q.to_vec().unwrap(), Transport::Tcp) {
        Handled::Transfer(t) => t,
        other => panic!("not a transfer: {other:?}"),
    }
}

fn answers(messages: &[Vec<u8>]) -> Vec<Record> {
    messages
        .iter()
        .flat_map(|m| Message::from_vec(m).unwrap().take_answers())
        .collect()
}

fn soa_serial(r: &Record) -> Option<u32> {
    match r.data() {
        RData::SOA(s) => Some(s.serial()),
        _ => None,
    }
}

#[test]
fn axfr_is_soa_records_soa_in_messages_of_at_most_500() {
    let zones = Zones::new(10);
    zones.commit(forward(100, 1200)).unwrap();
    let set = zones.snapshot();
    let t = transfer_of(&set, RecordType::AXFR, None);
    assert_eq!(t.ixfr_from, None);
    let plan = Plan::for_request(&zones, &t.zone, t.ixfr_from);
    let messages = all_messages(&t.request, &t.zone, &plan);
    let records = answers(&messages);
    let zone = set.zones.get(&name("coal.example.")).unwrap();
    assert_eq!(records.len(), zone.iter().count() + 2);
    assert_eq!(soa_serial(&records[0]), Some(100));
    assert_eq!(soa_serial(records.last().unwrap()), Some(100));
    assert_eq!(records[1].record_type(), RecordType::NS);
    assert_eq!(messages.len(), records.len().div_ceil(500));
    for (i, m) in messages.iter().enumerate() {
        let m = Message::from_vec(m).unwrap();
        assert!(m.answers().len() <= 500);
        assert!(m.authoritative());
        assert_eq!(m.id(), 9);
        assert_eq!(m.queries().len(), usize::from(i == 0));
    }
}

#[test]
fn ixfr_sends_the_steps_or_the_soa_or_falls_back_to_axfr() {
    let zones = Zones::new(10);
    zones.commit(forward(100, 0)).unwrap();
    zones.commit(forward(101, 2)).unwrap();
    zones.commit(forward(102, 1)).unwrap();
    let set = zones.snapshot();

    // From 100: two steps.
    let t = transfer_of(&set, RecordType::IXFR, Some(100));
    let plan = Plan::for_request(&zones, &t.zone, t.ixfr_from);
    let records = answers(&all_messages(&t.request, &t.zone, &plan));
    let soas: Vec<u32> = records.iter().filter_map(soa_serial).collect();
    assert_eq!(soas, [102, 100, 101, 101, 102, 102]);
    // 100 -> 101 added two addresses; 101 -> 102 removed one.
    assert_eq!(records.len(), 6 + 2 + 1);
    assert_eq!(soa_serial(&records[2]), Some(101));
    assert_eq!(records[3].record_type(), RecordType::A);

    // Current: the SOA alone.
    let t = transfer_of(&set, RecordType::IXFR, Some(102));
    let plan = Plan::for_request(&zones, &t.zone, t.ixfr_from);
    let records = answers(&all_messages(&t.request, &t.zone, &plan));
    assert_eq!(
        records.iter().filter_map(soa_serial).collect::<Vec<_>>(),
        [102]
    );
    assert_eq!(records.len(), 1);

    // Unknown to the journal: the whole zone.
    let t = transfer_of(&set, RecordType::IXFR, Some(7));
    let plan = Plan::for_request(&zones, &t.zone, t.ixfr_from);
    assert!(matches!(plan, Plan::Axfr));
    let records = answers(&all_messages(&t.request, &t.zone, &plan));
    assert_eq!(
        records.len(),
        set.zones[&name("coal.example.")].iter().count() + 2
    );

    // IXFR without the client's SOA: FORMERR.
    let q = query(1, &name("coal.example."), RecordType::IXFR, None);
    let m = ask_bytes(&set, &q.to_vec().unwrap(), Transport::Tcp).unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
}

/// Found by the query fuzz target: a request of 256 questions (a NOTIFY here, answered
/// NOTIMP) had every question echoed, 1330 bytes over UDP to a client without EDNS.
#[test]
fn many_questions_get_a_truncated_header_within_the_udp_size() {
    let mut request = query(7, &Name::root(), RecordType::A, None);
    request.set_op_code(OpCode::Notify);
    for _ in 1..256 {
        request.add_query(Query::query(Name::root(), RecordType::A));
    }
    for (op_code, code) in [
        (OpCode::Notify, ResponseCode::NotImp),
        (OpCode::Query, ResponseCode::FormErr),
    ] {
        request.set_op_code(op_code);
        let bytes = request.to_vec().unwrap();
        let Handled::Reply(reply) = handle(&ZoneSet::default(), &bytes, Transport::Udp) else {
            panic!("{op_code:?}: no answer");
        };
        assert!(reply.bytes.len() <= usize::from(UDP_MIN), "{op_code:?}");
        let answer = Message::from_vec(&reply.bytes).unwrap();
        assert_eq!(answer.id(), 7);
        assert!(answer.truncated(), "{op_code:?}: TC set");
        assert_eq!(answer.response_code(), code);
        // Over TCP the whole answer fits, questions and all.
        let Handled::Reply(reply) = handle(&ZoneSet::default(), &bytes, Transport::Tcp) else {
            panic!("{op_code:?}: no answer over TCP");
        };
        let answer = Message::from_vec(&reply.bytes).unwrap();
        assert_eq!(answer.queries().len(), 256);
        assert!(!answer.truncated());
    }
}
