//! Machines' `dns_names` from CNS, as a tenant sees them with the `triton` CLI, and the
//! names answering from CNS's DNS (`dig`).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use dc_testkit::cloudapi::Tenant;
use dc_testkit::naming::CNS_ZONE;
use dc_testkit::{Dc, Options, eventually};
use serde_json::Value;

/// `dig +short` of `name` (A) at CNS's DNS address: the addresses, one per line.
fn dig(dns: SocketAddr, name: &str) -> String {
    let out = std::process::Command::new("dig")
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "+short",
            "+time=2",
            "+tries=1",
            name,
            "A",
        ])
        .output()
        .expect("dig runs (Debian's dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn names_of(machine: &Value) -> Vec<String> {
    machine["dns_names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn get(tenant: &Tenant, name: &str) -> Value {
    tenant.json(&["instance", "get", "-j", name]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_get_shows_dns_names_once_the_account_has_cns_on_and_they_resolve() {
    let dc = Dc::start(Options {
        cns: true,
        ..Options::cloudapi_compute()
    })
    .await;
    let alice = dc.tenant("alice", "rsa").await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    let id = alice.create_instance("web0").await;

    // The flag is off: no dns_names at all (as Triton's, not an empty list).
    let machine = get(&alice, "web0").await;
    assert!(machine.get("dns_names").is_none(), "{machine}");

    alice
        .ok(&["account", "update", "triton_cns_enabled=true"])
        .await;
    let account = alice.json(&["account", "get", "-j"]).await;
    assert_eq!(account["triton_cns_enabled"], true, "{account}");

    let by_uuid = format!("{id}.inst.{}.{CNS_ZONE}", alice.uuid);
    let by_alias = format!("web0.inst.{}.{CNS_ZONE}", alice.uuid);
    eventually(
        "triton instance get shows the instance's names by uuid and alias",
        Duration::from_secs(20),
        || async {
            let names = names_of(&get(&alice, "web0").await);
            names.contains(&by_uuid) && names.contains(&by_alias)
        },
    )
    .await;
    let machine = get(&alice, "web0").await;
    let ip = machine["primaryIp"].as_str().unwrap().to_string();
    let dns = dc.cns_dns_addr();
    for name in names_of(&machine) {
        assert_eq!(dig(dns, &name), ip, "{name} at CNS ({dns})");
    }

    // A listing carries them too (one GetVmNames for the page).
    let listed = alice.instances().await;
    let web0 = listed.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert!(names_of(web0).contains(&by_uuid), "{web0}");

    // Off again: the field is gone.
    alice
        .ok(&["account", "update", "triton_cns_enabled=false"])
        .await;
    let machine = get(&alice, "web0").await;
    assert!(machine.get("dns_names").is_none(), "{machine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cns_configured_there_are_no_dns_names_and_no_error() {
    let dc = Dc::start(Options::cloudapi_compute()).await;
    let alice = dc.tenant("alice", "rsa").await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    alice.create_instance("web0").await;
    alice
        .ok(&["account", "update", "triton_cns_enabled=true"])
        .await;
    let machine = get(&alice, "web0").await;
    assert!(machine.get("dns_names").is_none(), "{machine}");
    let listed = alice.instances().await;
    assert!(
        listed.iter().all(|m| m.get("dns_names").is_none()),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_dns_labels_once_cns_is_on() {
    let dc = Dc::start(Options::cloudapi_compute()).await;
    let alice = dc.tenant("alice", "rsa").await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    let id = alice.create_instance("web0").await;
    let long = "a".repeat(64);
    // Without the flag a 64-character name is fine.
    alice.ok(&["instance", "rename", "web0", &long]).await;
    alice
        .ok(&["account", "update", "triton_cns_enabled=true"])
        .await;
    alice
        .fails_saying(
            &["instance", "rename", &id, &"b".repeat(64)],
            "cannot be longer than 63 characters, because you have triton_cns_enabled",
        )
        .await;
}
