//! What the UFDS tests share: an account made the plain way, the account and key
//! requests they make most, the answer of a call that must succeed, and the check of a
//! refused one that names its case.
#![allow(dead_code)]

use dc_testkit::Dc;
use triton_common::status::{error_message, error_name};
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

/// Asserts that the call of case `what` failed with Triton error `name` and a message
/// containing every one of `fragments`; a failure names the case.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    name: &str,
    fragments: &[&str],
) {
    let status = match result {
        Ok(r) => panic!("{what}: expected {name}, got {:?}", r.into_inner()),
        Err(status) => status,
    };
    assert_eq!(error_name(&status), Some(name), "{what}: {status:?}");
    let message = error_message(&status);
    for f in fragments {
        assert!(
            message.contains(f),
            "{what}: {message:?} should contain {f:?}"
        );
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
