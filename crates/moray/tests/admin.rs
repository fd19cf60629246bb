//! Sql, Ping, Version, request timeouts, and following a changing primary.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{expect_err, start};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use triton_proto::moray::v1 as pb;

#[tokio::test]
async fn version_and_ping() {
    let mut m = start().await;
    let v = m
        .client
        .version(pb::VersionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, 2);
    assert!(!v.server.is_empty());
    m.client.ping(common::ping_request(false)).await.unwrap();
    m.client.ping(common::ping_request(true)).await.unwrap();
    // A deep ping fails when PostgreSQL is gone; a shallow one does not.
    m.pg.stop();
    let status = m.client.ping(common::ping_request(true)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    m.client.ping(common::ping_request(false)).await.unwrap();
}

#[tokio::test]
async fn sql_runs_statements_with_positional_values() {
    let mut m = start().await;
    m.sql(
        "CREATE TABLE ufds_side (id integer PRIMARY KEY, name text, tags text[], at timestamptz)",
        json!([]),
    )
    .await
    .unwrap();
    m.sql(
        "INSERT INTO ufds_side VALUES ($1, $2, $3, $4)",
        json!([1, "alice", "{a,b}", "2012-01-01T00:00:00Z"]),
    )
    .await
    .unwrap();
    m.sql(
        "INSERT INTO ufds_side (id, name) VALUES ($1, $2)",
        json!([2, null]),
    )
    .await
    .unwrap();
    let rows = m
        .sql(
            "SELECT id, name, tags, at, id * 1.5 AS x FROM ufds_side WHERE id >= $1 ORDER BY id",
            json!([1]),
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "name": "alice", "tags": ["a", "b"], "at": "2012-01-01T00:00:00.000Z", "x": 1.5}),
            json!({"id": 2, "name": null, "tags": null, "at": null, "x": 3}),
        ]
    );
    let msg = expect_err(m.sql("SELEKT 1", json!([])).await, "InternalError");
    assert!(msg.contains("Invalid SQL"), "{msg}");
    expect_err(
        m.sql("SELECT 1", json!({"a": 1})).await,
        "InvalidArgumentError",
    );
    // A failing statement leaves nothing behind (it ran in a transaction).
    m.sql("INSERT INTO ufds_side (id) VALUES (3), (1)", json!([]))
        .await
        .unwrap_err();
    let rows = m
        .sql("SELECT count(*) AS n FROM ufds_side", json!([]))
        .await
        .unwrap();
    assert_eq!(rows, vec![json!({"n": 2})]);
}

