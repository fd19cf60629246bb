//! The snapshot-then-follow driver as every follower (CMon, VolAPI, CNS, booter) relies
//! on it: the snapshot whole, then the changes after its position in order; after a
//! stream ends or fails it resumes at the last position applied (no change twice, none
//! missed); a resync starts again from a fresh snapshot; a failed apply does not advance
//! the position.
//!
//! The feed is in memory: each opening of it is one scripted pass, its events encoded as
//! gRPC frames into a `tonic::Streaming` as a client would get them, ending cleanly (a
//! `grpc-status: 0` trailer), with an error, or not at all. The passes are what a
//! correct owner answers from the position the driver asks for, so the positions asked
//! are asserted as well as what was applied. Time is paused: the waits between passes
//! take none.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::channel::Channel;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::Codec;
use tonic::codegen::Bytes;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;
use triton_common::follow::{Apply, Watch, follow};
use triton_proto::feed::WatchEvent;
use triton_proto::ufds::v1::{Key, WatchKeysEvent};

/// The trailer a gRPC server ends a call with (0: OK).
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// How a pass ends after its events.
enum End {
    /// The owner closes the stream (`grpc-status: 0`).
    Clean,
    /// The stream breaks (the owner went away, a proxy cut it).
    Fail,
    /// The stream stays open: once the driver waits on it, the test shuts it down.
    Open,
}

/// One opening of the feed.
struct Pass(Vec<WatchKeysEvent>, End);

/// The in-memory feed: the passes still to answer, the positions the driver asked from.
struct Feed {
    passes: VecDeque<Pass>,
    asked: Vec<u64>,
    shutdown: CancellationToken,
}

type Client = Arc<Mutex<Feed>>;

/// [`Watch`] over the in-memory feed.
struct Keys;

impl Watch for Keys {
    type Client = Client;
    type Event = WatchKeysEvent;

    async fn open(client: &mut Client, position: u64) -> Result<Streaming<Self::Event>, Status> {
        let pass = {
            let mut feed = client.lock().unwrap();
            feed.asked.push(position);
            feed.passes.pop_front()
        };
        let Some(Pass(events, end)) = pass else {
            panic!("the driver opened the feed at {position} after the last pass");
        };
        let (mut tx, body) = Channel::<Bytes, Status>::new(events.len() + 1);
        for event in events {
            let message = event.encode_to_vec();
            let mut frame = vec![0];
            frame.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
            frame.extend(message);
            tx.send_data(frame.into()).await.unwrap();
        }
        match end {
            End::Clean => tx
                .send_trailers(HeaderMap::from_iter([(GRPC_STATUS, HeaderValue::from(0))]))
                .await
                .unwrap(),
            End::Fail => tx.abort(Status::unavailable("connection reset")),
            End::Open => {
                // Time moves on (paused) only once the driver waits for more, so it
                // has handed over every event of this pass by then.
                let shutdown = client.lock().unwrap().shutdown.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    shutdown.cancel();
                    drop(tx);
                });
            }
        }
        let decoder = ProstCodec::<WatchKeysEvent, WatchKeysEvent>::default().decoder();
        Ok(Streaming::new_response(
            decoder,
            body,
            StatusCode::OK,
            None,
            None,
        ))
    }
}

/// A follower's state (name by key) and what it was handed, in order (`reset <names>`,
/// `<key>=<name>`, `<key> deleted`); the keys in `fail_once` fail the first time they
/// are applied ("" for a snapshot).
#[derive(Default)]
struct Follower {
    state: BTreeMap<String, String>,
    applied: Vec<String>,
    fail_once: BTreeSet<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Follower>>);

impl Apply<Key> for Shared {
    type Error = String;

