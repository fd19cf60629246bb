//! The followers that fill the [`Inventory`]: VMAPI's `WatchVms` and CNAPI's
//! `WatchServers`, "snapshot then follow" (docs/architecture.md, "Change feeds"). From
//! position 0 the snapshot's pages are gathered and replace what was known at the
//! marker; after a dropped stream the follower resumes at the last position it applied;
//! a resync answer sends it back to 0. CMon keeps nothing on disk: a restart starts
//! with the snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::feed::{ChangeMessage as _, Event, WatchEvent};
use triton_proto::vmapi::v1 as vmapi;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

use crate::inventory::Inventory;

/// The first wait after a failed or ended stream; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a follower hands its owner.
pub enum Update<'a, R> {
    /// The whole state, at the snapshot's marker.
    Reset(&'a [R]),
    /// A record changed (`Some`) or was deleted (`None`).
    Change(&'a str, Option<&'a R>),
}

/// Follows one feed until `shutdown`: `open(position)` starts a stream, `apply` takes
/// every update in order.
pub async fn follow<E, Open, Fut>(
    name: &'static str,
    open: Open,
    mut apply: impl FnMut(Update<'_, E::Record>),
    shutdown: CancellationToken,
) where
    E: WatchEvent + prost::Message + Default + 'static,
    Open: Fn(u64) -> Fut,
    Fut: Future<Output = Result<tonic::Streaming<E>, tonic::Status>>,
{
    let mut position = 0u64;
    let mut backoff = MIN_BACKOFF;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = open(position) => s,
        };
        match stream {
            Ok(mut stream) => {
                let mut snapshot = (position == 0).then(Vec::new);
                loop {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    let event = match item {
                        Ok(Some(e)) => e,
                        Ok(None) => {
                            tracing::info!(feed = name, position, "feed ended; resuming");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(feed = name, error = %e, "feed failed; resuming");
                            break;
                        }
                    };
                    match event.into_event() {
                        Some(Event::Page(records, _)) => {
                            if let Some(s) = snapshot.as_mut() {
                                s.extend(records);
                            }
                        }
                        Some(Event::SnapshotDone(p)) => {
                            if let Some(s) = snapshot.take() {
                                tracing::info!(
                                    feed = name,
                                    records = s.len(),
                                    position = p,
                                    "snapshot applied"
                                );
                                apply(Update::Reset(&s));
                            }
                            position = p;
                            backoff = MIN_BACKOFF;
                        }
                        Some(Event::Change(c)) => {
                            if snapshot.is_some() {
                                continue;
                            }
                            apply(Update::Change(c.key(), c.record()));
                            position = c.position();
                        }
                        Some(Event::Resync(_, message)) => {
                            tracing::warn!(feed = name, %message, "feed asks for a resync");
                            position = 0;
                            break;
                        }
                        None => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(feed = name, error = %e, "cannot open the feed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows VMAPI's VMs into `inventory`.
pub async fn vms(
    client: VmapiClient<Channel>,
    inventory: Arc<Inventory>,
    shutdown: CancellationToken,
) {
    let open = |position| {
        let mut client = client.clone();
        async move {
            let request = vmapi::WatchVmsRequest {
                position,
                owner_uuid: String::new(),
            };
            Ok(client.watch_vms(request).await?.into_inner())
        }
    };
    follow::<vmapi::WatchVmsEvent, _, _>(
        "vmapi WatchVms",
        open,
        |u| match u {
            Update::Reset(vms) => inventory.reset_vms(vms),
            Update::Change(uuid, vm) => inventory.put_vm(uuid, vm),
        },
        shutdown,
    )
    .await
}

/// Follows CNAPI's servers into `inventory`.
pub async fn servers(
    client: CnapiClient<Channel>,
    inventory: Arc<Inventory>,
    shutdown: CancellationToken,
) {
    let open = |position| {
        let mut client = client.clone();
        async move {
            let request = cnapi::WatchServersRequest { position };
            Ok(client.watch_servers(request).await?.into_inner())
        }
    };
    follow::<cnapi::WatchServersEvent, _, _>(
        "cnapi WatchServers",
        open,
        |u| match u {
            Update::Reset(servers) => inventory.reset_nodes(servers),
            Update::Change(uuid, server) => inventory.put_node(uuid, server),
        },
        shutdown,
    )
    .await
}
