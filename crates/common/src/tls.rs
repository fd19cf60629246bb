//! HTTPS for a service's REST API (CloudAPI now; CMon and the Docker API next): rustls (on
//! ring) behind axum. Connections are bounded as the gRPC server's are
//! ([`crate::listen`]: a permit per open connection, taken before accept, so a full
//! listener makes new clients wait rather than fail). Handshakes run in their own tasks,
//! each within [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up the accept
//! loop; finished connections are handed to axum through a bounded channel. With no
//! certificate configured, a service makes a self-signed one in its data dir
//! ([`self_signed`]) and keeps it across restarts.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::listen::{Acceptor, Conn};

/// A handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for axum to take them.
const ACCEPT_QUEUE: usize = 128;
/// Open connections (handshaking or handshaken) at once on one listener: far more than a
/// datacenter's tenants keep open through their CLIs and portals; past it new clients
/// wait in the kernel's accept queue until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Why the certificate, its key or the TLS set-up could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The self-signed certificate's files could not be made or read.
    #[error("cannot {what} {path}")]
    SelfSigned {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not make the certificate.
    #[error("cannot make a self-signed certificate: {0}")]
    MakeCertificate(String),
    /// A configured certificate or key could not be read.
    #[error("cannot read TLS {what} {path}")]
    ReadTls {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configured certificate or key is not usable.
    #[error("bad TLS {what} {path}: {message}")]
    BadTls {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// The self-signed certificate's files under the data dir.
pub const SELF_SIGNED_DIR: &str = "tls";
/// The self-signed certificate, under [`SELF_SIGNED_DIR`].
pub const SELF_SIGNED_CERT: &str = "cert.pem";
/// Its private key, under [`SELF_SIGNED_DIR`].
pub const SELF_SIGNED_KEY: &str = "key.pem";

/// The certificate and key in `data_dir/tls/`: the ones there when both are, else a new
/// ECDSA P-256 key (0600) and a self-signed certificate for `names` (DNS names and IP
/// addresses) and `cn`, as CoaL's `openssl req` makes. Each file is written to a
/// temporary name, synced and renamed, so a crash leaves either no file or a whole one.
/// Returns (certificate, key) paths and whether they were made now.
pub fn self_signed(
    data_dir: &Path,
    cn: &str,
    names: &[String],
) -> Result<(PathBuf, PathBuf, bool), TlsError> {
    let dir = data_dir.join(SELF_SIGNED_DIR);
    let cert = dir.join(SELF_SIGNED_CERT);
    let key = dir.join(SELF_SIGNED_KEY);
    let io = |what: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::SelfSigned { what, path, source }
    };
    if cert.is_file() && key.is_file() {
        // Kept, but never readable by others, whoever made it.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(io("set the mode of", &key))?;
        return Ok((cert, key, false));
    }
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("set the mode of", &dir))?;
    let made = |e: rcgen::Error| TlsError::MakeCertificate(e.to_string());
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(made)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(made)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let certificate = params.self_signed(&pair).map_err(made)?;
    write_atomic(&key, pair.serialize_pem().as_bytes(), 0o600).map_err(io("write", &key))?;
    write_atomic(&cert, certificate.pem().as_bytes(), 0o644).map_err(io("write", &cert))?;
    Ok((cert, key, true))
}

/// Writes `path` whole or not at all, created with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A TLS acceptor from PEM files.
pub fn acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, TlsError> {
    server_acceptor(cert_path, key_path, false)
}

/// A TLS acceptor from PEM files that asks every client for a certificate but refuses
/// none at the TLS layer ([`AnyClientCert`]): the application reads the certificate
/// (`TlsStream::get_ref().1.peer_certificates()`) and decides (CMon).
pub fn acceptor_requesting_client_certs(
    cert_path: &str,
    key_path: &str,
) -> Result<TlsAcceptor, TlsError> {
    server_acceptor(cert_path, key_path, true)
}

/// Asks for a client certificate, takes any (or none): the handshake still checks that
/// the client holds the certificate's private key (its CertificateVerify signature),
/// but not who issued the certificate, which is for the application to judge.
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    /// With ring's signature algorithms.
    pub fn new() -> Self {
        AnyClientCert {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl Default for AnyClientCert {
    fn default() -> Self {
        Self::new()
    }
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn server_acceptor(
    cert_path: &str,
    key_path: &str,
    client_certs: bool,
) -> Result<TlsAcceptor, TlsError> {
    let bad = |what: &'static str, path: &str, message: String| TlsError::BadTls {
        what,
        path: path.to_string(),
        message,
    };
    let certs = certificates(cert_path)?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::ReadTls {
        what: "key",
        path: key_path.to_string(),
        source,
    })?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("key", key_path, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("certificate", cert_path, e.to_string()))?;
    let config = if client_certs {
        config.with_client_cert_verifier(Arc::new(AnyClientCert::new()))
    } else {
        config.with_no_client_auth()
    };
    let mut config = config
        .with_single_cert(certs, key)
        .map_err(|e| bad("key", key_path, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS connector that trusts only the certificates in the PEM file `cert_path` (a
/// service's self-signed one, say), checking them as any client would.
pub fn connector(cert_path: &str) -> Result<TlsConnector, TlsError> {
    let bad = |e: rustls::Error| TlsError::BadTls {
        what: "certificate",
        path: cert_path.to_string(),
        message: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(cert_path)? {
        roots.add(cert).map_err(bad)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(bad)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The certificates of the PEM file `path`; at least one.
fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::BadTls {
        what: "certificate",
        path: path.to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadTls {
        what: "certificate",
        path: path.to_string(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// An [`axum::serve::Listener`] of TLS connections, at most `max_connections` open.
pub struct TlsListener {
    local: std::io::Result<SocketAddr>,
    ready: mpsc::Receiver<(TlsStream<Conn<TcpStream>>, SocketAddr)>,
}

/// What a [`TlsListener`] does with a connection whose first byte is not a TLS
/// handshake record (plain HTTP on the HTTPS port, say): it owns the connection (and
/// its permit) until the future ends, and must bound what it reads and how long it
/// takes.
pub type PlainHandler = Arc<
    dyn Fn(Conn<TcpStream>, SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// The first byte of a TLS record carrying a handshake (RFC 8446 5.1, ContentType 22).
const TLS_HANDSHAKE: u8 = 0x16;

impl TlsListener {
    /// Accepts on `listener` until `shutdown`, handshakes with `acceptor`, and holds at
    /// most `max_connections` open.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        max_connections: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_plain(listener, acceptor, max_connections, shutdown, None)
    }

    /// As [`TlsListener::new`], and a connection that does not start with a TLS
    /// handshake record goes to `plain` instead of being dropped (waiting for its first
    /// byte is part of the handshake's [`HANDSHAKE_TIMEOUT`]).
    pub fn with_plain(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        max_connections: usize,
        shutdown: CancellationToken,
        plain: Option<PlainHandler>,
    ) -> Self {
        let local = listener.local_addr();
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        let connections = Acceptor::new(listener, max_connections, "HTTPS");
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = connections.accept() => accepted,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let plain = plain.clone();
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
                    if let Some(plain) = plain {
                        let mut first = [0u8; 1];
                        let peeked =
                            tokio::time::timeout_at(deadline, tcp.get_ref().peek(&mut first)).await;
                        match peeked {
                            Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => {
                                plain(tcp, peer).await;
                                return;
                            }
                            Ok(Ok(1)) => {}
                            // Closed, failed or silent before its first byte.
                            _ => return,
                        }
                    }
                    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { local, ready }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Conn<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): wait for axum's graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// Plain HTTP with the same bound: [`Acceptor`] as an [`axum::serve::Listener`].
impl axum::serve::Listener for Acceptor {
    type Io = Conn<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        Acceptor::accept(self).await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Acceptor::local_addr(self)
    }
}
