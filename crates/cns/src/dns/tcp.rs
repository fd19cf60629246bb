//! DNS over TCP: queries (several per connection, in order) and zone transfers, each
//! connection bounded by a permit, an idle timeout and a write timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::acl::{is_local, unmap};
use super::answer::{self, Handled, Transport};
use super::transfer::{self, Messages, Plan};
use super::{MAX_TCP_CONNECTIONS, Server};
use crate::dns::answer::TransferRequest;

/// A connection with no request for this long is closed (RFC 7766 suggests seconds).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's bytes must arrive within this once its length has.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Each message written must be taken by the client within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until shutdown; then waits for the open ones to end.
pub(super) async fn accept(server: Arc<Server>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = server.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or the client gone before accept.
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        connections.spawn(async move {
            connection(&server, stream, peer).await;
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn connection(server: &Arc<Server>, mut stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(peer = %peer, error = %e, "TCP_NODELAY");
    }
    loop {
        let len = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            r = tokio::time::timeout(IDLE_TIMEOUT, stream.read_u16()) => match r {
                Ok(Ok(len)) => usize::from(len),
                // Closed, reset or idle.
                _ => return,
            },
        };
        let mut request = vec![0u8; len];
        match tokio::time::timeout(READ_TIMEOUT, stream.read_exact(&mut request)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let zones = server.zones.snapshot();
        let result = match answer::handle(&zones, &request, Transport::Tcp) {
            Handled::Reply(reply) => {
                let ip = unmap(peer.ip());
                if reply.soa_of.is_some() && !is_local(ip) && server.acl.allows(ip) {
                    server.peers.count(ip, "soa");
                }
                write(&mut stream, &reply.bytes).await
            }
            Handled::Transfer(t) => send_transfer(server, &mut stream, peer, t).await,
            Handled::Drop => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(peer = %peer, error = %e, "DNS TCP connection ended");
            return;
        }
    }
}

/// One message with its length prefix.
async fn write(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(message.len()) else {
        return Err(std::io::Error::other("message longer than 65535 bytes"));
    };
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&framed)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read the answer",
        )),
    }
}

/// Streams an AXFR or IXFR to an allowed peer (REFUSED to any other), and records it in
/// the peers table.
async fn send_transfer(
    server: &Arc<Server>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    t: TransferRequest,
) -> std::io::Result<()> {
    let ip = unmap(peer.ip());
    let origin = t.zone.origin.clone();
    if !server.acl.allows(ip) {
        tracing::warn!(peer = %peer, zone = %origin, "transfer denied");
        return match transfer::refused(&t.request) {
            Some(bytes) => write(stream, &bytes).await,
            None => Ok(()),
        };
    }
    let plan = Plan::for_request(&server.zones, &t.zone, t.ixfr_from);
    let kind = if t.ixfr_from.is_some() {
        "ixfr"
    } else {
        "axfr"
    };
    server.peers.count(ip, kind);
    if t.ixfr_from.is_some() {
        server.peers.update(ip, |p| p.using_ixfr = true);
    }
    let mut messages = Messages::new(&t.request);
    let mut sent = 0usize;
    for record in transfer::records(&t.zone, &plan) {
        for m in messages.push(record.into_owned()) {
            if server.shutdown.is_cancelled() {
                return Err(std::io::Error::other("shutting down"));
            }
            write(stream, &m).await?;
            sent += 1;
        }
    }
    for m in messages.finish() {
        write(stream, &m).await?;
        sent += 1;
    }
    let serial = t.zone.serial;
    tracing::info!(
        peer = %peer,
        zone = %origin,
        serial,
        kind,
        from = ?t.ixfr_from,
        incremental = plan.is_incremental(),
        messages = sent,
        "transfer served"
    );
    server.peers.set_serial(ip, &origin.to_string(), serial);
    if !is_local(ip) {
        server
            .probes
            .after_transfer(server.clone(), ip, t.zone.clone());
    }
    Ok(())
}
