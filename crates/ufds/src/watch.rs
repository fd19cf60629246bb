//! WatchAccounts and WatchKeys: the accounts' and the keys' change feeds, Moray's
//! snapshot then follow ([`MorayClient::follow`]) over `ufds_accounts` and `ufds_keys`,
//! each record mapped to the public `Account` or `Key` that Get and List return. The
//! position is Moray's change feed sequence of the bucket. Two feeds rather than keys
//! inside accounts: each bucket has its own positions, and a follower of accounts (CNS)
//! has no use for keys.

use moray_client::filter::Filter;
use moray_client::typed::Bucket;
use moray_client::{FeedMessages, MorayClient, MorayError, WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;
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

/// An optional uuid filter, refused naming `field` when it is not a uuid.
fn uuid_filter(field: &str, value: Option<&str>) -> Result<Option<String>, Status> {
    match value {
        None => Ok(None),
        Some(v) => match check_uuid(field, v) {
            Some(e) => Err(Error::Invalid(vec![e]).into()),
            None => Ok(Some(v.to_string())),
        },
    }
}

fn decode_error(e: MorayError) -> Status {
    Error::moray("decode a watched record")(e).into()
}

/// WatchAccounts's messages for one watcher (`uuid`: only that account).
struct AccountMessages {
    bucket: Bucket<Account>,
    uuid: Option<String>,
}

impl FeedMessages for AccountMessages {
    type Record = proto::Account;
    type Message = proto::WatchAccountsEvent;

    async fn record(
        &self,
        key: &str,
        value: serde_json::Value,
        _etag: &str,
    ) -> Result<Option<proto::Account>, Status> {
        let account = self.bucket.decode(key, value).map_err(decode_error)?;
        Ok(self
            .uuid
            .as_ref()
            .is_none_or(|u| account.uuid == *u)
            .then(|| account.into()))
    }

    moray_client::feed_messages!(
        proto,
        WatchAccountsEvent,
        watch_accounts_event,
        WatchAccountsPage { accounts },
        WatchSnapshotDone,
        AccountChange { uuid, account },
        WatchResync
    );

    fn error(&self, e: MorayError) -> Status {
        Error::moray("follow the accounts' change feed")(e).into()
    }
}

/// WatchKeys's messages for one watcher (`account`: only that account's keys).
struct KeyMessages {
    bucket: Bucket<StoredKey>,
    account: Option<String>,
}

impl FeedMessages for KeyMessages {
    type Record = proto::Key;
    type Message = proto::WatchKeysEvent;

    async fn record(
        &self,
        id: &str,
        value: serde_json::Value,
        _etag: &str,
    ) -> Result<Option<proto::Key>, Status> {
        let key = self.bucket.decode(id, value).map_err(decode_error)?;
        if self
            .account
            .as_ref()
            .is_some_and(|a| key.account_uuid != *a)
        {
            return Ok(None);
        }
        Ok(Some(key_to_proto(key)?))
    }

    moray_client::feed_messages!(
        proto,
        WatchKeysEvent,
        watch_keys_event,
        WatchKeysPage { keys },
        WatchSnapshotDone,
        KeyChange { id, key },
        WatchResync
    );

    fn error(&self, e: MorayError) -> Status {
        Error::moray("follow the keys' change feed")(e).into()
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
        let uuid = uuid_filter("uuid", req.uuid.as_deref())?;
        let filter = match &uuid {
            Some(u) => Filter::eq("uuid", u),
            None => Filter::present("uuid"),
        }
        .to_string();
        let feed = self
            .accounts
            .client()
            .follow(self.accounts.name(), Some(&filter), req.position);
        let messages = AccountMessages {
            bucket: self.accounts.clone(),
            uuid,
        };
        moray_client::serve_follow(feed, messages, self.shutdown.clone().cancelled_owned()).await
    }

    /// Starts following the keys; a failure before the first event is the call's error.
    pub async fn watch_keys(
        &self,
        req: proto::WatchKeysRequest,
    ) -> Result<WatchKeysStream, Status> {
        let account = uuid_filter("account_uuid", req.account_uuid.as_deref())?;
        let filter = match &account {
            Some(a) => Filter::eq("account_uuid", a),
            None => Filter::present("account_uuid"),
        }
        .to_string();
        let feed = self
            .keys
            .client()
            .follow(self.keys.name(), Some(&filter), req.position);
        let messages = KeyMessages {
            bucket: self.keys.clone(),
            account,
        };
        moray_client::serve_follow(feed, messages, self.shutdown.clone().cancelled_owned()).await
    }
}
