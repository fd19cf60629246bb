//! Typed data access: a service's records in a Moray bucket, read and written as its own
//! types, with the one read-modify-write every service uses.
//!
//! A [`Bucket<T>`] is a bucket's name, its index config (with its version) and the record
//! type `T`. Records are read with their etag ([`Versioned`]); writes are conditional on
//! an etag or on absence ([`EtagCondition`]); a record that does not decode is an
//! `InvalidRecordError` naming the bucket, the key and the field.
//!
//! [`Bucket::update`] reads a record, lets the caller change it and writes it back on the
//! etag it read, again on an `EtagConflictError`, as [`RetryPolicy`] says: 20 attempts,
//! a jittered backoff from 1 ms doubling to 64 ms between them (at most about a second
//! in all). After the last attempt the caller gets the `EtagConflictError`.
//! [`RetryPolicy::run`] is the same loop for writes that are not one record's (a batch,
//! an allocation chosen again after a lost race).
//!
//! ```no_run
//! # async fn example() -> Result<(), moray_client::MorayError> {
//! use moray_client::typed::{Bucket, Change};
//! use moray_client::{BucketConfig, IndexDef, MorayClient};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Account { login: String, age: u32 }
//!
//! let moray = MorayClient::connect("tcp://127.0.0.1:2020").await?;
//! let config = BucketConfig::versioned(1).with_index("login", IndexDef::unique("string"));
//! let accounts: Bucket<Account> = Bucket::new(moray, "accounts", config);
//! accounts.ensure().await?;
//! accounts.insert("lisa", &Account { login: "lisa".into(), age: 8 }).await?;
//! let older = accounts
//!     .update("lisa", |a| {
//!         a.age += 1;
//!         Ok::<_, std::convert::Infallible>(Change::Write)
//!     })
//!     .await
//!     .map_err(|e| e.into_moray())?;
//! assert_eq!(older.value.age, 9);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::Code;

use crate::client::MorayClient;
use crate::error::{MorayError, Result};
use crate::filter::Filter;
use crate::types::{BatchOp, BucketConfig, EtagCondition, FindOptions, Object};

/// A record and the etag it was read (or written) with.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub etag: String,
}

/// What an [`Bucket::update`] change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Write the changed record (conditional on the etag read).
    Write,
    /// Leave the stored record as it is; `update` returns it as read.
    Keep,
}

/// How often and how fast a write lost to a concurrent writer is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait after the first conflict; each next wait doubles, up to `max_backoff`.
    /// Each wait is jittered to between half and all of it, so racing writers spread out.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The one policy of the services: 20 attempts, 1 ms doubling to 64 ms (at most
    /// about 0.9 s of waiting in all). Enough for tens of writers racing on one record.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 20,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(64),
    };

    /// This policy with `attempts` attempts.
    pub const fn with_attempts(self, attempts: u32) -> RetryPolicy {
        RetryPolicy { attempts, ..self }
    }

    /// Runs `op` (given the attempt number, from 0) until it succeeds, fails with an
    /// error that `is_conflict` does not accept, or the attempts are used up; then the
    /// last error. Waits the backoff between attempts. For a loop whose attempts share
    /// state, [`RetryPolicy::start`] gives the same steps one at a time.
    pub async fn run<T, E, F>(
        &self,
        is_conflict: impl Fn(&E) -> bool,
        mut op: impl FnMut(u32) -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let mut tries = self.start();
        loop {
            match op(tries.attempt()).await {
                Err(e) if is_conflict(&e) && tries.again().await => {}
                other => return other,
            }
        }
    }

    /// The attempts of one operation, for a hand-written loop:
    ///
    /// ```ignore
    /// let mut tries = RetryPolicy::DEFAULT.start();
    /// loop {
    ///     match write().await {
    ///         Err(e) if is_etag_conflict(&e) && tries.again().await => continue,
    ///         other => return other,
    ///     }
    /// }
    /// ```
    pub fn start(&self) -> Attempts {
        Attempts {
            policy: *self,
            attempt: 0,
            started: false,
        }
    }

    /// The wait after attempt `attempt` (from 0) failed: between half and all of
    /// `first_backoff * 2^attempt`, at most `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .first_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// The attempts of one operation under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct Attempts {
    policy: RetryPolicy,
    attempt: u32,
    started: bool,
}

