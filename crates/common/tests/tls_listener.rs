//! The TLS listener as a client meets it: the self-signed certificate is made once and
//! kept, HTTPS is served with it, and a connection over `max_connections` waits (its
//! handshake does not even start) until an open one closes; a client's connector
//! refuses a certificate file it cannot use.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use triton_common::tls;

async fn connect(addr: std::net::SocketAddr, cert: &Path) -> TlsStream<TcpStream> {
    let connector = tls::connector(cert.to_str().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One `GET /` on a kept-alive connection; the status line.
async fn get(tls: &mut TlsStream<TcpStream>) -> String {
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn https_with_a_kept_self_signed_certificate_and_a_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string()];
    let (cert, key, made) = tls::self_signed(dir.path(), "test", &names).unwrap();
    assert!(made);
    let (again, _, made) = tls::self_signed(dir.path(), "test", &names).unwrap();
    assert!(!made, "the certificate is kept across starts");
    assert_eq!(again, cert);

    let acceptor = tls::acceptor(&cert.display().to_string(), &key.display().to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let listener = tls::TlsListener::new(listener, acceptor, 1, shutdown.clone());
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let token = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });

    let mut first = connect(addr, &cert).await;
    assert_eq!(get(&mut first).await, "HTTP/1.1 200 OK");

    // The second client's handshake waits while the first connection is open.
    let cert2 = cert.clone();
    let second = tokio::spawn(async move {
        let mut tls = connect(addr, &cert2).await;
        get(&mut tls).await
    });
    assert_eq!(get(&mut first).await, "HTTP/1.1 200 OK");
    // Give a listener without the limit every chance to serve the second client early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second client was served early");

    drop(first);
    assert_eq!(second.await.unwrap(), "HTTP/1.1 200 OK");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// A client's connector refuses a certificate file it cannot use, naming the file.
#[test]
fn a_connector_refuses_a_missing_or_empty_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem").display().to_string();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let empty = empty.display().to_string();
    for (case, path, words) in [
        ("missing", &missing, &["cannot read TLS certificate"][..]),
        ("empty", &empty, &["no CERTIFICATE in the file"]),
    ] {
        let message = match tls::connector(path) {
            Ok(_) => panic!("{case}: the connector should be refused"),
            Err(e) => triton_common::service::chain(&e),
        };
        assert!(message.contains(path.as_str()), "{case}: {message}");
        for w in words {
            assert!(message.contains(w), "{case}: {message} should say {w:?}");
        }
    }
}
