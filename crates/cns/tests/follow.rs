//! CNS on a test datacenter: names appear, change and go as VMs, tags, accounts and
//! config change, asked with `dig` from CNS's DNS address; serials only grow across
//! restarts; and, killed and restarted during 500 VM changes, CNS ends with exactly the
//! zone a computation from VMAPI's state (written here from reference 1.4-1.7, not with
//! CNS's code) implies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dc_common;
mod dns_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use dc_common::{
    WAIT, action, axfr, create, datacenter, datacenter_with, delete, dig, dig_at, job, names_of,
    serial, set_cns_enabled, set_tags,
};
use dc_testkit::naming::CNS_ZONE;
use dc_testkit::{Dc, Options, eventually};
use dns_common::Knot;
use triton_proto::cns::v1 as cns_pb;
use triton_proto::ufds::v1 as ufds_pb;
use triton_proto::vmapi::v1 as pb;

#[tokio::test(flavor = "multi_thread")]
async fn names_follow_vms_tags_states_and_the_account_flag() {
    let (dc, network) = datacenter(true).await;
    let dns = dc.cns_dns_addr();
    let owner = dc.seed().owner.clone();
    let services = Some("web:80:priority=5:weight=20");
    let vm = dc.vm(&create(&dc, &network, "web-1", services).await).await;
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
    let uuid = create(&dc, &network, "Db.Primary", None).await;
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

/// The built `cns` binary (`CARGO_BIN_EXE_cns`), run from a config file on fixed
/// loopback ports (so a restart is at the same addresses, as Knot's primary), killed with
/// SIGKILL.
struct CnsProcess {
    child: tokio::process::Child,
    dns: SocketAddr,
    admin: SocketAddr,
}

/// The config file of the test's CNS process: the test kit's CNS config, written out,
/// with `127.0.0.3` (Knot) allowed transfers and NOTIFYs to `notify_port`.
fn cns_config_file(
    dir: &std::path::Path,
    dc: &Dc,
    dns: SocketAddr,
    admin: SocketAddr,
    notify_port: u16,
) -> std::path::PathBuf {
    let c = dc.cns_config();
    let text = format!(
        r#"listen = "{admin}"
moray_url = "{moray}"
dns_listen = "{dns}"
vmapi_url = "{vmapi}"
ufds_url = "{ufds}"
napi_url = "{napi}"
cnapi_url = "{cnapi}"
cmon_address = "{cmon}"
commit_window_ms = {window}
notify_port = {notify_port}
my_name = "{my_name}"
hostmaster = "{hostmaster}"
allow_transfer = ["{knot}"]
[forward_zones."{CNS_ZONE}"]
networks = ["*"]
"#,
        moray = c.service.moray_url,
        vmapi = c.vmapi_url,
        ufds = c.ufds_url,
        napi = c.napi_url,
        cnapi = c.cnapi_url,
        cmon = c.cmon_address,
        window = c.commit_window_ms,
        my_name = c.initial.my_name,
        hostmaster = c.initial.hostmaster,
        knot = dns_common::KNOT_IP,
    );
    let path = dir.join("cns.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl CnsProcess {
    async fn start(config: &std::path::Path, dns: SocketAddr, admin: SocketAddr) -> CnsProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cns"))
            .arg("-f")
            .arg(config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the cns binary starts");
        let cns = CnsProcess { child, dns, admin };
        eventually("the cns process serves its admin API", WAIT, || async {
            cns.serial().await.is_some() || cns.answers().await
        })
        .await;
        cns
    }

    async fn answers(&self) -> bool {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.admin))
            .unwrap()
            .connect()
            .await
            .is_ok()
    }

    /// SIGKILL, and waits for the process to be gone.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
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

/// A free loopback port for both UDP and TCP, and one for TCP.
async fn free_ports() -> (SocketAddr, SocketAddr) {
    let dns = cns::dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .local_addr();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    (dns, admin)
}

/// How many SOA records `dig IXFR=<from>` of the zone from `dns` answers: 2 for the
/// whole zone (AXFR-shaped), more for steps, 1 when current.
async fn ixfr_soas(dns: SocketAddr, zone: &str, from: u32) -> usize {
    dig_at(dns, &["+noall", "+answer", zone, &format!("IXFR={from}")])
        .await
        .lines()
        .filter(|l| l.contains("\tSOA\t"))
        .count()
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
    live.push(create(dc, network, &format!("vm-{n}"), services.as_deref()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_during_500_changes_it_loses_nothing_and_ends_with_vmapis_state() {
    dns_common::require("knotd");
    let (dc, network) = datacenter(false).await;
    let dir = tempfile::tempdir().unwrap();
    let (dns, admin) = free_ports().await;
    // Knot, a secondary of CNS's zone from the start (its first transfer is an AXFR).
    let knot = Knot::start(dns, &format!("{CNS_ZONE}.")).await;
    let config = cns_config_file(dir.path(), &dc, dns, admin, knot.addr.port());
    let mut cns = CnsProcess::start(&config, dns, admin).await;
    let mut live: Vec<String> = Vec::new();
    let mut serials = Vec::new();
    for n in 0..500 {
        change(&dc, &network, n, &mut live).await;
        if n == 150 || n == 350 {
            // SIGKILL while changes are being made (their jobs running, CNS committing),
            // then five more changes while it is down.
            let acknowledged = cns.serial().await.unwrap();
            let knot_had = knot.serial().await;
            let mut batch = Vec::new();
            let work = async {
                for m in 0..8 {
                    change(&dc, &network, 2000 + n + m, &mut live).await;
                }
            };
            let kill = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let last = cns.serial().await;
                cns.kill().await;
                last
            };
            let ((), last) = tokio::join!(work, kill);
            batch.push(last.unwrap_or(acknowledged));
            for m in 0..5 {
                change(&dc, &network, 1000 + n + m, &mut live).await;
            }
            cns = CnsProcess::start(&config, dns, admin).await;
            // Restored at the last serial it served (or later, once it rebuilt), never
            // before it.
            let restored = cns.serial().await.unwrap();
            assert!(
                restored >= batch[0] && batch[0] >= acknowledged,
                "serial after the kill {restored}, before it {batch:?} (acknowledged {acknowledged})"
            );
            serials.push(acknowledged);
            serials.extend(batch);
            // The secondary's IXFR from the serial it had still answers with steps.
            if let Some(k) = knot_had
                && k != restored
            {
                assert!(
                    ixfr_soas(dns, CNS_ZONE, k).await > 2,
                    "IXFR from Knot's serial {k} after the restart gives steps"
                );
            }
        }
        if n % 50 == 49 {
            eprintln!("{} of 500 changes, {} VMs live", n + 1, live.len());
        }
    }
    let (want_fwd, want_rev) = expected(&dc).await;
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
        serials.windows(2).all(|w| w[0] <= w[1]) && serials[0] < end,
        "serials only grow across the kills: {serials:?}"
    );

    // Knot followed across both kills by IXFR (its one AXFR was the first transfer)
    // and holds what CNS serves.
    eventually("Knot is at CNS's serial", WAIT, || async {
        knot.serial().await == Some(end)
    })
    .await;
    assert_eq!(knot.transfers("AXFR"), 1, "{}", knot.log());
    assert_eq!(axfr(knot.addr, CNS_ZONE).await, want_fwd);

    // A restart with nothing changed keeps the serial, and IXFR from an older serial
    // still answers with steps.
    let recent = serials[serials.len() - 2];
    cns.kill().await;
    let cns = CnsProcess::start(&config, dns, admin).await;
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
    if recent != end {
        assert!(
            ixfr_soas(cns.dns, CNS_ZONE, recent).await > 2,
            "IXFR from {recent}"
        );
    }
    cns.kill().await;
}

/// The kept steps' `from` serials equal `want`; if not, the failure shows the IXFR from
/// the oldest serial either list names, i.e. what each step (wanted or not) changed.
async fn assert_steps(dc: &Dc, dns: SocketAddr, want: &[u32]) {
    let got = stored_steps(dc).await;
    if got != want {
        let from = got.iter().chain(want).min().copied().unwrap_or(0);
        let diff = dig_at(
            dns,
            &["+noall", "+answer", CNS_ZONE, &format!("IXFR={from}")],
        )
        .await;
        panic!("kept steps from {got:?}, want {want:?}; IXFR={from}:\n{diff}");
    }
}

/// The `from` serials of the steps of the test zone kept in Moray, oldest first.
async fn stored_steps(dc: &Dc) -> Vec<u32> {
    let moray = moray_client::MorayClient::connect(&dc.moray_url())
        .await
        .unwrap();
    let zones = cns::store::Store::new(moray).load_zones().await.unwrap();
    let z = zones
        .iter()
        .find(|z| z.zone.origin.to_string() == format!("{CNS_ZONE}."))
        .unwrap();
    let mut froms: Vec<u32> = z.steps.iter().map(|(c, _)| c.from).collect();
    froms.extend(&z.orphans);
    froms
}

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_keeps_what_a_known_secondary_needs_within_its_bounds() {
    let (dc, network) = datacenter_with(Options {
        cns: true,
        configure_cns: Box::new(|c| {
            c.journal_keep = 2;
            c.journal_max = 5;
            c.journal_gc_secs = 1;
            c.initial.allow_transfer = vec!["127.0.0.3".into()];
        }),
        ..Options::default()
    })
    .await;
    let dns = dc.cns_dns_addr();
    let uuid = create(&dc, &network, "gc", None).await;
    let owner = dc.seed().owner.clone();
    let inst = format!("{uuid}.inst.{owner}.{CNS_ZONE}");
    eventually("the VM's names are served", WAIT, || async {
        !dig(dns, &inst, "A").await.is_empty()
    })
    .await;
    let mut serials = vec![];
    // One commit per tag change. The serial it is at is read once the zone serves
    // the change's own name, and read twice around that, so a commit still pending
    // from before cannot be taken for this one.
    let commit = async |n: usize, serials: &mut Vec<u32>| {
        let before = serial(&dc, CNS_ZONE).await;
        set_tags(
            &dc,
            &uuid,
            &[("triton.cns.services", &format!("g{n}"))],
            &[],
        )
        .await;
        let name = format!("g{n}.svc.{owner}.{CNS_ZONE}");
        let at = std::cell::Cell::new(None);
        eventually("the change's serial", WAIT, || async {
            let s = serial(&dc, CNS_ZONE).await;
            let served = !dig(dns, &name, "A").await.is_empty();
            at.set(s);
            served && s != before && serial(&dc, CNS_ZONE).await == s
        })
        .await;
        serials.push(at.get().unwrap());
    };
    let transfer_as_peer = async || {
        let out = dig_at(dns, &["-b", "127.0.0.3", CNS_ZONE, "AXFR"]).await;
        assert!(out.contains("SOA"));
        let peers = dc
            .cns()
            .list_peers(cns_pb::ListPeersRequest {})
            .await
            .unwrap()
            .into_inner()
            .peers;
        // (127.0.0.1, the test's own IXFRs, is listed too; the collection ignores it.)
        let peer = peers.iter().find(|p| p.address == "127.0.0.3");
        peer.unwrap_or_else(|| panic!("{peers:?}")).serials[CNS_ZONE]
    };
    commit(0, &mut serials).await;
    commit(1, &mut serials).await;
    // A secondary at 127.0.0.3 transfers the zone at serials[1]: CNS records it.
    let peer_at = transfer_as_peer().await;
    assert_eq!(peer_at, serials[1]);
    for n in 2..6 {
        commit(n, &mut serials).await;
    }
    // Four steps from the peer's serial, more than journal_keep (2): the collection
    // keeps them (the peer needs them) and drops the older ones.
    eventually(
        "the steps before the peer's serial are collected",
        WAIT,
        || async { stored_steps(&dc).await.first() == Some(&peer_at) },
    )
    .await;
    assert_steps(&dc, dns, &serials[1..5]).await;
    assert!(
        ixfr_soas(dns, CNS_ZONE, peer_at).await > 2,
        "IXFR from the peer's serial: steps"
    );
    assert_eq!(
        ixfr_soas(dns, CNS_ZONE, serials[0]).await,
        2,
        "IXFR from a serial older than the kept history: the whole zone"
    );

    // The peer forgotten (cnsadm peers -d): only the newest journal_keep steps stay.
    dc.cns()
        .delete_peer(cns_pb::DeletePeerRequest {
            address: "127.0.0.3".into(),
        })
        .await
        .unwrap();
    eventually("down to journal_keep steps", WAIT, || async {
        stored_steps(&dc).await.len() == 2
    })
    .await;
    assert_steps(&dc, dns, &serials[3..5]).await;
    assert!(ixfr_soas(dns, CNS_ZONE, serials[3]).await > 2);
    assert_eq!(ixfr_soas(dns, CNS_ZONE, serials[2]).await, 2);

    // journal_max (5) is a hard limit: the peer back at serials[5], six more steps
    // drop its oldest one, whatever it needs; it gets the whole zone.
    let peer_at = transfer_as_peer().await;
    assert_eq!(peer_at, serials[5]);
    for n in 6..11 {
        commit(n, &mut serials).await;
    }
    assert_steps(&dc, dns, &serials[5..10]).await;
    assert!(ixfr_soas(dns, CNS_ZONE, peer_at).await > 2);
    commit(11, &mut serials).await;
    assert_eq!(
        ixfr_soas(dns, CNS_ZONE, peer_at).await,
        2,
        "past journal_max"
    );
    assert!(stored_steps(&dc).await.len() <= 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_resync_answer_the_vms_follower_starts_again_from_the_snapshot() {
    // Moray keeps no change log: once VMAPI restarts, the follower's position is older
    // than what the feed keeps, and it is answered with a resync.
    let (mut dc, network) = datacenter_with(Options {
        cns: true,
        configure_moray: Box::new(dc_testkit::keep_no_change_log),
        ..Options::default()
    })
    .await;
    let dns = dc.cns_dns_addr();
    let owner = dc.seed().owner.clone();
    let before = create(&dc, &network, "before", None).await;
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
    create(&dc, &network, "after", None).await;
    let after = format!("after.inst.{owner}.{CNS_ZONE}");
    eventually("the follower is back after the resync", WAIT, || async {
        !dig(dns, &after, "A").await.is_empty() && dig(dns, &name, "A").await.is_empty()
    })
    .await;
}
