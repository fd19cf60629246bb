//! A small etcd v3 client over tonic: the KV, Watch and Lease calls that Manatee needs,
//! generated from the vendored subset of etcd's protos (see `third_party/etcd/`).
//!
//! Every unary call has a deadline ([`REQUEST_TIMEOUT`]) so an unreachable etcd is
//! reported, not waited on forever. Streams (watch, lease keep-alive) have none: their
//! users detect a dead stream by its end or by the absence of keep-alive answers.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;

use crate::Error;

/// Generated etcd API types and clients.
#[allow(missing_docs)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb as rpc;
pub use pb::mvccpb::{Event, KeyValue, event::EventType};
pub use rpc::{WatchResponse, compare, request_op};

/// Deadline of one unary etcd call. etcd answers in milliseconds when healthy; five
/// seconds tolerates a leader election (about a second by default) with room to spare
/// while still telling an operator quickly that etcd is unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for a TCP connection to an etcd member.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 PING this often, also between calls, so a dead etcd member is noticed before a
/// watch of the shard's state waits on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A PING unanswered this long closes the connection (the balanced channel moves on).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap-to-clone handle on an etcd cluster (all endpoints share one balanced channel).
#[derive(Clone)]
pub struct Etcd {
    channel: Channel,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range is open-ended.
    vec![0]
}

