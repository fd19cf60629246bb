//! moray-client: the typed Moray client every Triton service uses, in the manner of
//! node-moray. Object values are `serde_json::Value`; errors keep Triton's names.
//!
//! ```no_run
//! # async fn example() -> Result<(), moray_client::MorayError> {
//! use moray_client::{BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient};
//! use serde_json::json;
//!
//! let moray = MorayClient::connect("tcp://127.0.0.1:2020").await?;
//! let config = BucketConfig::versioned(1).with_index("age", IndexDef::new("number"));
//! moray.put_bucket("accounts", &config).await?;
//! let etag = moray
//!     .put_object("accounts", "lisa", &json!({"age": 8}), EtagCondition::MustNotExist)
//!     .await?;
//! let lisa = moray.get_object("accounts", "lisa").await?; // Option<Object>
//! let young = moray
//!     .find_objects("accounts", "(age<=10)", &FindOptions::limit(10))
//!     .await?;
//! # let _ = (etag, lisa, young);
//! # Ok(())
//! # }
//! ```
//!
//! Concurrent `get_object` calls on a client and its clones are coalesced into
//! `GetObjects` RPCs under load, each caller still getting its own object or error
//! ([`Coalescing`], [`ConnectOptions::coalesce_gets`]; `None` turns it off), and
//! concurrent `put_object` calls into `PutObjects` ([`ConnectOptions::coalesce_puts`]).
//!
//! Services keep their records in typed buckets ([`typed::Bucket`]): records as their
//! own types with their etags, and the one read-modify-write with retry on an etag
//! conflict ([`typed::Bucket::update`], [`typed::RetryPolicy`]).
//!
//! The crate also holds `moray-cli`, the operator CLI with node-moray's commands.

mod client;
mod coalesce;
mod error;
mod feed;
pub mod filter;
pub mod service;
pub mod typed;
mod types;
mod url;

pub use client::{ConnectOptions, DEFAULT_CONNECT_FOR, MorayClient};
pub use coalesce::{
    CoalesceStats, Coalescing, DEFAULT_MAX_BATCH, DEFAULT_MAX_IN_FLIGHT, GetStats, PutStats,
};
pub use error::{MorayError, Result};
pub use feed::{
    FeedItem, FeedObject, FeedRecords, RESYNC_REQUIRED, RecordOf, WatchStream, serve_follow,
};
pub use types::{
    BatchOp, BatchResult, Bucket, BucketConfig, BucketOptions, ChangeEvent, ChangeOp,
    EtagCondition, FindOptions, IndexDef, Object, ReindexResult, Sort, SortOrder, UpdateResult,
    Version,
};
pub use url::{DEFAULT_PORT, MorayAddr};
