//! The DAPI chain, filter by filter and scorer by scorer.

use super::*;
use serde_json::json;

const GIB_B: u64 = 1 << 30;

fn uuid(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

/// A set-up, running 16 GiB / 8 CPU / 1 TiB server providing admin and external.
fn server(n: u8) -> ServerRecord {
    ServerRecord {
        uuid: uuid(n),
        hostname: format!("cn{n}"),
        status: "running".into(),
        setup: true,
        sysinfo: json!({"MiB of Memory": "16384", "CPU Online Count": 8, "CPU Total Cores": 8}),
        ram: 16384,
        memory_total_bytes: 16 * GIB_B,
        reservation_ratio: 0.15,
        disk_pool_size_bytes: 1024 * GIB_B,
        nic_tags: vec!["admin".into(), "external".into()],
        current_platform: "20240101T000000Z".into(),
        ..Default::default()
    }
}

fn vm(uuid: &str, owner: &str, ram: u64, cpu_cap: Option<u32>) -> ServerVm {
    ServerVm {
        uuid: uuid.into(),
        owner_uuid: owner.into(),
        state: "running".into(),
        max_physical_memory: ram,
        quota: 10,
        cpu_cap,
        ..Default::default()
    }
}

fn with_vms(mut s: ServerRecord, vms: Vec<ServerVm>) -> ServerRecord {
    for v in vms {
        s.vms.insert(v.uuid.clone(), v);
    }
    s
}

const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

fn request(ram: u64) -> AllocationRequest {
    AllocationRequest {
        vm: VmRequest {
            vm_uuid: Uuid::new_v4(),
            owner_uuid: OWNER.into(),
            ram,
            quota: 10,
            ..Default::default()
        },
        nic_tags: vec!["admin".into()],
        ..Default::default()
    }
}

/// Only the RAM scorer, so results are deterministic and easy to reason about.
fn ram_only() -> AllocConfig {
    AllocConfig {
        weight_current_platform: 0.0,
        weight_next_reboot: 0.0,
        weight_uniform_random: 0.0,
        weight_unreserved_disk: 0.0,
        filter_large_servers: false,
        ..Default::default()
    }
}

fn alloc(servers: &[ServerRecord], req: &AllocationRequest) -> Result<Allocation, NoAllocation> {
    allocate(servers, &BTreeMap::new(), req, &ram_only(), 7)
}

fn reason(err: &NoAllocation, n: u8) -> &str {
    err.reasons
        .get(&uuid(n))
        .map(String::as_str)
        .unwrap_or("(kept)")
}

#[test]
fn each_hard_filter_drops_with_its_reason() {
    let mut servers: Vec<ServerRecord> = (1..=10).map(server).collect();
    servers[0].setup = false;
    servers[1].status = "unknown".into();
    servers[2].reserved = true;
    servers[3].headnode = true;
    servers[4].nic_tags = vec!["external".into()];
    servers[5].traits = json!({"ssd": true}).as_object().unwrap().clone();
    servers[6] = with_vms(server(7), vec![vm("big", "other", 13_000, None)]);
    servers[7].sysinfo = Value::Null;
    servers[8].disk_pool_size_bytes = GIB_B;
    // servers[9] (cn10) is the only good one.
    let req = request(1024);
    let ok = alloc(&servers, &req).expect("cn10 fits");
    assert_eq!(ok.server, uuid(10));

    servers.truncate(9);
    let err = alloc(&servers, &req).unwrap_err();
    assert_eq!(reason(&err, 1), "server is not set up");
    assert_eq!(reason(&err, 2), "server status is unknown");
    assert_eq!(reason(&err, 3), "server is reserved");
    assert_eq!(reason(&err, 4), "server is a headnode");
    assert_eq!(reason(&err, 5), "server does not provide nic tag admin");
    assert!(reason(&err, 6).contains("traits"), "{}", reason(&err, 6));
    assert!(
        reason(&err, 7).contains("unreserved RAM"),
        "{}",
        reason(&err, 7)
    );
    assert_eq!(reason(&err, 8), "server has no sysinfo");
    assert!(
        reason(&err, 9).contains("unreserved disk"),
        "{}",
        reason(&err, 9)
    );
    let text = err.to_string();
    assert!(
        text.starts_with("No compute resources available: "),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: server is reserved", uuid(3))),
        "{text}"
    );
    // The steps say what each step left.
    let setup = err
        .steps
        .iter()
        .find(|s| s.step == "hard-filter-setup")
        .unwrap();
    assert_eq!(setup.remaining.len(), 8);
    assert!(setup.reasons.contains_key(&uuid(1).to_string()));
}

#[test]
fn no_servers_at_all_is_no_allocatable_servers() {
    let err = alloc(&[], &request(1024)).unwrap_err();
    assert!(err.reasons.is_empty());
    assert_eq!(
        err.to_string(),
        "No compute resources available: no servers to choose from"
    );
}

#[test]
fn nic_tag_alternatives_need_one_of_each_set() {
    let servers = vec![server(1)];
    let mut req = request(1024);
    req.nic_tag_requirements = vec![vec!["external".into(), "sdc_underlay".into()]];
    assert!(alloc(&servers, &req).is_ok());
    req.nic_tag_requirements = vec![vec!["sdc_underlay".into(), "storage".into()]];
    let err = alloc(&servers, &req).unwrap_err();
    assert_eq!(
        reason(&err, 1),
        "server provides none of nic tags sdc_underlay, storage"
    );
}

#[test]
fn trait_matching_follows_dapi() {
    let m = |v: Value| v.as_object().unwrap().clone();
    let empty = Map::new();
    // No traits requested: only traitless servers.
    assert!(traits_mismatch(&empty, &empty).is_none());
    assert!(traits_mismatch(&empty, &m(json!({"ssd": true}))).is_some());
    // bool/bool, string/string.
    assert!(traits_mismatch(&m(json!({"ssd": true})), &m(json!({"ssd": true}))).is_none());
    assert!(traits_mismatch(&m(json!({"ssd": true})), &m(json!({"ssd": false}))).is_some());
    assert!(traits_mismatch(&m(json!({"hw": "a"})), &m(json!({"hw": "a"}))).is_none());
    // string against array, array against string, array against array.
    assert!(traits_mismatch(&m(json!({"hw": "a"})), &m(json!({"hw": ["a", "b"]}))).is_none());
    assert!(traits_mismatch(&m(json!({"hw": ["x", "b"]})), &m(json!({"hw": "b"}))).is_none());
    assert!(
        traits_mismatch(&m(json!({"hw": ["x", "b"]})), &m(json!({"hw": ["b", "c"]}))).is_none()
    );
    assert!(traits_mismatch(&m(json!({"hw": ["x"]})), &m(json!({"hw": ["b", "c"]}))).is_some());
    // Exactly as many keys.
    assert!(
        traits_mismatch(
            &m(json!({"ssd": true})),
            &m(json!({"ssd": true, "gpu": true}))
        )
        .is_some()
    );

    // The VM's traits replace the package's; the image's are merged on top and win.
    let mut req = request(1024);
    req.package = Some(PackageRequest {
        traits: Some(m(json!({"customer": "acme"}))),
        ..Default::default()
    });
    assert_eq!(requested_traits(&req), m(json!({"customer": "acme"})));
    req.vm.traits = Some(m(json!({"ssd": true})));
    req.image.traits = Some(m(json!({"ssd": false, "gpu": true})));
    assert_eq!(
        requested_traits(&req),
        m(json!({"ssd": false, "gpu": true}))
    );

    let mut dedicated = server(1);
    dedicated.traits = m(json!({"customer": ["acme", "globex"]}));
    let servers = vec![dedicated, server(2)];
    let mut req = request(1024);
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(2));
    req.vm.traits = Some(m(json!({"customer": "acme"})));
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(1));
}

