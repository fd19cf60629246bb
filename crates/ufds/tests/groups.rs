//! Groups (Triton's `cn=operators, ou=groups, o=smartdc`): membership kept on the
//! account (`groups`, Triton's `memberof`), changed by AddGroupMember and
//! RemoveGroupMember, listed by ListGroupMembers, carried by WatchAccounts; bad names and
//! requests refused naming the field; a UFDS whose accounts bucket predates `groups`
//! indexes its accounts at start-up.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{account, lookup, ok, watch_accounts};
use dc_testkit::{Dc, Options, Service, assert_refused};
use moray_client::{BucketConfig, EtagCondition, IndexDef, MorayClient};
use tokio_util::sync::CancellationToken;
use triton_proto::ufds::v1 as proto;
use triton_proto::ufds::v1::ufds_client::UfdsClient;

fn member(group: &str, account: &str) -> proto::GroupMemberRequest {
    proto::GroupMemberRequest {
        group: group.into(),
        account: account.into(),
    }
}

fn members_of(group: &str) -> proto::ListGroupMembersRequest {
    proto::ListGroupMembersRequest {
        group: group.into(),
        ..Default::default()
    }
}

/// The logins ListGroupMembers answers for `group`, and its total.
async fn logins(c: &mut UfdsClient<tonic::transport::Channel>, group: &str) -> (Vec<String>, u64) {
    let r = ok(c.list_group_members(members_of(group)).await);
    (r.accounts.into_iter().map(|a| a.login).collect(), r.total)
}

