//! SVP on the wire, written from the reference (edge-services.md 5.2 to 5.5) and not
//! through `portolan_client::svp`: every frame here is bytes put together by hand, with
//! its own CRC-32 call, sent on a plain TCP connection to a real Portolan on real Moray.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for an answer before it fails (a hang guard, not a timing
/// assert).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

const PING: u16 = 0x01;
const PONG: u16 = 0x02;
const VL2_REQ: u16 = 0x03;
const VL2_ACK: u16 = 0x04;
const VL3_REQ: u16 = 0x05;
const VL3_ACK: u16 = 0x06;
const BULK_REQ: u16 = 0x07;
const LOG_REQ: u16 = 0x09;
const LOG_ACK: u16 = 0x0A;
const LOG_RM: u16 = 0x0B;
const LOG_RM_ACK: u16 = 0x0C;

const OK: u32 = 0;
const FATAL: u32 = 1;
const NOTFOUND: u32 = 2;
const BADL3TYPE: u32 = 3;

/// ver 1 | op | size | id | crc, then the body; crc over all of it with the crc zeroed.
fn frame(op: u16, id: u32, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x00, 0x01];
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(body);
    let crc = crc32fast::hash(&f);
    f[12..16].copy_from_slice(&crc.to_be_bytes());
    f
}

/// 16 bytes: IPv6, or IPv4 as `::ffff:a.b.c.d`.
fn addr16(ip: &str) -> [u8; 16] {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn vl2_req(mac: [u8; 6], vnet: u32) -> Vec<u8> {
    let mut b = mac.to_vec();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&vnet.to_be_bytes());
    b
}

fn vl3_req(ip: &str, ty: u32, vnet: u32) -> Vec<u8> {
    let mut b = addr16(ip).to_vec();
    b.extend_from_slice(&ty.to_be_bytes());
    b.extend_from_slice(&vnet.to_be_bytes());
    b
}

fn log_req(count: u32, ip: &str) -> Vec<u8> {
    let mut b = count.to_be_bytes().to_vec();
    b.extend_from_slice(&addr16(ip));
    b
}