#[test]
fn unreserved_figures_follow_the_formulas() {
    let mut s = with_vms(
        server(1),
        vec![
            vm("a", OWNER, 4096, Some(200)),
            vm("b", OWNER, 2048, Some(100)),
        ],
    );
    s.disk_pool_alloc_bytes = 100 * GIB_B;
    s.disk_system_used_bytes = 10 * GIB_B;
    let mut c = Cand {
        s: &s,
        vms: s.vms.values().cloned().collect(),
        ratios: Some(OverprovisionRatios {
            cpu: 4.0,
            ram: 1.0,
            disk: 1.0,
        }),
        unreserved_cpu: 0,
        unreserved_ram: 0,
        unreserved_disk: 0,
        score: 0.0,
    };
    calculate_unreserved(&mut c);
    // 800 − (200 + 100)/4 = 725.
    assert_eq!(c.unreserved_cpu, 725);
    // 16384 × 0.85 − 6144 = 7782.4 → 7782.
    assert_eq!(c.unreserved_ram, 7782);
    // min(0.94 × 1 TiB − 10 GiB − 20 GiB of quota, 0.94 × 1 TiB − 100 GiB) in MiB:
    // 0.94 × 1048576 = 985661.44; − 30720 = 954941.44; − 102400 = 883261.44 → 883261.
    assert_eq!(c.unreserved_disk, 883_261);
    // A failed VM holds nothing; an uncapped one takes every CPU.
    c.vms[0].state = "failed".into();
    calculate_unreserved(&mut c);
    assert_eq!(c.unreserved_ram, 16384 * 85 / 100 - 2048);
    c.vms[1].cpu_cap = None;
    calculate_unreserved(&mut c);
    assert_eq!(c.unreserved_cpu, 0);
}