    async fn reset(&mut self, records: Vec<Key>) -> Result<(), String> {
        let mut f = self.0.lock().unwrap();
        if f.fail_once.remove("") {
            return Err("the snapshot's store is down".into());
        }
        let names: Vec<&str> = records.iter().map(|k| k.name.as_str()).collect();
        f.applied.push(format!("reset {}", names.join(" ")));
        f.state = records
            .into_iter()
            .map(|k| (k.fingerprint, k.name))
            .collect();
        Ok(())
    }

    async fn change(&mut self, key: &str, record: Option<&Key>) -> Result<(), String> {
        let mut f = self.0.lock().unwrap();
        if f.fail_once.remove(key) {
            return Err(format!("storing {key} failed"));
        }
        match record {
            Some(k) => {
                f.applied.push(format!("{key}={}", k.name));
                f.state.insert(key.to_owned(), k.name.clone())
            }
            None => {
                f.applied.push(format!("{key} deleted"));
                f.state.remove(key)
            }
        };
        Ok(())
    }
}

fn key(fingerprint: &str, name: &str) -> Key {
    Key {
        fingerprint: fingerprint.into(),
        name: name.into(),
        ..Key::default()
    }
}

fn clean(events: Vec<WatchKeysEvent>) -> Pass {
    Pass(events, End::Clean)
}

fn fail(events: Vec<WatchKeysEvent>) -> Pass {
    Pass(events, End::Fail)
}

fn open(events: Vec<WatchKeysEvent>) -> Pass {
    Pass(events, End::Open)
}

fn page(keys: &[(&str, &str)], position: u64) -> WatchKeysEvent {
    WatchKeysEvent::page(keys.iter().map(|(f, n)| key(f, n)).collect(), position)
}

fn put(position: u64, fingerprint: &str, name: &str) -> WatchKeysEvent {
    WatchKeysEvent::change(position, fingerprint.into(), Some(key(fingerprint, name)))
}

fn delete(position: u64, fingerprint: &str) -> WatchKeysEvent {
    WatchKeysEvent::change(position, fingerprint.into(), None)
}

fn done(position: u64) -> WatchKeysEvent {
    WatchKeysEvent::snapshot_done(position)
}

/// A pass from 0: the snapshot of `keys` at `position` in one page, then `changes`.
fn snapshot<const N: usize>(
    keys: &[(&str, &str)],
    position: u64,
    changes: [WatchKeysEvent; N],
) -> Vec<WatchKeysEvent> {
    [page(keys, position)]
        .into_iter()
        .chain(resume(position, changes))
        .collect()
}

/// A pass from `position`: its marker, then `changes`.
fn resume<const N: usize>(position: u64, changes: [WatchKeysEvent; N]) -> Vec<WatchKeysEvent> {
    [done(position)].into_iter().chain(changes).collect()
}

/// Runs the driver into a follower whose `fail_once` keys fail once, over `passes` (the
/// last one stays open and shuts it down); returns the positions it opened the feed at
/// and the follower.
async fn run(fail_once: &[&str], passes: Vec<Pass>) -> (Vec<u64>, Follower) {
    let shutdown = CancellationToken::new();
    let feed = Arc::new(Mutex::new(Feed {
        passes: passes.into(),
        asked: Vec::new(),
        shutdown: shutdown.clone(),
    }));
    let follower = Shared::default();
    follower.0.lock().unwrap().fail_once = fail_once.iter().map(|k| k.to_string()).collect();
    let driver = follow::<Keys, _>("keys", feed.clone(), follower.clone(), shutdown);
    tokio::time::timeout(Duration::from_secs(600), driver)
        .await
        .expect("the driver did not reach the last pass");
    let mut feed = feed.lock().unwrap();
    assert!(feed.passes.is_empty(), "passes left unopened");
    (
        std::mem::take(&mut feed.asked),
        std::mem::take(&mut follower.0.lock().unwrap()),
    )
}

