//! `cargo bench -p cns --bench rebuild`: what one rebuild of the zones costs at
//! `CNS_BENCH_VMS` (10000) VMs, the work the builder does on every commit window with a
//! change (`app.rs`): the naming rules over the followers' tables (`build::build`), the
//! records made DNS records and a zone (`Zone::with_records`), and the difference to the
//! served zone (`Change::between`, the IXFR step). Moray's write of a changed zone is not
//! included (it is one batch of the zone and its step).
//!
//! The followers' tables: 10000 running VMs of 100 accounts with CNS on, on 10 compute
//! nodes, each with one NIC on a 10.0.0.0/8 network, an alias, and a
//! `triton.cns.services` tag on every fourth. Between two rebuilds one VM's tag changes.
//! `CNS_BENCH_ROUNDS` (10) rebuilds are timed; memory is the process's resident set
//! (VmRSS) and its peak (VmHWM) from /proc/self/status.

// Benches fail by panicking, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

triton_common::global_allocator!();

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use cns::build::{self, Cmon, Inputs, Server};
use cns::config::Settings;
use cns::model;
use cns::names::{Network, Nic, Owner, TagValue, Vm};
use cns::zone::{Change, SoaFields, Zone};
use dc_testkit::bench::env_or;

fn uuid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012x}")
}

/// `n` records of `kind`, keyed by their uuid; `make` is given the uuid and the index.
fn table<V>(kind: u32, n: usize, make: impl Fn(String, usize) -> V) -> BTreeMap<String, V> {
    (0..n)
        .map(|i| (uuid(kind, i), make(uuid(kind, i), i)))
        .collect()
}

fn inputs(vms: usize) -> Inputs {
    let network = uuid(3, 0);
    let networks = table(3, 1, |uuid, _| Network {
        uuid,
        name: "external".into(),
        ..Network::default()
    });
    let servers = table(2, 10, |uuid, s| Server {
        uuid,
        hostname: format!("cn{s}"),
        setup: true,
        status: "running".into(),
        heartbeat: true,
        last_boot_ms: Some(0),
    });
    let owners = table(1, 100, |uuid, a| Owner {
        uuid,
        login: format!("user{a}"),
        triton_cns_enabled: true,
        approved_for_provisioning: true,
    });
    let vms = table(4, vms, |id, i| {
        let mut tags = BTreeMap::new();
        if i % 4 == 0 {
            tags.insert(
                "triton.cns.services".to_string(),
                TagValue::Text(format!("web{}:80", i % 10)),
            );
        }
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 10)) + i as u32);
        Vm {
            uuid: id,
            alias: format!("vm-{i}"),
            owner_uuid: uuid(1, i % 100),
            state: "running".into(),
            destroyed: false,
            server_uuid: uuid(2, i % 10),
            tags,
            customer_metadata: BTreeMap::new(),
            nics: vec![Nic {
                network_uuid: network.clone(),
                ip: ip.to_string(),
                nic_tag: "external".into(),
                vlan_id: 0,
            }],
        }
    });
    Inputs {
        networks,
        servers,
        owners,
        vms,
        ..Inputs::default()
    }
}

/// One rebuild as the builder does it: every zone built, made DNS records, and
/// compared with the served one. Gives the zones and how many records changed.
fn rebuild(
    settings: &Settings,
    cmon: &Cmon,
    inputs: &Inputs,
    served: &BTreeMap<String, Zone>,
) -> (BTreeMap<String, Zone>, usize) {
    let built = build::build(settings, cmon, inputs, SystemTime::now());
    let mut zones = BTreeMap::new();
    let mut changed = 0;
    for (name, z) in built.zones {
        let origin = model::name(&name).unwrap();
        let soa = SoaFields {
            mname: model::name(&z.mname).unwrap(),
            rname: model::name(&z.rname).unwrap(),
        };
        let records: Vec<_> = z
            .records
            .iter()
            .filter_map(|(owner, data)| model::to_record(owner, data).ok())
            .collect();
        let old = served.get(&name);
        let zone = Zone::new(origin, old.map_or(1, |o| o.serial + 1), soa).with_records(records);
        if let Some(old) = old {
            let step = Change::between(old, &zone);
            changed += step.removed.len() + step.added.len();
        }
        zones.insert(name, zone);
    }
    (zones, changed)
}

/// VmRSS and VmHWM of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let vms = env_or("CNS_BENCH_VMS", 10_000);
    let rounds = env_or("CNS_BENCH_ROUNDS", 10).max(1);
    let (rss_start, _) = memory();
    let mut inputs = inputs(vms);
    let (rss_inputs, _) = memory();
    let settings = Settings::default();
    let cmon = Cmon {
        label: "cmon".into(),
        address: Some("10.99.99.20".parse().unwrap()),
    };
    eprintln!("[cns rebuild] {vms} VMs; the first build (every record new)");
    let started = Instant::now();
    let (mut served, _) = rebuild(&settings, &cmon, &inputs, &BTreeMap::new());
    let first = started.elapsed();
    let (rss_served, _) = memory();
    let records: usize = served.values().map(|z| z.iter().count()).sum();

    let mut times = Vec::new();
    let mut changed = 0;
    for round in 0..rounds {
        let vm = inputs.vms.values_mut().nth(round * 7 % vms).unwrap();
        vm.tags.insert(
            "triton.cns.services".into(),
            TagValue::Text(format!("moved{round}:8080")),
        );
        let started = Instant::now();
        let (zones, n) = rebuild(&settings, &cmon, &inputs, &served);
        times.push(started.elapsed());
        changed += n;
        served = zones;
    }
    let (rss_end, hwm) = memory();
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    assert!(changed > 0, "the tag changes changed records");

    println!(
        "\n### CNS zone rebuild, {vms} VMs ({records} records in {} zones), {rounds} rebuilds of one changed VM\n",
        served.len()
    );
    println!("| what | value |");
    println!("|---|---:|");
    println!("| first build (every record new) | {:.0} ms |", ms(first));
    println!(
        "| rebuild after one VM's change, median | {:.0} ms |",
        ms(median)
    );
    println!("| rebuild after one VM's change, max | {:.0} ms |", ms(max));
    println!(
        "| resident memory: followers' tables | {:.1} MiB |",
        rss_inputs - rss_start
    );
    println!(
        "| resident memory: tables and the served zones | {:.1} MiB |",
        rss_served - rss_start
    );
    println!(
        "| resident memory after the rebuilds (process) | {:.1} MiB |",
        rss_end
    );
    println!("| peak resident memory (process, VmHWM) | {:.1} MiB |", hwm);
}