#[test]
fn ram_counts_heartbeat_and_reserved_instances() {
    // 16384 × 0.85 = 13926.4 MiB unreserved; an 8 GiB VM leaves 5734.
    let servers = vec![with_vms(server(1), vec![vm("a", OWNER, 8192, None)])];
    assert!(alloc(&servers, &request(5734)).is_ok());
    let err = alloc(&servers, &request(5735)).unwrap_err();
    assert_eq!(
        reason(&err, 1),
        "server has 5734 MiB of unreserved RAM, the instance needs 5735"
    );
    // A reservation (allocated, not yet in heartbeats) counts like a VM.
    let first = request(4000);
    let reservations = BTreeMap::from([(uuid(1), vec![first.as_server_vm()])]);
    let second = request(4000);
    let err = allocate(&servers, &reservations, &second, &ram_only(), 1).unwrap_err();
    assert!(reason(&err, 1).contains("1734 MiB"), "{}", reason(&err, 1));
    // The same VM reserved and in heartbeats counts once.
    let mut seen = servers.clone();
    seen[0]
        .vms
        .insert(first.vm.vm_uuid.to_string(), first.as_server_vm());
    assert!(allocate(&seen, &reservations, &request(1700), &ram_only(), 1).is_ok());
}

#[test]
fn ram_overprovisioning_divides_the_request() {
    let servers = vec![with_vms(server(1), vec![vm("a", OWNER, 8192, None)])];
    let config = AllocConfig {
        overprovision_ratio_ram: 2.0,
        ..ram_only()
    };
    // With ram ratio 2 the VM holds 4096 and the request needs half: 9830 unreserved.
    let ok = allocate(&servers, &BTreeMap::new(), &request(19_000), &config, 1);
    assert!(ok.is_ok(), "{ok:?}");
    let mut kvm = request(19_000);
    kvm.vm.brand = "kvm".into();
    assert!(allocate(&servers, &BTreeMap::new(), &kvm, &config, 1).is_err());
}

#[test]
fn cpu_cap_and_capness() {
    // 8 CPUs = 800; capped VMs of 2400 hold 600 at ratio 4, leaving 200.
    let capped = with_vms(server(1), vec![vm("a", OWNER, 1024, Some(2400))]);
    let mut req = request(1024);
    req.vm.cpu_cap = Some(800);
    assert!(alloc(std::slice::from_ref(&capped), &req).is_ok());
    req.vm.cpu_cap = Some(804);
    let err = alloc(std::slice::from_ref(&capped), &req).unwrap_err();
    assert_eq!(
        reason(&err, 1),
        "server has 200 unreserved centi-CPUs, the instance needs 201"
    );
    // Capped and uncapped instances are not mixed.
    let uncapped = with_vms(server(2), vec![vm("b", OWNER, 1024, None)]);
    req.vm.cpu_cap = Some(100);
    let err = alloc(std::slice::from_ref(&uncapped), &req).unwrap_err();
    assert!(reason(&err, 2).contains("uncapped"), "{}", reason(&err, 2));
    req.vm.cpu_cap = None;
    let err = alloc(std::slice::from_ref(&capped), &req).unwrap_err();
    assert!(
        reason(&err, 1).contains("capped instances"),
        "{}",
        reason(&err, 1)
    );
    // The package's cap stands in for the VM's.
    req.package = Some(PackageRequest {
        cpu_cap: Some(100),
        ..Default::default()
    });
    assert_eq!(alloc(&[capped, uncapped], &req).unwrap().server, uuid(1));
}

