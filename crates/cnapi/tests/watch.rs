//! WatchServers: the servers as GetServer returns them, then every change in order,
//! resumable from a position; refused by a CNAPI that keeps its servers in memory.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cnapi::service::Settings;
use cnapi::store::{MemoryStore, MorayStore, Store};
use dc_testkit::feed::Feed;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use uuid::Uuid;

/// No reconciliation while the test runs: the only writes are the test's.
fn quiet() -> Settings {
    Settings {
        heartbeat_lifetime: Duration::from_secs(3600),
        reconcile_period: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// A CNAPI on `store` and a client of it; it stops when the guard is dropped.
async fn start<S: Store>(store: S) -> (CnapiClient<Channel>, tokio_util::sync::DropGuard) {
    let shutdown = CancellationToken::new();
    let running = cnapi::app::start(store, quiet(), "127.0.0.1:0", shutdown.clone())
        .await
        .unwrap();
    let c = CnapiClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap();
    (c, shutdown.drop_guard())
}

async fn register(c: &mut CnapiClient<Channel>, n: u32) -> String {
    let uuid = Uuid::new_v4().to_string();
    let sysinfo = json!({
        "UUID": uuid,
        "Hostname": format!("cn{n}"),
        "MiB of Memory": "16384",
        "CPU Online Count": 8,
    });
    c.register_server(pb::RegisterServerRequest {
        sysinfo_json: sysinfo.to_string(),
        agent_url: String::new(),
        datacenter: String::new(),
    })
    .await
    .unwrap();
    uuid
}

async fn get(c: &mut CnapiClient<Channel>, uuid: &str) -> pb::Server {
    c.get_server(pb::GetServerRequest { uuid: uuid.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn watch(c: &mut CnapiClient<Channel>, position: u64) -> Feed<pb::WatchServersEvent> {
    c.watch_servers(pb::WatchServersRequest { position })
        .await
        .unwrap()
        .into_inner()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_then_their_changes_in_order_and_resume() {
    let moray = triton_testkit::MorayFixture::start().await;
    let (mut c, _stop) = start(MorayStore::connect(moray.url()).await.unwrap()).await;
    let first = register(&mut c, 1).await;

    let mut stream = watch(&mut c, 0).await;
    let (servers, at) = stream.snapshot().await;
    assert_eq!(servers, vec![get(&mut c, &first).await]);

    let second = register(&mut c, 2).await;
    let added = stream.put(at, &second, &get(&mut c, &second).await).await;

    c.update_server(pb::UpdateServerRequest {
        uuid: first.clone(),
        reserved: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let reserved = stream.change().await;
    assert_eq!(reserved.uuid, first);
    assert!(reserved.server.as_ref().is_some_and(|s| s.reserved));
    c.delete_server(pb::DeleteServerRequest {
        uuid: first.clone(),
    })
    .await
    .unwrap();
    let deleted = stream.delete(reserved.position, &first).await;
    assert!(added.position < reserved.position && reserved.position < deleted.position);
    drop(stream);

    // From the position of the second server's registration: the rest, once.
    let mut resumed = watch(&mut c, added.position).await;
    resumed
        .resumes_with(added.position, &[reserved, deleted])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cnapi_keeping_servers_in_memory_has_no_feed() {
    let (mut c, _stop) = start(MemoryStore::default()).await;
    let status = c
        .watch_servers(pb::WatchServersRequest { position: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("in memory"), "{status:?}");
}
