//! A real Moray on a real PostgreSQL, started in-process for one test (feature `moray`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Postgres;

/// Tunes Moray to keep no change log: every change is trimmed at the next trim, which runs
/// every second. For tests of a position older than what the feed keeps (resync); pass it
/// to [`MorayFixture::start_with`], then wait with
/// [`MorayFixture::change_log_trimmed_through`].
pub fn keep_no_change_log(config: &mut moray::Config) {
    config.change_retention_secs = 0;
    config.change_trim_interval_secs = 1;
}

/// PostgreSQL (from [`Postgres`]) with a `moray` database, and Moray serving it on
/// 127.0.0.1:0 inside the test's tokio runtime. Dropping it cancels Moray and then stops
/// PostgreSQL. Start-up failures panic: this is a fixture.
pub struct MorayFixture {
    addr: SocketAddr,
    url: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), moray::MorayError>>>,
    // Declared last so that it is dropped after Moray has been told to stop.
    postgres: Postgres,
}

impl MorayFixture {
    /// Starts PostgreSQL and Moray with Moray's default settings.
    pub async fn start() -> MorayFixture {
        Self::start_with(|_| {}).await
    }

    /// Starts PostgreSQL and Moray, letting `tune` adjust Moray's config first (`listen`
    /// and `postgres_url` are already set).
    pub async fn start_with(tune: impl FnOnce(&mut moray::Config)) -> MorayFixture {
        // initdb blocks for about a second. The server process is forked by the test kit's
        // long-lived spawner thread (`spawn_tied`), so the short-lived blocking-pool
        // thread this runs on does not take PostgreSQL down with it.
        let (postgres, postgres_url) = tokio::task::spawn_blocking(|| {
            let postgres = Postgres::start().expect("PostgreSQL starts");
            let url = postgres.create_database("moray").expect("createdb moray");
            (postgres, url)
        })
        .await
        .expect("PostgreSQL start-up task");
        let mut config = moray::Config {
            listen: "127.0.0.1:0".into(),
            postgres_url,
            ..Default::default()
        };
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let running = moray::start(config, shutdown.clone())
            .await
            .expect("Moray starts");
        MorayFixture {
            addr: running.addr,
            url: format!("tcp://{}", running.addr),
            shutdown,
            task: Some(running.task),
            postgres,
        }
    }

    /// `tcp://127.0.0.1:PORT`, as Triton's `MORAY_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Moray's gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PostgreSQL Moray stores into.
    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// Waits (up to a minute) until Moray's trim has deleted its change log through
    /// `position`, as its `moray_changes_state.purged_through` says.
    pub async fn change_log_trimmed_through(&self, position: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let purged = self
                .postgres
                .query_async("moray", "SELECT purged_through FROM moray_changes_state")
                .await
                .expect("read the change log's state");
            if purged.trim().parse::<u64>().is_ok_and(|p| p >= position) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Moray's change log was not trimmed through {position} (purged through {purged:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops Moray and waits for it to finish; PostgreSQL keeps running until drop.
    pub async fn stop_moray(&mut self) -> Result<(), moray::MorayError> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.expect("Moray task does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for MorayFixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