#[test]
fn disk_vm_count_and_free_disk() {
    let mut req = request(1024);
    req.vm.quota = 2000;
    let err = alloc(&[server(1)], &req).unwrap_err();
    assert!(
        reason(&err, 1).contains("unreserved disk"),
        "{}",
        reason(&err, 1)
    );

    let crowded = with_vms(
        server(2),
        (0..3)
            .map(|i| vm(&format!("v{i}"), OWNER, 64, None))
            .collect(),
    );
    let config = AllocConfig {
        filter_vm_limit: 3,
        ..ram_only()
    };
    let err = allocate(&[crowded], &BTreeMap::new(), &request(64), &config, 1).unwrap_err();
    assert_eq!(reason(&err, 2), "server has 3 instances, the limit is 3");

    let mut full = server(3);
    full.disk_pool_alloc_bytes = 960 * GIB_B;
    let config = AllocConfig {
        minimum_free_disk: 10_240,
        ..ram_only()
    };
    let err = allocate(&[full], &BTreeMap::new(), &request(64), &config, 1).unwrap_err();
    assert!(reason(&err, 3).contains("free pool"), "{}", reason(&err, 3));
}

#[test]
fn headnodes_only_when_allowed_and_force_failure() {
    let mut head = server(1);
    head.headnode = true;
    let config = AllocConfig {
        filter_headnode: false,
        ..ram_only()
    };
    let req = request(64);
    assert!(
        allocate(
            std::slice::from_ref(&head),
            &BTreeMap::new(),
            &req,
            &config,
            1
        )
        .is_ok()
    );
    let mut forced = request(64);
    forced
        .vm
        .internal_metadata
        .insert("force_designation_failure".into(), "true".into());
    let err = alloc(&[server(2)], &forced).unwrap_err();
    assert_eq!(reason(&err, 2), "force_designation_failure is set");
}

#[test]
fn overprovision_ratios_must_match_when_not_overridden() {
    let mut s = server(1);
    s.overprovision_ratios = Some(OverprovisionRatios {
        cpu: 4.0,
        ram: 1.5,
        disk: 1.0,
    });
    let config = AllocConfig {
        disable_override_overprovisioning: true,
        ..ram_only()
    };
    let mut req = request(64);
    req.package = Some(PackageRequest {
        overprovision_ram: Some(1.0),
        ..Default::default()
    });
    let err = allocate(std::slice::from_ref(&s), &BTreeMap::new(), &req, &config, 1).unwrap_err();
    assert!(
        reason(&err, 1).contains("overprovision"),
        "{}",
        reason(&err, 1)
    );
    req.package.as_mut().unwrap().overprovision_ram = Some(1.5);
    assert!(allocate(&[s], &BTreeMap::new(), &req, &config, 1).is_ok());
}

#[test]
fn platform_versions_bound_the_server() {
    let mut req = request(64);
    req.image.min_platform = "20250101T000000Z".into();
    let err = alloc(&[server(1)], &req).unwrap_err();
    assert!(reason(&err, 1).contains("older"), "{}", reason(&err, 1));
    req.image.min_platform = "20230101T000000Z".into();
    req.image.max_platform = "20230601T000000Z".into();
    assert!(alloc(&[server(1)], &req).unwrap_err().reasons[&uuid(1)].contains("newer"));
}

#[test]
fn strict_and_soft_locality() {
    let web = with_vms(server(1), vec![vm("web", OWNER, 1024, None)]);
    let db = with_vms(server(2), vec![vm("db", OWNER, 1024, None)]);
    let empty = server(3);
    let servers = vec![web, db, empty];
    let mut req = request(1024);

    // Strict far: never next to db.
    req.vm.locality = far(&["db"], true);
    for seed in 0..20 {
        let a = allocate(
            &servers,
            &BTreeMap::new(),
            &req,
            &AllocConfig::default(),
            seed,
        )
        .unwrap();
        assert_ne!(a.server, uuid(2));
    }
    // Strict near: only next to web.
    req.vm.locality = near(&["web"], true);
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(1));
    // Strict near to VMs on two servers: nothing fits.
    req.vm.locality = near(&["web", "db"], true);
    let err = alloc(&servers, &req).unwrap_err();
    assert_eq!(reason(&err, 3), "exclude: inst==web,db");
    // Another owner's instance is not a hint.
    req.vm.locality = near(&["web"], true);
    req.vm.owner_uuid = "someone-else".into();
    assert!(alloc(&servers, &req).is_err());
    req.vm.owner_uuid = OWNER.into();

    // Soft near prefers web's server, soft far avoids db's, and neither empties the list.
    req.vm.locality = near(&["web"], false);
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(1));
    req.vm.locality = far(&["web", "db"], false);
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(3));
    req.vm.locality = near(&["missing"], false);
    assert!(alloc(&servers, &req).is_ok());
}

