//! What a service's `start` returns.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

/// A started gRPC service whose server fails with `E`.
#[derive(Debug)]
pub struct Running<E> {
    /// The address it listens on (the real port when the config said 0).
    pub addr: SocketAddr,
    /// The server; ends after the shutdown token is cancelled and requests drain.
    pub task: JoinHandle<Result<(), E>>,
}
