//! `cargo bench -p cn-agent --bench create`: a `machine_create` task accepted by the
//! task API to the instance `running`, on the `linux` backend.
//!
//! p50/p99 of `CN_AGENT_BENCH_RUNS` (50) creates one after another of a busybox image
//! (httpd as pid 1, one NIC on a bridge of the bench's own), each destroyed (not timed)
//! before the next. The first create also extracts the image and is reported apart.
//! Needs root and /bin/busybox; prints "skipped" otherwise. Target: p50 under 1 s.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cn_agent::agent::AgentOptions;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;
use triton_proto::cnagent::v1 as pb;
use triton_proto::cnagent::v1::cn_agent_client::CnAgentClient;
use triton_proto::cnagent::v1::create_task_request::Task;
use uuid::Uuid;

use dc_testkit::linux::LinuxHost;
use dc_testkit::node::{SimNode, httpd_init};

/// The bench's bridge, cgroups, namespaces and links, removed on drop (also on panic).
fn host() -> LinuxHost {
    // The test image of crates/cn-agent/tests/contract.rs: busybox, httpd as pid 1.
    LinuxHost::admin(
        "the create bench",
        'b',
        &["sh", "httpd", "hostname", "sleep", "cat", "ls", "ip"],
    )
}

async fn wait(c: &mut CnAgentClient<tonic::transport::Channel>, id: &str) -> pb::Task {
    loop {
        let t = c
            .wait_task(pb::WaitTaskRequest {
                id: id.to_string(),
                timeout_ms: 60_000,
            })
            .await
            .expect("wait task")
            .into_inner();
        if t.status != "active" && t.status != "queued" {
            return t;
        }
    }
}

async fn bench() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/bin/busybox").exists() {
        println!("| linux: machine_create to running | skipped: needs root and /bin/busybox |");
        return;
    }
    let runs = dc_testkit::bench::env_or("CN_AGENT_BENCH_RUNS", 50);
    let host = host();
    let backend = Arc::new(host.backend());
    let shutdown = CancellationToken::new();
    let agent = SimNode {
        hostname: "bench0".into(),
        ram_mib: 4096,
        cpus: 2,
        datacenter: "bench".into(),
        boot_time: 0,
        ..SimNode::default()
    }
    .start(backend, AgentOptions::default(), shutdown.clone())
    .await;
    let mut c = CnAgentClient::connect(agent.agent_url.clone())
        .await
        .expect("connect");
    let image_uuid = Uuid::new_v4().to_string();
    let s = host.subnet();
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut first = Duration::ZERO;
    for i in 0..runs {
        let uuid = Uuid::new_v4().to_string();
        let spec = pb::InstanceSpec {
            uuid: uuid.clone(),
            owner_uuid: Uuid::new_v4().to_string(),
            hostname: format!("bench{i}"),
            image_uuid: image_uuid.clone(),
            ram: 64,
            cpu_cap: 50,
            max_lwps: 64,
            autoboot: true,
            init: httpd_init(),
            nics: vec![pb::Nic {
                mac: format!("02:98:00:{s:02x}:00:01"),
                ip: format!("10.99.{s}.10"),
                netmask: "24".into(),
                gateway: format!("10.99.{s}.1"),
                nic_tag: "admin".into(),
                primary: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let accepted = c
            .create_task(pb::CreateTaskRequest {
                req_id: format!("bench-{i}"),
                task: Some(Task::MachineCreate(pb::MachineCreate {
                    spec: Some(spec),
                    image_source: host.image.path.to_string_lossy().into_owned(),
                })),
            })
            .await
            .expect("create task")
            .into_inner();
        let started = Instant::now();
        let done = wait(&mut c, &accepted.id).await;
        let took = started.elapsed();
        assert_eq!(done.status, "complete", "{done:?}");
        assert_eq!(
            done.instance.as_ref().map(|i| i.state.as_str()),
            Some("running")
        );
        if i == 0 {
            first = took;
        }
        hist.record(took.as_micros() as u64).expect("record");
        // Not timed: make room for the next.
        let d = c
            .create_task(pb::CreateTaskRequest {
                req_id: String::new(),
                task: Some(Task::MachineDestroy(pb::MachineDestroy { uuid })),
            })
            .await
            .expect("destroy task")
            .into_inner();
        let d = wait(&mut c, &d.id).await;
        assert_eq!(d.status, "complete", "{d:?}");
    }
    println!(
        "| linux: machine_create accepted to running, {runs} in a row | p50 {:.0} ms | p99 {:.0} ms | max {:.0} ms | first (image extraction) {:.0} ms |",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        first.as_secs_f64() * 1000.0
    );
    shutdown.cancel();
    let _ = agent.task.await;
}

triton_common::global_allocator!();

fn main() {
    dc_testkit::bench::runtime().block_on(bench());
}
