//! The SVP transport: a bounded TCP accept loop and, per connection, frames in and
//! answers out. Many requests may come on one connection, back to back; each whole
//! frame is answered in order, and the answers to what one read brought are written
//! together.
//!
//! Bad input, as Triton's Portolan handles it unless said otherwise:
//! - a CRC mismatch: logged, and everything received so far on that connection is
//!   dropped unanswered (the size field cannot be trusted either); the connection stays;
//! - an unknown or unsupported op (BULK, SHOOTDOWN, ROUTE, an ack), a body of the wrong
//!   size for its op (a LOG_RM of other than `4 + 16 * count` bytes), another version:
//!   logged, that frame dropped unanswered, the connection stays;
//! - a header announcing more than [`MAX_FRAME_LEN`] bytes (our choice; Triton has no
//!   limit): logged, the connection closed, its body never read;
//! - a connection silent for `svp_idle_secs`: closed.

use std::net::SocketAddr;
use std::time::Duration;

use portolan_client::svp::{Decoded, FrameError, MAX_FRAME_LEN, decode_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triton_common::listen::{Acceptor, Conn};

use crate::app::Portolan;

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Accepts SVP connections until `shutdown`, then cuts the open ones and waits for
/// their tasks.
pub async fn serve(acceptor: Acceptor, app: Portolan, idle: Duration, shutdown: CancellationToken) {
    let abort = acceptor.abort_token();
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            (conn, peer) = acceptor.accept() => {
                tracker.spawn(connection(conn, peer, app.clone(), idle));
            }
        }
    }
    drop(acceptor);
    abort.cancel();
    tracker.close();
    tracker.wait().await;
}

async fn connection(mut conn: Conn<TcpStream>, peer: SocketAddr, app: Portolan, idle: Duration) {
    tracing::debug!(%peer, "SVP connection");
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let close = answer_all(&app, &mut buf, &mut out, peer).await;
        if !out.is_empty() {
            if let Err(e) = conn.write_all(&out).await {
                tracing::debug!(%peer, error = %e, "SVP write failed; closing");
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        match tokio::time::timeout(idle, conn.read(&mut chunk)).await {
            Err(_) => {
                tracing::debug!(%peer, "SVP connection idle; closing");
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "SVP read failed; closing");
                return;
            }
        }
    }
}

/// Answers every whole frame at the front of `buf` into `out`, removing what it used;
/// true when the connection must be closed.
async fn answer_all(
    app: &Portolan,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    peer: SocketAddr,
) -> bool {
    loop {
        match decode_request(buf) {
            Ok(Decoded::Frame { id, message, len }) => {
                let resp = app.answer(&message).await;
                out.extend_from_slice(&resp.encode(id));
                buf.drain(..len);
            }
            Ok(Decoded::Incomplete) => return false,
            Err(e @ FrameError::BadCrc { .. }) => {
                tracing::warn!(%peer, error = %e, dropped = buf.len(), "SVP frame dropped with the receive buffer");
                buf.clear();
                return false;
            }
            Err(e) => match e.frame_len() {
                Some(len) => {
                    tracing::warn!(%peer, id = e.id(), error = %e, "SVP frame dropped");
                    buf.drain(..len.min(buf.len()));
                }
                None => {
                    tracing::warn!(%peer, error = %e, limit = MAX_FRAME_LEN, "SVP connection closed");
                    return true;
                }
            },
        }
    }
}
