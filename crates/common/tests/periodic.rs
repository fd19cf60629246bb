//! A periodic task as an operator sees it: its last error (with causes), failures in a
//! row and next run in its state, and its health (`task:<name>`) going NOT_SERVING on a
//! failure and back to SERVING on the next success, through a real gRPC server.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use triton_common::periodic::{Periodic, Tasks, health_name};

#[derive(Debug, thiserror::Error)]
#[error("reconcile pass failed")]
struct Failed(#[source] std::io::Error);

type Outcome = Result<(), Failed>;

/// Waits until the task has run `runs` times.
async fn ran(tasks: &Tasks, runs: u64) {
    let mut changed = tasks.subscribe();
    changed
        .wait_for(|_| tasks.state("flaky").is_some_and(|s| s.runs >= runs))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failure_shows_in_the_state_and_the_health_until_a_success() {
    let tasks = Tasks::new();
    let shutdown = CancellationToken::new();
    // Each run takes the outcome the test sends, so the test decides every run.
    let (outcomes, rx) = mpsc::channel::<Outcome>(1);
    let task = Periodic::new("flaky", Duration::from_millis(10))
        .at_start()
        .spawn(&tasks, shutdown.clone(), rx, |rx| {
            Box::pin(async move { rx.recv().await.unwrap_or(Ok(())) })
        });

    let listener = triton_common::grpc::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let tasks = tasks.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            triton_common::grpc::serve_with_tasks(
                listener,
                tonic::service::Routes::default(),
                &[],
                &Default::default(),
                &tasks,
                shutdown,
            )
            .await
        })
    };
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: health_name("flaky"),
        })
        .await
        .unwrap()
        .into_inner();
    let mut until = async |wanted: ServingStatus| loop {
        let status = health.message().await.unwrap().unwrap().status;
        if status == wanted as i32 {
            return;
        }
    };

    outcomes
        .send(Err(Failed(std::io::Error::other("moray is away"))))
        .await
        .unwrap();
    ran(&tasks, 1).await;
    let state = tasks.state("flaky").unwrap();
    assert_eq!(
        state.last_error.as_deref(),
        Some("reconcile pass failed: moray is away")
    );
    assert_eq!(state.failures, 1);
    assert!(state.last_success.is_none());
    assert!(state.next_run.unwrap() >= state.last_run.unwrap());
    until(ServingStatus::NotServing).await;

    outcomes
        .send(Err(Failed(std::io::Error::other("still away"))))
        .await
        .unwrap();
    ran(&tasks, 2).await;
    assert_eq!(tasks.state("flaky").unwrap().failures, 2);

    outcomes.send(Ok(())).await.unwrap();
    ran(&tasks, 3).await;
    let state = tasks.state("flaky").unwrap();
    assert_eq!(state.last_error, None);
    assert_eq!(state.failures, 0);
    assert!(state.last_success.is_some());
    until(ServingStatus::Serving).await;

    // Shutdown stops the task (after the run in progress) and the server; the open
    // health stream is closed first, or the server would wait for it (its drain).
    drop(health);
    shutdown.cancel();
    drop(outcomes);
    task.await.unwrap();
    server.await.unwrap().unwrap();
}
