//! An account's `default_network`: set, kept, cleared and refused through
//! UpdateAccount, and carried in the WatchAccounts feed, on a real Moray and PostgreSQL.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{account, lookup, ok, watch_account};
use dc_testkit::{Dc, Options, Service, assert_error};
use triton_proto::ufds::v1 as proto;

const NET: &str = "5c0ffee0-0000-4000-8000-00000000000a";

fn set_default(account: &str, network: &str) -> proto::UpdateAccountRequest {
    proto::UpdateAccountRequest {
        account: account.into(),
        default_network: Some(network.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_network_is_set_kept_cleared_and_followed() {
    let dc = Dc::start(Options::only(Service::Ufds)).await;
    let c = &mut dc.ufds();
    let bob = account(&dc, "bob").await;
    assert_eq!(bob.default_network, "");

    let mut feed = watch_account(&dc, &bob.uuid).await;
    let (_, at) = feed.snapshot().await;

    let set = ok(c.update_account(set_default("bob", NET)).await);
    assert_eq!(set.default_network, NET);
    let got = ok(c.get_account(lookup(&bob.uuid)).await);
    assert_eq!(got, set);
    let change = feed.put(at, &bob.uuid, &set).await;

    // Another field's update keeps it.
    let renamed = ok(c
        .update_account(proto::UpdateAccountRequest {
            account: "bob".into(),
            cn: Some("Bob Smith".into()),
            ..Default::default()
        })
        .await);
    assert_eq!(renamed.default_network, NET);
    let change = feed.put(change.position, &bob.uuid, &renamed).await;

    // Not a uuid: refused naming the field, the stored one kept.
    assert_error(
        c.update_account(set_default("bob", "My-Fabric-Network"))
            .await,
        "InvalidArgument",
        &["default_network", "is not a UUID"],
    );
    let got = ok(c.get_account(lookup("bob")).await);
    assert_eq!(got.default_network, NET);

    // "" clears it.
    let cleared = ok(c.update_account(set_default("bob", "")).await);
    assert_eq!(cleared.default_network, "");
    feed.put(change.position, &bob.uuid, &cleared).await;
}
