//! Moray as a PostgreSQL role that is not a superuser: it owns the tables it makes, logs in
//! with a scram-sha-256 password read from a 0600 file (never logged), and `Sql` runs as
//! that role, read-only unless allowed, each call from a reset session.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use common::{TestMoray, connect, expect_err};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use triton_testkit::Postgres;

const ROLE: &str = "moray_role";
const PASSWORD: &str = "correct-horse-battery-staple-7";

/// Every log line of this test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .try_init();
    captured
}

async fn superuser(pg: &Postgres, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url(db), tokio_postgres::NoTls)
        .await
        .expect("connect as the superuser");
    tokio::spawn(conn);
    client
}

/// PostgreSQL with the role and its database, made the way manatee-sitter makes them, and
/// pg_hba asking the role for its password (scram-sha-256) before the test kit's `trust`.
async fn postgres_with_role() -> Postgres {
    let pg = Postgres::start().expect("start PostgreSQL");
    let admin = superuser(&pg, "postgres").await;
    let verifier = postgres_protocol::password::scram_sha_256(PASSWORD.as_bytes());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEDB PASSWORD '{verifier}'"
        ))
        .await
        .expect("create role");
    admin
        .batch_execute(&format!("CREATE DATABASE moray OWNER {ROLE}"))
        .await
        .expect("create database");
    let hba = pg.dir().join("data").join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all {ROLE} 127.0.0.1/32 scram-sha-256\nhost all {ROLE} ::1/128 scram-sha-256\n{text}"),
    )
    .expect("write pg_hba.conf");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    pg
}

fn password_file(dir: &std::path::Path, password: &str, mode: u32) -> String {
    let path = dir.join("moray.password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

async fn start_as_role(
    pg: Postgres,
    password_file: String,
    tune: impl FnOnce(&mut moray::Config),
) -> Result<TestMoray, (Postgres, moray::MorayError)> {
    let url = format!("postgres://{ROLE}@127.0.0.1:{}/moray", pg.port());
    let mut config = moray::Config {
        listen: "127.0.0.1:0".into(),
        postgres_url: url.clone(),
        postgres_password_file: password_file,
        // One connection, so consecutive Sql calls share a session.
        max_connections: 1,
        default_timeout_ms: 10_000,
        ..Default::default()
    };
    tune(&mut config);
    let shutdown = CancellationToken::new();
    match moray::start(config, shutdown.clone()).await {
        Ok(running) => Ok(TestMoray {
            client: connect(running.addr).await,
            addr: running.addr,
            url,
            shutdown,
            task: running.task,
            pg,
        }),
        Err(e) => Err((pg, e)),
    }
}

#[tokio::test]
async fn moray_runs_as_its_role_and_sql_is_read_only() {
    let logs = capture_logs();
    let pg = postgres_with_role().await;
    let dir = tempfile_dir();
    let file = password_file(dir.path(), PASSWORD, 0o600);
    let mut m = start_as_role(pg, file, |_| {})
        .await
        .map_err(|(_, e)| e)
        .unwrap();

    // Buckets are tables the role makes and owns.
    m.create_bucket("owned", &[("n", "number")], 1)
        .await
        .unwrap();
    m.put_ok("owned", "k", json!({"n": 1})).await;
    let admin = superuser(&m.pg, "moray").await;
    for table in ["owned", "buckets_config"] {
        let row = admin
            .query_opt(
                "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
                &[&table],
            )
            .await
            .unwrap();
        let owner: Option<String> = row.map(|r| r.get(0));
        assert_eq!(owner.as_deref(), Some(ROLE), "owner of {table}");
    }

    // Sql runs as the role, which is no superuser.
    let rows = m
        .sql(
            "SELECT current_user::text AS me, rolsuper FROM pg_roles WHERE rolname = current_user",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"me": ROLE, "rolsuper": false})]);

    // Reads work; writes are refused as read-only.
    let rows = m
        .sql("SELECT count(*)::int AS n FROM owned", json!([]))
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"n": 1})]);
    for write in [
        "DELETE FROM owned",
        "CREATE TABLE sneaky (a int)",
        "UPDATE owned SET _value = '{}'",
    ] {
        let msg = expect_err(m.sql(write, json!([])).await, "InvocationError");
        assert!(msg.contains("read-only transaction"), "{write}: {msg}");
        assert!(msg.contains("sql_allow_writes = false"), "{write}: {msg}");
    }
    let rows = m
        .sql("SELECT count(*)::int AS n FROM owned", json!([]))
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"n": 1})]);

    // What one Sql call SETs is gone in the next (same, single, pooled connection).
    m.sql("SET search_path = nowhere", json!([])).await.unwrap();
    m.sql("SET application_name = 'leaked'", json!([]))
        .await
        .unwrap();
    let rows = m
        .sql(
            "SELECT current_setting('search_path') AS path, current_setting('application_name') AS app",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["path"], json!("\"$user\", public"));
    assert_ne!(rows[0]["app"], json!("leaked"));
    // And Moray's own requests after it still find their tables.
    assert_eq!(m.get_value("owned", "k").await, json!({"n": 1}));

    // The password is in no log line.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!text.is_empty(), "logs were captured");
    assert!(!text.contains(PASSWORD), "the password was logged:\n{text}");
}

#[tokio::test]
async fn sql_writes_when_allowed_and_not_at_all_when_off() {
    let pg = postgres_with_role().await;
    let dir = tempfile_dir();
    let file = password_file(dir.path(), PASSWORD, 0o600);
    let mut m = start_as_role(pg, file.clone(), |c| c.sql_allow_writes = true)
        .await
        .map_err(|(_, e)| e)
        .unwrap();
    m.sql("CREATE TABLE allowed (a int)", json!([]))
        .await
        .unwrap();
    m.sql("INSERT INTO allowed VALUES (1)", json!([]))
        .await
        .unwrap();
    // Still the role: superuser-only things stay refused.
    let msg = expect_err(
        m.sql("CREATE ROLE other SUPERUSER", json!([])).await,
        "InternalError",
    );
    assert!(msg.contains("must be superuser"), "{msg}");
    let pg = std::mem::replace(&mut m.pg, Postgres::start().expect("placeholder"));
    m.shutdown.cancel();

    let mut m = start_as_role(pg, file, |c| c.sql_enabled = false)
        .await
        .map_err(|(_, e)| e)
        .unwrap();
    let msg = expect_err(m.sql("SELECT 1", json!([])).await, "InvocationError");
    assert!(msg.contains("sql_enabled = false"), "{msg}");
}

#[tokio::test]
async fn a_wrong_password_or_an_open_file_is_refused_without_showing_it() {
    let mut pg = postgres_with_role().await;
    let dir = tempfile_dir();

    // (password in the file, its mode, what the error must say)
    let cases = [
        (PASSWORD, 0o644, &["postgres_password_file", "0644"][..]),
        (
            "not-the-password",
            0o600,
            &["password authentication failed"][..],
        ),
    ];
    for (password, mode, says) in cases {
        let file = password_file(dir.path(), password, mode);
        let (back, err) = start_as_role(pg, file, |_| {})
            .await
            .err()
            .unwrap_or_else(|| panic!("mode {mode:o}: Moray started"));
        pg = back;
        let msg = err.to_string();
        assert!(says.iter().all(|s| msg.contains(s)), "{msg}");
        assert!(!msg.contains(password), "{msg}");
    }
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
