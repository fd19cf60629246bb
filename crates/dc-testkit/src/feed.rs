//! Reading an owner's Watch stream in a test: every owner's event is a page, the
//! snapshot-complete marker, a change or the resync answer
//! ([`triton_proto::feed::WatchEvent`]), so one [`Feed`] reads them all.

use std::fmt::Debug;
use std::time::Duration;

use tonic::Streaming;
use triton_proto::feed::v1::ChangeOp;
pub use triton_proto::feed::{ChangeMessage, Event, WatchEvent};

/// A Watch stream being read; every read panics (the test fails) on anything but what
/// it expects, or when nothing comes within 10 s.
pub struct Feed<E> {
    stream: Streaming<E>,
}

impl<E> From<Streaming<E>> for Feed<E> {
    fn from(stream: Streaming<E>) -> Self {
        Feed { stream }
    }
}

impl<E> Feed<E>
where
    E: WatchEvent + Debug,
    E::Record: Debug,
    E::Change: Debug,
{
    /// The next event.
    pub async fn next(&mut self) -> Event<E::Record, E::Change> {
        tokio::time::timeout(Duration::from_secs(10), self.stream.message())
            .await
            .expect("an event within 10 s")
            .expect("no stream error")
            .expect("the stream goes on")
            .into_event()
            .expect("an event with a kind")
    }

    /// The end of the stream (after a resync answer, say).
    pub async fn end(&mut self) {
        let last = tokio::time::timeout(Duration::from_secs(10), self.stream.message())
            .await
            .expect("the end within 10 s")
            .expect("no stream error");
        assert!(
            last.is_none(),
            "expected the end of the stream, got {last:?}"
        );
    }

    /// The whole snapshot (every page, then the marker at the pages' position) and its
    /// position.
    pub async fn snapshot(&mut self) -> (Vec<E::Record>, u64) {
        let mut all = Vec::new();
        let mut at = None;
        loop {
            match self.next().await {
                Event::Page(records, position) => {
                    assert!(at.is_none_or(|a| a == position), "pages share a position");
                    at = Some(position);
                    all.extend(records);
                }
                Event::SnapshotDone(position) => {
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
            Event::SnapshotDone(position) => position,
            other => panic!("expected the marker, got {other:?}"),
        }
    }

    /// The resync answer: its position and its message.
    pub async fn resync(&mut self) -> (u64, String) {
        match self.next().await {
            Event::Resync(position, message) => (position, message),
            other => panic!("expected the resync answer, got {other:?}"),
        }
    }

    /// The resync answer for a watch asked from `asked`, naming `ResyncRequiredError`, and
    /// then the end of the stream.
    pub async fn resyncs(&mut self, asked: u64) {
        let (position, message) = self.resync().await;
        assert_eq!(
            position, asked,
            "the resync answer names the position asked for"
        );
        assert!(message.starts_with("ResyncRequiredError: "), "{message}");
        self.end().await;
    }

    /// The next change.
    pub async fn change(&mut self) -> E::Change {
        match self.next().await {
            Event::Change(c) => c,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    /// The next change, which must be a PUT of `record` under `key` after `after`.
    pub async fn put(&mut self, after: u64, key: &str, record: &E::Record) -> E::Change
    where
        E::Record: PartialEq,
    {
        self.change_after(after, ChangeOp::Put, key, Some(record))
            .await
    }

    /// The next change, which must be a DELETE of `key` after `after`.
    pub async fn delete(&mut self, after: u64, key: &str) -> E::Change
    where
        E::Record: PartialEq,
    {
        self.change_after(after, ChangeOp::Delete, key, None).await
    }

    async fn change_after(
        &mut self,
        after: u64,
        op: ChangeOp,
        key: &str,
        record: Option<&E::Record>,
    ) -> E::Change
    where
        E::Record: PartialEq,
    {
        let c = self.change().await;
        assert!(c.position() > after, "a change after {after}, got {c:?}");
        assert_eq!(
            (c.op(), c.key(), c.record()),
            (op, key, record),
            "the change's op, key and record"
        );
        c
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
