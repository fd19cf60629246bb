//! Debian's real Prometheus against CMon in a test datacenter (a sim compute node): its
//! `triton_sd_configs` with certificates from the real `triton profile cmon-certgen`
//! discovers a tenant's instance, scrapes it (`up` 1) and leaves it when it is deleted;
//! another tenant's job discovers nothing of it. The names resolve through a hosts file
//! bind-mounted in Prometheus's own mount namespace (CNS's part is tests/cmon.sh's, on
//! CoaL).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dc_testkit::cloudapi::Tenant;
use dc_testkit::monitor::CMON_SUFFIX;
use dc_testkit::{Dc, Options, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// The paths of what `triton profile cmon-certgen` makes for `tenant` in `dir`.
async fn certgen(tenant: &Tenant, dir: &Path) -> (String, String) {
    let (cert, key) = common::certgen(tenant, dir).await;
    (cert.display().to_string(), key.display().to_string())
}

/// A scrape job of `login` as docs/cmon.md shows it, with short intervals.
fn job(login: &str, cert: &(String, String), ca: &str, port: u16) -> String {
    let tls = format!(
        "ca_file: {ca}\n      cert_file: {}\n      key_file: {}",
        cert.0, cert.1
    );
    format!(
        "  - job_name: triton-{login}
    scheme: https
    scrape_interval: 1s
    tls_config:
      {tls}
    relabel_configs:
      - source_labels: [__meta_triton_machine_id]
        target_label: instance
    triton_sd_configs:
      - account: {login}
        dns_suffix: {CMON_SUFFIX}
        endpoint: {CMON_SUFFIX}
        port: {port}
        version: 1
        refresh_interval: 2s
        tls_config:
          {}
",
        tls.replace("\n      ", "\n          ")
    )
}

/// GET `path` of Prometheus at `port`, as JSON.
fn prom_get(port: u16, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The health of job `job`'s active targets whose machine id is `vm`.
fn targets(port: u16, job: &str, vm: &str) -> Vec<String> {
    let body = prom_get(port, "/api/v1/targets?state=active");
    body["data"]["activeTargets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| {
                    t["labels"]["job"] == job
                        && t["discoveredLabels"]["__meta_triton_machine_id"] == vm
                })
                .map(|t| t["health"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `q` percent-encoded for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of instant query `q` (one series), if any.
fn value(port: u16, q: &str) -> Option<f64> {
    let body = prom_get(port, &format!("/api/v1/query?query={}", encode(q)));
    let r = body["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Kills Prometheus however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_discovers_scrapes_and_forgets_an_instance() {
    let dc = Dc::start(Options {
        cmon: true,
        ..Options::cloudapi_compute()
    })
    .await;
    dc.catalog(1024, b"simulated".to_vec()).await;
    let alice = dc.tenant("alice", "ecdsa-256").await;
    let bob = dc.tenant("bob", "ecdsa-256").await;
    let a1 = alice.create_instance("a1").await;

    let dir = tempfile::tempdir().unwrap();
    let alice_dir = dir.path().join("alice");
    let bob_dir = dir.path().join("bob");
    std::fs::create_dir_all(&alice_dir).unwrap();
    std::fs::create_dir_all(&bob_dir).unwrap();
    let alice_cert = certgen(&alice, &alice_dir).await;
    let bob_cert = certgen(&bob, &bob_dir).await;

    // CMon's name and the instance's, to CMon's address, in Prometheus's own /etc/hosts.
    let cmon = dc.cmon();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "{}\n{} {CMON_SUFFIX} {a1}.{CMON_SUFFIX}\n",
            std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            cmon.ip()
        ),
    )
    .unwrap();
    let ca = dc.cmon_cert().display().to_string();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("alice", &alice_cert, &ca, cmon.port()),
            job("bob", &bob_cert, &ca, cmon.port())
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("unshare")
            .arg("-m")
            .arg("sh")
            .arg("-c")
            .arg(format!(
                "mount --bind '{}' /etc/hosts && exec prometheus --config.file='{}' \
                 --storage.tsdb.path='{}' --web.listen-address=127.0.0.1:{port}",
                hosts.display(),
                config.display(),
                dir.path().join("data").display()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (apt-get install prometheus)"),
    );

    eventually("Prometheus scrapes alice's instance (up)", WAIT, || async {
        targets(port, "triton-alice", &a1) == vec!["up".to_string()]
    })
    .await;
    eventually("up is 1 and its memory is there", WAIT, || async {
        value(
            port,
            &format!("up{{job=\"triton-alice\",instance=\"{a1}\"}}"),
        ) == Some(1.0)
            && value(port, &format!("mem_agg_usage{{instance=\"{a1}\"}}")).is_some_and(|m| m > 0.0)
    })
    .await;
    // bob's job, refreshed meanwhile, has nothing of alice's.
    assert!(targets(port, "triton-bob", &a1).is_empty());
    // The NIC's series carries its network (VMAPI -> cn-agent -> CMon).
    let network = alice.ok(&["instance", "get", "-j", "a1"]).await.json()["nics"][0]["network"]
        .as_str()
        .unwrap()
        .to_string();
    let q = format!("net_agg_bytes_in{{instance=\"{a1}\"}}");
    let series = prom_get(port, &format!("/api/v1/query?query={}", encode(&q)));
    assert_eq!(
        series["data"]["result"][0]["metric"]["network_uuid"], network,
        "{series}"
    );

    alice.ok(&["instance", "delete", "-f", "-w", "a1"]).await;
    eventually("the deleted instance leaves discovery", WAIT, || async {
        targets(port, "triton-alice", &a1).is_empty()
    })
    .await;
}
