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

pub mod etcd;
pub mod state;
pub mod watch;

pub use state::{ClusterState, Lsn, Peer, ShardKeys};
pub use watch::{Observed, watch_primary, watch_state};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("invalid etcd endpoint {endpoint:?}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("etcd at {endpoints}: {op} failed")]
    Rpc {
        endpoints: String,
        op: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error(
        "etcd at {endpoints} did not answer {op} within {timeout_ms} ms (is it running and reachable?)"
    )]
    Timeout {
        endpoints: String,
        op: &'static str,
        timeout_ms: u64,
    },
    #[error("etcd at {endpoints} refused a lease: {message}")]
    Lease { endpoints: String, message: String },
    #[error("the etcd watch ended: {reason}")]
    WatchCanceled { reason: String },
}

/// An error and its causes on one line, `a: b: c`, for messages to operators.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
