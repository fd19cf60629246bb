//! The owners' change feeds (proto/feed.proto): the messages they share ([`v1`]) and
//! [`WatchEvent`], which every owner's Watch event implements, so that one piece of code
//! builds the events of any feed (`moray_client::serve_follow`) and one reads them (a
//! follower, `dc_testkit::feed::Feed`).
//!
//! ```
//! use triton_proto::feed::{Event, WatchEvent};
//! use triton_proto::vmapi::v1::{Vm, WatchVmsEvent};
//!
//! let vm = Vm { uuid: "u1".into(), ..Default::default() };
//! let event = WatchVmsEvent::change(7, "u1".into(), Some(vm.clone()));
//! match event.into_event() {
//!     Some(Event::Change(change)) => assert_eq!(change.vm, Some(vm)),
//!     other => panic!("{other:?}"),
//! }
//! ```

/// `triton.feed.v1`: the snapshot-complete marker, the resync answer and the change op.
pub mod v1 {
    tonic::include_proto!("triton.feed.v1");
}

/// What one event of a Watch stream is, whatever the owner.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<R, C> {
    /// A snapshot page: records as they are at a position.
    Page(Vec<R>, u64),
    /// The snapshot is complete (or a resume starts) at a position.
    SnapshotDone(u64),
    /// A PUT or a DELETE: the owner's change message.
    Change(C),
    /// The position asked for is older than the feed keeps: the position and the message
    /// (`ResyncRequiredError: ...`).
    Resync(u64, String),
}

/// An owner's Watch event (`WatchVmsEvent`, `WatchNicsEvent`, ...): every one is a oneof
/// of its page, [`v1::SnapshotDone`], its change and [`v1::Resync`] (proto/feed.proto).
pub trait WatchEvent: Sized {
    /// The public record, as the owner's Get and List return it (`Vm`, `Nic`, ...).
    type Record;
    /// The change message (`VmChange`, `NicChange`, ...).
    type Change: ChangeMessage<Record = Self::Record>;

    /// A snapshot page: `records` as they are at `position`.
    fn page(records: Vec<Self::Record>, position: u64) -> Self;
    /// Every page has been sent; the changes after `position` follow.
    fn snapshot_done(position: u64) -> Self;
    /// The change at `position` of the record stored under `key`: a PUT with the record
    /// after it, or a DELETE (`None`).
    fn change(position: u64, key: String, record: Option<Self::Record>) -> Self;
    /// `position` is older than the feed keeps; `message` says so.
    fn resync(position: u64, message: String) -> Self;
    /// What this event is; `None` for one without a kind.
    fn into_event(self) -> Option<Event<Self::Record, Self::Change>>;
}

/// An owner's change message (`VmChange`, `NicChange`, ...), whatever its key and record
/// fields are called.
pub trait ChangeMessage {
    /// The public record it carries.
    type Record;
    /// Strictly increasing along the stream; a follower resumes from it.
    fn position(&self) -> u64;
    /// PUT or DELETE.
    fn op(&self) -> v1::ChangeOp;
    /// The record's key (its uuid, a NIC's MAC, ...).
    fn key(&self) -> &str;
    /// The record after a PUT; `None` for a DELETE.
    fn record(&self) -> Option<&Self::Record>;
}

/// The op of a change that carries `record` (a PUT) or does not (a DELETE).
fn op_of<R>(record: &Option<R>) -> i32 {
    match record {
        Some(_) => v1::ChangeOp::Put as i32,
        None => v1::ChangeOp::Delete as i32,
    }
}

/// [`ChangeMessage`] and [`WatchEvent`] for each feed: `package::Event (its oneof
/// module): Page { records: Record }, Change { key, record }`, with the proto's names.
macro_rules! watch_events {
    ($($pkg:ident::$event:ident ($oneof:ident): $page:ident { $records:ident: $rec:ident },
       $change:ident { $key:ident, $record:ident };)*) => {$(
        impl ChangeMessage for crate::$pkg::v1::$change {
            type Record = crate::$pkg::v1::$rec;

            fn position(&self) -> u64 {
                self.position
            }

            fn op(&self) -> v1::ChangeOp {
                crate::$pkg::v1::$change::op(self)
            }

            fn key(&self) -> &str {
                &self.$key
            }

            fn record(&self) -> Option<&Self::Record> {
                self.$record.as_ref()
            }
        }

        impl WatchEvent for crate::$pkg::v1::$event {
            type Record = crate::$pkg::v1::$rec;
            type Change = crate::$pkg::v1::$change;

            fn page(records: Vec<Self::Record>, position: u64) -> Self {
                let page = crate::$pkg::v1::$page { $records: records, position };
                Self { event: Some(crate::$pkg::v1::$oneof::Event::Page(page)) }
            }

            fn snapshot_done(position: u64) -> Self {
                let done = v1::SnapshotDone { position };
                Self { event: Some(crate::$pkg::v1::$oneof::Event::SnapshotDone(done)) }
            }

            fn change(position: u64, $key: String, $record: Option<Self::Record>) -> Self {
                let op = op_of(&$record);
                let change = crate::$pkg::v1::$change { position, op, $key, $record };
                Self { event: Some(crate::$pkg::v1::$oneof::Event::Change(change)) }
            }

            fn resync(position: u64, message: String) -> Self {
                let resync = v1::Resync { position, message };
                Self { event: Some(crate::$pkg::v1::$oneof::Event::Resync(resync)) }
            }

            fn into_event(self) -> Option<Event<Self::Record, Self::Change>> {
                use crate::$pkg::v1::$oneof::Event as E;
                Some(match self.event? {
                    E::Page(p) => Event::Page(p.$records, p.position),
                    E::SnapshotDone(d) => Event::SnapshotDone(d.position),
                    E::Change(c) => Event::Change(c),
                    E::Resync(r) => Event::Resync(r.position, r.message),
                })
            }
        }
    )*};
}

