//! What DHCP's and TFTP's servers share: the next datagram of a UDP socket, until
//! shutdown.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The next datagram into `buf` (its length and sender); `None` once `shutdown` is
/// cancelled. A receive error is logged (as `what`'s) and the next datagram awaited:
/// ICMP errors of earlier sends come back here, and they are not fatal.
pub async fn next_datagram(
    socket: &UdpSocket,
    buf: &mut [u8],
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(usize, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = socket.recv_from(buf) => match r {
                Ok(r) => return Some(r),
                Err(e) => tracing::debug!(error = %e, "{what} receive"),
            },
        }
    }
}
