//! WatchVms: the VMs' change feed, Moray's snapshot then follow
//! ([`MorayClient::follow`]) over the `vmapi_vms` bucket, each record mapped to the public
//! `Vm` that GetVm and ListVms return. The position is Moray's change feed sequence.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use moray_client::filter::Filter;
use moray_client::{FeedItem, MorayClient, Object};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use triton_proto::vmapi::v1 as pb;
use triton_proto::vmapi::v1::watch_vms_event::Event;

use crate::error::{Error, Result};
use crate::model::VmRecord;
use crate::store::VMS_BUCKET;
use crate::validate::Checker;

/// VMs per snapshot message: a page stays far below gRPC's 4 MiB message limit even
/// with large metadata.
pub const PAGE_VMS: usize = 100;
/// Events buffered per watcher before the feed waits for the client.
const CHANNEL: usize = 64;

pub type WatchVmsStream = Pin<Box<dyn Stream<Item = Result<pb::WatchVmsEvent, Status>> + Send>>;

/// Serves WatchVms calls until shutdown.
pub struct Watch {
    moray: MorayClient,
    shutdown: CancellationToken,
}

fn event(event: Event) -> pb::WatchVmsEvent {
    pb::WatchVmsEvent { event: Some(event) }
}

fn vm_of(uuid: &str, value: serde_json::Value) -> Result<VmRecord> {
    serde_json::from_value(value)
        .map_err(|e| Error::Internal(format!("stored VM {uuid} does not parse: {e}")))
}

/// The events one feed item becomes (none for a VM of another owner).
fn events_of(item: FeedItem, owner: Option<&str>) -> Result<Vec<pb::WatchVmsEvent>> {
    let of_owner = |vm: &VmRecord| owner.is_none_or(|o| vm.owner_uuid == o);
    Ok(match item {
        FeedItem::Snapshot { position, objects } => {
            let vms = objects
                .into_iter()
                .map(|Object { key, value, .. }| vm_of(&key, value))
                .collect::<Result<Vec<_>>>()?;
            if vms.is_empty() {
                // An empty snapshot is still a page, so a follower knows it began.
                return Ok(vec![event(Event::Page(pb::WatchVmsPage {
                    vms: Vec::new(),
                    position,
                }))]);
            }
            vms.chunks(PAGE_VMS)
                .map(|page| {
                    event(Event::Page(pb::WatchVmsPage {
                        vms: page.iter().map(VmRecord::to_pb).collect(),
                        position,
                    }))
                })
                .collect()
        }
        FeedItem::SnapshotDone { position } => {
            vec![event(Event::SnapshotDone(pb::WatchVmsSnapshotDone {
                position,
            }))]
        }
        FeedItem::Put {
            seq, key, value, ..
        } => {
            let vm = vm_of(&key, value)?;
            if !of_owner(&vm) {
                return Ok(Vec::new());
            }
            vec![event(Event::Change(pb::VmChange {
                position: seq,
                op: pb::vm_change::Op::Put as i32,
                uuid: key,
                vm: Some(vm.to_pb()),
            }))]
        }
        FeedItem::Delete { seq, key } => vec![event(Event::Change(pb::VmChange {
            position: seq,
            op: pb::vm_change::Op::Delete as i32,
            uuid: key,
            vm: None,
        }))],
        FeedItem::ResyncRequired { since, message } => {
            vec![event(Event::Resync(pb::WatchVmsResync {
                position: since,
                message: format!("{}: {message}", moray_client::RESYNC_REQUIRED),
            }))]
        }
    })
}

impl Watch {
    pub fn new(moray: MorayClient, shutdown: CancellationToken) -> Watch {
        Watch { moray, shutdown }
    }

    /// Starts following; a failure before the first event is the call's error.
    pub async fn watch_vms(
        &self,
        req: pb::WatchVmsRequest,
    ) -> std::result::Result<WatchVmsStream, Status> {
        let mut c = Checker::default();
        let owner = c.opt_uuid("owner_uuid", &req.owner_uuid);
        c.finish()?;
        let filter = owner
            .as_ref()
            .map(|o| Filter::eq("owner_uuid", o).to_string());
        let mut feed = self
            .moray
            .follow(VMS_BUCKET, filter.as_deref(), req.position);
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    item = feed.next() => item,
                };
                let events = match item {
                    None => return,
                    Some(item) => item
                        .map_err(Error::moray("follow the VMs' change feed"))
                        .and_then(|item| events_of(item, owner.as_deref())),
                };
                match events {
                    Ok(events) => {
                        for e in events {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        let first = match rx.recv().await {
            None => return Ok(Box::pin(futures::stream::empty())),
            Some(Err(status)) => return Err(status),
            Some(Ok(first)) => first,
        };
        Ok(Box::pin(
            futures::stream::once(async move { Ok(first) })
                .chain(futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|e| (e, rx))
                })),
        ))
    }
}