fn log_rm(count: u32, ids: &[uuid::Uuid]) -> Vec<u8> {
    let mut b = count.to_be_bytes().to_vec();
    for id in ids {
        b.extend_from_slice(id.as_bytes());
    }
    b
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// A frame as read: op, id and body, its version and CRC checked by hand.
#[derive(Debug)]
struct Reply {
    op: u16,
    id: u32,
    body: Vec<u8>,
}

struct Conn(TcpStream);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn(TcpStream::connect(addr).await.unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    async fn read_reply(&mut self) -> Reply {
        let mut head = [0u8; 16];
        self.0.read_exact(&mut head).await.unwrap();
        assert_eq!(u16_at(&head, 0), 1, "svp_ver");
        let size = u32_at(&head, 4) as usize;
        let mut body = vec![0u8; size];
        self.0.read_exact(&mut body).await.unwrap();
        let mut whole = head.to_vec();
        whole[12..16].copy_from_slice(&[0; 4]);
        whole.extend_from_slice(&body);
        assert_eq!(crc32fast::hash(&whole), u32_at(&head, 12), "svp_crc32");
        Reply {
            op: u16_at(&head, 2),
            id: u32_at(&head, 8),
            body,
        }
    }

    async fn reply(&mut self) -> Reply {
        tokio::time::timeout(ANSWER_WITHIN, self.read_reply())
            .await
            .expect("an answer")
    }

    async fn call(&mut self, op: u16, id: u32, body: &[u8]) -> Reply {
        self.send(&frame(op, id, body)).await;
        let r = self.reply().await;
        assert_eq!(r.id, id, "the answer carries the request's id");
        r
    }

    /// True when the server closed the connection (read gives end of file).
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(ANSWER_WITHIN, self.0.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A VL2_ACK body: (status u16, port, 16-byte address).
fn vl2_ack(r: &Reply) -> (u16, u16, [u8; 16]) {
    assert_eq!((r.op, r.body.len()), (VL2_ACK, 20));
    (
        u16_at(&r.body, 0),
        u16_at(&r.body, 2),
        r.body[4..20].try_into().unwrap(),
    )
}

/// A VL3_ACK body: (status u32, mac, port, 16-byte address).
fn vl3_ack(r: &Reply) -> (u32, [u8; 6], u16, [u8; 16]) {
    assert_eq!((r.op, r.body.len()), (VL3_ACK, 28));
    (
        u32_at(&r.body, 0),
        r.body[4..10].try_into().unwrap(),
        u16_at(&r.body, 10),
        r.body[12..28].try_into().unwrap(),
    )
}

/// A LOG_ACK body: status and entry ids with their types.
fn log_ack(r: &Reply) -> (u32, Vec<(u32, uuid::Uuid, Vec<u8>)>) {
    assert_eq!(r.op, LOG_ACK);
    let b = &r.body;
    let mut entries = Vec::new();
    let mut at = 4;
    while at < b.len() {
        let ty = u32_at(b, at);
        let len = match ty {
            1 => 32,
            2 => 44,
            other => panic!("log entry type {other}"),
        };
        let e = b[at..at + len].to_vec();
        entries.push((ty, uuid::Uuid::from_slice(&e[4..20]).unwrap(), e));
        at += len;
    }
    assert_eq!(at, b.len(), "entries fill the body");
    (u32_at(b, 0), entries)
}

#[tokio::test]
async fn ping_gets_pong_with_its_id() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;
    let r = c.call(PING, 0xdead_beef, &[]).await;
    assert_eq!((r.op, r.body.len()), (PONG, 0));
    // Many requests on one connection, sent in one write, are answered in order.
    let mut burst = Vec::new();
    for id in 1..=5 {
        burst.extend_from_slice(&frame(PING, id, &[]));
    }
    c.send(&burst).await;
    for id in 1..=5 {
        let r = c.reply().await;
        assert_eq!((r.op, r.id), (PONG, id));
    }
}

#[tokio::test]
async fn vl2_finds_the_node_of_a_mac_on_its_vnet_only() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;
    let found = c.call(VL2_REQ, 1, &vl2_req(MAC_1, VNET_A)).await;
    assert_eq!(vl2_ack(&found), (0, 4789, addr16(UNDERLAY_1)));

    let nothing = (NOTFOUND as u16, 0, [0u8; 16]);
    // Deleted, on another vnet, unknown.
    let gone = c.call(VL2_REQ, 2, &vl2_req(MAC_GONE, VNET_A)).await;
    assert_eq!(vl2_ack(&gone), nothing);
    let other_vnet = c.call(VL2_REQ, 3, &vl2_req(MAC_B, VNET_A)).await;
    assert_eq!(vl2_ack(&other_vnet), nothing);
    let unknown = c
        .call(VL2_REQ, 4, &vl2_req([2, 0, 0, 0, 0, 9], VNET_A))
        .await;
    assert_eq!(vl2_ack(&unknown), nothing);
    // B's MAC on B's vnet is B's node.
    let b = c.call(VL2_REQ, 5, &vl2_req(MAC_B, VNET_B)).await;
    assert_eq!(vl2_ack(&b), (0, 4789, addr16(UNDERLAY_2)));
}

#[tokio::test]
async fn vl3_answers_mac_and_node_and_notfound_across_vnets() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;
    let found = c.call(VL3_REQ, 1, &vl3_req(IP_1, 1, VNET_A)).await;
    assert_eq!(vl3_ack(&found), (OK, MAC_1, 4789, addr16(UNDERLAY_1)));
    let v6 = c.call(VL3_REQ, 2, &vl3_req(IP_6, 2, VNET_A)).await;
    assert_eq!(vl3_ack(&v6), (OK, MAC_6, 4789, addr16(UNDERLAY_2)));

    let nothing = (NOTFOUND, [0u8; 6], 0, [0u8; 16]);
    let gone = c.call(VL3_REQ, 3, &vl3_req(IP_GONE, 1, VNET_A)).await;
    assert_eq!(vl3_ack(&gone), nothing);
    let unknown = c
        .call(VL3_REQ, 4, &vl3_req("192.168.128.200", 1, VNET_A))
        .await;
    assert_eq!(vl3_ack(&unknown), nothing);
    // B's address asked on A's vnet, and A's on B's: not found, though the subnet and
    // VLAN are the same.
    let b_on_a = c.call(VL3_REQ, 5, &vl3_req(IP_B, 1, VNET_A)).await;
    assert_eq!(vl3_ack(&b_on_a), nothing);
    let a_on_b = c.call(VL3_REQ, 6, &vl3_req(IP_1, 1, VNET_B)).await;
    assert_eq!(vl3_ack(&a_on_b), nothing);
    let b_on_b = c.call(VL3_REQ, 7, &vl3_req(IP_B, 1, VNET_B)).await;
    assert_eq!(vl3_ack(&b_on_b), (OK, MAC_B, 4789, addr16(UNDERLAY_2)));

    // A type other than 1 (IPv4) or 2 (IPv6).
    let bad = c.call(VL3_REQ, 8, &vl3_req(IP_1, 3, VNET_A)).await;
    assert_eq!(vl3_ack(&bad), (BADL3TYPE, [0u8; 6], 0, [0u8; 16]));
}

