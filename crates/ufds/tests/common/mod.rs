//! What the UFDS tests share: an account made the plain way, the account and key
//! requests they make most, the accounts' feed, and the answer of a call that must
//! succeed (the check of a refused one that names its case is
//! `dc_testkit::assert_refused`).
#![allow(dead_code)]

use dc_testkit::Dc;
use dc_testkit::feed::Feed;
use triton_proto::ufds::v1 as proto;

/// A new account `login`, e-mail `<login>@example.com`.
pub async fn account(dc: &Dc, login: &str) -> proto::Account {
    let request = proto::CreateAccountRequest {
        login: login.into(),
        email: format!("{login}@example.com"),
        ..Default::default()
    };
    ok(dc.ufds().create_account(request).await)
}

/// GetAccount of `account` (a uuid or a login).
pub fn lookup(account: &str) -> proto::GetAccountRequest {
    proto::GetAccountRequest {
        account: account.into(),
    }
}

/// CreateKey of `key` (OpenSSH text) for `account` (a login or a uuid), named `name`.
pub fn new_key(account: &str, name: &str, key: &str) -> proto::CreateKeyRequest {
    proto::CreateKeyRequest {
        account: account.into(),
        name: name.into(),
        key: key.into(),
    }
}

/// The answer of a call that must succeed.
#[track_caller]
pub fn ok<T>(result: Result<tonic::Response<T>, tonic::Status>) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(status) => panic!("the call should succeed: {status:?}"),
    }
}

/// WatchAccounts with `req`, as a feed.
pub async fn watch_accounts(
    dc: &Dc,
    req: proto::WatchAccountsRequest,
) -> Feed<proto::WatchAccountsEvent> {
    dc.ufds()
        .watch_accounts(req)
        .await
        .expect("WatchAccounts")
        .into_inner()
        .into()
}

/// WatchAccounts of the one account `uuid`, as a feed.
pub async fn watch_account(dc: &Dc, uuid: &str) -> Feed<proto::WatchAccountsEvent> {
    let req = proto::WatchAccountsRequest {
        uuid: Some(uuid.into()),
        ..Default::default()
    };
    watch_accounts(dc, req).await
}
