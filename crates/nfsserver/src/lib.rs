//! The NFS server of a volume: NFSv3 and MOUNT v3 (RFC 1813) over ONC RPC on one TCP
//! port, serving a local directory as the export `/exports/data`. See docs/volapi.md,
//! "The NFS server".

pub mod fs;
pub mod proto;
pub mod xdr;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use proto::{EXPORT_PATH, MAX_IO};

/// The largest RPC record a client may send: a WRITE of [`MAX_IO`] bytes and its header.
/// A record announced larger closes the connection before anything is allocated.
pub const MAX_RECORD: usize = MAX_IO as usize + 64 * 1024;
/// At most this many clients are served at once; more wait to be accepted. (A volume's
/// clients are the instances mounting it, one connection each.) With [`MAX_IN_FLIGHT`]
/// this bounds the memory records take: each connection reads at most one record at a
/// time, and at most `MAX_IN_FLIGHT` are being answered.
pub const MAX_CONNECTIONS: usize = 64;
/// At most this many calls are run at once, over all connections.
pub const MAX_IN_FLIGHT: usize = 32;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root could not be opened.
    #[error("cannot open the export root {path}: {source}")]
    Root {
        /// the root
        path: PathBuf,
        /// the cause
        #[source]
        source: std::io::Error,
    },
    /// The root is not a directory.
    #[error("the export root {0} is not a directory")]
    NotDir(PathBuf),
    /// Accepting connections failed.
    #[error("accepting connections: {0}")]
    Accept(#[source] std::io::Error),
}

/// Serves NFSv3 and MOUNT v3 on `listener` (both programs on this one port: no
/// portmapper) exporting `/exports/data`, whose content is the directory `root`, until
/// `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    root: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let meta = std::fs::metadata(&root).map_err(|source| Error::Root {
        path: root.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Error::NotDir(root));
    }
    let tree = fs::Tree::open(&root).map_err(|source| Error::Root {
        path: root.clone(),
        source,
    })?;
    let server = Arc::new(proto::Server {
        tree,
        verf: boot_verifier(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let conns = tokio_util::task::TaskTracker::new();
    tracing::info!(root = %root.display(), addr = ?listener.local_addr().ok(), "serving {EXPORT_PATH}");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(Error::Accept(e)),
            },
        };
        let server = server.clone();
        let in_flight = in_flight.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = connection(server, in_flight, stream) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection closed");
                    }
                }
            }
        });
    }
    conns.close();
    conns.wait().await;
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    )
}

fn boot_verifier() -> [u8; 8] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (now ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes()
}

/// Why a connection's stream of records is refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A record (its fragments together) is over [`MAX_RECORD`].
    #[error("RPC record of {0} bytes or more is over the limit of {MAX_RECORD}")]
    TooLarge(usize),
    /// The stream ended or failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one RPC record (RFC 5531 record marking: fragments until the last one), never
/// holding more than [`MAX_RECORD`] bytes. `None` at a clean end of stream.
pub async fn read_record<R: AsyncReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<()>, RecordError> {
    buf.clear();
    loop {
        let mut mark = [0u8; 4];
        match r.read_exact(&mut mark).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let (len, last) = record_mark(mark, buf.len())?;
        let at = buf.len();
        buf.resize(at + len, 0);
        r.read_exact(&mut buf[at..]).await?;
        if last {
            return Ok(Some(()));
        }
    }
}

/// Reads a fragment's record mark: the fragment's length and whether it is the record's
/// last, refused when the record (`have` bytes so far and this fragment) would be over
/// [`MAX_RECORD`].
pub fn record_mark(mark: [u8; 4], have: usize) -> Result<(usize, bool), RecordError> {
    let mark = u32::from_be_bytes(mark);
    let len = (mark & 0x7fff_ffff) as usize;
    if have + len > MAX_RECORD {
        return Err(RecordError::TooLarge(have + len));
    }
    Ok((len, mark & 0x8000_0000 != 0))
}

/// Frames a reply as one record.
pub fn frame(mut reply: Vec<u8>) -> Vec<u8> {
    let len = reply.len() as u32 | 0x8000_0000;
    reply.splice(0..0, len.to_be_bytes());
    reply
}

/// Serves one client. Calls are answered as they finish, several at a time (a client may
/// send the next before the last is answered; replies carry the calls' xids), at most
/// [`MAX_IN_FLIGHT`] across all clients.
async fn connection(
    server: Arc<proto::Server>,
    in_flight: Arc<Semaphore>,
    stream: TcpStream,
) -> Result<(), RecordError> {
    stream.set_nodelay(true).ok();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            wr.write_all(&frame(reply)).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = Vec::new();
    let read = loop {
        match read_record(&mut rd, &mut buf).await {
            Ok(Some(())) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Ok(());
        };
        let record = std::mem::take(&mut buf);
        let srv = server.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Some(reply) = proto::handle_record(&srv, &record) {
                // the writer is gone only when the connection failed
                let _ = tx.blocking_send(reply);
            }
        });
    };
    drop(tx);
    if read.is_err() {
        writer.abort();
        return read;
    }
    writer
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    read
}
