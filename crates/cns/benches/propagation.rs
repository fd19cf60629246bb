//! `cargo bench -p cns --bench propagation`: how long a VMAPI change takes to reach CNS's
//! answers, under query load.
//!
//! A test datacenter (`dc_testkit`, sim compute nodes, CNS following VMAPI, UFDS, NAPI
//! and CNAPI in this process) with one VM on an external network. `CNS_BENCH_CHANGES`
//! (50) times, one after another, its `triton.cns.services` tag is set to a new service
//! name with VMAPI's UpdateVm, and the new `<service>.svc.<account>.<zone>` is asked
//! from CNS's DNS every 2 ms (from the moment UpdateVm is sent) until it answers the
//! VM's address. Meanwhile `dnsperf` asks CNS for the VM's instance name at
//! `CNS_BENCH_LOAD_QPS` (5000) queries per second.
//!
//! Two times per change: from UpdateVm sent, and from its job seen succeeded (VMAPI's
//! record written; `Dc::wait_job`), to the first answer. The second is 0 when the answer
//! came before the waiter saw the job end.

// Benches fail by panicking, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

triton_common::global_allocator!();

#[path = "../tests/dc_common/mod.rs"]
mod dc_common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cns::dns::answer::query;
use dc_testkit::bench::{env_or, runtime};
use dc_testkit::naming::CNS_ZONE;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use triton_proto::vmapi::v1 as pb;

/// Whether `name` A answers `ip` from `dns` (one UDP query, 50 ms to answer).
async fn answers(
    socket: &tokio::net::UdpSocket,
    dns: SocketAddr,
    name: &Name,
    ip: &str,
    id: u16,
) -> bool {
    let q = query(id, name, RecordType::A, None).to_vec().unwrap();
    socket.send_to(&q, dns).await.unwrap();
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if m.id() != id {
            continue;
        }
        return m.response_code() == ResponseCode::NoError
            && m.answers()
                .iter()
                .any(|r| matches!(r.data(), RData::A(a) if a.to_string() == ip));
    }
    false
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let changes = env_or("CNS_BENCH_CHANGES", 50);
    let load_qps = env_or("CNS_BENCH_LOAD_QPS", 5000);
    runtime().block_on(async move {
        eprintln!("[cns propagation] starting a test datacenter with CNS");
        let (dc, network) = dc_common::datacenter(true).await;
        let owner = dc.seed().owner.clone();
        let uuid = dc_common::create(&dc, &network, "prop", None).await;
        let vm = dc.vm(&uuid).await;
        let ip = vm.nics[0].ip.clone();
        let dns = dc.cns_dns_addr();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let inst = Name::from_str(&format!("{}.inst.{owner}.{CNS_ZONE}.", vm.uuid)).unwrap();
        let start = Instant::now();
        while !answers(&socket, dns, &inst, &ip, 1).await {
            assert!(start.elapsed() < Duration::from_secs(30), "the VM's name never answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let dir = tempfile::tempdir().unwrap();
        let qfile = dir.path().join("queries");
        std::fs::write(&qfile, format!("{inst} A\n")).unwrap();
        eprintln!("[cns propagation] load: dnsperf at {load_qps} queries/s on {dns}");
        let mut load = tokio::process::Command::new("dnsperf")
            .args(["-s", &dns.ip().to_string(), "-p", &dns.port().to_string()])
            .arg("-d")
            .arg(&qfile)
            .args(["-l", "3600", "-Q", &load_qps.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("dnsperf (scripts/lib.sh installs it)");

        let mut from_request = Vec::new();
        let mut from_job = Vec::new();
        for i in 0..changes {
            let service = format!("p{i}");
            let name = Name::from_str(&format!("{service}.svc.{owner}.{CNS_ZONE}.")).unwrap();
            let sent = Instant::now();
            let update = pb::UpdateVmRequest {
                uuid: vm.uuid.clone(),
                set_tags: [("triton.cns.services".to_string(), dc_common::text(&service))].into(),
                ..Default::default()
            };
            let mut vmapi = dc.vmapi();
            let waiter = {
                let dc = &dc;
                async move {
                    let r = vmapi.update_vm(update).await.unwrap().into_inner();
                    let job = dc.wait_job(&r.job_uuid).await;
                    assert_eq!(job.execution, "succeeded", "{job:?}");
                    Instant::now()
                }
            };
            let poller = async {
                let mut id = 2u16;
                loop {
                    id = id.wrapping_add(1);
                    if answers(&socket, dns, &name, &ip, id).await {
                        return Instant::now();
                    }
                    assert!(sent.elapsed() < Duration::from_secs(30), "{name} never answered");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            let (job_done, answered) = tokio::join!(waiter, poller);
            from_request.push(answered - sent);
            from_job.push(answered.saturating_duration_since(job_done));
            if (i + 1) % 10 == 0 {
                eprintln!("[cns propagation] {} of {changes} changes", i + 1);
            }
        }
        load.start_kill().ok();
        load.wait().await.ok();
        from_request.sort();
        from_job.sort();
        println!("\n### CNS propagation, {changes} tag changes, dnsperf at {load_qps}/s on CNS meanwhile\n");
        println!("| from | p50 | p99 | max |");
        println!("|---|---|---|---|");
        for (label, v) in [("UpdateVm sent", &from_request), ("job succeeded", &from_job)] {
            println!(
                "| {label} | {:.1} ms | {:.1} ms | {:.1} ms |",
                percentile(v, 0.5).as_secs_f64() * 1e3,
                percentile(v, 0.99).as_secs_f64() * 1e3,
                v[v.len() - 1].as_secs_f64() * 1e3
            );
        }
    });
}