fn state(follower: &Follower) -> Vec<(&str, &str)> {
    follower
        .state
        .iter()
        .map(|(k, n)| (k.as_str(), n.as_str()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_is_applied_whole_then_the_changes_after_it_in_order() {
    let (asked, follower) = run(
        &[],
        vec![open(vec![
            page(&[("a", "a1"), ("b", "b1")], 3),
            page(&[("c", "c1")], 3),
            done(3),
            put(4, "a", "a2"),
            delete(5, "b"),
            put(6, "d", "d1"),
            put(7, "a", "a3"),
        ])],
    )
    .await;
    assert_eq!(asked, [0]);
    assert_eq!(
        follower.applied,
        ["reset a1 b1 c1", "a=a2", "b deleted", "d=d1", "a=a3"]
    );
    assert_eq!(state(&follower), [("a", "a3"), ("c", "c1"), ("d", "d1")]);
}

#[tokio::test(start_paused = true)]
async fn after_the_stream_ends_or_fails_it_resumes_at_the_last_position_applied() {
    let (asked, follower) = run(
        &[],
        vec![
            clean(snapshot(
                &[("a", "a1")],
                3,
                [put(4, "b", "b1"), put(5, "c", "c1")],
            )),
            fail(resume(5, [put(6, "a", "a2")])),
            clean(resume(6, [delete(7, "c")])),
            open(resume(7, [put(8, "d", "d1")])),
        ],
    )
    .await;
    assert_eq!(asked, [0, 5, 6, 7]);
    assert_eq!(
        follower.applied,
        ["reset a1", "b=b1", "c=c1", "a=a2", "c deleted", "d=d1"]
    );
    assert_eq!(state(&follower), [("a", "a2"), ("b", "b1"), ("d", "d1")]);
}

#[tokio::test(start_paused = true)]
async fn a_resync_starts_again_from_a_fresh_snapshot_that_replaces_the_state() {
    let resync = WatchKeysEvent::resync(4, "ResyncRequiredError: 4 < 9".into());
    let (asked, follower) = run(
        &[],
        vec![
            clean(snapshot(
                &[("a", "a1"), ("b", "b1")],
                3,
                [put(4, "c", "c1")],
            )),
            clean(vec![resync]),
            open(snapshot(
                &[("b", "b2"), ("e", "e1")],
                10,
                [put(11, "f", "f1")],
            )),
        ],
    )
    .await;
    assert_eq!(asked, [0, 4, 0]);
    assert_eq!(
        follower.applied,
        ["reset a1 b1", "c=c1", "reset b2 e1", "f=f1"]
    );
    assert_eq!(state(&follower), [("b", "b2"), ("e", "e1"), ("f", "f1")]);
}

#[tokio::test(start_paused = true)]
async fn a_change_that_fails_to_apply_is_applied_again_and_none_after_it_is_skipped() {
    let (asked, follower) = run(
        &["c"],
        vec![
            clean(snapshot(
                &[("a", "a1")],
                3,
                [put(4, "b", "b1"), put(5, "c", "c1"), put(6, "d", "d1")],
            )),
            open(resume(4, [put(5, "c", "c1"), put(6, "d", "d1")])),
        ],
    )
    .await;
    assert_eq!(asked, [0, 4]);
    assert_eq!(follower.applied, ["reset a1", "b=b1", "c=c1", "d=d1"]);
    assert_eq!(
        state(&follower),
        [("a", "a1"), ("b", "b1"), ("c", "c1"), ("d", "d1")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_that_fails_to_apply_is_taken_again_and_its_changes_wait_for_it() {
    let (asked, follower) = run(
        &[""],
        vec![
            clean(snapshot(&[("a", "a1")], 3, [put(4, "b", "b1")])),
            open(snapshot(
                &[("a", "a1"), ("b", "b1")],
                4,
                [put(5, "c", "c1")],
            )),
        ],
    )
    .await;
    assert_eq!(asked, [0, 0]);
    assert_eq!(follower.applied, ["reset a1 b1", "c=c1"]);
    assert_eq!(state(&follower), [("a", "a1"), ("b", "b1"), ("c", "c1")]);
}
