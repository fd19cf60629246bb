//! WatchAccounts and WatchKeys: the accounts' and the keys' change feeds, Moray's
//! snapshot then follow ([`MorayClient::follow`]) over `ufds_accounts` and `ufds_keys`,
//! each record mapped to the public `Account` or `Key` that Get and List return. The
//! position is Moray's change feed sequence of the bucket. Two feeds rather than keys
//! inside accounts: each bucket has its own positions, and a follower of accounts (CNS)
//! has no use for keys.

use moray_client::filter::Filter;
use moray_client::typed::Bucket;
use moray_client::{FeedObject, FeedRecords, MorayClient, WatchStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use triton_proto::feed::WatchEvent;
use triton_proto::ufds::v1 as proto;

use crate::account::{Account, check_uuid};
use crate::error::Error;
use crate::key::StoredKey;
use crate::server::key_to_proto;
use crate::service::buckets;

pub type WatchAccountsStream = WatchStream<proto::WatchAccountsEvent>;
pub type WatchKeysStream = WatchStream<proto::WatchKeysEvent>;

/// Serves WatchAccounts and WatchKeys calls until shutdown.
#[derive(Debug, Clone)]
pub struct Watch {
    accounts: Bucket<Account>,
    keys: Bucket<StoredKey>,
    shutdown: CancellationToken,
}

/// A stored record that a feed carries: the uuid field a watcher may filter on, and the
/// public record it is.
trait Watched: Serialize + DeserializeOwned + Send + Sync + 'static {
    type Event: WatchEvent<Record: Send> + Send + 'static;
    /// What following the feed is, for its errors.
    const FOLLOW: &'static str;
    /// The field a watcher filters on.
    const FIELD: &'static str;
    /// This record's value of [`Self::FIELD`].
    fn field(&self) -> &str;
    fn public(self) -> Result<<Self::Event as WatchEvent>::Record, Error>;
}

impl Watched for Account {
    type Event = proto::WatchAccountsEvent;
    const FOLLOW: &'static str = "follow the accounts' change feed";
    const FIELD: &'static str = "uuid";
    fn field(&self) -> &str {
        &self.uuid
    }
    fn public(self) -> Result<proto::Account, Error> {
        Ok(self.into())
    }
}

impl Watched for StoredKey {
    type Event = proto::WatchKeysEvent;
    const FOLLOW: &'static str = "follow the keys' change feed";
    const FIELD: &'static str = "account_uuid";
    fn field(&self) -> &str {
        &self.account_uuid
    }
    fn public(self) -> Result<proto::Key, Error> {
        key_to_proto(self)
    }
}

/// One watcher's records of a bucket: with `only`, those whose field is `only`.
struct Records<T> {
    bucket: Bucket<T>,
    only: Option<String>,
}

impl<T: Watched> FeedRecords for Records<T> {
    type Event = T::Event;

    async fn record(
        &self,
        object: FeedObject,
    ) -> Result<Option<<T::Event as WatchEvent>::Record>, Status> {
        let record = self
            .bucket
            .decode(&object.key, object.value)
            .map_err(Error::moray("decode a watched record"))?;
        if self.only.as_ref().is_some_and(|o| record.field() != o) {
            return Ok(None);
        }
        Ok(Some(record.public()?))
    }

    fn error(&self, e: moray_client::MorayError) -> Status {
        Error::moray(T::FOLLOW)(e).into()
    }
}

impl Watch {
    pub fn new(moray: MorayClient, shutdown: CancellationToken) -> Watch {
        let [(accounts, accounts_config), (keys, keys_config)] = buckets();
        Watch {
            accounts: Bucket::new(moray.clone(), accounts, accounts_config),
            keys: Bucket::new(moray, keys, keys_config),
            shutdown,
        }
    }

    /// Starts following the accounts; a failure before the first event is the call's
    /// error.
    pub async fn watch_accounts(
        &self,
        req: proto::WatchAccountsRequest,
    ) -> Result<WatchAccountsStream, Status> {
        self.follow(&self.accounts, req.uuid.as_deref(), req.position)
            .await
    }

    /// Starts following the keys; a failure before the first event is the call's error.
    pub async fn watch_keys(
        &self,
        req: proto::WatchKeysRequest,
    ) -> Result<WatchKeysStream, Status> {
        self.follow(&self.keys, req.account_uuid.as_deref(), req.position)
            .await
    }

    /// `bucket`'s feed from `position`; with `only` (refused when it is not a uuid), the
    /// records whose field is `only`.
    async fn follow<T: Watched>(
        &self,
        bucket: &Bucket<T>,
        only: Option<&str>,
        position: u64,
    ) -> Result<WatchStream<T::Event>, Status> {
        if let Some(e) = only.and_then(|v| check_uuid(T::FIELD, v)) {
            return Err(Error::Invalid(vec![e]).into());
        }
        let filter = match only {
            Some(v) => Filter::eq(T::FIELD, v),
            None => Filter::present(T::FIELD),
        };
        let feed = bucket.follow(Some(&filter.to_string()), position);
        let records = Records {
            bucket: bucket.clone(),
            only: only.map(str::to_string),
        };
        moray_client::serve_follow(feed, records, self.shutdown.clone().cancelled_owned()).await
    }
}