#[tokio::test]
async fn a_request_over_its_timeout_is_cancelled() {
    let mut m = start().await;
    let started = std::time::Instant::now();
    let mut stream = m
        .client
        .sql(pb::SqlRequest {
            statement: "SELECT pg_sleep(30)".into(),
            values: String::new(),
            options: Some(pb::RequestOptions {
                req_id: String::new(),
                timeout_ms: 300,
            }),
        })
        .await;
    let status = match &mut stream {
        Err(s) => s.clone(),
        Ok(s) => s.get_mut().message().await.unwrap_err(),
    };
    assert_eq!(common::name(&status), "QueryTimeoutError", "{status:?}");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The query was cancelled on the server too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = m
            .sql(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                json!([]),
            )
            .await
            .unwrap();
        if rows[0]["n"] == json!(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow query still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the server keeps serving.
    m.client.ping(common::ping_request(true)).await.unwrap();
}

async fn wait_for_deep_ping(
    client: &mut triton_proto::moray::v1::moray_client::MorayClient<tonic::transport::Channel>,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = client.ping(common::ping_request(true)).await;
        if r.is_ok() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "moray never reached the database: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn follows_the_primary_url() {
    let pg = triton_testkit::Postgres::start().unwrap();
    let db1 = pg.create_database("one").unwrap();
    let db2 = pg.create_database("two").unwrap();
    let (tx, rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let running = moray::start_following(
        moray::Config {
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
        rx,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut client = common::connect(running.addr).await;

    // No primary: requests fail fast with a retryable error.
    let started = std::time::Instant::now();
    let status = client.ping(common::ping_request(true)).await.unwrap_err();
    assert_eq!(common::name(&status), "NoDatabasePeersError");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));

    tx.send(Some(db1)).unwrap();
    wait_for_deep_ping(&mut client).await;
    let create = |name: &str| pb::CreateBucketRequest {
        name: name.into(),
        config: Some(pb::BucketConfig {
            index: common::index(&[("n", "number")]),
            options: None,
        }),
        options: None,
    };
    client.create_bucket(create("b")).await.unwrap();
    let put = pb::PutObjectRequest {
        bucket: "b".into(),
        key: "k".into(),
        value: json!({"n": 1}).to_string(),
        etag: None,
        options: None,
    };
    client.put_object(put.clone()).await.unwrap();

    // A new primary: new requests go there (its own tables are set up first).
    tx.send(Some(db2.clone())).unwrap();
    wait_for_deep_ping(&mut client).await;
    let status = client
        .get_object(pb::GetObjectRequest {
            bucket: "b".into(),
            key: "k".into(),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(common::name(&status), "BucketNotFoundError", "{status:?}");
    client.create_bucket(create("b")).await.unwrap();
    client.put_object(put).await.unwrap();
    let (db, conn) = tokio_postgres::connect(&db2, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = db
        .query_one("SELECT count(*) FROM b", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // The primary goes away again.
    tx.send(None).unwrap();
    let status = client.ping(common::ping_request(true)).await.unwrap_err();
    assert_eq!(common::name(&status), "NoDatabasePeersError");
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

/// What Manatee does to a primary, as Moray's clients see it: a read-only primary (a new
/// one waiting for its sync) is `NoDatabasePeersError`, retryable, "not applied"; a session
/// the server terminates mid-request is `ConnectionLostError` (outcome unknown).
#[tokio::test]
async fn read_only_primary_and_terminated_sessions() {
    let mut m = start().await;
    m.bucket("b", &[("n", "number")]).await;
    m.put_ok("b", "k1", json!({"n": 1})).await;
    let (db, conn) = tokio_postgres::connect(&m.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let terminate_moray = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                           WHERE application_name = 'moray' AND pid <> pg_backend_pid()";

    // Read-only: new sessions of Moray's database start read-only (as on a Manatee primary
    // before its sync caught up); Moray's old sessions are ended so it reconnects.
    db.batch_execute("ALTER DATABASE moray SET default_transaction_read_only = on")
        .await
        .unwrap();
    db.batch_execute(terminate_moray).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut status = None;
    for _ in 0..20 {
        // A pooled connection killed above may still be handed out once.
        match m.put("b", "k2", json!({"n": 2})).await {
            Err(s) if common::name(&s) == "ConnectionLostError" => continue,
            Err(s) => {
                status = Some(s);
                break;
            }
            Ok(_) => panic!("a read-only database accepted a put"),
        }
    }
    let status = status.expect("a read-only error");
    assert_eq!(common::name(&status), "NoDatabasePeersError", "{status:?}");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("25006"), "{}", status.message());
    assert!(
        status.message().contains("not applied"),
        "{}",
        status.message()
    );

    // A session terminated mid-request: the outcome is unknown.
    let mut client = m.client.clone();
    let slow = tokio::spawn(async move {
        let stream = client
            .sql(pb::SqlRequest {
                statement: "SELECT pg_sleep(30)".into(),
                values: String::new(),
                options: None,
            })
            .await;
        match stream {
            Err(s) => s,
            Ok(mut s) => s.get_mut().message().await.unwrap_err(),
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow query never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.batch_execute(terminate_moray).await.unwrap();
    let status = slow.await.unwrap();
    assert_eq!(common::name(&status), "ConnectionLostError", "{status:?}");
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // Writable again: puts succeed once Moray has reconnected.
    db.batch_execute("ALTER DATABASE moray RESET default_transaction_read_only")
        .await
        .unwrap();
    db.batch_execute(terminate_moray).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match m.put("b", "k2", json!({"n": 2})).await {
            Ok(_) => break,
            Err(s) => assert!(
                std::time::Instant::now() < deadline,
                "puts did not resume: {s:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
