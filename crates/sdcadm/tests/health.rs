//! The `https` health check against a real CloudAPI serving its self-signed certificate,
//! as a zone's or a container's CloudAPI does.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use dc_testkit::services::cloudapi;
use sdcadm::coal::health;
use sdcadm::deploy::HealthKind;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_health_accepts_a_self_signed_cloudapi() {
    let data = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = cloudapi::start(
        cloudapi::Config {
            listen: String::new(),
            tls_listen: "127.0.0.1:0".into(),
            data_dir: data.path().display().to_string(),
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("CloudAPI starts");
    let addr = running.tls_addr.expect("HTTPS").to_string();
    let nowhere = Path::new("/nonexistent");
    health::check(HealthKind::Https, &addr, Some("/--ping"), nowhere)
        .await
        .expect("healthy over TLS");
    // A path that is not there: unhealthy, saying what answered.
    let e = health::check(HealthKind::Https, &addr, Some("/nope"), nowhere)
        .await
        .unwrap_err();
    assert!(e.contains("GET /nope answered"), "{e}");
    // Plain HTTP at the TLS port is no answer.
    assert!(
        health::check(HealthKind::Http, &addr, Some("/--ping"), nowhere)
            .await
            .is_err()
    );
    shutdown.cancel();
    running.task.await.unwrap();
    // Nothing listening: unhealthy.
    assert!(
        health::check(HealthKind::Https, &addr, Some("/--ping"), nowhere)
            .await
            .is_err()
    );
}
