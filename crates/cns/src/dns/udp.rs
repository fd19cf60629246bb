//! DNS over UDP: a few workers sharing the socket, each with one buffer, answering from
//! the zones' snapshot of the moment.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::Server;
use super::acl::{is_local, unmap};
use super::answer::{self, Handled, Transport};
use super::fast::Cache;
use super::transfer;

/// A request larger than this is cut and answered FORMERR (DNS queries are tens of bytes).
const MAX_REQUEST: usize = 4096;

/// Serves until the server's shutdown.
pub(super) async fn serve(server: Arc<Server>, socket: Arc<UdpSocket>) {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        set.spawn(worker(server.clone(), socket.clone()));
    }
    while set.join_next().await.is_some() {}
}

async fn worker(server: Arc<Server>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut cache = Cache::new();
    let mut out = Vec::with_capacity(usize::from(answer::UDP_MAX));
    loop {
        let received = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, src) = match received {
            Ok(r) => r,
            Err(e) => {
                // An ICMP error reported on the socket, or memory pressure: not fatal.
                tracing::debug!(error = %e, "DNS UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if src == server.local {
            continue;
        }
        let zones = server.zones.snapshot();
        if cache.answer(&zones, &buf[..n], &mut out) {
            if let Err(e) = socket.send_to(&out, src).await {
                tracing::debug!(peer = %src, error = %e, "DNS UDP send failed");
            }
            continue;
        }
        let bytes = match answer::handle(&zones, &buf[..n], Transport::Udp) {
            Handled::Reply(reply) => {
                let ip = unmap(src.ip());
                if reply.soa_of.is_some() && !is_local(ip) && server.acl.allows(ip) {
                    server.peers.count(ip, "soa");
                }
                Some(reply.bytes)
            }
            Handled::Transfer(t) => {
                if !server.acl.allows(src.ip()) {
                    tracing::warn!(peer = %src, zone = %t.zone.origin, "transfer denied");
                    transfer::refused(&t.request)
                } else if t.ixfr_from.is_some() {
                    // IXFR over UDP: the current SOA alone (RFC 1995 4); the client
                    // comes back over TCP when it is behind.
                    let plan = transfer::Plan::UpToDate;
                    transfer::all_messages(&t.request, &t.zone, &plan)
                        .into_iter()
                        .next()
                } else {
                    transfer::truncated(&t.request)
                }
            }
            Handled::Drop => None,
        };
        if let Some(bytes) = bytes
            && let Err(e) = socket.send_to(&bytes, src).await
        {
            tracing::debug!(peer = %src, error = %e, "DNS UDP send failed");
        }
    }
}
