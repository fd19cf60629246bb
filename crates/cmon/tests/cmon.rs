//! CMon against a test datacenter: CloudAPI, a sim compute node, tenants with SSH keys
//! who create instances with the real `triton` CLI, and client certificates made from
//! those keys (with rcgen here, and with `triton profile cmon-certgen`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use dc_testkit::cloudapi::Tenant;
use dc_testkit::monitor::{CMON_SUFFIX, CmonResponse};
use dc_testkit::{Dc, Options, eventually};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use triton_proto::ufds::v1 as ufds;

const JOYENT_CMON: [u64; 10] = [1, 3, 6, 1, 4, 1, 38678, 1, 4, 2];
const WAIT: Duration = Duration::from_secs(30);

/// A certificate and its key, PEM.
struct Identity {
    cert: String,
    key: String,
}

impl Identity {
    fn pair(&self) -> Option<(&str, &str)> {
        Some((&self.cert, &self.key))
    }
}

async fn start(auth_cache_secs: u64) -> Dc {
    let dc = Dc::start(Options {
        cmon: true,
        configure_cmon: Box::new(move |c| {
            c.auth_cache_secs = auth_cache_secs;
            // Long enough that a second scrape is always served from the cache.
            c.usage_cache_ms = 600_000;
        }),
        ..Options::cloudapi_compute()
    })
    .await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    dc
}

/// The tenant's SSH private key, as rcgen signs with it.
fn account_key(tenant: &Tenant) -> KeyPair {
    let p8 = tenant.home.path().join("key.p8");
    let out = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(&tenant.key_path)
        .arg("-out")
        .arg(&p8)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    KeyPair::from_pem(&std::fs::read_to_string(&p8).unwrap()).expect("the tenant's key")
}

/// sshpk's form of an MD5 fingerprint, as `cmon-certgen` writes it in the issuer CN.
fn sshpk_md5(colon_hex: &str) -> String {
    let bytes: Vec<u8> = colon_hex
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    format!(
        "MD5:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    )
}

/// Triton's older kind: self-signed by the SSH key, subject CN = `login`.
fn self_signed(login: &str, key: &KeyPair) -> Identity {
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, login);
    let cert = params.self_signed(key).unwrap();
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// What `cmon-certgen` makes: a fresh key, subject CN = `login`, issuer CN = `issuer`,
/// the joyentCmon purpose, valid from `from` to `to` (years), signed by `signer`.
fn cmon_cert(login: &str, issuer: &str, signer: &KeyPair, from: i32, to: i32) -> Identity {
    let fresh = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(DnType::CommonName, login);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::Other(JOYENT_CMON.to_vec()),
    ];
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let mut issuer_params = CertificateParams::new(vec![]).unwrap();
    issuer_params
        .distinguished_name
        .push(DnType::CommonName, issuer);
    let cert = params
        .signed_by(&fresh, &Issuer::new(issuer_params, signer))
        .unwrap();
    Identity {
        cert: cert.pem(),
        key: fresh.serialize_pem(),
    }
}

async fn get(dc: &Dc, id: Option<(&str, &str)>, host: &str, path: &str) -> CmonResponse {
    dc.cmon_client(id).await.get(host, path).await
}

/// Makes `tenant` a member of UFDS's `operators` group (`add`) or takes it out.
async fn set_operator(dc: &Dc, tenant: &Tenant, add: bool) {
    let request = ufds::GroupMemberRequest {
        group: "operators".into(),
        account: tenant.uuid.clone(),
    };
    let mut c = dc.ufds();
    let account = if add {
        c.add_group_member(request).await
    } else {
        c.remove_group_member(request).await
    }
    .expect("group membership changes")
    .into_inner();
    assert_eq!(account.groups.contains(&"operators".to_string()), add);
}

/// The compute nodes `/v1/gz/discover` lists to `id`.
async fn gz_discovered(dc: &Dc, id: Option<(&str, &str)>) -> Vec<String> {
    listed(dc, id, "/v1/gz/discover", "cns", "server_uuid").await
}

fn cmon_host() -> String {
    format!("cmon.{CMON_SUFFIX}")
}

fn vm_host(uuid: &str) -> String {
    format!("{uuid}.{CMON_SUFFIX}")
}

async fn discovered(dc: &Dc, id: Option<(&str, &str)>, query: &str) -> Vec<String> {
    let path = format!("/v1/discover{query}");
    listed(dc, id, &path, "containers", "vm_uuid").await
}