#[test]
fn affinity_rules_become_locality_hints() {
    let mut web0 = vm("w0", OWNER, 1024, None);
    web0.alias = "web0".into();
    let mut db0 = vm("d0", OWNER, 1024, None);
    db0.alias = "db0".into();
    db0.tags.insert("role".into(), "database".into());
    let servers = vec![
        with_vms(server(1), vec![web0]),
        with_vms(server(2), vec![db0]),
        server(3),
    ];
    let rule = |key: &str, op, value: &str, is_soft| AffinityRule {
        key: key.into(),
        op,
        value: value.into(),
        is_soft,
    };
    let mut req = request(1024);
    req.vm.affinity = vec![rule("instance", AffinityOp::Equal, "web*", false)];
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(1));
    req.vm.affinity = vec![rule("role", AffinityOp::Equal, "data*", false)];
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(2));
    req.vm.affinity = vec![
        rule("instance", AffinityOp::NotEqual, "web0", false),
        rule("role", AffinityOp::NotEqual, "database", false),
    ];
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(3));
    // A strict == that matches nothing fails, naming the rule; a soft one is ignored.
    req.vm.affinity = vec![rule("instance", AffinityOp::Equal, "cache*", false)];
    let err = alloc(&servers, &req).unwrap_err();
    assert_eq!(
        reason(&err, 3),
        "no instance matches affinity rule instance==cache*"
    );
    req.vm.affinity = vec![rule("instance", AffinityOp::Equal, "cache*", true)];
    assert!(alloc(&servers, &req).is_ok());
    // An instance allocated on server 3 a moment ago, not yet in its heartbeat (only a
    // reservation), is kept apart from by its uuid.
    let just_made = request(1024);
    let reservations = BTreeMap::from([(uuid(3), vec![just_made.as_server_vm()])]);
    req.vm.affinity = vec![
        rule("instance", AffinityOp::NotEqual, "web0", false),
        rule("role", AffinityOp::NotEqual, "database", false),
        rule(
            "instance",
            AffinityOp::NotEqual,
            &just_made.vm.vm_uuid.to_string(),
            false,
        ),
    ];
    let err = allocate(&servers, &reservations, &req, &ram_only(), 1).unwrap_err();
    assert!(
        reason(&err, 3).contains("exclude: inst!="),
        "{}",
        reason(&err, 3)
    );
    assert!(glob("web*", "web0") && glob("*b0", "web0") && glob("w*0", "web0"));
    assert!(!glob("web", "web0") && !glob("x*", "web0"));
}

#[test]
fn reservoir_servers_are_used_last() {
    let mut reservoir = server(1);
    reservoir.reservoir = true;
    let busy = with_vms(server(2), vec![vm("a", OWNER, 8192, None)]);
    // The reservoir server has more free RAM but is set aside while another fits.
    assert_eq!(
        alloc(&[reservoir.clone(), busy.clone()], &request(1024))
            .unwrap()
            .server,
        uuid(2)
    );
    // When only the reservoir fits, it is used.
    assert_eq!(
        alloc(&[reservoir, busy], &request(8192)).unwrap().server,
        uuid(1)
    );
}

/// Servers 1 to `n`, server `i + 1` with one instance of `i` times `step` MiB.
fn filled(n: u8, step: u64) -> Vec<ServerRecord> {
    (0..n)
        .map(|i| {
            with_vms(
                server(i + 1),
                vec![vm(&format!("v{i}"), OWNER, u64::from(i) * step, None)],
            )
        })
        .collect()
}

#[test]
fn the_emptiest_servers_are_kept_for_large_instances() {
    // Ten servers with 0..9 GiB in use: 15 % (one) of the emptiest is set aside.
    let servers = filled(10, 1024);
    let config = AllocConfig {
        filter_large_servers: true,
        ..ram_only()
    };
    let a = allocate(&servers, &BTreeMap::new(), &request(1024), &config, 3).unwrap();
    // The RAM scorer prefers the emptiest remaining one: 1 GiB in use.
    assert_eq!(a.server, uuid(2));
    // A large instance only the emptiest can take still gets it (or-identity).
    let big = allocate(&servers, &BTreeMap::new(), &request(13_000), &config, 3).unwrap();
    assert_eq!(big.server, uuid(1));
}

