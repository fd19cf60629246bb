//! WatchAccounts and WatchKeys: the snapshot equals List's answer, changes follow in
//! order with increasing positions, a resume gets each later change once, the filters
//! hold, and a bad filter is refused naming the field.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{account, new_key, ok, watch_account, watch_accounts};
use dc_testkit::cloudapi::ssh_public_key;
use dc_testkit::feed::Feed;
use dc_testkit::watched::{lifecycle, resumes_over, resync_then_snapshot};
use dc_testkit::{Dc, Options, assert_error, keep_no_change_log};
use triton_proto::feed::v1::ChangeOp;
use triton_proto::ufds::v1 as proto;

async fn ufds() -> Dc {
    Dc::start(Options {
        ufds: true,
        ..Default::default()
    })
    .await
}

async fn set_email(dc: &Dc, account: &str, email: &str) -> proto::Account {
    dc.ufds()
        .update_account(proto::UpdateAccountRequest {
            account: account.into(),
            email: Some(email.into()),
            ..Default::default()
        })
        .await
        .expect("update account")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_snapshot_then_changes_in_order_and_resume() {
    let dc = ufds().await;
    let bob = account(&dc, "bob").await;
    account(&dc, "alice").await;

    // From an empty start: the snapshot is ListAccounts's answer.
    let mut all = watch_accounts(&dc, Default::default()).await;
    let (mut snapshot, at) = all.snapshot().await;
    snapshot.sort_by(|a, b| a.login.cmp(&b.login));
    let listed = dc
        .ufds()
        .list_accounts(proto::ListAccountsRequest::default())
        .await
        .expect("ListAccounts")
        .into_inner()
        .accounts;
    assert_eq!(snapshot.len(), 2);
    assert_eq!(snapshot, listed);

    // Only bob with his uuid.
    let mut of_bob = watch_account(&dc, &bob.uuid).await;
    let (only_bob, _) = of_bob.snapshot().await;
    assert_eq!(only_bob, vec![bob.clone()]);

    // A create, an update and a delete arrive in order with increasing positions.
    let carol = account(&dc, "carol").await;
    let carol2 = set_email(&dc, "carol", "carol@example.org").await;
    dc.ufds()
        .delete_account(proto::DeleteAccountRequest {
            account: "carol".into(),
        })
        .await
        .expect("delete account");
    let life = lifecycle(&mut all, at, &carol.uuid, &carol, &carol2).await;

    // Carol's PUTs are not bob's watcher's; every DELETE is; then bob's update.
    let bob2 = set_email(&dc, "bob", "bob@example.org").await;
    assert_eq!(of_bob.change().await, life.delete);
    let later = of_bob.put(life.delete.position, &bob.uuid, &bob2).await;

    // Resuming from the create's position: the update and the delete once, then on.
    let resume = |position| {
        let request = proto::WatchAccountsRequest {
            position,
            ..Default::default()
        };
        watch_accounts(&dc, request)
    };
    resumes_over(life, &later, &mut all, resume).await;
}

/// A new ed25519 key of `account`, named `name`.
async fn add_key(dc: &Dc, account: &str, name: &str) -> proto::Key {
    let key = ssh_public_key("ed25519");
    let request = new_key(account, name, key.trim());
    ok(dc.ufds().create_key(request).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_snapshot_then_changes_of_one_account() {
    let dc = ufds().await;
    let bob = account(&dc, "bob").await;
    let alice = account(&dc, "alice").await;
    add_key(&dc, "bob", "one").await;
    add_key(&dc, "bob", "two").await;
    add_key(&dc, "alice", "hers").await;

    let mut stream: Feed<_> = dc
        .ufds()
        .watch_keys(proto::WatchKeysRequest {
            account_uuid: Some(bob.uuid.clone()),
            ..Default::default()
        })
        .await
        .expect("WatchKeys")
        .into_inner()
        .into();
    let (mut snapshot, at) = stream.snapshot().await;
    let mut listed = dc
        .ufds()
        .list_keys(proto::ListKeysRequest {
            account: "bob".into(),
        })
        .await
        .expect("ListKeys")
        .into_inner()
        .keys;
    snapshot.sort_by(|a, b| a.name.cmp(&b.name));
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(snapshot.len(), 2);
    assert_eq!(snapshot, listed);

    // Alice's new key is not bob's watcher's; bob's new key and its delete are.
    add_key(&dc, "alice", "more").await;
    let three = add_key(&dc, "bob", "three").await;
    dc.ufds()
        .delete_key(proto::DeleteKeyRequest {
            account: "bob".into(),
            key: "three".into(),
        })
        .await
        .expect("delete key");
    let id = format!("{}/{}", bob.uuid, three.fingerprint);
    let put = stream.put(at, &id, &three).await;
    stream.delete(put.position, &id).await;

    // Deleting the account deletes its keys: a DELETE for each.
    dc.ufds()
        .delete_account(proto::DeleteAccountRequest {
            account: "bob".into(),
        })
        .await
        .expect("delete account");
    let mut gone = Vec::new();
    for _ in 0..2 {
        let c = stream.change().await;
        assert_eq!(c.op(), ChangeOp::Delete);
        gone.push(c.id);
    }
    gone.sort();
    let mut held: Vec<String> = snapshot
        .iter()
        .map(|k| format!("{}/{}", bob.uuid, k.fingerprint))
        .collect();
    held.sort();
    assert_eq!(gone, held);
    assert_ne!(alice.uuid, bob.uuid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_what_is_kept_is_answered_with_resync() {
    let dc = Dc::start(Options {
        ufds: true,
        configure_moray: Box::new(keep_no_change_log),
        ..Default::default()
    })
    .await;
    for login in ["ann", "ben", "cat"] {
        account(&dc, login).await;
    }
    // With no retention, the next trim deletes those changes.
    dc.change_log_trimmed_through(3).await;

    // From 0 the whole state comes again.
    let mut accounts = resync_then_snapshot(|position| {
        let request = proto::WatchAccountsRequest {
            position,
            ..Default::default()
        };
        watch_accounts(&dc, request)
    })
    .await;
    accounts.sort_by(|a, b| a.login.cmp(&b.login));
    let logins: Vec<&str> = accounts.iter().map(|a| a.login.as_str()).collect();
    assert_eq!(logins, ["ann", "ben", "cat"]);
}

#[tokio::test]
async fn a_bad_filter_is_refused_naming_the_field() {
    let dc = ufds().await;
    let mut c = dc.ufds();
    assert_error(
        c.watch_accounts(proto::WatchAccountsRequest {
            uuid: Some("bob".into()),
            ..Default::default()
        })
        .await,
        "InvalidArgument",
        &["uuid"],
    );
    assert_error(
        c.watch_keys(proto::WatchKeysRequest {
            account_uuid: Some("not-a-uuid".into()),
            ..Default::default()
        })
        .await,
        "InvalidArgument",
        &["account_uuid"],
    );
}
