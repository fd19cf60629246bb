//! Bounded accept, shared by the gRPC server ([`crate::grpc`]) and the TLS listener
//! ([`crate::tls`]): a permit per open connection, taken before `accept`, so when the
//! limit is reached the accept loop waits (new clients queue in the kernel's backlog)
//! until a connection closes, instead of refusing them or serving them early. The permit
//! goes back when the connection's [`Conn`] is dropped.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long the accept loop pauses after a failed `accept` (out of file descriptors,
/// say), so it does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Binds `addr` ("host:port"; port 0 picks a free one) and gives the address it got, for
/// a server that reports or advertises its real port; the caller's error names `addr`.
pub async fn bind(addr: &str) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// A listener that holds at most `max_connections` connections open at once.
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    abort: CancellationToken,
    what: &'static str,
}

impl Acceptor {
    /// `what` names the listener in log lines ("gRPC", "HTTPS").
    pub fn new(listener: TcpListener, max_connections: usize, what: &'static str) -> Acceptor {
        Acceptor {
            listener,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            abort: CancellationToken::new(),
            what,
        }
    }

    /// A token that, once cancelled, fails every read and write of the connections this
    /// acceptor handed out (the end of a drain: whatever is still open is cut).
    pub fn abort_token(&self) -> CancellationToken {
        self.abort.clone()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, with `TCP_NODELAY` set: waits first for a free permit, then
    /// for a client. A failed `accept` is logged and retried after a short pause.
    pub async fn accept(&self) -> (Conn<TcpStream>, SocketAddr) {
        loop {
            // The semaphore is never closed, so this only waits.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    // Without it Nagle holds a response's last frame until the client's
                    // delayed ACK, adding ~40 ms to small calls.
                    let _ = stream.set_nodelay(true);
                    let abort = Box::pin(self.abort.clone().cancelled_owned());
                    return (
                        Conn {
                            io: stream,
                            _permit: permit,
                            abort,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = self.what, "accept failed");
                    drop(permit);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

/// One accepted connection: its stream, the permit it holds while open, and the
/// acceptor's abort signal.
pub struct Conn<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    abort: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<IO> Conn<IO> {
    /// The connection underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn aborted(&mut self, cx: &mut Context<'_>) -> bool {
        self.abort.as_mut().poll(cx).is_ready()
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "server shut down")
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.aborted(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.aborted(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.aborted(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.aborted(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
