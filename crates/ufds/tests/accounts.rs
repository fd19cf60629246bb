//! Accounts through the gRPC API, on a real Moray and PostgreSQL.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{lookup, ok};
use dc_testkit::assert_refused;
use dc_testkit::{Dc, Options, Service, assert_error};
use triton_proto::ufds::v1 as proto;

fn bob() -> proto::CreateAccountRequest {
    proto::CreateAccountRequest {
        login: "bob".into(),
        email: "bob@example.com".into(),
        givenname: "Bob".into(),
        sn: "Smith".into(),
        company: "Acme".into(),
        approved_for_provisioning: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn account_lifecycle() {
    let stack = Dc::start(Options::only(Service::Ufds)).await;
    // SERVING (1) in the standard health service, under the service's full name.
    assert_eq!(
        dc_testkit::health(stack.addr(Service::Ufds), ufds::SERVICE_NAME).await,
        1
    );
    let c = &mut stack.ufds();

    let created = ok(c.create_account(bob()).await);
    assert_eq!(created.uuid.len(), 36);
    assert_eq!(created.login, "bob");
    assert_eq!(created.givenname, "Bob");
    assert!(created.created_at.ends_with('Z'), "{}", created.created_at);
    assert_eq!(created.created_at, created.updated_at);

    // By uuid and by login.
    for reference in [created.uuid.as_str(), "bob"] {
        let got = ok(c.get_account(lookup(reference)).await);
        assert_eq!(got, created, "{reference}");
    }

    let alice_uuid = "a0b1c2d3-0000-4000-8000-000000000001";
    c.create_account(proto::CreateAccountRequest {
        uuid: alice_uuid.into(),
        login: "alice".into(),
        email: "alice@example.org".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.create_account(proto::CreateAccountRequest {
        login: "bobby".into(),
        email: "bobby@example.org".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let all = ok(c.list_accounts(proto::ListAccountsRequest::default()).await);
    let logins: Vec<&str> = all.accounts.iter().map(|a| a.login.as_str()).collect();
    assert_eq!(logins, ["alice", "bob", "bobby"]);
    assert_eq!(all.total, 3);

    let bobs = ok(c
        .list_accounts(proto::ListAccountsRequest {
            login: "bob*".into(),
            limit: 1,
            ..Default::default()
        })
        .await);
    assert_eq!(bobs.accounts.len(), 1);
    assert_eq!(bobs.accounts[0].login, "bob");
    assert_eq!(bobs.total, 2);

    let approved = ok(c
        .list_accounts(proto::ListAccountsRequest {
            approved_for_provisioning: Some(true),
            ..Default::default()
        })
        .await);
    assert_eq!(approved.accounts.len(), 1);
    assert_eq!(approved.accounts[0].login, "bob");

    let by_email = ok(c
        .list_accounts(proto::ListAccountsRequest {
            email: "*@example.org".into(),
            ..Default::default()
        })
        .await);
    assert_eq!(by_email.total, 2);

    // Besides the `*` globs, values are taken literally: `)(` and `\` neither widen the
    // filter nor break it.
    for (login, email) in [
        ("bob)(login=*", ""),
        ("bob)(|(login=*", ""),
        ("bob\\", ""),
        ("", "alice@example.org)(email=*"),
        ("(", ""),
    ] {
        let found = ok(c
            .list_accounts(proto::ListAccountsRequest {
                login: login.into(),
                email: email.into(),
                ..Default::default()
            })
            .await);
        assert_eq!(found.total, 0, "login {login:?} email {email:?}");
    }
    // A login reference with filter characters finds nothing.
    for reference in ["*", "bob)(login=*", "b*"] {
        let err = c.get_account(lookup(reference)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{reference:?}: {err:?}");
    }

    // Update: set some fields, clear one, keep the rest.
    let updated = ok(c
        .update_account(proto::UpdateAccountRequest {
            account: "bob".into(),
            email: Some("robert@example.com".into()),
            company: Some(String::new()),
            phone: Some("+1 555 0100".into()),
            triton_cns_enabled: Some(true),
            ..Default::default()
        })
        .await);
    assert_eq!(updated.email, "robert@example.com");
    assert_eq!(updated.company, "");
    assert_eq!(updated.phone, "+1 555 0100");
    assert_eq!(updated.givenname, "Bob");
    assert!(updated.triton_cns_enabled);
    assert!(updated.approved_for_provisioning);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    let got = ok(c.get_account(lookup(&created.uuid)).await);
    assert_eq!(got, updated);

    c.delete_account(proto::DeleteAccountRequest {
        account: "bob".into(),
    })
    .await
    .unwrap();
    assert_error(
        c.get_account(lookup(&created.uuid)).await,
        "ResourceNotFound",
        &[&created.uuid],
    );
    // The login is free again.
    c.create_account(bob()).await.unwrap();
}

#[tokio::test]
async fn bad_account_input_is_refused_naming_the_field() {
    let stack = Dc::start(Options::only(Service::Ufds)).await;
    let c = &mut stack.ufds();

    assert_error(
        c.create_account(proto::CreateAccountRequest::default())
            .await,
        "MissingParameter",
        &["login is missing", "email is missing"],
    );
    // Bob's account with one field spoiled: the error's name and what its message says.
    let spoiled: [(&str, proto::CreateAccountRequest, &str, &[&str]); 4] = [
        (
            "a login starting with a digit",
            proto::CreateAccountRequest {
                login: "9lives".into(),
                ..bob()
            },
            "InvalidArgument",
            &["login", "must start with a letter"],
        ),
        (
            "a reserved login",
            proto::CreateAccountRequest {
                login: "local".into(),
                ..bob()
            },
            "InvalidArgument",
            &["login", "reserved"],
        ),
        (
            "an email without @",
            proto::CreateAccountRequest {
                email: "bob-at-example".into(),
                ..bob()
            },
            "InvalidArgument",
            &["email"],
        ),
        (
            "a uuid that is not one",
            proto::CreateAccountRequest {
                uuid: "1234".into(),
                ..bob()
            },
            "InvalidArgument",
            &["uuid", "\"1234\" is not a UUID"],
        ),
    ];
    for (what, request, name, fragments) in spoiled {
        assert_refused(what, c.create_account(request).await, name, fragments);
    }

    let first = ok(c.create_account(bob()).await);
    assert_error(
        c.create_account(proto::CreateAccountRequest {
            email: "other@example.com".into(),
            ..bob()
        })
        .await,
        "ConflictError",
        &["login \"bob\""],
    );
    assert_error(
        c.create_account(proto::CreateAccountRequest {
            uuid: first.uuid.clone(),
            login: "robert".into(),
            ..bob()
        })
        .await,
        "ConflictError",
        &["uuid", &first.uuid],
    );

    assert_error(
        c.get_account(lookup("nobody")).await,
        "ResourceNotFound",
        &["nobody"],
    );
    assert_error(
        c.get_account(lookup("abc-not-a-uuid")).await,
        "InvalidArgument",
        &["account", "neither a UUID nor a login"],
    );
    assert_error(
        c.get_account(proto::GetAccountRequest::default()).await,
        "MissingParameter",
        &["account"],
    );
    let bobs = |change: proto::UpdateAccountRequest| proto::UpdateAccountRequest {
        account: "bob".into(),
        ..change
    };
    let bad_updates: Vec<(&str, proto::UpdateAccountRequest, &str, &[&str])> = vec![
        (
            "an empty email",
            bobs(proto::UpdateAccountRequest {
                email: Some(String::new()),
                ..Default::default()
            }),
            "MissingParameter",
            &["email is missing"],
        ),
        (
            "a control character",
            bobs(proto::UpdateAccountRequest {
                city: Some("a\u{7}b".into()),
                ..Default::default()
            }),
            "InvalidArgument",
            &["city", "control characters"],
        ),
    ];
    for (what, request, name, fragments) in bad_updates {
        assert_refused(what, c.update_account(request).await, name, fragments);
    }
    assert_error(
        c.list_accounts(proto::ListAccountsRequest {
            limit: 5000,
            ..Default::default()
        })
        .await,
        "InvalidArgument",
        &["limit"],
    );
    assert_error(
        c.delete_account(proto::DeleteAccountRequest {
            account: "b0b1c2d3-0000-4000-8000-000000000009".into(),
        })
        .await,
        "ResourceNotFound",
        &[],
    );
    // Nothing above changed the one good account.
    let got = ok(c.get_account(lookup("bob")).await);
    assert_eq!(got, first);
}
