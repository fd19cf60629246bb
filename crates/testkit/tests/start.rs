//! The test kit really starts what it says, and cleans up after itself.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use triton_testkit::{Etcd, Postgres};

#[test]
fn postgres_accepts_connections_and_is_removed_on_drop() {
    let pg = Postgres::start().expect("start PostgreSQL");
    let dir = pg.dir().to_path_buf();
    let url = pg.create_database("moray").expect("createdb");
    assert!(url.ends_with("/moray"));
    let out = std::process::Command::new(triton_testkit::pg_bin_dir().unwrap().join("psql"))
        .args([&url, "-tAc", "select 40 + 2"])
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
    // Postgres::query: a line a row, `|` between columns; a bad statement is an error.
    let rows = pg.query("moray", "select n, 'x' from generate_series(1, 2) n");
    assert_eq!(rows.expect("query"), "1|x\n2|x\n");
    let bad = pg
        .query("moray", "select nope")
        .expect_err("an unknown column");
    assert!(bad.to_string().contains("does not exist"), "{bad}");
    drop(pg);
    assert!(!dir.exists(), "the cluster's directory must be removed");
}

#[test]
fn etcd_serves_its_client_port() {
    let etcd = Etcd::start().expect("start etcd");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint(), "put", "/k", "v"])
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
}

#[test]
fn postgres_outlives_the_thread_that_started_it() {
    // tokio's blocking pool ends idle threads; a server started there must keep running.
    let pg = std::thread::spawn(|| Postgres::start().expect("start PostgreSQL"))
        .join()
        .expect("starter thread");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ready =
        std::process::Command::new(triton_testkit::pg_bin_dir().unwrap().join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .status()
            .expect("pg_isready");
    assert!(
        ready.success(),
        "PostgreSQL died with the thread that started it"
    );
}
