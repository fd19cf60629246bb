//! One record's create, update and delete as a Watch test checks them: the unfiltered
//! stream's three changes in order, and a stream resumed from the create's position that
//! gets each later change once; and a stream asked for a position the trimmed change log
//! no longer holds. The NAPI, UFDS and VMAPI watch tests share these.

use std::fmt::Debug;

use triton_proto::feed::{ChangeMessage, WatchEvent};

use crate::feed::Feed;

/// The three changes of one record, as [`lifecycle`] read them.
#[derive(Debug, Clone)]
pub struct Lifecycle<C> {
    /// The PUT of the record as created.
    pub put: C,
    /// The PUT of the record as updated.
    pub update: C,
    /// The DELETE of its key.
    pub delete: C,
}

/// The next three changes of `all` (a stream whose snapshot or last change was at
/// `at`): the PUT of `created` under `key`, the PUT of `updated`, then the DELETE of
/// `key`, in order with increasing positions.
pub async fn lifecycle<E>(
    all: &mut Feed<E>,
    at: u64,
    key: &str,
    created: &E::Record,
    updated: &E::Record,
) -> Lifecycle<E::Change>
where
    E: WatchEvent + Debug,
    E::Record: Debug + PartialEq,
    E::Change: Debug,
{
    let put = all.put(at, key, created).await;
    let update = all.put(put.position(), key, updated).await;
    let delete = all.delete(update.position(), key).await;
    Lifecycle {
        put,
        update,
        delete,
    }
}

/// A stream `resume` opens from the create's position starts with the marker there,
/// then the update and the delete once each, then `later`; `all` gets `later` next too.
pub async fn resumes_over<E, F, Fut>(
    life: Lifecycle<E::Change>,
    later: &E::Change,
    all: &mut Feed<E>,
    resume: F,
) where
    E: WatchEvent + Debug,
    E::Record: Debug,
    E::Change: Debug + PartialEq,
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Feed<E>>,
{
    let at = life.put.position();
    let mut resumed = resume(at).await;
    resumed.resumes_with(at, &[life.update, life.delete]).await;
    assert_eq!(&resumed.change().await, later, "the resumed stream goes on");
    assert_eq!(&all.change().await, later, "the unfiltered stream goes on");
}

/// On a Moray that keeps no change log ([`crate::keep_no_change_log`]), once its trim has
/// deleted the changes a test made: a stream `watch` opens from position 1 answers resync
/// (and ends), and one opened from 0 starts with the whole state again. Returns that
/// snapshot's records, for the caller to compare.
pub async fn resync_then_snapshot<E, F, Fut>(watch: F) -> Vec<E::Record>
where
    E: WatchEvent + Debug,
    E::Record: Debug,
    E::Change: Debug,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Feed<E>>,
{
    watch(1).await.resyncs(1).await;
    let (records, _) = watch(0).await.snapshot().await;
    records
}
