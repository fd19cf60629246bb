//! The gRPC server start-up's doors: who may connect (`allow_from`, checked at accept)
//! and whether reflection is served.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use triton_common::grpc::ServerConfig;

const SERVICE: &str = "triton.test.v1.Nothing";

/// Starts a server with `config` on 127.0.0.1 and returns a lazy channel to it.
async fn start(config: ServerConfig, shutdown: &CancellationToken) -> Channel {
    let listener = triton_common::grpc::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        triton_common::grpc::serve(
            listener,
            tonic::service::Routes::default(),
            &[SERVICE],
            &config,
            shutdown,
        )
        .await
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: SERVICE.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
}

async fn list_services(channel: Channel) -> Result<(), tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    stream.message().await?;
    Ok(())
}

fn allow(cidrs: &[&str], reflection: bool) -> ServerConfig {
    ServerConfig {
        allow_from: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        reflection,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_peer_outside_allow_from_is_refused_at_accept() {
    let shutdown = CancellationToken::new();
    let channel = start(allow(&["10.123.0.0/16"], true), &shutdown).await;
    let err = health(channel).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_peer_inside_allow_from_is_served() {
    let shutdown = CancellationToken::new();
    let channel = start(allow(&["10.123.0.0/16", "127.0.0.0/8"], true), &shutdown).await;
    let status = health(channel.clone()).await.unwrap();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    list_services(channel).await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn the_defaults_serve_loopback() {
    let shutdown = CancellationToken::new();
    let channel = start(ServerConfig::default(), &shutdown).await;
    health(channel).await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn reflection_off_leaves_the_reflection_service_out() {
    let shutdown = CancellationToken::new();
    let channel = start(allow(&["127.0.0.0/8"], false), &shutdown).await;
    let err = list_services(channel.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // The health service stays.
    health(channel).await.unwrap();
    shutdown.cancel();
}

#[test]
fn ipv4_mapped_peers_match_as_ipv4() {
    let config = allow(&["10.88.88.0/24"], true);
    assert!(config.allows("::ffff:10.88.88.7".parse().unwrap()));
    assert!(config.allows("10.88.88.7".parse().unwrap()));
    assert!(!config.allows("::ffff:10.88.89.7".parse().unwrap()));
    assert!(!config.allows("::1".parse().unwrap()));
    let defaults = ServerConfig::default();
    assert!(defaults.allows("127.5.0.1".parse().unwrap()));
    assert!(defaults.allows("::1".parse().unwrap()));
    assert!(defaults.allows("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!defaults.allows("10.0.0.1".parse().unwrap()));
}

#[test]
fn a_bad_cidr_says_why() {
    for (text, why) in [
        ("10.0.0.0/33", "prefix"),
        ("10.0.0/8", "not an IP address"),
        ("10.0.0.0/x", "prefix"),
        ("::1/129", "prefix"),
    ] {
        let err = text.parse::<triton_common::grpc::Cidr>().unwrap_err();
        assert!(err.contains(text) && err.contains(why), "{text}: {err}");
    }
}
