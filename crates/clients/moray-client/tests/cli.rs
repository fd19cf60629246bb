//! moray-cli against a real Moray and PostgreSQL: what an operator types, what they see.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestMoray, cli_with_env};
use serde_json::json;

/// putbucket of the tests' bucket: `login` unique, `age` a number.
const PUT_ACCOUNTS_V1: &[&str] = &[
    "putbucket",
    "-x",
    "1",
    "-u",
    "login",
    "-i",
    "age:number",
    "accounts",
];
/// Its version 2: `country` indexed too.
const PUT_ACCOUNTS_V2: &[&str] = &[
    "putbucket",
    "-x",
    "2",
    "-u",
    "login",
    "-i",
    "age:number",
    "-i",
    "country",
    "accounts",
];

/// A Moray with the tests' bucket (version 1).
async fn with_accounts() -> TestMoray {
    let moray = TestMoray::start().await;
    accounts(&moray).await;
    moray
}

async fn accounts(moray: &TestMoray) {
    moray.cli(PUT_ACCOUNTS_V1).await.ok();
}

async fn put(moray: &TestMoray, key: &str, value: serde_json::Value) {
    moray
        .cli(&["putobject", "-d", &value.to_string(), "accounts", key])
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putbucket_creates_indexes_that_getbucket_and_listbuckets_show() {
    let moray = TestMoray::start().await;
    let out = moray.cli(PUT_ACCOUNTS_V1).await;
    assert_eq!(out.ok(), "", "putbucket prints nothing");

    let bucket = moray.cli(&["getbucket", "accounts"]).await.json();
    assert_eq!(bucket["name"], "accounts");
    assert_eq!(
        bucket["index"],
        json!({"login": {"type": "string", "unique": true},
               "age": {"type": "number", "unique": false}})
    );
    assert_eq!(bucket["options"]["version"], 1);
    assert_eq!(bucket["pre"], json!([]));
    assert_eq!(bucket["post"], json!([]));
    assert!(bucket["mtime"].as_str().is_some_and(|m| !m.is_empty()));

    // Same version again: node-moray's putBucket leaves the bucket alone.
    moray
        .cli(&["putbucket", "-x", "1", "-i", "other", "accounts"])
        .await
        .ok();
    let again = moray.cli(&["getbucket", "accounts"]).await.json();
    assert_eq!(again["index"], bucket["index"]);

    // A newer version adds an index; an older one is refused.
    moray.cli(PUT_ACCOUNTS_V2).await.ok();
    let v2 = moray.cli(&["getbucket", "accounts"]).await.json();
    assert_eq!(v2["options"]["version"], 2);
    assert_eq!(
        v2["index"]["country"],
        json!({"type": "string", "unique": false})
    );
    moray
        .cli_fails(
            &["putbucket", "-x", "1", "-u", "login", "accounts"],
            "BucketVersionError",
        )
        .await;

    // A configuration on stdin (-s), as node-moray's putbucket takes it.
    moray
        .cli_stdin(
            &["putbucket", "-s", "vms"],
            r#"{"index": {"owner_uuid": {"type": "uuid"}}, "options": {"version": 3}}"#,
        )
        .await
        .ok();

    let list = moray.cli(&["listbuckets"]).await.json();
    let names: Vec<&str> = list
        .as_array()
        .expect("listbuckets prints an array")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert!(
        names.contains(&"accounts") && names.contains(&"vms"),
        "{names:?}"
    );
    let vms = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["name"] == "vms"))
        .expect("vms");
    assert_eq!(vms["options"]["version"], 3);
    assert_eq!(vms["index"]["owner_uuid"]["type"], "uuid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putobject_then_getobject_round_trips_the_value() {
    let moray = with_accounts().await;
    let value = json!({"login": "lisa", "age": 8, "country": "USA", "tags": {"a": [1, 2]}});
    put(&moray, "lisa", value.clone()).await;

    let object = moray.cli(&["getobject", "accounts", "lisa"]).await.json();
    assert_eq!(object["bucket"], "accounts");
    assert_eq!(object["key"], "lisa");
    assert_eq!(object["value"], value);
    assert!(object["_id"].is_i64(), "{object}");
    let etag = object["_etag"].as_str().expect("etag");
    assert_eq!(etag.len(), 8, "CRC32 as 8 hex digits: {etag}");
    assert!(
        object["_mtime"]
            .as_i64()
            .is_some_and(|m| m > 1_600_000_000_000)
    );
    assert_eq!(object["_count"], serde_json::Value::Null);

    // -H: the same object on one line.
    let compact = moray.cli(&["getobject", "-H", "accounts", "lisa"]).await;
    assert_eq!(compact.ok().lines().count(), 1);
    assert_eq!(compact.json(), object);

    moray
        .cli_fails(&["getobject", "accounts", "nobody"], "ObjectNotFoundError")
        .await;
    moray
        .cli_fails(
            &["getobject", "nosuchbucket", "lisa"],
            "BucketNotFoundError",
        )
        .await;
    let bad = moray
        .cli(&["putobject", "-d", "{not json", "accounts", "x"])
        .await;
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(bad.stderr.contains("parsing value for -d"), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findobjects_filters_sorts_and_limits() {
    let moray = with_accounts().await;
    for (login, age) in [("a", 30), ("b", 10), ("c", 20), ("d", 40)] {
        put(&moray, login, json!({"login": login, "age": age})).await;
    }

    let found = moray
        .cli(&["findobjects", "-H", "-a", "age", "accounts", "(age<=30)"])
        .await
        .json_lines();
    let keys: Vec<&str> = found.iter().filter_map(|o| o["key"].as_str()).collect();
    assert_eq!(keys, ["b", "c", "a"]);
    assert!(found.iter().all(|o| o["_count"] == 3), "{found:?}");

    let first = moray
        .cli(&[
            "findobjects",
            "-H",
            "-d",
            "age",
            "-l",
            "1",
            "accounts",
            "(age>=10)",
        ])
        .await
        .json_lines();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["key"], "d");
    assert_eq!(first[0]["_count"], 4, "_count ignores the limit");

    let paged = moray
        .cli(&[
            "findobjects",
            "-H",
            "-n",
            "-a",
            "age",
            "-o",
            "1",
            "-l",
            "2",
            "accounts",
            "(login=*)",
        ])
        .await
        .json_lines();
    let keys: Vec<&str> = paged.iter().filter_map(|o| o["key"].as_str()).collect();
    assert_eq!(keys, ["c", "a"]);
    assert!(paged.iter().all(|o| o["_count"].is_null()), "-n: no _count");

    // Pretty output (the default) is one multi-line JSON document per object.
    let pretty = moray.cli(&["findobjects", "accounts", "(login=b)"]).await;
    assert!(pretty.ok().lines().count() > 1);
    assert_eq!(pretty.json()["value"]["age"], 10);

    moray
        .cli_fails(
            &["findobjects", "accounts", "(age<=30"],
            "InvalidQueryError",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putobject_with_a_stale_etag_fails_with_etag_conflict() {
    let moray = with_accounts().await;
    put(&moray, "lisa", json!({"login": "lisa", "age": 8})).await;
    let etag = moray.cli(&["getobject", "accounts", "lisa"]).await.json()["_etag"]
        .as_str()
        .expect("etag")
        .to_string();

    moray
        .cli_fails(
            &[
                "putobject",
                "-d",
                r#"{"login":"lisa","age":9}"#,
                "-e",
                "0BADBAD0",
                "accounts",
                "lisa",
            ],
            "EtagConflictError",
        )
        .await;
    let unchanged = moray.cli(&["getobject", "accounts", "lisa"]).await.json();
    assert_eq!(unchanged["value"]["age"], 8, "a failed put changes nothing");

    moray
        .cli(&[
            "putobject",
            "-d",
            r#"{"login":"lisa","age":9}"#,
            "-e",
            &etag,
            "accounts",
            "lisa",
        ])
        .await
        .ok();
    assert_eq!(
        moray.cli(&["getobject", "accounts", "lisa"]).await.json()["value"]["age"],
        9
    );

    // -e null: only if the object does not exist yet.
    moray
        .cli_fails(
            &[
                "putobject",
                "-d",
                r#"{"login":"lisa"}"#,
                "-e",
                "null",
                "accounts",
                "lisa",
            ],
            "EtagConflictError",
        )
        .await;
    moray
        .cli(&[
            "putobject",
            "-d",
            r#"{"login":"hugh"}"#,
            "-e",
            "null",
            "accounts",
            "hugh",
        ])
        .await
        .ok();

    // A unique index refuses a second object with the same value.
    moray
        .cli_fails(
            &[
                "putobject",
                "-d",
                r#"{"login":"hugh"}"#,
                "accounts",
                "hugh2",
            ],
            "UniqueAttributeError",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delobject_removes_the_object_and_then_reports_it_missing() {
    let moray = with_accounts().await;
    put(&moray, "lisa", json!({"login": "lisa"})).await;
    assert_eq!(moray.cli(&["delobject", "accounts", "lisa"]).await.ok(), "");
    moray
        .cli_fails(&["getobject", "accounts", "lisa"], "ObjectNotFoundError")
        .await;
    moray
        .cli_fails(&["delobject", "accounts", "lisa"], "ObjectNotFoundError")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updatemany_and_delmany_act_on_the_filter_matches() {
    let moray = with_accounts().await;
    for (login, age) in [("a", 5), ("b", 6), ("c", 50)] {
        put(&moray, login, json!({"login": login, "age": age})).await;
    }

    let out = moray
        .cli(&["updatemany", "-d", r#"{"age": 7}"#, "accounts", "(age<=6)"])
        .await;
    let line = out.ok().trim();
    assert!(
        line.starts_with("{ count: 2, etag: '"),
        "node-moray's format: {line}"
    );
    let etag = line
        .trim_start_matches("{ count: 2, etag: '")
        .trim_end_matches("' }");
    let updated = moray
        .cli(&["findobjects", "-H", "accounts", "(age=7)"])
        .await
        .json_lines();
    assert_eq!(updated.len(), 2);
    assert!(
        updated.iter().all(|o| o["_etag"] == etag),
        "{updated:?} {etag}"
    );
    assert!(updated.iter().all(|o| o["value"]["age"] == 7));

    let out = moray
        .cli(&["delmany", "-l", "1", "accounts", "(age=7)"])
        .await;
    assert_eq!(out.ok().trim(), "1 records deleted");
    let out = moray.cli(&["delmany", "accounts", "(age<=100)"]).await;
    assert_eq!(out.ok().trim(), "2 records deleted");
    let left = moray
        .cli(&["findobjects", "-H", "accounts", "(login=*)"])
        .await;
    assert_eq!(left.ok(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindexobjects_fills_an_added_index() {
    let moray = with_accounts().await;
    put(&moray, "lisa", json!({"login": "lisa", "country": "USA"})).await;
    put(&moray, "hugh", json!({"login": "hugh", "country": "UK"})).await;
    moray.cli(PUT_ACCOUNTS_V2).await.ok();

    let out = moray.cli(&["reindexobjects", "accounts", "1"]).await;
    out.ok();
    assert!(
        out.stderr
            .contains("bucket \"accounts\": 1 object processed (continuing)"),
        "{out:#?}"
    );
    assert!(
        out.stderr
            .contains("bucket \"accounts\": all objects processed"),
        "{out:#?}"
    );
    let uk = moray
        .cli(&["findobjects", "-H", "-i", "accounts", "(country=UK)"])
        .await
        .json_lines();
    assert_eq!(uk.len(), 1);
    assert_eq!(uk[0]["key"], "hugh");

    let again = moray.cli(&["reindexobjects", "accounts"]).await;
    again.ok();
    assert!(
        again.stderr.contains("no reindexing required"),
        "{again:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_ping_version_and_delbucket() {
    let moray = with_accounts().await;
    let row = moray
        .cli(&["sql", "SELECT 1 AS one, 'x' AS two"])
        .await
        .json();
    assert_eq!(row, json!({"one": 1, "two": "x"}));
    moray
        .cli_fails(&["sql", "SELEKT nonsense"], "InternalError")
        .await;

    assert_eq!(moray.cli(&["ping"]).await.ok(), "");
    assert_eq!(moray.cli(&["ping", "-d"]).await.ok(), "");
    assert_eq!(moray.cli(&["morayping", "-d"]).await.ok(), "");
    assert_eq!(moray.cli(&["version"]).await.ok().trim(), "2");

    moray.cli(&["delbucket", "accounts"]).await.ok();
    moray
        .cli_fails(&["getbucket", "accounts"], "BucketNotFoundError")
        .await;
    moray
        .cli_fails(&["delbucket", "accounts"], "BucketNotFoundError")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_port_flags_override_moray_url() {
    let moray = TestMoray::start().await;
    let port = moray.url.rsplit(':').next().expect("port").to_string();
    // MORAY_URL points nowhere useful; -h/-p name the real server.
    let out = cli_with_env(
        &["ping", "-h", "127.0.0.1", "-p", &port],
        Some("tcp://127.0.0.1:1"),
        None,
    )
    .await;
    assert_eq!(out.ok(), "");
    // -p alone takes the host from MORAY_URL.
    let out = cli_with_env(&["ping", "-p", &port], Some("tcp://127.0.0.1:1"), None).await;
    assert_eq!(out.ok(), "");
}

#[tokio::test]
async fn no_server_and_bad_usage_exit_as_node_moray_does() {
    let port = triton_testkit::free_port().to_string();
    let out = cli_with_env(&["ping", "-h", "127.0.0.1", "-p", &port], None, None).await;
    out.fails_with("ConnectionError");

    let usage = cli_with_env(&["putobject", "onlybucket"], None, None).await;
    assert_eq!(usage.code, 2, "usage errors exit 2: {usage:#?}");
    let help = cli_with_env(&["findobjects", "--help"], None, None).await;
    assert!(help.ok().contains("-l <LIMIT>"), "{help:#?}");

    let tokens = cli_with_env(&["gettokens"], None, None).await;
    assert_eq!(tokens.code, 1);
    assert_eq!(tokens.stderr.trim(), "moray-cli: Operation not supported");
}