#[test]
fn scoring_spreads_by_default_and_packs_with_min_ram() {
    let servers = filled(4, 2048);
    assert_eq!(alloc(&servers, &request(1024)).unwrap().server, uuid(1));
    let mut pack = request(1024);
    pack.package = Some(PackageRequest {
        alloc_server_spread: "min-ram".into(),
        ..Default::default()
    });
    assert_eq!(alloc(&servers, &pack).unwrap().server, uuid(4));
    let steps = alloc(&servers, &request(1024)).unwrap().steps;
    let ram = steps
        .iter()
        .find(|s| s.step == "score-unreserved-ram")
        .unwrap();
    assert_eq!(
        ram.reasons[&uuid(1).to_string()],
        "increased score by 2.000"
    );
    assert_eq!(
        ram.reasons[&uuid(4).to_string()],
        "increased score by 0.000"
    );
}

/// A locality hint: place next to the instances `names`.
fn near(names: &[&str], strict: bool) -> Option<Locality> {
    Some(Locality {
        near: names.iter().map(|n| n.to_string()).collect(),
        strict,
        ..Default::default()
    })
}

/// A locality hint: place away from the instances `names`.
fn far(names: &[&str], strict: bool) -> Option<Locality> {
    Some(Locality {
        far: names.iter().map(|n| n.to_string()).collect(),
        strict,
        ..Default::default()
    })
}

/// [`ram_only`] without the unreserved-RAM score either, then `set`: the one score it
/// sets decides.
fn scored_only_by(set: impl FnOnce(&mut AllocConfig)) -> AllocConfig {
    let mut config = AllocConfig {
        weight_unreserved_ram: 0.0,
        ..ram_only()
    };
    set(&mut config);
    config
}

/// The server a request for 64 MiB lands on, with nothing reserved.
fn server_for_64(servers: &[ServerRecord], config: &AllocConfig, seed: u64) -> Uuid {
    allocate(servers, &BTreeMap::new(), &request(64), config, seed)
        .unwrap()
        .server
}

#[test]
fn owner_spread_and_platform_and_reboot_scores() {
    let config = scored_only_by(|c| c.weight_num_owner_zones = 1.0);
    let mine = with_vms(server(1), vec![vm("a", OWNER, 64, None)]);
    let other = with_vms(server(2), vec![vm("b", "other", 64, None)]);
    assert_eq!(
        server_for_64(&[mine.clone(), other.clone()], &config, 1),
        uuid(2)
    );

    let newer = ServerRecord {
        current_platform: "20250101T000000Z".into(),
        ..server(3)
    };
    let config = scored_only_by(|c| c.weight_current_platform = 1.0);
    assert_eq!(server_for_64(&[newer, server(4)], &config, 5), uuid(3));

    let rebooting = ServerRecord {
        next_reboot: "2025-01-01T00:00:00Z".into(),
        ..server(5)
    };
    let config = scored_only_by(|c| c.weight_next_reboot = 0.5);
    assert_eq!(server_for_64(&[server(6), rebooting], &config, 5), uuid(6));
}

#[test]
fn chunks_are_searched_until_one_fits_and_seeds_are_deterministic() {
    // 120 servers, only one with room: it is found whatever chunk it lands in.
    let mut servers: Vec<ServerRecord> = (1..=120u8)
        .map(|i| with_vms(server(i), vec![vm(&format!("v{i}"), OWNER, 13_000, None)]))
        .collect();
    servers[77].vms.clear();
    for seed in 0..5 {
        let a = allocate(
            &servers,
            &BTreeMap::new(),
            &request(4096),
            &AllocConfig::default(),
            seed,
        );
        assert_eq!(a.unwrap().server, uuid(78));
    }
    // Equal servers: the choice depends on the seed alone.
    let same: Vec<ServerRecord> = (1..=5).map(server).collect();
    let pick = |seed| server_for_64(&same, &AllocConfig::default(), seed);
    assert_eq!(pick(11), pick(11));
    let distinct: BTreeSet<Uuid> = (0..40).map(pick).collect();
    assert!(
        distinct.len() > 1,
        "random tie-breaking spreads: {distinct:?}"
    );
}

#[test]
fn only_the_named_servers_are_candidates() {
    let mut req = request(64);
    req.servers = vec![uuid(2)];
    let servers = vec![server(1), server(2)];
    assert_eq!(alloc(&servers, &req).unwrap().server, uuid(2));
}
