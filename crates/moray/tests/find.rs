//! findObjects: every filter operator on every index type, the errors of bad filters,
//! in-process checks of unindexed fields, sort, limit, offset and _count.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{EVERY_INDEX_TYPE, TestMoray, expect_err, start};
use serde_json::json;
use triton_proto::moray::v1 as pb;

async fn fixture() -> TestMoray {
    let mut m = start().await;
    m.bucket("t", EVERY_INDEX_TYPE).await;
    let rows = [
        (
            "a",
            json!({
                "name": "Alpha", "n": 1, "ok": true, "d": "2012-01-01T00:00:00Z",
                "u": "00000000-0000-0000-0000-00000000000a", "ip": "10.0.0.1", "mac": "00:00:00:00:00:01",
                "net": "10.0.0.0/8", "nr": "[1,5)", "dr": "[2012-01-01T00:00:00Z,2012-06-01T00:00:00Z)",
                "tags": ["red", "green"], "ns": [1, 2], "oks": [true], "ds": ["2012-01-01T00:00:00Z"],
                "ips": ["10.0.0.1", "192.168.1.1"], "macs": ["00:00:00:00:00:01"], "nets": ["10.0.0.0/8"],
                "free": "x1", "count": 5
            }),
        ),
        (
            "b",
            json!({
                "name": "beta", "n": 10, "ok": false, "d": "2013-01-01T00:00:00Z",
                "u": "00000000-0000-0000-0000-00000000000b", "ip": "192.168.1.7", "mac": "00:00:00:00:00:02",
                "net": "192.168.0.0/16", "nr": "[10,20)", "dr": "[2013-01-01T00:00:00Z,2014-01-01T00:00:00Z)",
                "tags": ["blue"], "ns": [10], "oks": [false], "ds": ["2013-01-01T00:00:00Z"],
                "ips": ["fd00::1"], "macs": ["00:00:00:00:00:02"], "nets": ["192.168.0.0/16"],
                "free": "y2", "count": 50
            }),
        ),
        (
            "c",
            json!({
                "name": "Gamma(1)*", "n": 100, "ok": true, "d": "2014-01-01T00:00:00Z",
                "ip": "fd00::5", "tags": ["red"], "ns": [100, 5], "free": "x3"
            }),
        ),
        ("d", json!({"free": "z"})),
    ];
    for (k, v) in rows {
        m.put_ok("t", k, v).await;
    }
    m
}