/// `field` of each entry of the `list` that `path` on CMon's own Host answers `id` (200).
async fn listed(
    dc: &Dc,
    id: Option<(&str, &str)>,
    path: &str,
    list: &str,
    field: &str,
) -> Vec<String> {
    let r = get(dc, id, &cmon_host(), path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].as_str().unwrap().to_string())
        .collect()
}

/// The error body restify sends: its code.
fn code(r: &CmonResponse) -> String {
    r.json()["code"].as_str().unwrap_or_default().to_string()
}

/// `promtool check metrics` on `text`: it must parse; the only lints allowed are about
/// the `_total` and `_count` suffixes of Triton's fixed names (counters without
/// `_total`, `*_count` counters, a `*_total` gauge).
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(1), "promtool: {said}\n{text}");
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("\"_total\" suffix") || line.contains("\"_count\" suffix"),
            "promtool: {line}\n{text}"
        );
    }
}

/// Each CPU's idle seconds (idle + iowait) in /proc/stat, in CPU order.
fn proc_stat_idle() -> Vec<f64> {
    let getconf = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    let hz: f64 = String::from_utf8(getconf.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let f: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap())
                .collect();
            (f[3] + f[4]) / hz
        })
        .collect()
}

/// The samples of `name` in a text answer: their labels (inside the braces) and values.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Metric name to type, from the `# TYPE` lines.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_discover_and_scrape_only_their_own_instances() {
    let dc = start(10).await;
    let alice = dc.tenant("alice", "ecdsa-256").await;
    let bob = dc.tenant("bob", "rsa").await;
    let opsy = dc.tenant("opsy", "ecdsa-256").await;
    set_operator(&dc, &opsy, true).await;
    let a1 = alice.create_instance("a1").await;
    let a2 = alice
        .create_instance_with("a2", &["-t", "triton.cmon.groups=web,db"], "g1-small")
        .await;
    let b1 = bob.create_instance("b1").await;

    let alice_key = account_key(&alice);
    let alice_old = self_signed("alice", &alice_key);
    let alice_new = cmon_cert(
        "alice",
        &sshpk_md5(&alice.fingerprint),
        &alice_key,
        2020,
        2099,
    );
    let bob_key = account_key(&bob);
    let bob_new = cmon_cert("bob", &sshpk_md5(&bob.fingerprint), &bob_key, 2020, 2099);
    let opsy_old = self_signed("opsy", &account_key(&opsy));

    // Both kinds of certificate find alice's instances, and only hers.
    let mine: BTreeSet<String> = [a1.clone(), a2.clone()].into();
    for id in [&alice_old, &alice_new] {
        eventually("alice's instances are discovered", WAIT, || async {
            discovered(&dc, id.pair(), "")
                .await
                .into_iter()
                .collect::<BTreeSet<_>>()
                == mine
        })
        .await;
    }
    assert_eq!(discovered(&dc, bob_new.pair(), "").await, vec![b1.clone()]);

    // The exact keys of Triton's answer, which Prometheus's triton SD reads.
    let r = get(&dc, alice_new.pair(), &cmon_host(), "/v1/discover").await;
    let container = r.json()["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vm_uuid"] == a1.as_str())
        .cloned()
        .unwrap();
    let keys: BTreeSet<&str> = container
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "cached_date",
            "groups",
            "server_uuid",
            "source",
            "vm_alias",
            "vm_brand",
            "vm_image_uuid",
            "vm_owner_uuid",
            "vm_state",
            "vm_uuid",
        ])
    );
    assert_eq!(container["vm_alias"], "a1");
    assert_eq!(container["vm_owner_uuid"], alice.uuid.as_str());
    assert_eq!(container["vm_state"], "running");
    assert_eq!(container["server_uuid"], dc.servers[0].to_string());

    // Groups: any of those asked; a bad one is 400.
    assert_eq!(
        discovered(&dc, alice_new.pair(), "?groups=db").await,
        vec![a2.clone()]
    );
    assert_eq!(
        discovered(&dc, alice_new.pair(), "?groups=nope,web").await,
        vec![a2.clone()]
    );
    assert!(
        discovered(&dc, alice_new.pair(), "?groups=nope")
            .await
            .is_empty()
    );
    let r = get(
        &dc,
        alice_new.pair(),
        &cmon_host(),
        "/v1/discover?groups=a;b",
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (400, "BadRequest".into()),
        "{}",
        r.body
    );

    // Her instance's metrics: Prometheus text with Triton's names and types.
    let r = get(&dc, alice_new.pair(), &vm_host(&a1), "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    promtool_accepts(&r.body);
    let t = types(&r.body);
    for (name, kind) in [
        ("cpu_user_usage", "counter"),
        ("cpu_sys_usage", "counter"),
        ("load_average", "gauge"),
        ("mem_agg_usage", "gauge"),
        ("mem_swap", "gauge"),
        ("mem_anon_alloc_fail", "counter"),
        ("tcp_active_open_count", "counter"),
        ("vfs_bytes_read_count", "counter"),
        ("zfs_used", "gauge"),
        ("time_of_day", "counter"),
    ] {
        assert_eq!(
            t.get(name).map(String::as_str),
            Some(kind),
            "{name}: {}",
            r.body
        );
    }
    // Each collector's block is led by Triton's meta-metrics; the first scrape asked
    // the node's agent.
    for collector in [
        "zone_misc",
        "memcap",
        "cpucap",
        "link",
        "tcp",
        "zone_vfs",
        "zfs",
        "time",
    ] {
        for (meta, value) in [("available_boolean", "1"), ("cached_boolean", "0")] {
            let line = format!("\n{collector}_metrics_{meta} {value}\n");
            assert!(r.body.contains(&line), "{line}: {}", r.body);
        }
        let timer = format!("{collector}_metrics_timer_seconds");
        assert_eq!(t.get(&timer).map(String::as_str), Some("gauge"), "{timer}");
    }
    // The instance's package caps its CPU: the cap and its counters are there.
    for (name, kind) in [
        ("cpu_wait_time", "counter"),
        ("cpucap_limit_percentage", "gauge"),
        ("cpucap_above_seconds_total", "counter"),
        ("tcp_listen_drop_count", "counter"),
        ("tcp_retransmit_timeout_drop_count", "counter"),
    ] {
        assert_eq!(t.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // The same through an old-style certificate, and with a Host in capitals: within
    // the usage cache time, from CMon's cache.
    let r = get(
        &dc,
        alice_old.pair(),
        &vm_host(&a1.to_uppercase()),
        "/metrics",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\nzone_misc_metrics_cached_boolean 1\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("\ntime_metrics_cached_boolean 0\n"),
        "{}",
        r.body
    );

    // Another account's instance, an unknown one, an unknown Host: 404, nothing named.
    for (id, host) in [
        (&bob_new, vm_host(&a1)),
        (&alice_new, vm_host(&b1)),
        (&alice_new, vm_host(&uuid::Uuid::new_v4().to_string())),
        (&alice_new, format!("www.{CMON_SUFFIX}")),
        (&alice_new, cmon_host()),
    ] {
        let r = get(&dc, id.pair(), &host, "/metrics").await;
        assert_eq!(
            (r.status, code(&r)),
            (404, "NotFound".into()),
            "{host}: {}",
            r.body
        );
        assert!(!r.body.contains(&a1) && !r.body.contains(&b1), "{}", r.body);
        assert!(
            !r.body.contains("alice") && !r.body.contains("bob"),
            "{}",
            r.body
        );
    }

    // No certificate: ping answers, nothing else does.
    for path in ["/_ping", "/v1/ping", "/v2/_ping"] {
        let r = get(&dc, None, "cmon", path).await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = get(&dc, None, &cmon_host(), "/v1/discover").await;
    assert_eq!(
        (r.status, code(&r)),
        (401, "Unauthorized".into()),
        "{}",
        r.body
    );
    let r = get(&dc, None, &vm_host(&a1), "/metrics").await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Refused certificates: expired, signed by a key not the account's, self-signed
    // by a stranger's key, an issuer that names no fingerprint, no subject CN.
    let stranger = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let expired = cmon_cert(
        "alice",
        &sshpk_md5(&alice.fingerprint),
        &alice_key,
        2000,
        2001,
    );
    let forged = cmon_cert(
        "alice",
        &sshpk_md5(&alice.fingerprint),
        &stranger,
        2020,
        2099,
    );
    let strangers = self_signed("alice", &stranger);
    let nameless_issuer = cmon_cert("alice", "alice-key", &alice_key, 2020, 2099);
    let no_cn = {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "alice");
        Identity {
            cert: params.self_signed(&alice_key).unwrap().pem(),
            key: alice_key.serialize_pem(),
        }
    };
    // Bob's key, but naming alice.
    let bob_as_alice = cmon_cert("alice", &sshpk_md5(&bob.fingerprint), &bob_key, 2020, 2099);
    for (what, id, says) in [
        ("expired", &expired, "expired"),
        ("forged", &forged, "not signed"),
        ("a stranger's", &strangers, "does not name a key"),
        ("no fingerprint issuer", &nameless_issuer, "issuer CN"),
        ("no subject CN", &no_cn, "no subject CN"),
        (
            "bob's key naming alice",
            &bob_as_alice,
            "does not name a key",
        ),
    ] {
        let r = get(&dc, id.pair(), &cmon_host(), "/v1/discover").await;
        assert_eq!(
            (r.status, code(&r)),
            (401, "Unauthorized".into()),
            "{what}: {}",
            r.body
        );
        assert!(
            r.json()["message"].as_str().unwrap().contains(says),
            "{what}: {}",
            r.body
        );
        assert!(
            !r.body.contains(&bob.uuid) && !r.body.contains(&alice.uuid),
            "{}",
            r.body
        );
    }

    // Compute nodes: operators discover and scrape them; tenants do not.
    let r = get(&dc, alice_new.pair(), &cmon_host(), "/v1/gz/discover").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({ "cns": [] }));
    let server = dc.servers[0].to_string();
    let r = get(&dc, alice_new.pair(), &vm_host(&server), "/metrics").await;
    assert_eq!(r.status, 404, "{}", r.body);
    eventually("the operator discovers the node", WAIT, || async {
        let r = get(&dc, opsy_old.pair(), &cmon_host(), "/v1/gz/discover").await;
        r.json()["cns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["server_uuid"] == server.as_str() && c["server_hostname"].is_string())
    })
    .await;
    let before = proc_stat_idle();
    let r = get(&dc, opsy_old.pair(), &vm_host(&server), "/metrics").await;
    let after = proc_stat_idle();
    assert_eq!(r.status, 200, "{}", r.body);
    promtool_accepts(&r.body);
    assert!(r.body.contains("\ninstances_running 3\n"), "{}", r.body);
    // The node's own numbers (its agent runs on this machine) are this machine's: each
    // CPU's idle time between /proc/stat's before and after the scrape, its memory
    // /proc/meminfo's.
    assert_eq!(
        samples(&r.body, "cpu_idle_seconds_total").len(),
        before.len(),
        "{}",
        r.body
    );
    for (cpu, (lo, hi)) in before.iter().zip(&after).enumerate() {
        let got = samples(&r.body, "cpu_idle_seconds_total")
            .into_iter()
            .find(|(labels, _)| *labels == format!("cpu_id=\"{cpu}\""))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("cpu {cpu}: {}", r.body));
        assert!(*lo <= got && got <= *hi, "cpu {cpu}: {lo} <= {got} <= {hi}");
    }
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        * 1024.0;
    assert_eq!(
        samples(&r.body, "mem_limit"),
        vec![(String::new(), mem_total)]
    );
    let load = samples(&r.body, "load_average");
    assert_eq!(load.len(), 1, "{}", r.body);
    for collector in ["cpu_util", "memory", "loadavg", "net", "zpool"] {
        let line = format!("\n{collector}_metrics_available_boolean 1\n");
        assert!(r.body.contains(&line), "{line}: {}", r.body);
    }
    assert!(
        !samples(&r.body, "zpool_size_bytes").is_empty(),
        "{}",
        r.body
    );
    // An operator is still not the owner of a tenant's instance.
    let r = get(&dc, opsy_old.pair(), &vm_host(&a1), "/metrics").await;
    assert_eq!(r.status, 404, "{}", r.body);
}

/// Operators are the members of UFDS's `operators` group, read with the account on each
/// authentication: a member discovers and scrapes compute nodes; a non-member gets an
/// empty list and 404; joining and leaving take effect within the cache time (2 s).
#[tokio::test(flavor = "multi_thread")]
async fn operators_are_the_members_of_the_ufds_operators_group() {
    let dc = start(2).await;
    let ops = dc.tenant("ops", "ecdsa-256").await;
    let id = self_signed("ops", &account_key(&ops));
    let server = dc.servers[0].to_string();
    let node_metrics = || async { get(&dc, id.pair(), &vm_host(&server), "/metrics").await };
    // CMon knows the node: another account, an operator from the start, sees it.
    let root = dc.tenant("root", "ecdsa-256").await;
    set_operator(&dc, &root, true).await;
    let root_id = self_signed("root", &account_key(&root));
    eventually("an operator discovers the node", WAIT, || async {
        gz_discovered(&dc, root_id.pair()).await == vec![server.clone()]
    })
    .await;

    // Not a member: no compute nodes, and a node's metrics are 404.
    assert_eq!(gz_discovered(&dc, id.pair()).await, Vec::<String>::new());
    let r = node_metrics().await;
    assert_eq!((r.status, code(&r)), (404, "NotFound".into()), "{}", r.body);

    // A member: the node is listed and scraped.
    set_operator(&dc, &ops, true).await;
    eventually("the new operator discovers the node", WAIT, || async {
        gz_discovered(&dc, id.pair()).await == vec![server.clone()]
    })
    .await;
    let r = node_metrics().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\ninstances_running "), "{}", r.body);

    // Taken out of the group: back to nothing.
    set_operator(&dc, &ops, false).await;
    eventually(
        "the former operator no longer sees the node",
        WAIT,
        || async { gz_discovered(&dc, id.pair()).await.is_empty() },
    )
    .await;
    let r = node_metrics().await;
    assert_eq!(r.status, 404, "{}", r.body);
}

/// The certificate and key `triton profile cmon-certgen` makes for `tenant` in `dir`.
async fn certgen(tenant: &Tenant, dir: &Path) -> Identity {
    let (cert, key) = common::certgen(tenant, dir).await;
    let read = |f: &Path| std::fs::read_to_string(f).expect("cmon-certgen wrote it");
    Identity {
        cert: read(&cert),
        key: read(&key),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certgen_certificates_work_until_the_key_or_instance_goes() {
    let dc = start(2).await;
    let alice = dc.tenant("alice", "ecdsa-256").await;
    let a1 = alice.create_instance("a1").await;
    let dir = tempfile::tempdir().unwrap();
    let id = certgen(&alice, dir.path()).await;

    // What certgen made: the joyentCmon kind, signed by alice's SSH key (its issuer CN
    // names the key), with a key of its own.
    let der = rustls_pem(&id.cert);
    let claim = cmon::cert::inspect(&der, 0).unwrap();
    assert!(claim.joyent_cmon);
    assert_eq!(claim.login, "alice");
    assert_eq!(claim.fingerprint, alice.fingerprint);

    eventually("alice's instance is discovered", WAIT, || async {
        discovered(&dc, id.pair(), "").await == vec![a1.clone()]
    })
    .await;
    let r = get(&dc, id.pair(), &vm_host(&a1), "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A stopped instance leaves discovery, and its metrics are 404.
    alice.ok(&["instance", "stop", "-w", "a1"]).await;
    eventually("the stopped instance leaves discovery", WAIT, || async {
        discovered(&dc, id.pair(), "").await.is_empty()
    })
    .await;
    let r = get(&dc, id.pair(), &vm_host(&a1), "/metrics").await;
    assert_eq!(r.status, 404, "{}", r.body);

    // The SSH key deleted: the certificate stops working within the cache time (2 s).
    dc.ufds()
        .delete_key(ufds::DeleteKeyRequest {
            account: alice.uuid.clone(),
            key: alice.fingerprint.clone(),
        })
        .await
        .unwrap();
    eventually("the deleted key's certificate is refused", WAIT, || async {
        get(&dc, id.pair(), &cmon_host(), "/v1/discover")
            .await
            .status
            == 401
    })
    .await;
}

fn rustls_pem(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Plain HTTP on CMon's HTTPS port, from curl: 403 `SecureTransportRequired` as
/// Triton's CMon answers, after the Host check (an unknown Host is 404 first); bytes
/// that are not HTTP get the connection closed; HTTPS still works on the port.
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_the_https_port_is_told_to_use_tls() {
    let dc = start(10).await;
    let port = dc.cmon().port();
    let curl = |host: &str, path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Host: {host}"))
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_string(), body.to_string())
    };
    let (status, body) = curl(&cmon_host(), "/v1/discover");
    assert_eq!(status, "403", "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "code": "SecureTransportRequired",
            "message": "Container Monitor requires a secure transport (SSL/TLS)",
        })
    );
    let (status, _) = curl(&vm_host(&uuid::Uuid::new_v4().to_string()), "/metrics");
    assert_eq!(status, "403");
    let (status, body) = curl(&format!("www.{CMON_SUFFIX}"), "/metrics");
    assert_eq!(status, "404", "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "NotFound"
    );

    // Not HTTP and not TLS: closed without an answer.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(dc.cmon()).await.unwrap();
    tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&got));

    // HTTPS on the same port is unchanged.
    let r = get(&dc, None, "cmon", "/_ping").await;
    assert_eq!(r.status, 200);
}
