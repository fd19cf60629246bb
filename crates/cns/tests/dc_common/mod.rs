//! What the tests (and the propagation bench) on a test datacenter with CNS share: the
//! datacenter with an `external` network and the account's CNS flag, VM changes through
//! VMAPI with their jobs waited for, and `dig` of names and whole zones.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use dc_testkit::{Dc, Options, Seed};
use triton_proto::cns::v1 as cns_pb;
use triton_proto::napi::v1 as napi_pb;
use triton_proto::ufds::v1 as ufds_pb;
use triton_proto::vmapi::v1 as pb;

pub const WAIT: Duration = Duration::from_secs(30);

/// A datacenter with sim nodes that have an `external` nic tag, the seeded account
/// with CNS on, and an `external` network (10.150.0.0/24) VMs get their addresses on.
pub async fn datacenter(cns: bool) -> (Dc, String) {
    datacenter_with(Options {
        cns,
        ..Options::default()
    })
    .await
}

pub async fn datacenter_with(options: Options) -> (Dc, String) {
    let dc = Dc::start(Options {
        cns: options.cns,
        configure_moray: options.configure_moray,
        configure_cns: options.configure_cns,
        seed: Some(Seed::default()),
        nic_tags: vec!["admin".into(), "external".into()],
        node_ram_mib: 1 << 20,
        ..Options::vmapi()
    })
    .await;
    let network = external_network(&dc, "10.150.0").await;
    set_cns_enabled(&dc, true).await;
    (dc, network)
}

pub async fn set_cns_enabled(dc: &Dc, on: bool) {
    dc.ufds()
        .update_account(ufds_pb::UpdateAccountRequest {
            account: dc.seed().owner.clone(),
            triton_cns_enabled: Some(on),
            ..Default::default()
        })
        .await
        .unwrap();
}

pub fn create_request(
    dc: &Dc,
    network: &str,
    alias: &str,
    services: Option<&str>,
) -> pb::CreateVmRequest {
    let mut r = dc.create_request(alias);
    r.networks = vec![pb::NetworkSpec {
        ipv4_uuid: network.into(),
        ..Default::default()
    }];
    if let Some(s) = services {
        r.tags.insert("triton.cns.services".into(), text(s));
    }
    r
}

/// Creates VM `alias` on `network` (with `triton.cns.services` when given) and waits
/// for its job to succeed: the VM's uuid.
pub async fn create(dc: &Dc, network: &str, alias: &str, services: Option<&str>) -> String {
    let request = create_request(dc, network, alias, services);
    let r = dc.vmapi().create_vm(request).await;
    job(dc, r).await.vm_uuid
}

pub fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    }
}

pub async fn job(dc: &Dc, r: Result<tonic::Response<pb::JobRef>, tonic::Status>) -> pb::JobRef {
    let r = r.unwrap().into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    r
}

pub async fn set_tags(dc: &Dc, uuid: &str, set: &[(&str, &str)], remove: &[&str]) {
    let r = dc
        .vmapi()
        .update_vm(pb::UpdateVmRequest {
            uuid: uuid.into(),
            set_tags: set.iter().map(|(k, v)| (k.to_string(), text(v))).collect(),
            remove_tags: remove.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    job(dc, r).await;
}

pub async fn action(dc: &Dc, which: &str, uuid: &str) {
    let req = pb::VmActionRequest {
        uuid: uuid.into(),
        ..Default::default()
    };
    let mut c = dc.vmapi();
    let r = match which {
        "start" => c.start_vm(req).await,
        _ => c.stop_vm(req).await,
    };
    job(dc, r).await;
}

pub async fn delete(dc: &Dc, uuid: &str) {
    let r = dc
        .vmapi()
        .delete_vm(pb::DeleteVmRequest {
            uuid: uuid.into(),
            owner_uuid: String::new(),
        })
        .await;
    job(dc, r).await;
}

/// `dig -p PORT @IP ARGS` of `addr`, its standard output.
pub async fn dig_at(addr: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .args(["-p", &addr.port().to_string(), &format!("@{}", addr.ip())])
        .args(args)
        .output()
        .await
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` of `name` and `kind` at `addr`, sorted.
pub async fn dig(addr: SocketAddr, name: &str, kind: &str) -> Vec<String> {
    let out = dig_at(addr, &["+short", "+time=2", "+tries=1", name, kind]).await;
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    lines
}

/// Every record of `zone` by AXFR from `addr`, as `name TYPE data` lines (no SOA),
/// names and targets without their trailing dots.
pub async fn axfr(addr: SocketAddr, zone: &str) -> BTreeSet<String> {
    let args = ["+nocmd", "+nostats", "+noall", "+answer", zone, "AXFR"];
    dig_at(addr, &args)
        .await
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[3] == "SOA" || l.starts_with(';') {
                return None;
            }
            let data: Vec<String> = f[4..]
                .iter()
                .map(|d| d.trim_matches('"').trim_end_matches('.').to_string())
                .collect();
            Some(format!(
                "{} {} {}",
                f[0].trim_end_matches('.').to_ascii_lowercase(),
                f[3],
                data.join(" ")
            ))
        })
        .collect()
}

pub async fn serial(dc: &Dc, zone: &str) -> Option<u32> {
    let zones = dc
        .cns()
        .list_zones(cns_pb::ListZonesRequest {})
        .await
        .ok()?
        .into_inner()
        .zones;
    zones.iter().find(|z| z.name == zone).map(|z| z.serial)
}

pub async fn names_of(dc: &Dc, uuid: &str) -> Vec<String> {
    let r = dc
        .cns()
        .get_vm_names(cns_pb::GetVmNamesRequest {
            uuids: vec![uuid.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = r.vms[0].names.clone();
    names.sort();
    names
}

/// The `external` nic tag and a network `<prefix>.0/24` on it (addresses from
/// `<prefix>.10` to `<prefix>.250`, gateway `<prefix>.1`); gives its uuid.
pub async fn external_network(dc: &Dc, prefix: &str) -> String {
    let mut napi = dc.napi();
    napi.create_nic_tag(napi_pb::CreateNicTagRequest {
        name: "external".into(),
        mtu: None,
    })
    .await
    .unwrap();
    napi.create_network(napi_pb::CreateNetworkRequest {
        name: "external".into(),
        subnet: format!("{prefix}.0/24"),
        provision_start_ip: format!("{prefix}.10"),
        provision_end_ip: format!("{prefix}.250"),
        nic_tag: "external".into(),
        gateway: Some(format!("{prefix}.1")),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .uuid
}
