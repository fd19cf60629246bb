//! The client side of Manatee, the equivalent of Triton's node-manatee: the cluster state
//! types ([`state`]), following a shard's state and its primary in etcd ([`watch`]), and
//! the small etcd v3 client both the sitter and its consumers use ([`etcd`]).
//!
//! Moray follows the primary with [`watch::watch_primary`]:
//!
//! ```no_run
//! # async fn f() -> Result<(), manatee_client::Error> {
//! use manatee_client::{etcd::Etcd, state::ShardKeys, watch::watch_primary};
//! let etcd = Etcd::new(&["http://127.0.0.1:2379".to_string()])?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let (primary, _task) = watch_primary(etcd, ShardKeys::new("1"), Some("moray".into()), cancel);
//! // primary.borrow() is Some("postgresql://postgres@10.0.0.2:5432/moray") or None.
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod etcd;
pub mod state;
pub mod watch;

pub use state::{ClusterState, Lsn, Peer, ShardKeys};
pub use watch::{Observed, watch_primary, watch_state};

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint list is empty.
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// An endpoint is not a URL.
    #[error("invalid etcd endpoint {endpoint:?}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is not one.
        #[source]
        source: triton_common::channel::ChannelError,
    },
    /// etcd answered an RPC with an error.
    #[error("etcd at {endpoints}: {op} failed")]
    Rpc {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// etcd's answer.
        #[source]
        source: tonic::Status,
    },
    #[error(
        "etcd at {endpoints} did not answer {op} within {timeout_ms} ms (is it running and reachable?)"
    )]
    /// etcd did not answer in time.
    Timeout {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// How long it was given.
        timeout_ms: u64,
    },
    /// etcd refused to grant or keep a lease.
    #[error("etcd at {endpoints} refused a lease: {message}")]
    Lease {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// etcd's reason.
        message: String,
    },
    /// etcd cancelled a watch.
    #[error("the etcd watch ended: {reason}")]
    WatchCanceled {
        /// etcd's reason.
        reason: String,
    },
}

/// An error and its causes on one line, `a: b: c`, for messages to operators.
pub use triton_common::service::chain as error_chain;
