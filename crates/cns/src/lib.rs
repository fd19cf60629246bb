//! CNS: authoritative DNS for every instance and service (docs/cns.md).
//!
//! [`start`] connects to Moray, reads the live settings (seeded from the config file on
//! the first start), restores the zones and their IXFR steps, follows VMAPI, UFDS, NAPI
//! and CNAPI (`follow/`), builds the zones from them (`build.rs`, `names.rs`) and
//! commits each change at a new serial (`app.rs`, `store.rs`), and serves DNS (`dns/`)
//! and the admin gRPC API (`server.rs`) until the shutdown token is cancelled.

pub mod app;
pub mod build;
pub mod config;
pub mod dns;
pub mod error;
pub mod follow;
pub mod journal;
pub mod model;
pub mod names;
pub mod peers;
pub mod server;
pub mod store;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use triton_common::grpc;
use triton_common::periodic::Tasks;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::ufds::v1::ufds_client::UfdsClient;
use triton_proto::vmapi::v1::vmapi_client::VmapiClient;

pub use app::Cns;
pub use config::Config;
pub use error::{Error, Result, StoreError};

/// Full gRPC name of the service, as the health service reports it.
pub const SERVICE_NAME: &str = "triton.cns.v1.Cns";

/// A started CNS.
#[derive(Debug)]
pub struct Running {
    /// The admin gRPC API's address.
    pub addr: SocketAddr,
    /// The DNS address (UDP and TCP).
    pub dns_addr: SocketAddr,
    /// The server; ends after the shutdown token is cancelled.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Starts CNS; see the crate doc.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    config.check().map_err(Error::Start)?;
    let moray = config
        .service
        .connect()
        .await
        .map_err(Error::moray("connect"))?;
    let store = store::Store::new(moray);
    store.ensure().await?;
    let settings = store
        .load_or_seed_config(&config.initial_settings())
        .await?;
    let cmon =
        build::Cmon {
            label: config.cmon_suffix_label.to_ascii_lowercase(),
            address: match config.cmon_address.trim() {
                "" => None,
                a => Some(a.parse::<IpAddr>().map_err(|_| {
                    Error::Start(format!("cmon_address: {a:?} is not an IP address"))
                })?),
            },
        };
    if !config::is_host_name(&cmon.label) || cmon.label.contains('.') {
        return Err(Error::Start(format!(
            "cmon_suffix_label: {:?} is not one DNS label",
            config.cmon_suffix_label
        )));
    }
    let dns_listen: SocketAddr = config.dns_listen.parse().map_err(|_| {
        Error::Start(format!(
            "dns_listen: {:?} is not an address:port",
            config.dns_listen
        ))
    })?;
    let acl = dns::TransferAcl::new(&settings.allow_transfer, &app::peer_names(&settings))
        .map_err(|e| Error::Start(e.to_string()))?;
    acl.set_notify_port(config.notify_port);
    let acl = Arc::new(acl);
    acl.resolve().await;
    let zones = Arc::new(zone::Zones::new(config.journal_max));
    let peers = peers::Peers::new();
    let shared = Arc::new(follow::Shared::default());
    let cns = Cns::new(app::Parts {
        store,
        zones: zones.clone(),
        shared: shared.clone(),
        settings,
        acl: acl.clone(),
        peers: peers.clone(),
        cmon,
        window: Duration::from_millis(config.commit_window_ms),
        policy: journal::Policy {
            keep: config.journal_keep,
            max: config.journal_max,
            max_age_ms: i64::try_from(config.journal_keep_days)
                .unwrap_or(i64::MAX / 86_400_000)
                .saturating_mul(86_400_000),
        },
    });
    cns.restore().await?;

    let buffers = dns::UdpBuffers {
        recv: config.dns_udp_recv_buffer,
        send: config.dns_udp_send_buffer,
    };
    let dns = dns::bind_with(dns_listen, buffers)
        .await
        .map_err(|e| Error::Start(triton_common::service::chain(&e)))?;
    let dns_addr = dns.local_addr();
    let (listener, addr) = grpc::bind_addr(&config.service.listen)
        .await
        .map_err(|e| Error::Start(triton_common::service::chain(&e)))?;

    let tasks = Tasks::new();
    let vmapi = follow::feed_channel(&config.vmapi_url, "vmapi_url")?;
    let ufds = follow::feed_channel(&config.ufds_url, "ufds_url")?;
    let napi = follow::feed_channel(&config.napi_url, "napi_url")?;
    let napi_calls = triton_common::channel::ChannelBuilder::new(&config.napi_url)
        .lazy()
        .map_err(|e| Error::Start(format!("napi_url: {e}")))?;
    let cnapi = follow::feed_channel(&config.cnapi_url, "cnapi_url")?;
    let followers = follow::Followers {
        shared: &shared,
        shutdown: &shutdown,
        tasks: &tasks,
    };
    let mut handles = vec![
        followers.spawn(follow::vms::Vms, VmapiClient::new(vmapi), "follow_vms"),
        followers.spawn(
            follow::accounts::Accounts,
            UfdsClient::new(ufds),
            "follow_accounts",
        ),
        followers.spawn(
            follow::networks::Networks(NapiClient::new(napi_calls)),
            NapiClient::new(napi),
            "follow_networks",
        ),
        followers.spawn(
            follow::servers::Servers,
            CnapiClient::new(cnapi),
            "follow_servers",
        ),
    ];
    handles.push(tokio::spawn(cns.clone().run(shutdown.clone())));
    handles.push(tokio::spawn(cns.clone().collect_loop(
        Duration::from_secs(config.journal_gc_secs),
        shutdown.clone(),
    )));
    let dns_shutdown = shutdown.child_token();
    let dns_task = tokio::spawn(dns.serve(zones, acl, peers, dns_shutdown));

    let routes = tonic::service::Routes::new(server::service(cns));
    let served = grpc::spawn_with_tasks(
        listener,
        routes,
        &[SERVICE_NAME],
        &config.service.grpc,
        &tasks,
        shutdown,
        handles,
    );
    let task = tokio::spawn(async move {
        let served = served
            .await
            .map_err(|e| Error::Start(format!("gRPC server task: {e}")))?;
        let dns = dns_task
            .await
            .map_err(|e| Error::Start(format!("DNS server task: {e}")))?;
        served.map_err(StoreError::Serve)?;
        dns.map_err(|e| Error::Start(triton_common::service::chain(&e)))?;
        Ok(())
    });
    tracing::info!(%addr, %dns_addr, "cns started");
    Ok(Running {
        addr,
        dns_addr,
        task,
    })
}
