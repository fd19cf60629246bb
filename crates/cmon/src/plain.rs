//! Plain HTTP on the HTTPS port (triton-cmon `enforceSSLHandler`): Triton's CMon answers
//! a request that did not come over TLS with 403 `SecureTransportRequired`, after the
//! `Host` check (an unknown Host is 404 first, as its pipeline runs enforceHost before
//! enforceSSL). The TLS listener hands over a connection whose first byte is not a TLS
//! handshake record; this reads the request's head, at most [`MAX_HEAD`] bytes within
//! [`READ_TIMEOUT`], answers once and closes. Bytes that are not an HTTP/1 request line,
//! or a head that does not end within the bounds, get no answer: the connection is
//! closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use triton_common::listen::Conn;
use triton_common::tls::PlainHandler;

use crate::error::ApiError;
use crate::host;

/// The most of a plain request's head that is read.
pub const MAX_HEAD: usize = 8192;
/// How long a plain client has to send its head and take the answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The handler for [`triton_common::tls::TlsListener::with_plain`].
pub fn handler() -> PlainHandler {
    Arc::new(|conn, peer| Box::pin(serve(conn, peer)))
}

async fn serve(mut conn: Conn<TcpStream>, peer: SocketAddr) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while head_end(&head).is_none() && head.len() < MAX_HEAD {
            let room = (MAX_HEAD - head.len()).min(chunk.len());
            match conn.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let Some(answer) = answer(&head) else {
        tracing::debug!(%peer, timed_out = read.is_err(), "plain connection closed unanswered");
        return;
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        let _ = conn.write_all(&answer).await;
        let _ = conn.shutdown().await;
    })
    .await;
}

/// Where the head (request line and headers) ends: after its blank line.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// The whole HTTP/1.1 answer to a plain request whose first bytes are `bytes`: 404
/// `NotFound` for a missing or unknown `Host`, else 403 `SecureTransportRequired`;
/// `None` when `bytes` hold no complete HTTP/1 request head.
pub fn answer(bytes: &[u8]) -> Option<Vec<u8>> {
    let end = head_end(bytes)?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let (Some(method), Some(target), Some(version), None) = (
        request.next(),
        request.next(),
        request.next(),
        request.next(),
    ) else {
        return None;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || target.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let host = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("host").then(|| value.trim())
    });
    let error = match host::parse(host.map(str::as_bytes)) {
        Some(_) => ApiError::secure_transport_required(),
        None => ApiError::not_found(),
    };
    let body = error.body().to_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            error.status.as_u16(),
            error.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(answer: &[u8]) -> &str {
        std::str::from_utf8(answer).unwrap().lines().next().unwrap()
    }

    #[test]
    fn host_first_then_secure_transport() {
        let a = answer(b"GET /metrics HTTP/1.1\r\nHost: cmon.example\r\n\r\n").unwrap();
        assert_eq!(status(&a), "HTTP/1.1 403 Forbidden");
        let text = String::from_utf8(a).unwrap();
        assert!(text.ends_with(
            "{\"code\":\"SecureTransportRequired\",\"message\":\
             \"Container Monitor requires a secure transport (SSL/TLS)\"}"
        ));
        let a = answer(b"GET / HTTP/1.0\r\nhost: nowhere.example\r\n\r\n").unwrap();
        assert_eq!(status(&a), "HTTP/1.1 404 Not Found");
        let a = answer(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(status(&a), "HTTP/1.1 404 Not Found");
    }

    #[test]
    fn no_head_no_answer() {
        assert!(answer(b"GET / HTTP/1.1\r\nHost: cmon.x\r\n").is_none());
        assert!(answer(b"\x00\x01garbage\r\n\r\n").is_none());
        assert!(answer(b"GET /a b HTTP/1.1\r\n\r\n").is_none());
        assert!(answer(b"GET / SSH-2.0\r\n\r\n").is_none());
        assert!(answer(&[0xff; 10]).is_none());
    }
}