impl Attempts {
    /// The attempt under way, from 0.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// For a loop that tries at its top (`while tries.next().await { ... continue ... }`):
    /// true at once the first time; after that, [`Attempts::again`].
    pub async fn next(&mut self) -> bool {
        if !self.started {
            self.started = true;
            return true;
        }
        self.again().await
    }

    /// After a conflict: false when that was the last attempt; else waits the backoff
    /// and answers true (try again).
    pub async fn again(&mut self) -> bool {
        self.started = true;
        if self.attempt + 1 >= self.policy.attempts.max(1) {
            return false;
        }
        tokio::time::sleep(self.policy.backoff(self.attempt)).await;
        self.attempt += 1;
        true
    }
}

/// A random number for jitter (std's per-process random hash keys; not for secrets).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos().into())
            .unwrap_or(0),
    );
    h.finish()
}

/// True for Moray's answer to a failed etag condition.
pub fn is_etag_conflict(e: &MorayError) -> bool {
    e.name() == "EtagConflictError"
}

/// True for Moray's answer to a write that would repeat a value of the unique index on
/// `attribute` (`UniqueAttributeError`, whose message starts with the attribute).
pub fn is_unique_violation(e: &MorayError, attribute: &str) -> bool {
    e.name() == "UniqueAttributeError"
        && e.message()
            .split_whitespace()
            .next()
            .is_some_and(|first| first == attribute)
}

/// Why an [`Bucket::update`] failed: Moray's error (`ObjectNotFoundError`,
/// `EtagConflictError` after the last attempt, ...) or the change's own.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error(transparent)]
    Moray(MorayError),
    #[error(transparent)]
    Change(E),
}

impl<E> UpdateError<E> {
    /// The error as the caller's type, Moray's converted with `moray`.
    pub fn map_moray(self, moray: impl FnOnce(MorayError) -> E) -> E {
        match self {
            UpdateError::Moray(e) => moray(e),
            UpdateError::Change(e) => e,
        }
    }
}

impl<E> UpdateError<E> {
    /// The error as the caller's type: `missing()` for a record that does not exist
    /// (`ObjectNotFoundError`), `busy()` for a write that lost every race
    /// (`EtagConflictError` after the last attempt), any other Moray failure converted
    /// with `moray`, and the change's own as it is.
    pub fn resolve(
        self,
        missing: impl FnOnce() -> E,
        busy: impl FnOnce() -> E,
        moray: impl FnOnce(MorayError) -> E,
    ) -> E {
        match self {
            UpdateError::Moray(e) if e.name() == "ObjectNotFoundError" => missing(),
            UpdateError::Moray(e) if is_etag_conflict(&e) => busy(),
            other => other.map_moray(moray),
        }
    }
}

impl UpdateError<std::convert::Infallible> {
    /// Moray's error, for changes that cannot fail.
    pub fn into_moray(self) -> MorayError {
        match self {
            UpdateError::Moray(e) => e,
            UpdateError::Change(never) => match never {},
        }
    }
}

/// `ObjectNotFoundError` for `key`, as Moray names it.
pub fn not_found(bucket: &str, key: &str) -> MorayError {
    MorayError::Server {
        name: "ObjectNotFoundError".into(),
        message: format!("{bucket}::{key} does not exist"),
        code: Code::NotFound,
    }
}

/// How a record becomes the stored JSON (by default, its `Serialize`).
type Encoder<T> = fn(&T) -> serde_json::Result<Value>;