#[tokio::test]
async fn equality_ranges_presence_and_substrings_on_every_type() {
    let mut m = fixture().await;
    m.assert_finds(
        "t",
        &[
            ("(name=beta)", &["b"]),
            ("(name=*)", &["a", "b", "c"]),
            ("(name=*a)", &["a", "b"]),
            ("(name=b*)", &["b"]),
            ("(name=*amm*)", &["c"]),
            ("(name=Gamma\\(1\\)\\*)", &["c"]),
            ("(name>=b)", &["b"]),
            ("(name<=B)", &["a"]),
            ("(n>=10)", &["b", "c"]),
            ("(n<=10)", &["a", "b"]),
            ("(n=100)", &["c"]),
            ("(ok=true)", &["a", "c"]),
            ("(ok=FALSE)", &["b"]),
            ("(d>=2013-01-01T00:00:00Z)", &["b", "c"]),
            ("(d<=2012-12-31T23:59:59.999Z)", &["a"]),
            ("(u=00000000-0000-0000-0000-00000000000b)", &["b"]),
            ("(u>=00000000-0000-0000-0000-00000000000a)", &["a", "b"]),
            ("(ip=192.168.1.7)", &["b"]),
            ("(ip>=192.168.0.0)", &["b", "c"]),
            ("(mac=00:00:00:00:00:02)", &["b"]),
            ("(mac<=00:00:00:00:00:01)", &["a"]),
            ("(net=10.0.0.0/8)", &["a"]),
            ("(nr=[1,5\\))", &["a"]),
            ("(tags=red)", &["a", "c"]),
            ("(tags>=green)", &["a", "c"]),
            ("(ns=5)", &["c"]),
            ("(ns>=50)", &["c"]),
            ("(ns<=1)", &["a"]),
            ("(oks=false)", &["b"]),
            ("(ds=2013-01-01T00:00:00Z)", &["b"]),
            ("(ds>=2012-06-01T00:00:00Z)", &["b"]),
            ("(ips=fd00::1)", &["b"]),
            ("(ips<=10.0.0.2)", &["a"]),
            ("(macs=00:00:00:00:00:01)", &["a"]),
            ("(nets=192.168.0.0/16)", &["b"]),
            ("(_key=b)", &["b"]),
            ("(_key>=c)", &["c", "d"]),
            ("(_id>=1)", &["a", "b", "c", "d"]),
            ("(_mtime>=1)", &["a", "b", "c", "d"]),
            ("(_etag=*)", &["a", "b", "c", "d"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn boolean_operators() {
    let mut m = fixture().await;
    m.assert_finds(
        "t",
        &[
            ("(&(n>=1)(ok=true))", &["a", "c"]),
            ("(|(name=beta)(n=100))", &["b", "c"]),
            ("(&(n>=1)(!(ok=true)))", &["b"]),
            ("(&(n>=1)!(ok=true))", &["b"]),
            ("(|(&(n>=1)(n<=1))(tags=blue))", &["a", "b"]),
            // As in LDAP (and Triton), an object without the field matches its negation.
            ("(!(name=beta))", &["a", "c", "d"]),
            ("(&(name=*)(|(n=1)(n=10))(!(n=10)))", &["a"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn extensible_matches() {
    let mut m = fixture().await;
    m.assert_finds(
        "t",
        &[
            ("(name:caseIgnoreMatch:=ALPHA)", &["a"]),
            ("(name:2.5.13.2:=BETA)", &["b"]),
            ("(name:caseIgnoreSubstringsMatch:=*MM*)", &["c"]),
            ("(name:2.5.13.4:=a*)", &["a"]),
            ("(tags:caseIgnoreMatch:=RED)", &["a", "c"]),
            ("(n:within:=[5,50\\))", &["b"]),
            (
                "(d:within:=[2012-06-01T00:00:00Z,2015-01-01T00:00:00Z\\))",
                &["b", "c"],
            ),
            ("(ip:within:=192.168.0.0/16)", &["b"]),
            ("(ips:within:=fd00::/64)", &["b"]),
            ("(ns:within:=[90,200])", &["c"]),
            ("(net:contains:=10.9.8.7)", &["a"]),
            ("(nets:contains:=192.168.3.4)", &["b"]),
            ("(nr:contains:=3)", &["a"]),
            ("(dr:contains:=2013-05-05T00:00:00Z)", &["b"]),
            ("(nr:overlaps:=[4,11\\))", &["a", "b"]),
            (
                "(dr:overlaps:=[2012-05-01T00:00:00Z,2012-05-02T00:00:00Z\\))",
                &["a"],
            ),
        ],
    )
    .await;
    // Operators a type does not support, and those on unindexed fields.
    m.assert_refused(
        "t",
        &[
            ("(name:within:=[1,2\\))", "InvalidQueryError"),
            ("(nr:within:=[1,2\\))", "InvalidQueryError"),
            ("(free:contains:=1)", "NotIndexedError"),
            ("(n:bogusMatch:=1)", "InvalidQueryError"),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_filters_are_refused_with_the_rule_broken() {
    let mut m = fixture().await;
    let msg = expect_err(m.find("t", "(name~=beta)").await, "InvalidQueryError");
    assert!(msg.contains("~="), "{msg}");
    for f in [
        "",
        "(name=beta",
        "name=beta)",
        "(&)",
        "(n>=abc)",
        "(ok=maybe)",
        "(ip=nope)",
        "(_idx=1)",
        "(d=yesterday)",
    ] {
        let status = m.find("t", f).await.unwrap_err();
        assert_eq!(
            common::name(&status),
            "InvalidQueryError",
            "{f}: {status:?}"
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    m.assert_refused(
        "t",
        &[
            // A filter on an unindexed field alone cannot run.
            ("(free=x1)", "InvalidQueryError"),
            // ... in an OR, nor in an AND without any indexed part.
            ("(|(name=beta)(free=x1))", "NotIndexedError"),
            ("(&(free=x1)(count=5))", "NotIndexedError"),
            // Substrings on arrays are not indexed; on numbers they are invalid.
            ("(tags=r*)", "NotIndexedError"),
            ("(n=1*)", "InvalidQueryError"),
        ],
    )
    .await;
    m.assert_refused("nope", &[("(n=1)", "BucketNotFoundError")])
        .await;
}

#[tokio::test]
async fn unindexed_fields_are_checked_in_process() {
    let mut m = fixture().await;
    assert_eq!(m.keys("t", "(&(name=*)(free=x*))").await, vec!["a", "c"]);
    assert_eq!(m.keys("t", "(&(n>=1)(count>=10))").await, vec!["b"]);
    assert_eq!(m.keys("t", "(&(n>=1)(!(free=x1)))").await, vec!["b", "c"]);
    // An OR mixing decided and undecided parts is exact.
    assert_eq!(
        m.keys("t", "(&(n>=1)(|(&(ok=true)(free=x3))(n=10)))").await,
        vec!["b", "c"]
    );
    // requireIndexes refuses them, naming the fields.
    let r = m
        .find_with("t", "(&(n>=1)(free=x1))", common::indexed_only())
        .await;
    let msg = expect_err(r, "NotIndexedError");
    assert!(msg.contains("free"), "{msg}");
}

#[tokio::test]
async fn sort_limit_offset_and_count() {
    let mut m = start().await;
    m.bucket("s", &[("n", "number"), ("g", "string")]).await;
    m.put_all(
        "s",
        (0..30).map(|i| {
            (
                format!("k{i:02}"),
                json!({"n": i, "g": if i % 2 == 0 { "even" } else { "odd" }}),
            )
        }),
    )
    .await;
    let opts = |limit: Option<u64>, offset: u64, sort: &[(&str, &str)]| pb::FindOptions {
        limit,
        offset,
        sort: sort
            .iter()
            .map(|(a, o)| pb::Sort {
                attribute: a.to_string(),
                order: o.to_string(),
            })
            .collect(),
        ..Default::default()
    };
    let r = m
        .find_with("s", "(n>=0)", opts(Some(5), 10, &[("n", "desc")]))
        .await
        .unwrap();
    let ns: Vec<String> = r.iter().map(|o| o.key.clone()).collect();
    assert_eq!(ns, vec!["k19", "k18", "k17", "k16", "k15"]);
    assert!(
        r.iter().all(|o| o.count == Some(30)),
        "count ignores limit and offset"
    );
    // Multiple sort keys.
    let r = m
        .find_with("s", "(n<=3)", opts(None, 0, &[("g", "ASC"), ("n", "DESC")]))
        .await
        .unwrap();
    let ns: Vec<String> = r.iter().map(|o| o.key.clone()).collect();
    assert_eq!(ns, vec!["k02", "k00", "k03", "k01"]);
    // Default order is _id ascending.
    let r = m
        .find_with("s", "(g=odd)", opts(Some(3), 0, &[]))
        .await
        .unwrap();
    let ns: Vec<String> = r.iter().map(|o| o.key.clone()).collect();
    assert_eq!(ns, vec!["k01", "k03", "k05"]);
    // no_count leaves count absent.
    let r = m
        .find_with(
            "s",
            "(n>=0)",
            pb::FindOptions {
                no_count: true,
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r[0].count, None);
    // Sorting on something that is not an index is refused (nothing is interpolated).
    expect_err(
        m.find_with("s", "(n>=0)", opts(None, 0, &[("n; drop table s", "")]))
            .await,
        "InvalidQueryError",
    );
    expect_err(
        m.find_with("s", "(n>=0)", opts(None, 0, &[("other", "")]))
            .await,
        "InvalidQueryError",
    );
    expect_err(
        m.find_with("s", "(n>=0)", opts(None, 0, &[("n", "up")]))
            .await,
        "InvalidQueryError",
    );
}

#[tokio::test]
async fn default_limit_is_1000_and_no_limit_lifts_it() {
    let mut m = start().await;
    m.bucket("many", &[("n", "number")]).await;
    m.sql(
        "INSERT INTO many (_key, _value, _etag, _mtime, n) SELECT 'k' || i, '{}', 'E', 0, i FROM generate_series(1, 1005) i",
        json!([]),
    )
    .await
    .unwrap();
    assert_eq!(m.find("many", "(n>=0)").await.unwrap().len(), 1000);
    let all = m
        .find_with(
            "many",
            "(n>=0)",
            pb::FindOptions {
                no_limit: true,
                no_count: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 1005);
}

#[tokio::test]
async fn sql_only_returns_the_query() {
    let mut m = fixture().await;
    let mut stream = m
        .client
        .find_objects(pb::FindObjectsRequest {
            bucket: "t".into(),
            filter: "(&(n>=5)(name=x))".into(),
            find: None,
            options: None,
            sql_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    let o = stream.message().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&o.value).unwrap();
    let q = v["query"].as_str().unwrap();
    assert!(q.contains("\"n\"") && q.contains("LIMIT 1000"), "{q}");
    assert_eq!(v["args"], json!(["5", "x"]));
    assert!(stream.message().await.unwrap().is_none());
}
