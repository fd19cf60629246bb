//! CMon in a test datacenter ([`crate::Options::cmon`]): started in-process on HTTPS
//! with its self-signed certificate for [`CMON_SUFFIX`], and [`CmonClient`], a
//! keep-alive HTTPS/1.1 client that presents a client certificate (or none) and names
//! the `Host` it asks for, as Prometheus does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{Dc, Options, Service};

/// The DNS suffix the test CMon's certificate is made for: instances are
/// `<uuid>.cmon.test.triton.zone`.
pub const CMON_SUFFIX: &str = "cmon.test.triton.zone";

impl Dc {
    pub(crate) async fn start_cmon(&mut self, options: &mut Options) {
        let url = |s| format!("http://{}", self.addr(s));
        let mut config = cmon::Config {
            listen: "127.0.0.1:0".into(),
            data_dir: self.dir.path().join("cmon").display().to_string(),
            dns_suffix: CMON_SUFFIX.into(),
            ufds_url: url(Service::Ufds),
            vmapi_url: url(Service::Vmapi),
            cnapi_url: url(Service::Cnapi),
            ..Default::default()
        };
        (options.configure_cmon)(&mut config);
        let running = cmon::start(config, self.shutdown.clone())
            .await
            .expect("CMon starts");
        self.addrs.push((Service::Cmon, running.addr));
        // CloudAPI's ListServices names it, so `triton profile cmon-certgen` finds it.
        let port = running.addr.port();
        let inner = std::mem::replace(&mut options.configure_cloudapi, Box::new(|_| {}));
        options.configure_cloudapi = Box::new(move |c: &mut cloudapi::Config| {
            c.services
                .insert("cmon".into(), format!("https://cmon.{CMON_SUFFIX}:{port}"));
            inner(c)
        });
    }

    /// CMon's HTTPS address.
    #[track_caller]
    pub fn cmon(&self) -> SocketAddr {
        self.addr(Service::Cmon)
    }

    /// The certificate CMon serves (self-signed, for [`CMON_SUFFIX`] and
    /// `*.`[`CMON_SUFFIX`]).
    pub fn cmon_cert(&self) -> PathBuf {
        self.dir.path().join("cmon").join("tls").join("cert.pem")
    }

    /// A client of this datacenter's CMon presenting `identity` (PEM certificate chain
    /// and key), or no certificate.
    pub async fn cmon_client(&self, identity: Option<(&str, &str)>) -> CmonClient {
        CmonClient::connect(self.cmon(), &self.cmon_cert(), identity).await
    }
}

/// One keep-alive HTTPS connection to CMon.
pub struct CmonClient {
    stream: BufReader<TlsStream<TcpStream>>,
}

/// What CMon answered.
#[derive(Debug, Clone)]
pub struct CmonResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl CmonResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl CmonClient {
    /// Connects to `addr`, trusting only the certificate in `server_cert`, presenting
    /// `identity` (PEM texts of a certificate chain and its key) if given.
    pub async fn connect(
        addr: SocketAddr,
        server_cert: &std::path::Path,
        identity: Option<(&str, &str)>,
    ) -> CmonClient {
        Self::try_connect(addr, server_cert, identity)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with CMon: {e}"))
    }

    /// [`CmonClient::connect`], or why the TLS handshake failed.
    pub async fn try_connect(
        addr: SocketAddr,
        server_cert: &std::path::Path,
        identity: Option<(&str, &str)>,
    ) -> Result<CmonClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(server_cert).expect("CMon's certificate");
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("PEM certificate")).expect("a root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(chain.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("client certificate PEM");
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key PEM");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate and key")
            }
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(addr).await.expect("connect to CMon");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from(format!("cmon.{CMON_SUFFIX}")).expect("server name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(CmonClient {
            stream: BufReader::new(tls),
        })
    }

    /// `GET path` with `Host: host`, on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> CmonResponse {
        self.try_get(host, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} (Host {host}) from CMon: {e}"))
    }

    /// [`CmonClient::get`], or why the connection failed (with TLS 1.3 a client
    /// certificate the server refuses shows here, at the first read).
    pub async fn try_get(&mut self, host: &str, path: &str) -> Result<CmonResponse, String> {
        let e = |e: std::io::Error| e.to_string();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(e)?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.map_err(e)? == 0 {
            return Err("connection closed".into());
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut content_type = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.map_err(e)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().map_err(|_| format!("bad header {l:?}"))?;
                } else if k.eq_ignore_ascii_case("content-type") {
                    content_type = v.trim().to_string();
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.map_err(e)?;
        Ok(CmonResponse {
            status,
            content_type,
            body: String::from_utf8(body).map_err(|e| e.to_string())?,
        })
    }
}
