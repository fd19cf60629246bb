//! Reading an owner's Watch stream in a test: every owner's event is a page, the
//! snapshot-complete marker, a change or the resync answer ([`WatchEvent`]), so one
//! [`Feed`] reads them all.

use std::fmt::Debug;
use std::time::Duration;

use tonic::Streaming;
use triton_proto::napi::v1 as napi;
use triton_proto::ufds::v1 as ufds;
use triton_proto::vmapi::v1 as vmapi;

/// One event of a Watch stream, whatever the owner.
#[derive(Debug)]
pub enum Seen<R, C> {
    /// A snapshot page: records as they are at a position.
    Page(Vec<R>, u64),
    /// The snapshot is complete (or a resume starts) at a position.
    SnapshotDone(u64),
    /// A PUT or a DELETE.
    Change(C),
    /// The position asked for is too old; the message.
    Resync(u64, String),
}

/// An owner's Watch event: its record and change messages.
pub trait WatchEvent: Debug + Sized {
    /// The public record (`Vm`, `Nic`, ...).
    type Record: Debug;
    /// The change message (`VmChange`, `NicChange`, ...).
    type Change: Debug;
    /// What kind of event this is.
    fn seen(self) -> Seen<Self::Record, Self::Change>;
}

macro_rules! watch_event {
    ($event:ty, $kind:path, $record:ty, $change:ty, $records:ident) => {
        impl WatchEvent for $event {
            type Record = $record;
            type Change = $change;
            fn seen(self) -> Seen<$record, $change> {
                use $kind as E;
                match self.event {
                    Some(E::Page(p)) => Seen::Page(p.$records, p.position),
                    Some(E::SnapshotDone(d)) => Seen::SnapshotDone(d.position),
                    Some(E::Change(c)) => Seen::Change(c),
                    Some(E::Resync(r)) => Seen::Resync(r.position, r.message),
                    None => panic!("an event without a kind"),
                }
            }
        }
    };
}

watch_event!(
    vmapi::WatchVmsEvent,
    vmapi::watch_vms_event::Event,
    vmapi::Vm,
    vmapi::VmChange,
    vms
);
watch_event!(
    napi::WatchNicsEvent,
    napi::watch_nics_event::Event,
    napi::Nic,
    napi::NicChange,
    nics
);
watch_event!(
    napi::WatchNetworksEvent,
    napi::watch_networks_event::Event,
    napi::Network,
    napi::NetworkChange,
    networks
);
watch_event!(
    ufds::WatchAccountsEvent,
    ufds::watch_accounts_event::Event,
    ufds::Account,
    ufds::AccountChange,
    accounts
);
watch_event!(
    ufds::WatchKeysEvent,
    ufds::watch_keys_event::Event,
    ufds::Key,
    ufds::KeyChange,
    keys
);

/// A Watch stream being read; every read panics (the test fails) on anything but what
/// it expects, or when nothing comes within 10 s.
pub struct Feed<E> {
    stream: Streaming<E>,
}

impl<E: WatchEvent> From<Streaming<E>> for Feed<E> {
    fn from(stream: Streaming<E>) -> Self {
        Feed { stream }
    }
}

impl<E: WatchEvent> Feed<E> {
    /// The next event.
    pub async fn next(&mut self) -> Seen<E::Record, E::Change> {
        tokio::time::timeout(Duration::from_secs(10), self.stream.message())
            .await
            .expect("an event within 10 s")
            .expect("no stream error")
            .expect("the stream goes on")
            .seen()
    }

    /// The whole snapshot (every page, then the marker at the pages' position) and its
    /// position.
    pub async fn snapshot(&mut self) -> (Vec<E::Record>, u64) {
        let mut all = Vec::new();
        let mut at = None;
        loop {
            match self.next().await {
                Seen::Page(records, position) => {
                    assert!(at.is_none_or(|a| a == position), "pages share a position");
                    at = Some(position);
                    all.extend(records);
                }
                Seen::SnapshotDone(position) => {
                    assert_eq!(Some(position), at, "the marker is at the pages' position");
                    return (all, position);
                }
                other => panic!("expected the snapshot, got {other:?}"),
            }
        }
    }

    /// The snapshot-complete marker (a resume starts with it); its position.
    pub async fn marker(&mut self) -> u64 {
        match self.next().await {
            Seen::SnapshotDone(position) => position,
            other => panic!("expected the marker, got {other:?}"),
        }
    }

    /// The next change.
    pub async fn change(&mut self) -> E::Change {
        match self.next().await {
            Seen::Change(c) => c,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    /// A resumed stream's start: the marker at `position`, then `changes`, in order.
    pub async fn resumes_with(&mut self, position: u64, changes: &[E::Change])
    where
        E::Change: PartialEq,
    {
        assert_eq!(
            self.marker().await,
            position,
            "the marker is at the resume's"
        );
        for want in changes {
            assert_eq!(&self.change().await, want);
        }
    }
}