/// A bucket of records of type `T`: its name, index config and version, and the client.
/// Cheap to clone.
pub struct Bucket<T> {
    moray: MorayClient,
    name: String,
    config: BucketConfig,
    encode: Encoder<T>,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Bucket<T> {
    fn clone(&self) -> Self {
        Bucket {
            moray: self.moray.clone(),
            name: self.name.clone(),
            config: self.config.clone(),
            encode: self.encode,
            _record: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Bucket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("version", &self.config.options.version)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> Bucket<T> {
    /// The bucket `name` with `config` (indexes and version), on `moray`.
    pub fn new(moray: MorayClient, name: impl Into<String>, config: BucketConfig) -> Self {
        Bucket {
            moray,
            name: name.into(),
            config,
            encode: |record| serde_json::to_value(record),
            _record: PhantomData,
        }
    }

    /// Stores records as `encode` makes them, e.g. with indexed fields derived from the
    /// record. Reading ignores fields the record type does not have.
    pub fn with_encoder(mut self, encode: Encoder<T>) -> Self {
        self.encode = encode;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &BucketConfig {
        &self.config
    }

    pub fn client(&self) -> &MorayClient {
        &self.moray
    }

    /// Creates the bucket or brings it to this config ([`MorayClient::ensure_bucket`]:
    /// waits while Moray's database is not ready yet).
    pub async fn ensure(&self) -> Result<()> {
        self.moray.ensure_bucket(&self.name, &self.config).await
    }

    /// The record as stored, as JSON (what [`Bucket::put`] writes).
    pub fn encode(&self, key: &str, record: &T) -> Result<Value> {
        (self.encode)(record).map_err(|source| MorayError::InvalidRecord {
            bucket: self.name.clone(),
            key: key.to_string(),
            field: None,
            source,
        })
    }

    /// A stored value as a record; an error names the bucket, the key and the field.
    pub fn decode(&self, key: &str, value: Value) -> Result<T> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            MorayError::InvalidRecord {
                bucket: self.name.clone(),
                key: key.to_string(),
                field: (path != ".").then_some(path),
                source: e.into_inner(),
            }
        })
    }

    fn versioned(&self, object: Object) -> Result<Versioned<T>> {
        Ok(Versioned {
            value: self.decode(&object.key, object.value)?,
            etag: object.etag,
        })
    }

    /// The record under `key`, if there is one.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<T>>> {
        self.moray
            .get_object(&self.name, key)
            .await?
            .map(|o| self.versioned(o))
            .transpose()
    }

    /// The record under `key`; `ObjectNotFoundError` when there is none.
    pub async fn fetch(&self, key: &str) -> Result<Versioned<T>> {
        self.get(key)
            .await?
            .ok_or_else(|| not_found(&self.name, key))
    }

    /// Writes `record` under `key` if `cond` holds (`EtagConflictError` otherwise);
    /// the new etag.
    pub async fn put(&self, key: &str, record: &T, cond: EtagCondition) -> Result<String> {
        let value = self.encode(key, record)?;
        self.moray.put_object(&self.name, key, &value, cond).await
    }

    /// Writes `record` under `key` if there is no record there yet.
    pub async fn insert(&self, key: &str, record: &T) -> Result<String> {
        self.put(key, record, EtagCondition::MustNotExist).await
    }

    /// Deletes the record under `key` if `cond` holds; `ObjectNotFoundError` when there
    /// is none.
    pub async fn delete(&self, key: &str, cond: EtagCondition) -> Result<()> {
        self.moray.delete_object(&self.name, key, cond).await
    }

    /// Deletes the record under `key` if there is one; whether there was.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        match self.delete(key, EtagCondition::Any).await {
            Ok(()) => Ok(true),
            Err(e) if e.name() == "ObjectNotFoundError" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The records matching `filter`, with their etags (at most `options.limit`).
    pub async fn find(&self, filter: &Filter, options: &FindOptions) -> Result<Vec<Versioned<T>>> {
        self.moray
            .find_objects_stream(&self.name, &filter.to_string(), options)
            .await?
            .map(|o| o.and_then(|o| self.versioned(o)))
            .try_collect()
            .await
    }

    /// The records matching `filter`, without their etags.
    pub async fn find_values(&self, filter: &Filter, options: &FindOptions) -> Result<Vec<T>> {
        self.moray
            .find_objects_stream(&self.name, &filter.to_string(), options)
            .await?
            .map(|o| o.and_then(|o| self.decode(&o.key, o.value)))
            .try_collect()
            .await
    }

    /// The records matching `filter`, without their etags, and how many match in all
    /// (Moray's `_count`; 0 when nothing matched or with `no_count`): a listing's page.
    pub async fn find_counted(
        &self,
        filter: &Filter,
        options: &FindOptions,
    ) -> Result<(Vec<T>, u64)> {
        let objects = self
            .moray
            .find_objects(&self.name, &filter.to_string(), options)
            .await?;
        let total = objects.first().and_then(|o| o.count).unwrap_or(0);
        let records = objects
            .into_iter()
            .map(|o| self.decode(&o.key, o.value))
            .collect::<Result<Vec<_>>>()?;
        Ok((records, total))
    }

    /// A put of `record` under `key` for [`MorayClient::batch`].
    pub fn put_op(&self, key: &str, record: &T, cond: EtagCondition) -> Result<BatchOp> {
        Ok(BatchOp::Put {
            bucket: self.name.clone(),
            key: key.to_string(),
            value: self.encode(key, record)?,
            etag: cond,
        })
    }

    /// A delete of `key` for [`MorayClient::batch`].
    pub fn delete_op(&self, key: &str, cond: EtagCondition) -> BatchOp {
        BatchOp::Delete {
            bucket: self.name.clone(),
            key: key.to_string(),
            etag: cond,
        }
    }

    /// Reads the record under `key`, applies `change` and writes it back on the etag
    /// read, again (re-read, re-applied) on an `EtagConflictError`, as
    /// [`RetryPolicy::DEFAULT`] says. The record as written (or as read, for
    /// [`Change::Keep`]). A missing record is `ObjectNotFoundError`.
    pub async fn update<E>(
        &self,
        key: &str,
        change: impl FnMut(&mut T) -> Result<Change, E>,
    ) -> Result<Versioned<T>, UpdateError<E>> {
        self.update_with(&RetryPolicy::DEFAULT, key, change).await
    }

    /// [`Bucket::update`] with another policy.
    pub async fn update_with<E>(
        &self,
        policy: &RetryPolicy,
        key: &str,
        mut change: impl FnMut(&mut T) -> Result<Change, E>,
    ) -> Result<Versioned<T>, UpdateError<E>> {
        let written = self
            .modify(policy, key, |slot| match slot {
                None => Err(UpdateError::Moray(not_found(&self.name, key))),
                Some(record) => change(record).map_err(UpdateError::Change),
            })
            .await?;
        written.ok_or_else(|| UpdateError::Moray(not_found(&self.name, key)))
    }

    /// Read-modify-write that may create or delete: `change` gets the stored record
    /// (`None` when there is none) to change in place. [`Change::Write`] writes what is
    /// left in the slot, conditional on the etag read (or on absence); a slot emptied
    /// deletes the record. The record as written, or as read for [`Change::Keep`]
    /// (`None`: there is none now).
    pub async fn upsert<E>(
        &self,
        policy: &RetryPolicy,
        key: &str,
        mut change: impl FnMut(&mut Option<T>) -> Result<Change, E>,
    ) -> Result<Option<Versioned<T>>, UpdateError<E>> {
        self.modify(policy, key, |slot| {
            change(slot).map_err(UpdateError::Change)
        })
        .await
    }

    async fn modify<E>(
        &self,
        policy: &RetryPolicy,
        key: &str,
        mut change: impl FnMut(&mut Option<T>) -> Result<Change, UpdateError<E>>,
    ) -> Result<Option<Versioned<T>>, UpdateError<E>> {
        let mut tries = policy.start();
        loop {
            match self.modify_once(key, &mut change).await {
                Err(UpdateError::Moray(e)) if is_etag_conflict(&e) && tries.again().await => {}
                other => return other,
            }
        }
    }

    async fn modify_once<E>(
        &self,
        key: &str,
        change: &mut impl FnMut(&mut Option<T>) -> Result<Change, UpdateError<E>>,
    ) -> Result<Option<Versioned<T>>, UpdateError<E>> {
        let read = self.get(key).await.map_err(UpdateError::Moray)?;
        let (mut slot, etag_read) = match read {
            Some(v) => (Some(v.value), Some(v.etag)),
            None => (None, None),
        };
        let cond = match &etag_read {
            Some(etag) => EtagCondition::Is(etag.clone()),
            None => EtagCondition::MustNotExist,
        };
        match (change(&mut slot)?, slot, etag_read) {
            (Change::Keep, slot, etag) => Ok(slot.map(|value| Versioned {
                value,
                etag: etag.unwrap_or_default(),
            })),
            (Change::Write, Some(value), _) => {
                let etag = self
                    .put(key, &value, cond)
                    .await
                    .map_err(UpdateError::Moray)?;
                Ok(Some(Versioned { value, etag }))
            }
            (Change::Write, None, None) => Ok(None),
            (Change::Write, None, Some(_)) => {
                self.delete(key, cond).await.map_err(UpdateError::Moray)?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_the_cap() {
        let p = RetryPolicy::DEFAULT;
        for attempt in 0..30 {
            let full = (Duration::from_millis(1) * 2u32.pow(attempt.min(16))).min(p.max_backoff);
            let b = p.backoff(attempt);
            assert!(
                b >= full / 2 && b <= full,
                "attempt {attempt}: {b:?} of {full:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_at_the_attempts_and_answers_the_last_conflict() {
        let mut calls = 0;
        let out: Result<(), &str> = RetryPolicy::DEFAULT
            .with_attempts(4)
            .run(
                |e| *e == "conflict",
                |attempt| {
                    assert_eq!(attempt, calls);
                    calls += 1;
                    std::future::ready(Err("conflict"))
                },
            )
            .await;
        assert_eq!(out, Err("conflict"));
        assert_eq!(calls, 4);
    }

    #[test]
    fn resolve_tells_missing_busy_moray_and_the_changes_own_apart() {
        let moray = |name: &str| MorayError::Server {
            name: name.into(),
            message: String::new(),
            code: Code::Unknown,
        };
        let resolve = |e: UpdateError<String>| {
            e.resolve(
                || "missing".to_string(),
                || "busy".to_string(),
                |e| format!("moray {}", e.name()),
            )
        };
        let cases = [
            (UpdateError::Moray(not_found("b", "k")), "missing"),
            (UpdateError::Moray(moray("EtagConflictError")), "busy"),
            (
                UpdateError::Moray(moray("NoDatabaseError")),
                "moray NoDatabaseError",
            ),
            (UpdateError::Change("refused".to_string()), "refused"),
        ];
        for (error, want) in cases {
            let shown = format!("{error:?}");
            assert_eq!(resolve(error), want, "{shown}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn next_gives_each_attempt_once() {
        let mut tries = RetryPolicy::DEFAULT.with_attempts(3).start();
        let mut seen = Vec::new();
        while tries.next().await {
            seen.push(tries.attempt());
        }
        assert_eq!(seen, [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn run_does_not_retry_other_errors_and_returns_success() {
        /// `answer` (of the attempt) under the default policy, retrying "conflict": the
        /// outcome and how many calls it took.
        async fn run(
            answer: impl Fn(u32) -> Result<u32, &'static str>,
        ) -> (Result<u32, &'static str>, u32) {
            let mut calls = 0;
            let out = RetryPolicy::DEFAULT
                .run(
                    |e| *e == "conflict",
                    |attempt| {
                        calls += 1;
                        std::future::ready(answer(attempt))
                    },
                )
                .await;
            (out, calls)
        }
        assert_eq!(run(|_| Err("broken")).await, (Err("broken"), 1));
        let conflicts_twice = |attempt| {
            if attempt < 2 {
                Err("conflict")
            } else {
                Ok(attempt)
            }
        };
        assert_eq!(run(conflicts_twice).await, (Ok(2), 3));
    }
}