#[tokio::test]
async fn membership_is_kept_on_the_account_and_listed_by_group() {
    let dc = Dc::start(Options::only(Service::Ufds)).await;
    let c = &mut dc.ufds();
    let bob = account(&dc, "bob").await;
    let alice = account(&dc, "alice").await;
    account(&dc, "carol").await;
    assert!(bob.groups.is_empty());

    // By login and by uuid; the answer is the account with its groups.
    let bob2 = ok(c.add_group_member(member("operators", "bob")).await);
    assert_eq!(bob2.groups, ["operators"]);
    assert_eq!(bob2.uuid, bob.uuid);
    assert_ne!(bob2.updated_at, bob.updated_at);
    let alice2 = ok(c.add_group_member(member("operators", &alice.uuid)).await);
    assert_eq!(alice2.groups, ["operators"]);
    assert_eq!(ok(c.get_account(lookup("bob")).await), bob2);
    let listed = ok(c
        .list_accounts(proto::ListAccountsRequest {
            login: "bob".into(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.accounts, std::slice::from_ref(&bob2));

    // Members ordered by login; limit and offset page them.
    assert_eq!(
        logins(c, "operators").await,
        (vec!["alice".into(), "bob".into()], 2)
    );
    let second = ok(c
        .list_group_members(proto::ListGroupMembersRequest {
            group: "operators".into(),
            limit: 1,
            offset: 1,
        })
        .await);
    assert_eq!(second.accounts, std::slice::from_ref(&bob2));
    assert_eq!(second.total, 2);

    // Adding a member again changes nothing, not even updated_at.
    assert_eq!(
        ok(c.add_group_member(member("operators", "bob")).await),
        bob2
    );

    // Groups are sorted on the account, and each is listed on its own.
    let bob3 = ok(c.add_group_member(member("readers", "bob")).await);
    assert_eq!(bob3.groups, ["operators", "readers"]);
    let bob3 = ok(c.add_group_member(member("admins", "bob")).await);
    assert_eq!(bob3.groups, ["admins", "operators", "readers"]);
    assert_eq!(logins(c, "readers").await, (vec!["bob".into()], 1));

    // Removing: the member goes; removing a non-member changes nothing.
    let alice3 = ok(c.remove_group_member(member("operators", "alice")).await);
    assert!(alice3.groups.is_empty());
    assert_eq!(logins(c, "operators").await, (vec!["bob".into()], 1));
    assert_eq!(
        ok(c.remove_group_member(member("operators", "alice")).await),
        alice3
    );
    assert_eq!(
        ok(c.remove_group_member(member("readers", "bob")).await).groups,
        ["admins", "operators"]
    );

    // A group nobody is in has no members; a deleted account leaves its groups.
    assert_eq!(logins(c, "nobody").await, (vec![], 0));
    c.delete_account(proto::DeleteAccountRequest {
        account: "bob".into(),
    })
    .await
    .unwrap();
    assert_eq!(logins(c, "operators").await, (vec![], 0));
    assert_eq!(logins(c, "admins").await, (vec![], 0));
}

#[tokio::test]
async fn bad_names_and_requests_are_refused_naming_the_field() {
    let dc = Dc::start(Options::only(Service::Ufds)).await;
    let c = &mut dc.ufds();
    let bob = account(&dc, "bob").await;
    let long = "g".repeat(65);
    for (what, request, name, says) in [
        ("no group", member("", "bob"), "MissingParameter", "group"),
        (
            "upper case",
            member("Operators", "bob"),
            "InvalidArgument",
            "group \"Operators\" is invalid: must start with a lower-case letter",
        ),
        (
            "an LDAP DN",
            member("cn=operators, ou=groups, o=smartdc", "bob"),
            "InvalidArgument",
            "may only contain lower-case letters, digits, '-' and '_'",
        ),
        (
            "too long",
            member(&long, "bob"),
            "InvalidArgument",
            "must be 1 to 64 characters long",
        ),
        (
            "no account",
            member("operators", ""),
            "MissingParameter",
            "account",
        ),
        (
            "an unknown account",
            member("operators", "nobody"),
            "ResourceNotFound",
            "nobody",
        ),
        (
            "neither uuid nor login",
            member("operators", "no-such"),
            "InvalidArgument",
            "account \"no-such\" is neither a UUID nor a login",
        ),
    ] {
        assert_refused(
            &format!("add: {what}"),
            c.add_group_member(request.clone()).await,
            name,
            &[says],
        );
        assert_refused(
            &format!("remove: {what}"),
            c.remove_group_member(request).await,
            name,
            &[says],
        );
    }
    assert_refused(
        "list: bad group",
        c.list_group_members(members_of("Ops!")).await,
        "InvalidArgument",
        &["group \"Ops!\" is invalid"],
    );
    assert_refused(
        "list: over the limit",
        c.list_group_members(proto::ListGroupMembersRequest {
            group: "operators".into(),
            limit: 1001,
            offset: 0,
        })
        .await,
        "InvalidArgument",
        &["limit must be at most 1000"],
    );
    // Nothing was written.
    assert_eq!(ok(c.get_account(lookup("bob")).await), bob);

    // At most 64 groups: the 65th is refused, and the account keeps its 64.
    for i in 0..64 {
        ok(c.add_group_member(member(&format!("g{i:02}"), "bob")).await);
    }
    let full = ok(c.get_account(lookup("bob")).await);
    assert_eq!(full.groups.len(), 64);
    assert_refused(
        "a 65th group",
        c.add_group_member(member("operators", "bob")).await,
        "InvalidArgument",
        &["group \"operators\" cannot be added: account bob is already a member of 64 groups"],
    );
    assert_eq!(ok(c.get_account(lookup("bob")).await), full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_reach_watch_accounts() {
    let dc = Dc::start(Options::only(Service::Ufds)).await;
    let c = &mut dc.ufds();
    let bob = account(&dc, "bob").await;
    let admin = account(&dc, "admin").await;
    let admin = ok(c.add_group_member(member("operators", &admin.uuid)).await);

    // The snapshot carries the groups.
    let mut feed = watch_accounts(&dc, Default::default()).await;
    let (mut snapshot, at) = feed.snapshot().await;
    snapshot.sort_by(|a, b| a.login.cmp(&b.login));
    assert_eq!(snapshot, [admin, bob.clone()]);

    // Becoming and ceasing to be a member: a PUT of the account each time.
    let added = ok(c.add_group_member(member("operators", "bob")).await);
    let put = feed.put(at, &bob.uuid, &added).await;
    let removed = ok(c.remove_group_member(member("operators", "bob")).await);
    assert!(removed.groups.is_empty());
    feed.put(put.position, &bob.uuid, &removed).await;
}

/// The accounts bucket as UFDS made it before groups (version 1, no `groups` index).
fn accounts_bucket_v1() -> BucketConfig {
    BucketConfig::versioned(1)
        .with_index("uuid", IndexDef::unique("string"))
        .with_index("login", IndexDef::unique("string"))
        .with_index("email", IndexDef::new("string"))
        .with_index("approved_for_provisioning", IndexDef::new("boolean"))
        .with_index("created_at", IndexDef::new("string"))
}

#[tokio::test]
async fn accounts_from_before_groups_are_indexed_at_start_up() {
    let dc = Dc::start(Options::default()).await;
    let moray = MorayClient::connect(&dc.moray_url()).await.unwrap();
    moray
        .create_bucket(ufds::service::ACCOUNTS_BUCKET, &accounts_bucket_v1())
        .await
        .unwrap();
    let uuid = "a0b1c2d3-0000-4000-8000-000000000042";
    let old = serde_json::json!({
        "uuid": uuid,
        "login": "admin",
        "email": "admin@example.com",
        "approved_for_provisioning": true,
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:00.000Z",
    });
    moray
        .put_object(
            ufds::service::ACCOUNTS_BUCKET,
            uuid,
            &old,
            EtagCondition::MustNotExist,
        )
        .await
        .unwrap();

    let mut config = ufds::Config::default();
    config.service.listen = "127.0.0.1:0".into();
    config.service.moray_url = dc.moray_url();
    let shutdown = CancellationToken::new();
    let running = ufds::start(config, shutdown.clone())
        .await
        .expect("UFDS starts on the old bucket");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect_lazy();
    let mut c = UfdsClient::new(channel);

    // The new index answers at once (no "reindexing" refusal), and the old account
    // joins a group like any other.
    assert_eq!(logins(&mut c, "operators").await, (vec![], 0));
    let admin = ok(c.add_group_member(member("operators", "admin")).await);
    assert_eq!(admin.groups, ["operators"]);
    assert_eq!(admin.uuid, uuid);
    assert_eq!(logins(&mut c, "operators").await, (vec!["admin".into()], 1));
    shutdown.cancel();
}