watch_events! {
    vmapi::WatchVmsEvent (watch_vms_event): WatchVmsPage { vms: Vm }, VmChange { uuid, vm };
    cnapi::WatchServersEvent (watch_servers_event):
        WatchServersPage { servers: Server }, ServerChange { uuid, server };
    napi::WatchNicsEvent (watch_nics_event): WatchNicsPage { nics: Nic }, NicChange { mac, nic };
    napi::WatchNetworksEvent (watch_networks_event):
        WatchNetworksPage { networks: Network }, NetworkChange { uuid, network };
    ufds::WatchAccountsEvent (watch_accounts_event):
        WatchAccountsPage { accounts: Account }, AccountChange { uuid, account };
    ufds::WatchKeysEvent (watch_keys_event): WatchKeysPage { keys: Key }, KeyChange { id, key };
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use prost::Message;

    use super::{ChangeMessage, Event, WatchEvent, v1};
    use crate::{cnapi, napi, ufds, vmapi};

    /// Every constructor of `E` gives back what it was made from, through the wire; the
    /// marker and a DELETE are the bytes the owners' own messages were before they shared
    /// feed.proto's (older followers read them).
    fn check<E>()
    where
        E: WatchEvent + Message + Default,
        E::Record: Default + PartialEq + Debug,
        E::Change: Debug,
    {
        let name = std::any::type_name::<E>();
        let wire = |e: E| E::decode(e.encode_to_vec().as_slice()).expect(name);
        let record = || Some(E::Record::default());
        match wire(E::page(vec![E::Record::default()], 3)).into_event() {
            Some(Event::Page(records, 3)) => assert_eq!(records.len(), 1, "{name}"),
            other => panic!("{name}: a page, got {other:?}"),
        }
        match wire(E::snapshot_done(4)).into_event() {
            Some(Event::SnapshotDone(4)) => {}
            other => panic!("{name}: the marker, got {other:?}"),
        }
        match wire(E::change(5, "k".into(), record())).into_event() {
            Some(Event::Change(c)) => assert_eq!(
                (c.position(), c.op(), c.key(), c.record()),
                (5, v1::ChangeOp::Put, "k", record().as_ref()),
                "{name}"
            ),
            other => panic!("{name}: a PUT, got {other:?}"),
        }
        match wire(E::change(6, "k".into(), None)).into_event() {
            Some(Event::Change(c)) => assert_eq!(
                (c.position(), c.op(), c.key(), c.record()),
                (6, v1::ChangeOp::Delete, "k", None),
                "{name}"
            ),
            other => panic!("{name}: a DELETE, got {other:?}"),
        }
        match wire(E::resync(7, "ResyncRequiredError: gone".into())).into_event() {
            Some(Event::Resync(7, m)) => assert_eq!(m, "ResyncRequiredError: gone", "{name}"),
            other => panic!("{name}: the resync answer, got {other:?}"),
        }
        let kindless = E::default().into_event();
        assert!(kindless.is_none(), "{name}: no kind, got {kindless:?}");

        // snapshot_done (field 2) { position (field 1) = 4 }
        let marker = E::snapshot_done(4).encode_to_vec();
        assert_eq!(marker, [0x12, 2, 0x08, 4], "{name}");
        // change (field 3) { position = 6, op (field 2) = DELETE (2), key (field 3) = "k" }
        let delete = E::change(6, "k".into(), None).encode_to_vec();
        assert_eq!(delete, [0x1a, 7, 0x08, 6, 0x10, 2, 0x1a, 1, b'k'], "{name}");
    }

    #[test]
    fn every_feed_makes_and_reads_its_events() {
        check::<vmapi::v1::WatchVmsEvent>();
        check::<cnapi::v1::WatchServersEvent>();
        check::<napi::v1::WatchNicsEvent>();
        check::<napi::v1::WatchNetworksEvent>();
        check::<ufds::v1::WatchAccountsEvent>();
        check::<ufds::v1::WatchKeysEvent>();
    }
}
