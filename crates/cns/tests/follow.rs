//! CNS on a test datacenter: names appear, change and go as VMs, tags, accounts and
//! config change, asked with `dig` from CNS's DNS address; serials only grow across
//! restarts; and, killed and restarted during 500 VM changes, CNS ends with exactly the
//! zone a computation from VMAPI's state (written here from reference 1.4-1.7, not with
//! CNS's code) implies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use dc_testkit::naming::CNS_ZONE;
use dc_testkit::{Dc, Options, Seed, eventually};
use tokio_util::sync::CancellationToken;
use triton_proto::cns::v1 as cns_pb;
use triton_proto::napi::v1 as napi_pb;
use triton_proto::ufds::v1 as ufds_pb;
use triton_proto::vmapi::v1 as pb;

const WAIT: Duration = Duration::from_secs(30);

/// A datacenter with sim nodes that have an `external` nic tag, the seeded account
/// with CNS on, and an `external` network (10.150.0.0/24) VMs get their addresses on.
async fn datacenter(cns: bool) -> (Dc, String) {
    datacenter_with(Options {
        cns,
        ..Options::default()
    })
    .await
}

async fn datacenter_with(options: Options) -> (Dc, String) {
    let dc = Dc::start(Options {
        cns: options.cns,
        configure_moray: options.configure_moray,
        seed: Some(Seed::default()),
        nic_tags: vec!["admin".into(), "external".into()],
        node_ram_mib: 1 << 20,
        ..Options::vmapi()
    })
    .await;
    let mut napi = dc.napi();
    napi.create_nic_tag(napi_pb::CreateNicTagRequest {
        name: "external".into(),
        mtu: None,
    })
    .await
    .unwrap();
    let network = napi
        .create_network(napi_pb::CreateNetworkRequest {
            name: "external".into(),
            subnet: "10.150.0.0/24".into(),
            provision_start_ip: "10.150.0.10".into(),
            provision_end_ip: "10.150.0.250".into(),
            nic_tag: "external".into(),
            gateway: Some("10.150.0.1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    set_cns_enabled(&dc, true).await;
    (dc, network.uuid)
}

async fn set_cns_enabled(dc: &Dc, on: bool) {
    dc.ufds()
        .update_account(ufds_pb::UpdateAccountRequest {
            account: dc.seed().owner.clone(),
            triton_cns_enabled: Some(on),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn create_request(
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

fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    }
}

async fn job(dc: &Dc, r: Result<tonic::Response<pb::JobRef>, tonic::Status>) -> pb::JobRef {
    let r = r.unwrap().into_inner();
    let job = dc.wait_job(&r.job_uuid).await;
    assert_eq!(job.execution, "succeeded", "{job:?}");
    r
}

async fn set_tags(dc: &Dc, uuid: &str, set: &[(&str, &str)], remove: &[&str]) {
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

async fn action(dc: &Dc, which: &str, uuid: &str) {
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

async fn delete(dc: &Dc, uuid: &str) {
    let r = dc
        .vmapi()
        .delete_vm(pb::DeleteVmRequest {
            uuid: uuid.into(),
            owner_uuid: String::new(),
        })
        .await;
    job(dc, r).await;
}

/// `dig +short` of `name` and `kind` at `addr`, sorted.
async fn dig(addr: SocketAddr, name: &str, kind: &str) -> Vec<String> {
    let out = tokio::process::Command::new("dig")
        .args([
            "+short",
            "+time=2",
            "+tries=1",
            "-p",
            &addr.port().to_string(),
            &format!("@{}", addr.ip()),
            name,
            kind,
        ])
        .output()
        .await
        .expect("dig runs");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    lines
}

/// Every record of `zone` by AXFR from `addr`, as `name TYPE data` lines (no SOA),
/// names and targets without their trailing dots.
async fn axfr(addr: SocketAddr, zone: &str) -> BTreeSet<String> {
    let out = tokio::process::Command::new("dig")
        .args([
            "+nocmd",
            "+nostats",
            "+noall",
            "+answer",
            "-p",
            &addr.port().to_string(),
            &format!("@{}", addr.ip()),
            zone,
            "AXFR",
        ])
        .output()
        .await
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout)
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

async fn serial(dc: &Dc, zone: &str) -> Option<u32> {
    let zones = dc
        .cns()
        .list_zones(cns_pb::ListZonesRequest {})
        .await
        .ok()?
        .into_inner()
        .zones;
    zones.iter().find(|z| z.name == zone).map(|z| z.serial)
}

async fn names_of(dc: &Dc, uuid: &str) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread")]
async fn names_follow_vms_tags_states_and_the_account_flag() {
    let (dc, network) = datacenter(true).await;
    let dns = dc.cns_dns_addr();
    let owner = dc.seed().owner.clone();
    let r = dc
        .vmapi()
        .create_vm(create_request(
            &dc,
            &network,
            "web-1",
            Some("web:80:priority=5:weight=20"),
        ))
        .await;
    let created = job(&dc, r).await;
    let vm = dc.vm(&created.vm_uuid).await;
    let ip = vm.nics[0].ip.clone();
    let uuid = vm.uuid.clone();
    let inst = format!("{uuid}.inst.{owner}.{CNS_ZONE}");
    let alias = format!("web-1.inst.{owner}.{CNS_ZONE}");
    let svc = format!("web.svc.{owner}.{CNS_ZONE}");

    eventually("the new VM's names answer its IP", WAIT, || async {
        dig(dns, &inst, "A").await == vec![ip.clone()]
            && dig(dns, &alias, "A").await == vec![ip.clone()]
            && dig(dns, &svc, "A").await == vec![ip.clone()]
    })
    .await;
    assert_eq!(dig(dns, &inst, "TXT").await, vec![uuid.clone()]);
    assert_eq!(
        dig(dns, &svc, "SRV").await,
        vec![format!("5 20 80 {alias}.")],
        "SRV honours the tag's priority and weight, target the friendliest name"
    );
    let octets: Vec<&str> = ip.split('.').collect();
    let ptr = format!(
        "{}.{}.{}.{}.in-addr.arpa",
        octets[3], octets[2], octets[1], octets[0]
    );
    assert_eq!(dig(dns, &ptr, "PTR").await, vec![format!("{alias}.")]);
    assert_eq!(
        dig(dns, &format!("{uuid}.cmon.{CNS_ZONE}"), "A").await,
        vec!["127.0.0.1".to_string(), format!("cmon.{CNS_ZONE}.")],
        "the CMON CNAME and CMon's address"
    );
    for server in &dc.servers {
        assert_eq!(
            dig(dns, &format!("{server}.cmon.{CNS_ZONE}"), "CNAME").await,
            vec![format!("cmon.{CNS_ZONE}.")],
            "every compute node has its CMON CNAME"
        );
    }
    assert_eq!(names_of(&dc, &uuid).await, {
        let mut v = vec![inst.clone(), alias.clone(), svc.clone()];
        v.sort();
        v
    });
    let first = serial(&dc, CNS_ZONE).await.unwrap();

    // Stopped: the service name has no address (only the verifying TXT), the instance
    // names stay.
    action(&dc, "stop", &uuid).await;
    eventually("a stopped VM leaves its service", WAIT, || async {
        dig(dns, &svc, "A").await.is_empty()
    })
    .await;
    assert_eq!(
        dig(dns, &svc, "TXT").await,
        vec![format!("verifying:{uuid}")]
    );
    assert!(dig(dns, &svc, "SRV").await.is_empty());
    assert_eq!(dig(dns, &inst, "A").await, vec![ip.clone()]);
    action(&dc, "start", &uuid).await;
    eventually("a started VM is back in its service", WAIT, || async {
        dig(dns, &svc, "A").await == vec![ip.clone()]
    })
    .await;

    // A new service tag; an invalid one is ignored (the instance stays).
    set_tags(&dc, &uuid, &[("triton.cns.services", "db:5432")], &[]).await;
    let db = format!("db.svc.{owner}.{CNS_ZONE}");
    eventually(
        "the new service answers, the old one is gone",
        WAIT,
        || async {
            dig(dns, &db, "SRV").await == vec![format!("0 10 5432 {alias}.")]
                && dig(dns, &svc, "A").await.is_empty()
        },
    )
    .await;
    set_tags(&dc, &uuid, &[("triton.cns.services", "bad_name:80")], &[]).await;
    eventually("an invalid services tag lists no service", WAIT, || async {
        dig(dns, &db, "A").await.is_empty()
    })
    .await;
    assert_eq!(dig(dns, &inst, "A").await, vec![ip.clone()]);

    // triton.cns.disable removes every name; removing the tag brings them back.
    set_tags(&dc, &uuid, &[("triton.cns.disable", "true")], &[]).await;
    eventually("a disabled VM has no names", WAIT, || async {
        dig(dns, &inst, "A").await.is_empty() && dig(dns, &alias, "TXT").await.is_empty()
    })
    .await;
    assert!(names_of(&dc, &uuid).await.is_empty());
    set_tags(&dc, &uuid, &[], &["triton.cns.disable"]).await;
    eventually("names back once the disable tag is gone", WAIT, || async {
        dig(dns, &inst, "A").await == vec![ip.clone()]
    })
    .await;

    // The account flag off removes the owner's names.
    set_cns_enabled(&dc, false).await;
    eventually("the account flag off removes the names", WAIT, || async {
        dig(dns, &alias, "A").await.is_empty()
    })
    .await;
    set_cns_enabled(&dc, true).await;
    eventually("the account flag on lists them again", WAIT, || async {
        dig(dns, &alias, "A").await == vec![ip.clone()]
    })
    .await;

    // Delete removes all.
    delete(&dc, &uuid).await;
    eventually("a deleted VM has no names", WAIT, || async {
        dig(dns, &inst, "A").await.is_empty()
            && dig(dns, &ptr, "PTR").await.is_empty()
            && dig(dns, &format!("{uuid}.cmon.{CNS_ZONE}"), "CNAME")
                .await
                .is_empty()
    })
    .await;
    assert!(serial(&dc, CNS_ZONE).await.unwrap() > first);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_updates_are_validated_kept_and_rebuild_the_zones() {
    let (dc, network) = datacenter(true).await;
    let dns = dc.cns_dns_addr();
    let owner = dc.seed().owner.clone();
    let r = dc
        .vmapi()
        .create_vm(create_request(&dc, &network, "Db.Primary", None))
        .await;
    let uuid = job(&dc, r).await.vm_uuid;
    let ip = dc.vm(&uuid).await.nics[0].ip.clone();
    let login = dc.seed().login.clone();

    // Bad fields are all named and nothing is written.
    let mut bad = dc
        .cns()
        .get_config(cns_pb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let before = bad.clone();
    bad.hostmaster = "no-at-sign".into();
    bad.allow_transfer = vec!["10.0.0.0/40".into()];
    let e = dc
        .cns()
        .update_config(cns_pb::UpdateConfigRequest { config: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("hostmaster"), "{}", e.message());
    assert!(e.message().contains("allow_transfer[0]"), "{}", e.message());
    let now = dc
        .cns()
        .get_config(cns_pb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now, before);

    // use_login and a second, mixed-case zone.
    let mut config = before.clone();
    config.use_login = true;
    config.forward_zones.insert(
        "Second.Example".into(),
        cns_pb::ForwardZone {
            networks: vec!["*".into()],
            peers: vec![],
            hidden_primary: false,
        },
    );
    let stored = dc
        .cns()
        .update_config(cns_pb::UpdateConfigRequest {
            config: Some(config),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stored.forward_zones.contains_key("second.example"));
    let by_login = format!("db-primary.inst.{login}.second.example");
    eventually("login names in the new zone", WAIT, || async {
        dig(dns, &by_login, "A").await == vec![ip.clone()]
            && dig(dns, &format!("{uuid}.inst.{login}.{CNS_ZONE}"), "A").await == vec![ip.clone()]
    })
    .await;
    assert!(names_of(&dc, &uuid).await.contains(&by_login));
    let suffixes = dc
        .cns()
        .suffixes_for_vm(cns_pb::SuffixesForVmRequest {
            owner_uuid: owner.clone(),
            networks: vec![network.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .suffixes;
    assert!(
        suffixes.contains(&format!("inst.{login}.second.example")),
        "{suffixes:?}"
    );

    // Taking the zone out stops serving it.
    let mut config = stored.clone();
    config.forward_zones.remove("second.example");
    dc.cns()
        .update_config(cns_pb::UpdateConfigRequest {
            config: Some(config),
        })
        .await
        .unwrap();
    eventually("a zone taken out is not served", WAIT, || async {
        serial(&dc, "second.example").await.is_none()
    })
    .await;
}

/// What VMAPI's, UFDS's and CNAPI's state imply for the forward zone and the reverse
/// zone of 10.150.0.0/24, from the reference's rules (CNS's config in these tests:
/// use_alias on, use_login off, one wildcard zone, CMon at 127.0.0.1).
async fn expected(dc: &Dc) -> (BTreeSet<String>, BTreeSet<String>) {
    let z = CNS_ZONE;
    let mut fwd = BTreeSet::new();
    let mut rev = BTreeSet::new();
    fwd.insert(format!("{z} NS ns.{z}"));
    fwd.insert(format!("cmon.{z} A 127.0.0.1"));
    rev.insert(format!("0.150.10.in-addr.arpa NS ns.{z}"));
    let servers = dc
        .cnapi()
        .list_servers(triton_proto::cnapi::v1::ListServersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .servers;
    let up: BTreeMap<String, bool> = servers
        .iter()
        .map(|s| (s.uuid.clone(), s.setup && s.status == "running"))
        .collect();
    for s in &servers {
        fwd.insert(format!("{}.cmon.{z} CNAME cmon.{z}", s.uuid));
    }
    let account = dc
        .ufds()
        .get_account(ufds_pb::GetAccountRequest {
            account: dc.seed().owner.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let vms = dc
        .vmapi()
        .list_vms(pb::ListVmsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .vms;
    for vm in vms {
        let tag = |k: &str| {
            vm.tags.get(k).and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                Some(prost_types::value::Kind::BoolValue(b)) => Some(b.to_string()),
                _ => None,
            })
        };
        let gone = vm.state == "destroyed" || vm.state == "failed" || !vm.destroyed.is_empty();
        let disabled = tag("triton.cns.disable").is_some_and(|v| v != "false");
        if gone || disabled || !account.triton_cns_enabled || !account.approved_for_provisioning {
            continue;
        }
        let u = &vm.owner_uuid;
        let v = &vm.uuid;
        let primary = if vm.alias.is_empty() {
            format!("{v}.inst.{u}")
        } else {
            format!("{}.inst.{u}", vm.alias.to_ascii_lowercase())
        };
        let running = vm.state == "running" && up.get(&vm.server_uuid).copied().unwrap_or(false);
        // The services of this test's tags: `name` or `name:port`, comma-separated.
        let services: Vec<(String, Option<u16>)> = tag("triton.cns.services")
            .map(|t| {
                t.split(',')
                    .map(|s| match s.split_once(':') {
                        Some((n, p)) => (n.to_string(), Some(p.parse().unwrap())),
                        None => (s.to_string(), None),
                    })
                    .collect()
            })
            .unwrap_or_default();
        fwd.insert(format!("{v}.cmon.{z} CNAME cmon.{z}"));
        for nic in &vm.nics {
            if nic.nic_tag == "admin" {
                continue;
            }
            let ip = &nic.ip;
            let mut names = vec![format!("{v}.inst.{u}")];
            if !vm.alias.is_empty() {
                names.push(format!("{}.inst.{u}", vm.alias.to_ascii_lowercase()));
            }
            for n in names {
                fwd.insert(format!("{n}.{z} A {ip}"));
                fwd.insert(format!("{n}.{z} TXT {v}"));
            }
            for (s, port) in &services {
                let name = format!("{s}.svc.{u}.{z}");
                if running {
                    fwd.insert(format!("{name} A {ip}"));
                    fwd.insert(format!("{name} TXT {v}"));
                    if let Some(p) = port {
                        fwd.insert(format!("{name} SRV 0 10 {p} {primary}.{z}"));
                    }
                } else {
                    fwd.insert(format!("{name} TXT verifying:{v}"));
                }
            }
            let last = ip.rsplit('.').next().unwrap();
            rev.insert(format!("{last}.0.150.10.in-addr.arpa PTR {primary}.{z}"));
        }
    }
    (fwd, rev)
}

fn diff(got: &BTreeSet<String>, want: &BTreeSet<String>) -> String {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    format!("extra: {extra:#?}\nmissing: {missing:#?}")
}

struct OwnCns {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<cns::Result<()>>,
    dns: SocketAddr,
    admin: SocketAddr,
}

async fn start_cns(config: &cns::Config) -> OwnCns {
    let shutdown = CancellationToken::new();
    let running = cns::start(config.clone(), shutdown.clone())
        .await
        .expect("CNS starts");
    OwnCns {
        shutdown,
        task: running.task,
        dns: running.dns_addr,
        admin: running.addr,
    }
}

impl OwnCns {
    async fn kill(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    async fn serial(&self) -> Option<u32> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.admin))
            .unwrap()
            .connect()
            .await
            .ok()?;
        let zones = triton_proto::cns::v1::cns_client::CnsClient::new(channel)
            .list_zones(cns_pb::ListZonesRequest {})
            .await
            .ok()?
            .into_inner()
            .zones;
        zones.iter().find(|z| z.name == CNS_ZONE).map(|z| z.serial)
    }
}

/// One of the test's VM changes, chosen by its number.
async fn change(dc: &Dc, network: &str, n: usize, live: &mut Vec<String>) {
    let pick = |live: &Vec<String>| live[(n * 7919) % live.len()].clone();
    match n % 10 {
        _ if live.len() < 8 => {}
        0 | 1 => {
            let uuid = pick(live);
            set_tags(
                dc,
                &uuid,
                &[(
                    "triton.cns.services",
                    &format!("s{}:{}", n % 3, 8000 + n % 5),
                )],
                &[],
            )
            .await;
            return;
        }
        2 => {
            let uuid = pick(live);
            action(
                dc,
                if dc.vm(&uuid).await.state == "running" {
                    "stop"
                } else {
                    "start"
                },
                &uuid,
            )
            .await;
            return;
        }
        3 => {
            let uuid = pick(live);
            let vm = dc.vm(&uuid).await;
            if vm.tags.contains_key("triton.cns.disable") {
                set_tags(dc, &uuid, &[], &["triton.cns.disable"]).await;
            } else {
                set_tags(dc, &uuid, &[("triton.cns.disable", "true")], &[]).await;
            }
            return;
        }
        4 => {
            let uuid = pick(live);
            let r = dc
                .vmapi()
                .update_vm(pb::UpdateVmRequest {
                    uuid: uuid.clone(),
                    alias: Some(format!("renamed-{n}")),
                    ..Default::default()
                })
                .await;
            job(dc, r).await;
            return;
        }
        5 if live.len() > 20 => {
            let uuid = live.remove((n * 31) % live.len());
            delete(dc, &uuid).await;
            return;
        }
        _ if live.len() >= 40 => {
            let uuid = live.remove((n * 13) % live.len());
            delete(dc, &uuid).await;
            return;
        }
        _ => {}
    }
    let services = n.is_multiple_of(4).then(|| format!("web:{}", 80 + n % 3));
    let r = dc
        .vmapi()
        .create_vm(create_request(
            dc,
            network,
            &format!("vm-{n}"),
            services.as_deref(),
        ))
        .await;
    live.push(job(dc, r).await.vm_uuid);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_and_restarted_during_500_changes_it_ends_with_vmapis_state() {
    let (dc, network) = datacenter(false).await;
    let config = dc.cns_config();
    let mut cns = start_cns(&config).await;
    let mut live: Vec<String> = Vec::new();
    let mut serials = Vec::new();
    let mut recent = None;
    for n in 0..500 {
        change(&dc, &network, n, &mut live).await;
        if n == 150 || n == 350 {
            if let Some(s) = cns.serial().await {
                serials.push(s);
            }
            cns.kill().await;
            // Changes while CNS is down.
            for m in 0..5 {
                change(&dc, &network, 1000 + n + m, &mut live).await;
            }
            cns = start_cns(&config).await;
        }
        if n == 490 {
            recent = cns.serial().await;
        }
        if n % 50 == 49 {
            eprintln!("{} of 500 changes, {} VMs live", n + 1, live.len());
        }
    }
    let (want_fwd, want_rev) = expected(&dc).await;
    let dns = cns.dns;
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let got = (
                axfr(dns, CNS_ZONE).await,
                axfr(dns, "0.150.10.in-addr.arpa").await,
            );
            if got.0 == want_fwd && got.1 == want_rev {
                return;
            }
            last = got;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "forward zone: {}\nreverse zone: {}",
        diff(&last.0, &want_fwd),
        diff(&last.1, &want_rev)
    );
    let end = cns.serial().await.unwrap();
    serials.push(end);
    assert!(
        serials.windows(2).all(|w| w[0] < w[1]),
        "serials only grow across restarts: {serials:?}"
    );

    // A restart with nothing changed keeps the serial, and IXFR from an older serial
    // still answers.
    cns.kill().await;
    let cns = start_cns(&config).await;
    eventually("the restarted CNS serves the zone", WAIT, || async {
        axfr(cns.dns, CNS_ZONE).await == want_fwd
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cns.serial().await,
        Some(end),
        "nothing changed, no new serial"
    );
    let out = tokio::process::Command::new("dig")
        .args([
            "+noall",
            "+answer",
            "-p",
            &cns.dns.port().to_string(),
            &format!("@{}", cns.dns.ip()),
            CNS_ZONE,
            &format!("IXFR={}", recent.unwrap()),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let soas = text.lines().filter(|l| l.contains("\tSOA\t")).count();
    assert!(
        soas > 2,
        "IXFR from {recent:?} gives steps, not AXFR:\n{text}"
    );
    cns.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_resync_answer_the_vms_follower_starts_again_from_the_snapshot() {
    // Moray keeps no change log: once VMAPI restarts, the follower's position is older
    // than what the feed keeps, and it is answered with a resync.
    let (mut dc, network) = datacenter_with(Options {
        cns: true,
        configure_moray: Box::new(|c| {
            c.change_retention_secs = 0;
            c.change_trim_interval_secs = 1;
        }),
        ..Options::default()
    })
    .await;
    let dns = dc.cns_dns_addr();
    let owner = dc.seed().owner.clone();
    let r = dc
        .vmapi()
        .create_vm(create_request(&dc, &network, "before", None))
        .await;
    let before = job(&dc, r).await.vm_uuid;
    let name = format!("before.inst.{owner}.{CNS_ZONE}");
    eventually("the first VM's name", WAIT, || async {
        !dig(dns, &name, "A").await.is_empty()
    })
    .await;
    let moray = moray_client::MorayClient::connect(&dc.moray_url())
        .await
        .unwrap();
    let position = moray
        .sql("SELECT coalesce(max(seq), 0) AS m FROM moray_changes", &[])
        .await
        .ok()
        .and_then(|rows| rows.first().and_then(|r| r["m"].as_u64()))
        .unwrap_or(1);
    dc.stop_vmapi().await;
    dc.change_log_trimmed_through(position).await;
    dc.start_vmapi().await;
    delete(&dc, &before).await;
    let r = dc
        .vmapi()
        .create_vm(create_request(&dc, &network, "after", None))
        .await;
    job(&dc, r).await;
    let after = format!("after.inst.{owner}.{CNS_ZONE}");
    eventually("the follower is back after the resync", WAIT, || async {
        !dig(dns, &after, "A").await.is_empty() && dig(dns, &name, "A").await.is_empty()
    })
    .await;
}
