//! Tenants reach CloudAPI over TLS only: plain HTTP off loopback is refused at start,
//! and with no certificate configured CloudAPI makes a self-signed one in its data dir,
//! serves HTTPS with it, and keeps it across restarts.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// The `cloudapi` program, as an operator starts it, with config only from the
/// environment: it exits at once with a message naming the key and the rule.
#[test]
fn the_program_refuses_plain_http_off_loopback() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudapi"))
        .env("CLOUDAPI_LISTEN", "0.0.0.0:8080")
        .env_remove("CLOUDAPI_CONFIG")
        .output()
        .expect("cloudapi runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen: "), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(stderr.contains("0.0.0.0:8080"), "{stderr}");
}

#[tokio::test]
async fn start_refuses_plain_http_off_loopback() {
    let config = cloudapi::Config {
        listen: "0.0.0.0:0".into(),
        ..Default::default()
    };
    let e = cloudapi::start(config, CancellationToken::new())
        .await
        .expect_err("refused");
    let text = e.to_string();
    assert!(
        text.contains("listen: ") && text.contains("loopback"),
        "{text}"
    );
}

/// Config as a zone has it: no certificate, no plain HTTP, a data dir.
fn zone_config(data_dir: &Path) -> cloudapi::Config {
    cloudapi::Config {
        listen: String::new(),
        tls_listen: "127.0.0.1:0".into(),
        data_dir: data_dir.display().to_string(),
        external_url: "https://cloudapi.example.com:8443".into(),
        ..Default::default()
    }
}

/// `GET /--ping` over TLS, trusting only `cert` (a real certificate check, not an
/// insecure client); the status line and body.
async fn https_ping(addr: std::net::SocketAddr, cert: &Path, name: &str) -> String {
    let connector =
        triton_common::tls::connector(cert.to_str().unwrap()).expect("the certificate as root");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake with the certificate as the only root");
    tls.write_all(
        format!("GET /--ping HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    // The server may close without close_notify after `Connection: close`.
    let _ = tls.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_made_served_and_kept() {
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = cloudapi::start(zone_config(data.path()), shutdown.clone())
        .await
        .expect("CloudAPI starts with no certificate configured");
    assert!(running.addr.is_none(), "no plain HTTP");
    let addr = running.tls_addr.expect("HTTPS listener");
    let cert = running.tls_cert.clone().expect("a certificate");
    let key = data.path().join("tls/key.pem");
    assert_eq!(cert, data.path().join("tls/cert.pem"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "the key is the owner's only"
    );
    // A real certificate check, by IP and by each name it was made for.
    for name in ["127.0.0.1", "localhost", "cloudapi.example.com"] {
        let answer = https_ping(addr, &cert, name).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
        assert!(answer.contains("\"pong\""), "{name}: {answer}");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /--ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("pong"));

    let first_cert = std::fs::read(&cert).unwrap();
    let first_key = std::fs::read(&key).unwrap();
    shutdown.cancel();
    running.task.await.unwrap();

    // Restarted: the same certificate and key, so clients that pinned it still trust it.
    let shutdown = CancellationToken::new();
    let running = cloudapi::start(zone_config(data.path()), shutdown.clone())
        .await
        .expect("CloudAPI restarts");
    assert_eq!(std::fs::read(&cert).unwrap(), first_cert);
    assert_eq!(std::fs::read(&key).unwrap(), first_key);
    let answer = https_ping(running.tls_addr.unwrap(), &cert, "localhost").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
    running.task.await.unwrap();
}