#[tokio::test]
async fn log_entries_come_back_until_removed() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;
    let r = c.call(LOG_REQ, 1, &log_req(4096, UNDERLAY_1)).await;
    let (status, entries) = log_ack(&r);
    assert_eq!(status, OK);
    let ids: Vec<_> = entries.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, f.log_1);
    let (vl2, vl3) = (&entries[0].2, &entries[1].2);
    assert_eq!(entries[0].0, 1);
    assert_eq!(&vl2[20..26], &MAC_GONE);
    assert_eq!(&vl2[26..28], &[0, 0]);
    assert_eq!(u32_at(vl2, 28), VNET_A);
    assert_eq!(entries[1].0, 2);
    assert_eq!(&vl3[20..36], &addr16(IP_GONE));
    assert_eq!(u16_at(vl3, 38), VLAN);
    assert_eq!(u32_at(vl3, 40), VNET_A);

    // count is in bytes: 40 holds the 32-byte VL2 entry, not the 44-byte VL3 one.
    let r = c.call(LOG_REQ, 2, &log_req(40, UNDERLAY_1)).await;
    let (_, entries) = log_ack(&r);
    assert_eq!(entries.len(), 1);
    // Node 2 has no log; an address no node has is FATAL with no entries.
    let r = c.call(LOG_REQ, 3, &log_req(4096, UNDERLAY_2)).await;
    assert_eq!(log_ack(&r), (OK, vec![]));
    let r = c.call(LOG_REQ, 4, &log_req(4096, UNDERLAY_NONE)).await;
    assert_eq!(log_ack(&r), (FATAL, vec![]));

    // Remove the first entry, and an id that never existed.
    let never = uuid::Uuid::new_v4();
    let r = c.call(LOG_RM, 5, &log_rm(2, &[f.log_1[0], never])).await;
    assert_eq!(
        (r.op, r.body.as_slice()),
        (LOG_RM_ACK, &OK.to_be_bytes()[..])
    );
    let r = c.call(LOG_REQ, 6, &log_req(4096, UNDERLAY_1)).await;
    let (_, entries) = log_ack(&r);
    let ids: Vec<_> = entries.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, vec![f.log_1[1]]);
    // Removing it again is fine.
    let r = c.call(LOG_RM, 7, &log_rm(1, &[f.log_1[0]])).await;
    assert_eq!(u32_at(&r.body, 0), OK);
}

#[tokio::test]
async fn a_frame_in_pieces_is_answered_once_whole() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;
    let whole = frame(VL3_REQ, 77, &vl3_req(IP_1, 1, VNET_A));
    for piece in [&whole[..5], &whole[5..16], &whole[16..30]] {
        c.send(piece).await;
        c.0.flush().await.unwrap();
        // A PING on another connection is answered meanwhile.
        let mut other = Conn::open(f.svp_addr()).await;
        other.call(PING, 1, &[]).await;
    }
    c.send(&whole[30..]).await;
    let r = c.reply().await;
    assert_eq!(r.id, 77);
    assert_eq!(vl3_ack(&r).0, OK);
}

