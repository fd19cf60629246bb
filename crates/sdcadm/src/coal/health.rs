//! Health checks, one per kind in `deploy/services.toml`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::deploy::HealthKind;

/// Each probe's own bound: a hung service must not hang `coal status`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Ok(()) when healthy; Err(why not) otherwise.
pub async fn check(
    kind: HealthKind,
    addr: &str,
    path: Option<&str>,
    pg_bindir: &Path,
) -> Result<(), String> {
    match kind {
        HealthKind::Grpc => grpc(addr).await,
        HealthKind::Moray => moray(addr).await,
        HealthKind::Http => {
            let (status, _) = http_get(addr, path.unwrap_or("/"))?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("GET {} answered {status}", path.unwrap_or("/")))
            }
        }
        HealthKind::Https => {
            let (status, _) = https_get(addr, path.unwrap_or("/"))?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("GET {} answered {status}", path.unwrap_or("/")))
            }
        }
        HealthKind::Etcd => {
            let (status, body) = http_get(addr, "/health")?;
            if status == 200 && body.replace(' ', "").contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(format!("GET /health answered {status}: {}", body.trim()))
            }
        }
        HealthKind::Postgres => postgres(addr, pg_bindir),
    }
}

/// A channel to `addr` connected now, each step bounded by [`PROBE_TIMEOUT`].
async fn probe_channel(addr: &str) -> Result<tonic::transport::Channel, String> {
    triton_common::channel::ChannelBuilder::new(addr)
        .connect_timeout(PROBE_TIMEOUT)
        .request_timeout(Some(PROBE_TIMEOUT))
        .connect()
        .await
        .map_err(|e| crate::error::chain(&e))
}

/// `grpc.health.v1.Health/Check` for the whole server (service "").
pub async fn grpc(addr: &str) -> Result<(), String> {
    let channel = probe_channel(addr).await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| format!("health check: {}", s.message()))?;
    let status = reply.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!(
            "health status {}",
            ServingStatus::try_from(status)
                .map(|s| s.as_str_name())
                .unwrap_or("unknown")
        ))
    }
}

/// Moray's own deep ping: serving, and its PostgreSQL (the shard's primary) answers.
pub async fn moray(addr: &str) -> Result<(), String> {
    use triton_proto::moray::v1::{PingRequest, moray_client::MorayClient};
    let channel = probe_channel(addr).await?;
    MorayClient::new(channel)
        .ping(PingRequest {
            deep: true,
            options: None,
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("deep ping: {}", s.message()))
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let s = TcpStream::connect_timeout(&sock, PROBE_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    Ok(s)
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read {addr}: {e}"))?;
    parse_response(addr, &buf)
}

/// (status, body) of an HTTP/1 answer.
fn parse_response(addr: &str, buf: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`http_get`] over TLS. The certificate is not checked: the probe asks whether the
/// service answers, and CloudAPI's certificate in a zone or container is self-signed.
pub fn https_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{addr}: not a server name: {e}"))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut sock = connect(addr)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("TLS to {addr}: {e}"))?;
    let mut buf = Vec::new();
    match tls.take(64 * 1024).read_to_end(&mut buf) {
        Ok(_) => {}
        // A server may close without TLS's close_notify once it has answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(format!("read {addr}: {e}")),
    }
    parse_response(addr, &buf)
}

/// Accepts any server certificate (signatures in the handshake are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `pg_isready` when PostgreSQL's binaries are there; else PostgreSQL's SSLRequest, which
/// any postmaster answers with one byte.
fn postgres(addr: &str, pg_bindir: &Path) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr}: not host:port"))?;
    let isready = pg_bindir.join("pg_isready");
    if isready.is_file() {
        let out = std::process::Command::new(&isready)
            .args(["-q", "-t", "2", "-h", host, "-p", port])
            .status()
            .map_err(|e| format!("{}: {e}", isready.display()))?;
        return if out.success() {
            Ok(())
        } else {
            Err(format!("pg_isready exited with {out}"))
        };
    }
    let mut s = connect(addr)?;
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("read {addr}: {e}"))?;
    if b[0] == b'N' || b[0] == b'S' {
        Ok(())
    } else {
        Err(format!("{addr}: not PostgreSQL"))
    }
}
