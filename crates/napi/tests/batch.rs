//! CreateNics against a real Moray: many NICs in one call and one transaction, each
//! with its own address, checked as CreateNic checks one; all made or none.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{ADMIN, TestNapi, assert_error, new_uuid, nic_on};
use dc_testkit::assert_refused;
use triton_proto::napi::v1 as proto;

fn batch(nics: Vec<proto::CreateNicRequest>) -> proto::CreateNicsRequest {
    proto::CreateNicsRequest { nics }
}

/// A server's admin NIC with MAC `mac` on `network`, as dhcpd asks for one.
fn admin_nic(network: &str, mac: &str) -> proto::CreateNicRequest {
    proto::CreateNicRequest {
        mac: Some(mac.into()),
        owner_uuid: ADMIN.into(),
        belongs_to_uuid: ADMIN.into(),
        belongs_to_type: "server".into(),
        network_uuid: Some(network.into()),
        ..Default::default()
    }
}

fn mac(i: usize) -> String {
    format!("02:bd:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)
}

#[tokio::test]
async fn a_batch_gets_distinct_addresses_next_to_the_existing_nics() {
    let (napi, net) = TestNapi::with_network("admin", "10.40.0", "admin").await;
    let mut ips = HashSet::new();
    for _ in 0..10 {
        let nic = napi.new_nic(&net.uuid).await;
        ips.insert(nic.ip);
    }
    // Given MACs (dhcpd's) and drawn ones (NAPI's OUI) in one call.
    let reqs: Vec<_> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                admin_nic(&net.uuid, &mac(i).to_uppercase())
            } else {
                nic_on(&net.uuid, &new_uuid())
            }
        })
        .collect();
    let made = napi
        .client()
        .create_nics(batch(reqs))
        .await
        .expect("CreateNics")
        .into_inner()
        .nics;
    assert_eq!(made.len(), 100);
    let mut macs = HashSet::new();
    for (i, nic) in made.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(nic.mac, mac(i), "entry {i}: the MAC asked for, in order");
            assert_eq!(nic.belongs_to_type, "server");
        } else {
            assert!(nic.mac.starts_with("90:b8:d0:"), "{}", nic.mac);
            assert_eq!(nic.belongs_to_type, "zone");
        }
        assert_eq!(nic.network_uuid, net.uuid);
        assert_eq!(nic.nic_tag, "admin");
        assert_eq!(nic.netmask, "255.255.255.0");
        assert_eq!(nic.gateway, "10.40.0.1");
        assert!(ips.insert(nic.ip.clone()), "{} handed out twice", nic.ip);
        assert!(macs.insert(nic.mac.clone()), "{} twice", nic.mac);
        // What every other reader sees is what CreateNic would have made.
        let got = napi
            .client()
            .get_nic(proto::GetNicRequest {
                mac: nic.mac.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&got, nic);
        let ip = napi.ip(&net.uuid, &nic.ip).await;
        assert!(!ip.free);
        assert_eq!(ip.mac, nic.mac);
    }
    assert_eq!(ips.len(), 110);
    assert_eq!(napi.nics_on(&net.uuid).await.len(), 110);
    assert_eq!(napi.dc.ips_of(&net.uuid).await.len(), 110);
}

#[tokio::test]
async fn a_network_without_room_for_the_whole_batch_makes_none() {
    let (napi, net) = TestNapi::with_network("admin", "10.41.0", "admin").await;
    // .1-.254, gateway .1: 253 addresses.
    let reqs = |from: usize, n: usize| {
        batch(
            (from..from + n)
                .map(|i| admin_nic(&net.uuid, &mac(i)))
                .collect(),
        )
    };
    let made = napi.client().create_nics(reqs(0, 200)).await.unwrap();
    assert_eq!(made.into_inner().nics.len(), 200);
    assert_error(
        napi.client().create_nics(reqs(200, 60)).await,
        "SubnetFull",
        &["no more free IPs", &net.uuid],
    );
    assert_eq!(
        napi.nics_on(&net.uuid).await.len(),
        200,
        "none of the 60 made"
    );
    assert_eq!(napi.dc.ips_of(&net.uuid).await.len(), 200);
    // The addresses it had picked went back: the 53 left fit exactly.
    let rest = napi.client().create_nics(reqs(200, 53)).await.unwrap();
    let ips: HashSet<_> = rest.into_inner().nics.into_iter().map(|n| n.ip).collect();
    assert_eq!(ips.len(), 53);
    assert_eq!(napi.dc.ips_of(&net.uuid).await.len(), 253);
    assert_error(
        napi.client().create_nics(reqs(253, 1)).await,
        "SubnetFull",
        &[&net.uuid],
    );
}