#[tokio::test]
async fn bad_frames_get_no_answer_and_the_connection_goes_on() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;

    // Unknown op, BULK (implemented by nobody), an ack sent as a request, a VL2 request
    // one byte short, a LOG_RM whose size is not 4 + 16 * count: each dropped unanswered,
    // then the PING behind them is answered.
    let mut short_vl2 = vl2_req(MAC_1, VNET_A);
    short_vl2.pop();
    let mut bad = Vec::new();
    bad.extend_from_slice(&frame(0x42, 100, &[]));
    bad.extend_from_slice(&frame(BULK_REQ, 101, &1u32.to_be_bytes()));
    bad.extend_from_slice(&frame(PONG, 102, &[]));
    bad.extend_from_slice(&frame(VL2_REQ, 103, &short_vl2));
    bad.extend_from_slice(&frame(LOG_RM, 104, &log_rm(2, &[f.log_1[0]])));
    bad.extend_from_slice(&frame(PING, 105, &[]));
    c.send(&bad).await;
    let r = c.reply().await;
    assert_eq!((r.op, r.id), (PONG, 105));
    // The short LOG_RM removed nothing.
    let r = c.call(LOG_REQ, 106, &log_req(4096, UNDERLAY_1)).await;
    assert_eq!(log_ack(&r).1.len(), 2);
}

#[tokio::test]
async fn a_bad_crc_is_dropped_unanswered() {
    let f = Fabric::start().await;
    let mut c = Conn::open(f.svp_addr()).await;
    let mut bad = frame(VL3_REQ, 200, &vl3_req(IP_1, 1, VNET_A));
    bad[12] ^= 0xff;
    c.send(&bad).await;
    // What was received with it is dropped too (as Triton's Portolan does), so PINGs
    // follow until one is answered: the first answer is a PONG, never the bad frame's.
    let mut answered = None;
    for id in 1..=50 {
        c.send(&frame(PING, id, &[])).await;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), c.read_reply()).await {
            answered = Some(r);
            break;
        }
    }
    let r = answered.expect("a PING after the bad frame is answered");
    assert_eq!(r.op, PONG);
    assert_ne!(r.id, 200);
    let r = c.call(VL3_REQ, 201, &vl3_req(IP_1, 1, VNET_A)).await;
    assert_eq!(vl3_ack(&r).0, OK);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_only_its_connection() {
    let f = Fabric::start().await;
    let mut other = Conn::open(f.svp_addr()).await;
    let mut c = Conn::open(f.svp_addr()).await;
    // A header announcing a 2 MiB body (the limit is 1 MiB per frame); the body is not
    // awaited.
    let mut head = vec![0x00, 0x01];
    head.extend_from_slice(&LOG_RM.to_be_bytes());
    head.extend_from_slice(&(2u32 << 20).to_be_bytes());
    head.extend_from_slice(&1u32.to_be_bytes());
    head.extend_from_slice(&[0; 4]);
    c.send(&head).await;
    assert!(c.closed().await, "the connection is closed");
    let r = other.call(PING, 1, &[]).await;
    assert_eq!(r.op, PONG);
    let mut fresh = Conn::open(f.svp_addr()).await;
    let r = fresh.call(VL2_REQ, 2, &vl2_req(MAC_1, VNET_A)).await;
    assert_eq!(vl2_ack(&r).0, 0);
}

#[tokio::test]
async fn garbage_on_many_connections_leaves_the_server_serving() {
    let f = Fabric::start().await;
    let mut bystander = Conn::open(f.svp_addr()).await;
    let mut rng = triton_common::rng::Rng::new(14);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        // Frames with random ops and bodies, half of them with a right CRC, between
        // random bytes.
        let mut stream = Vec::new();
        while stream.len() < 64 * 1024 {
            let size = rng.below(64);
            let body: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
            let mut fr = frame(rng.below(16) as u16, rng.next_u64() as u32, &body);
            if rng.chance(50) {
                fr[12] ^= 1;
            }
            stream.extend_from_slice(&fr);
            if rng.chance(10) {
                stream.extend((0..rng.below(32)).map(|_| rng.next_u64() as u8));
            }
        }
        let addr = f.svp_addr();
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // The server may close first (a random size over the limit); that is fine.
            let _ = c.write_all(&stream).await;
            let _ = c.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(ANSWER_WITHIN, c.read_to_end(&mut sink)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(bystander.call(PING, 1, &[]).await.op, PONG);
    let mut fresh = Conn::open(f.svp_addr()).await;
    let r = fresh.call(VL3_REQ, 2, &vl3_req(IP_1, 1, VNET_A)).await;
    assert_eq!(vl3_ack(&r).0, OK);
}