impl Etcd {
    /// A client for `endpoints` (`http://host:port`). Connections are made lazily, so this
    /// fails only on a malformed endpoint; an unreachable etcd shows up on the first call.
    pub fn new(endpoints: &[String]) -> Result<Etcd, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let mut list = Vec::new();
        for e in endpoints {
            let endpoint = ChannelBuilder::new(e)
                .connect_timeout(CONNECT_TIMEOUT)
                .keepalive(Some(KEEPALIVE_INTERVAL), KEEPALIVE_TIMEOUT)
                .keepalive_while_idle(true)
                // Each call has its own deadline ([`REQUEST_TIMEOUT`], none for a watch).
                .request_timeout(None)
                .endpoint()
                .map_err(|source| Error::Endpoint {
                    endpoint: e.clone(),
                    source,
                })?;
            list.push(endpoint);
        }
        Ok(Etcd {
            channel: Channel::balance_list(list.into_iter()),
            endpoints: endpoints.join(","),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The endpoints, comma-separated, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Overrides [`REQUEST_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Etcd {
        self.timeout = timeout;
        self
    }

    fn kv(&self) -> rpc::kv_client::KvClient<Channel> {
        rpc::kv_client::KvClient::new(self.channel.clone())
    }

    fn lease(&self) -> rpc::lease_client::LeaseClient<Channel> {
        rpc::lease_client::LeaseClient::new(self.channel.clone())
    }

    async fn call<T, F>(&self, op: &'static str, fut: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(source)) => Err(Error::Rpc {
                endpoints: self.endpoints.clone(),
                op,
                source,
            }),
            Err(_) => Err(Error::Timeout {
                endpoints: self.endpoints.clone(),
                op,
                timeout_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    /// One key and the store's revision at the time of the read.
    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64), Error> {
        let req = rpc::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let resp = self.call("get", self.kv().range(req)).await?;
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok((resp.kvs.into_iter().next(), rev))
    }

    /// Every key under `prefix`, sorted by key, and the store's revision.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), Error> {
        let req = rpc::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            sort_order: rpc::range_request::SortOrder::Ascend as i32,
            sort_target: rpc::range_request::SortTarget::Key as i32,
        };
        let resp = self.call("get", self.kv().range(req)).await?;
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok((resp.kvs, rev))
    }

    /// Puts `value` at `key`, attached to `lease` (0 for none). Returns the new revision.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64, Error> {
        let req = rpc::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
        };
        let resp = self.call("put", self.kv().put(req)).await?;
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64, Error> {
        let req = rpc::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
        };
        Ok(self
            .call("delete", self.kv().delete_range(req))
            .await?
            .deleted)
    }

    /// Puts every `(key, value)` if and only if `guard`'s modification revision is
    /// `expected` (0: the key must not exist). Returns `Some(new revision)` when applied,
    /// `None` when the guard did not hold.
    pub async fn put_if_mod_revision(
        &self,
        guard: &str,
        expected: i64,
        puts: Vec<(String, Vec<u8>)>,
    ) -> Result<Option<i64>, Error> {
        let cmp = rpc::Compare {
            result: rpc::compare::CompareResult::Equal as i32,
            target: rpc::compare::CompareTarget::Mod as i32,
            key: guard.as_bytes().to_vec(),
            target_union: Some(rpc::compare::TargetUnion::ModRevision(expected)),
        };
        let success = puts
            .into_iter()
            .map(|(key, value)| rpc::RequestOp {
                request: Some(rpc::request_op::Request::RequestPut(rpc::PutRequest {
                    key: key.into_bytes(),
                    value,
                    ..Default::default()
                })),
            })
            .collect();
        let req = rpc::TxnRequest {
            compare: vec![cmp],
            success,
        };
        let resp = self.call("txn", self.kv().txn(req)).await?;
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok(resp.succeeded.then_some(rev))
    }

    /// Grants a lease of `ttl` seconds; returns its id and the TTL etcd granted.
    pub async fn lease_grant(&self, ttl: i64) -> Result<(i64, i64), Error> {
        let req = rpc::LeaseGrantRequest { ttl, id: 0 };
        let resp = self
            .call("lease grant", self.lease().lease_grant(req))
            .await?;
        if !resp.error.is_empty() {
            return Err(Error::Lease {
                endpoints: self.endpoints.clone(),
                message: resp.error,
            });
        }
        Ok((resp.id, resp.ttl))
    }

    /// Revokes a lease, deleting every key attached to it at once.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), Error> {
        let req = rpc::LeaseRevokeRequest { id };
        self.call("lease revoke", self.lease().lease_revoke(req))
            .await?;
        Ok(())
    }

    /// Opens a keep-alive stream for lease `id` (and refreshes the lease once: etcd
    /// answers the stream's opening only with its first keep-alive).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<KeepAlive, Error> {
        let (tx, rx) = mpsc::channel(4);
        // The channel is empty and open: this cannot fail.
        let _ = tx.send(rpc::LeaseKeepAliveRequest { id }).await;
        let mut client = self.lease();
        let fut = client.lease_keep_alive(ReceiverStream::new(rx));
        let stream = self.call("lease keep-alive", fut).await?;
        Ok(KeepAlive {
            id,
            tx,
            primed: true,
            stream,
            endpoints: self.endpoints.clone(),
            timeout: self.timeout,
        })
    }

    /// Watches every key in `[key, range_end)` (an empty `range_end` means `key` alone)
    /// from `start_revision` on, with the previous value of each changed key.
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: Vec<u8>,
        start_revision: i64,
    ) -> Result<WatchStream, Error> {
        let (tx, rx) = mpsc::channel(4);
        let create = rpc::WatchRequest {
            request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
                rpc::WatchCreateRequest {
                    key: key.to_vec(),
                    range_end,
                    start_revision,
                    prev_kv: true,
                },
            )),
        };
        // The channel is empty and open: this cannot fail.
        let _ = tx.send(create).await;
        let mut client = rpc::watch_client::WatchClient::new(self.channel.clone());
        let fut = client.watch(ReceiverStream::new(rx));
        let stream = self.call("watch", fut).await?;
        Ok(WatchStream {
            _tx: tx,
            stream,
            endpoints: self.endpoints.clone(),
        })
    }
}

/// An open lease keep-alive stream.
pub struct KeepAlive {
    id: i64,
    tx: mpsc::Sender<rpc::LeaseKeepAliveRequest>,
    /// A request was sent when the stream opened and its answer is still to be read.
    primed: bool,
    stream: tonic::Streaming<rpc::LeaseKeepAliveResponse>,
    endpoints: String,
    timeout: Duration,
}

impl KeepAlive {
    /// Refreshes the lease once; returns the remaining TTL in seconds, 0 when the lease
    /// has already expired (it cannot be revived: grant a new one).
    pub async fn keep_alive(&mut self) -> Result<i64, Error> {
        let closed = || Error::Rpc {
            endpoints: self.endpoints.clone(),
            op: "lease keep-alive",
            source: tonic::Status::unavailable("keep-alive stream closed"),
        };
        if self.primed {
            self.primed = false;
        } else if self
            .tx
            .send(rpc::LeaseKeepAliveRequest { id: self.id })
            .await
            .is_err()
        {
            return Err(closed());
        }
        match tokio::time::timeout(self.timeout, self.stream.message()).await {
            Ok(Ok(Some(resp))) => Ok(resp.ttl),
            Ok(Ok(None)) => Err(closed()),
            Ok(Err(source)) => Err(Error::Rpc {
                endpoints: self.endpoints.clone(),
                op: "lease keep-alive",
                source,
            }),
            Err(_) => Err(Error::Timeout {
                endpoints: self.endpoints.clone(),
                op: "lease keep-alive",
                timeout_ms: self.timeout.as_millis() as u64,
            }),
        }
    }
}

/// An open watch: responses in revision order.
pub struct WatchStream {
    _tx: mpsc::Sender<rpc::WatchRequest>,
    stream: tonic::Streaming<WatchResponse>,
    endpoints: String,
}

impl WatchStream {
    /// The next response; `Ok(None)` when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, Error> {
        self.stream.message().await.map_err(|source| Error::Rpc {
            endpoints: self.endpoints.clone(),
            op: "watch",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/manatee/1/"), b"/manatee/10".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn empty_endpoint_list_is_refused() {
        assert!(matches!(Etcd::new(&[]), Err(Error::NoEndpoints)));
    }
}