#[tokio::test]
async fn a_bad_entry_is_named_and_nothing_is_written() {
    let (napi, net) = TestNapi::with_network("admin", "10.42.0", "admin").await;
    let other = napi.network("other", "10.42.1", "admin").await;
    let pool = napi
        .client()
        .create_network_pool(proto::CreateNetworkPoolRequest {
            name: "pool".into(),
            networks: vec![other.uuid.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let existing = napi
        .client()
        .create_nic(admin_nic(&net.uuid, &mac(999)))
        .await
        .unwrap()
        .into_inner();
    let taken_ip = proto::CreateNicRequest {
        ip: Some(existing.ip.clone()),
        ..admin_nic(&net.uuid, &mac(3))
    };
    let on_pool = proto::CreateNicRequest {
        network_uuid: Some(pool.uuid.clone()),
        ..nic_on(&net.uuid, &new_uuid())
    };
    let primary = proto::CreateNicRequest {
        primary: true,
        ..nic_on(&net.uuid, &new_uuid())
    };
    let good = |i| admin_nic(&net.uuid, &mac(i));
    let cases: Vec<(&str, Vec<proto::CreateNicRequest>, &str, Vec<&str>)> = vec![
        (
            "a MAC that is not one",
            vec![good(0), admin_nic(&net.uuid, "02:bd:zz:00:00:01"), good(2)],
            "InvalidParameters",
            vec!["nics[1].mac", "not a valid MAC"],
        ),
        (
            "two bad entries",
            vec![
                proto::CreateNicRequest {
                    owner_uuid: "x".into(),
                    ..good(0)
                },
                good(1),
                proto::CreateNicRequest {
                    belongs_to_type: "toaster".into(),
                    ..good(2)
                },
            ],
            "InvalidParameters",
            vec!["nics[0].owner_uuid", "nics[2].belongs_to_type"],
        ),
        (
            "one MAC twice in the batch",
            vec![good(0), good(1), good(0)],
            "InvalidParameters",
            vec!["nics[2].mac", "nics[0]"],
        ),
        (
            "a MAC NAPI has",
            vec![good(0), good(1), good(999)],
            "InvalidParameters",
            vec!["nics[2].mac", "already exists"],
        ),
        (
            "an address in use",
            vec![good(0), good(1), good(2), taken_ip],
            "InvalidParameters",
            vec!["nics[3].ip", "already in use"],
        ),
        (
            "a network that does not exist",
            vec![good(0), admin_nic(&new_uuid(), &mac(1))],
            "InvalidParameters",
            vec!["nics[1].network_uuid", "does not exist"],
        ),
        (
            "a network pool",
            vec![good(0), on_pool],
            "InvalidParameters",
            vec!["nics[1].network_uuid", "CreateNic"],
        ),
        (
            "primary",
            vec![primary, good(1)],
            "InvalidParameters",
            vec!["nics[0].primary", "CreateNic"],
        ),
        ("no NIC", vec![], "InvalidParameters", vec!["nics"]),
        (
            "too many",
            (0..257).map(good).collect(),
            "InvalidParameters",
            vec!["nics", "at most 256"],
        ),
    ];
    for (what, nics, name, fragments) in cases {
        let result = napi.client().create_nics(batch(nics)).await;
        assert_refused(what, result, name, &fragments);
        let nics = napi.nics_on(&net.uuid).await;
        assert_eq!(nics.len(), 1, "{what}: only the NIC made before");
        assert_eq!(napi.dc.ips_of(&net.uuid).await.len(), 1, "{what}");
    }
    // The same entries, good, are made; the addresses skipped above are handed out.
    let made = napi
        .client()
        .create_nics(batch((0..3).map(good).collect()))
        .await
        .unwrap()
        .into_inner()
        .nics;
    let ips: Vec<_> = made.iter().map(|n| n.ip.as_str()).collect();
    assert_eq!(ips, ["10.42.0.3", "10.42.0.4", "10.42.0.5"]);
    assert_eq!(existing.ip, "10.42.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_and_single_creates_never_share_an_address() {
    let (napi, net) = TestNapi::with_network("admin", "10.43.0", "admin").await;
    let batches: Vec<_> = (0..4)
        .map(|b| {
            let mut client = napi.client();
            let reqs = (0..50)
                .map(|i| admin_nic(&net.uuid, &mac(b * 100 + i)))
                .collect();
            tokio::spawn(async move { client.create_nics(batch(reqs)).await })
        })
        .collect();
    let singles = napi.spawn_nics(&net.uuid, 20);
    let mut ips = HashSet::new();
    for b in batches {
        let nics = b.await.unwrap().expect("CreateNics").into_inner().nics;
        assert_eq!(nics.len(), 50);
        for n in nics {
            assert!(ips.insert(n.ip.clone()), "{} handed out twice", n.ip);
        }
    }
    for s in singles {
        let n = s.await.unwrap().expect("CreateNic").into_inner();
        assert!(ips.insert(n.ip.clone()), "{} handed out twice", n.ip);
    }
    assert_eq!(ips.len(), 220);
    let listed: HashSet<_> = napi
        .nics_on(&net.uuid)
        .await
        .into_iter()
        .map(|n| n.ip)
        .collect();
    assert_eq!(listed, ips);
}
