//! The shared service `main`: exit code 2 for a bad config (naming the key), 0 for a good
//! one under `--check-config`, 1 when the service fails, with the error's causes.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use triton_common::service::{EXIT_CONFIG, EXIT_FAILURE, Failure, Service};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Conf {
    listen: String,
    workers: u32,
}

fn service() -> Service<Conf> {
    Service::new("skeleton-test", "a test service").check(|c: &Conf| {
        if c.workers == 0 {
            Err("workers: must be at least 1")
        } else {
            Ok(())
        }
    })
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("conf.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn never_called(
    _: Conf,
    _: tokio_util::sync::CancellationToken,
) -> Result<(), triton_common::service::BoxError> {
    panic!("the service must not start")
}

#[tokio::test]
async fn bad_config_is_exit_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "listen = \"127.0.0.1:0\"\nworkers = \"many\"\n");
    for args in [
        vec!["x", "-f", &path],
        vec!["x", "--config", &path, "--check-config"],
        vec!["x", "-c", &path, "--check-config"],
    ] {
        let failure = service()
            .run_from(args.clone(), never_called)
            .await
            .unwrap_err();
        assert_eq!(failure.exit_code(), EXIT_CONFIG, "{args:?}: {failure}");
        let text = failure.to_string();
        assert!(text.contains("workers"), "{text}");
        assert!(text.contains(&path), "{text}");
    }

    // A value of the right type that the service's own check refuses.
    let path = write(&dir, "workers = 0\n");
    let failure = service()
        .run_from(["x", "--check-config", "-f", &path], never_called)
        .await
        .unwrap_err();
    assert_eq!(failure.exit_code(), EXIT_CONFIG);
    assert!(
        failure.to_string().contains("workers: must be at least 1"),
        "{failure}"
    );

    // A missing file: the cause (the OS error) is in the message.
    let failure = service()
        .run_from(
            ["x", "--check-config", "-f", "/nonexistent/conf.toml"],
            never_called,
        )
        .await
        .unwrap_err();
    assert_eq!(failure.exit_code(), EXIT_CONFIG);
    assert!(failure.to_string().contains("No such file"), "{failure}");

    // An unknown flag is a command-line error: also 2.
    let failure = service()
        .run_from(["x", "--bogus"], never_called)
        .await
        .unwrap_err();
    assert_eq!(failure.exit_code(), EXIT_CONFIG);
}

#[tokio::test]
async fn check_config_on_a_good_file_succeeds_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "listen = \"127.0.0.1:0\"\nworkers = 4\n");
    service()
        .run_from(["x", "--check-config", "--config", &path], never_called)
        .await
        .unwrap();
}

#[derive(Debug, thiserror::Error)]
#[error("cannot bind 127.0.0.1:1")]
struct BindError(#[source] std::io::Error);

#[tokio::test]
async fn a_failing_service_is_exit_1_with_its_causes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "workers = 2\n");
    let failure = service()
        .run_from(["x", "-f", &path], |c: Conf, _| async move {
            assert_eq!(c.workers, 2);
            Err(BindError(std::io::Error::other("permission denied")).into())
        })
        .await
        .unwrap_err();
    assert!(matches!(failure, Failure::Runtime(_)), "{failure:?}");
    assert_eq!(failure.exit_code(), EXIT_FAILURE);
    assert_eq!(
        failure.to_string(),
        "cannot bind 127.0.0.1:1: permission denied"
    );
}
