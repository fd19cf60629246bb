//! Refusals: requests with no signature, a wrong key, a stale date or a tampered
//! signature, and one account reaching for another's resources. Built by hand, so each
//! fault is exactly the one under test.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dc_testkit::cloudapi::{HandKey, raw_request};
use dc_testkit::{Dc, Options};
use triton_proto::ufds::v1 as ufds;

async fn register(stack: &Dc, login: &str, key: &HandKey) -> String {
    let account = stack
        .ufds()
        .create_account(ufds::CreateAccountRequest {
            login: login.into(),
            email: format!("{login}@example.com"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stack
        .ufds()
        .create_key(ufds::CreateKeyRequest {
            account: account.uuid.clone(),
            name: "hand".into(),
            key: key.openssh.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .fingerprint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_needs_no_auth_and_carries_tritons_headers() {
    let stack = Dc::start(Options::cloudapi()).await;
    let r = raw_request(stack.cloudapi(), "GET", "/--ping", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ping"], "pong");
    assert!(
        r.json()["cloudapi"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "9.0.0")
    );
    assert_eq!(r.header("api-version"), Some("9.0.0"));
    assert!(r.header("server").unwrap().starts_with("cloudapi/"));
    assert!(r.header("request-id").is_some_and(|v| v.len() == 36));
    assert!(r.header("x-response-time").is_some());
    assert!(r.header("response-time").is_some());
    assert!(r.header("content-md5").is_some());
    assert_eq!(r.header("triton-datacenter-name"), Some("coal-test"));

    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/--ping",
        &[("Accept-Version", "~8||~7".into())],
        "",
    )
    .await;
    assert_eq!(r.header("api-version"), Some("8.0.0"));
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/--ping",
        &[("Accept-Version", "~6".into())],
        "",
    )
    .await;
    r.assert_error(400, "InvalidVersion");
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/--ping",
        &[("x-request-id", "abc-123".into())],
        "",
    )
    .await;
    assert_eq!(r.header("request-id"), Some("abc-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrong_key_stale_and_tampered_requests_are_refused() {
    let stack = Dc::start(Options::cloudapi()).await;
    let key = HandKey::new();
    let fp = register(&stack, "carol", &key).await;
    let key_id = format!("/carol/keys/{fp}");

    // The right signature works, by fingerprint and by name.
    let r = raw_request(stack.cloudapi(), "GET", "/my", &key.sign(&key_id, 0), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["login"], "carol");
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/carol/keys",
        &key.sign("/carol/keys/hand", 0),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // No signature.
    let r = raw_request(stack.cloudapi(), "GET", "/my", &[], "").await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(msg.contains("authenticated requests"), "{msg}");

    // A key the account does not have: signed by another key under carol's keyId...
    let other = HandKey::new();
    let r = raw_request(stack.cloudapi(), "GET", "/my", &other.sign(&key_id, 0), "").await;
    r.assert_error(401, "InvalidCredentials");
    // ...or naming a key carol does not have.
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/my",
        &other.sign("/carol/keys/aa:bb:cc", 0),
        "",
    )
    .await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(msg.contains("aa:bb:cc"), "{msg}");
    // ...or an account that does not exist.
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/my",
        &key.sign(&format!("/nobody/keys/{fp}"), 0),
        "",
    )
    .await;
    r.assert_error(401, "InvalidCredentials");
    // A keyId of the wrong shape.
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/my",
        &key.sign(&format!("carol/{fp}"), 0),
        "",
    )
    .await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(msg.contains("Invalid KeyId"), "{msg}");

    // A stale date (and one from the future), signed correctly.
    let r = raw_request(stack.cloudapi(), "GET", "/my", &key.sign(&key_id, -301), "").await;
    let msg = r.assert_error(400, "InvalidHeader");
    assert!(msg.contains("clock skew"), "{msg}");
    let r = raw_request(stack.cloudapi(), "GET", "/my", &key.sign(&key_id, 400), "").await;
    r.assert_error(400, "InvalidHeader");
    // Within the skew is fine.
    let r = raw_request(stack.cloudapi(), "GET", "/my", &key.sign(&key_id, -200), "").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A tampered signature: one bit flipped; or a signed date that was changed after.
    let mut headers = key.sign(&key_id, 0);
    let auth = headers[1].1.clone();
    let sig_start = auth.find("signature=\"").unwrap() + "signature=\"".len();
    let mut bytes = auth.into_bytes();
    bytes[sig_start + 3] = if bytes[sig_start + 3] == b'A' {
        b'B'
    } else {
        b'A'
    };
    headers[1].1 = String::from_utf8(bytes).unwrap();
    let r = raw_request(stack.cloudapi(), "GET", "/my", &headers, "").await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(
        msg.contains("signature we calculated does not match"),
        "{msg}"
    );
    let mut headers = key.sign(&key_id, 0);
    headers[0].1 =
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(5));
    let r = raw_request(stack.cloudapi(), "GET", "/my", &headers, "").await;
    r.assert_error(401, "InvalidCredentials");

    // date not among the signed headers.
    let mut headers = key.sign(&key_id, 0);
    headers[1].1 = headers[1].1.replace("headers=\"date\"", "headers=\"host\"");
    let r = raw_request(stack.cloudapi(), "GET", "/my", &headers, "").await;
    r.assert_error(400, "InvalidHeader");

    // An unsupported algorithm.
    let mut headers = key.sign(&key_id, 0);
    headers[1].1 = headers[1].1.replace("ed25519-sha512", "hmac-sha256");
    let r = raw_request(stack.cloudapi(), "GET", "/my", &headers, "").await;
    r.assert_error(401, "InvalidCredentials");

    // The legacy (0.9) grammar: the signature after a space, over the bare date.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let sig = key.pair.sign(date.as_bytes());
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
    let headers = vec![
        ("Date", date),
        (
            "Authorization",
            format!(r#"Signature keyId="{key_id}",algorithm="ed25519-sha512" {sig}"#),
        ),
    ];
    let r = raw_request(stack.cloudapi(), "GET", "/my", &headers, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_reach_another() {
    let stack = Dc::start(Options::cloudapi()).await;
    let carol_key = HandKey::new();
    let dave_key = HandKey::new();
    let carol_fp = register(&stack, "carol", &carol_key).await;
    let dave_fp = register(&stack, "dave", &dave_key).await;
    let as_dave = |_: ()| dave_key.sign(&format!("/dave/keys/{dave_fp}"), 0);
    let _ = carol_fp;

    // Dave naming carol's account in the path is refused; an unknown login is not found.
    let r = raw_request(stack.cloudapi(), "GET", "/carol", &as_dave(()), "").await;
    r.assert_error(403, "NotAuthorized");
    let r = raw_request(stack.cloudapi(), "GET", "/carol/keys", &as_dave(()), "").await;
    r.assert_error(403, "NotAuthorized");
    let r = raw_request(stack.cloudapi(), "GET", "/nobody/keys", &as_dave(()), "").await;
    r.assert_error(404, "ResourceNotFound");

    // Carol's key, by name, is not dave's.
    let r = raw_request(stack.cloudapi(), "GET", "/my/keys/hand", &as_dave(()), "").await;
    assert_eq!(r.status, 200, "dave has his own key named hand");
    assert_eq!(r.json()["fingerprint"], dave_fp.as_str());
    let r = raw_request(
        stack.cloudapi(),
        "DELETE",
        &format!("/my/keys/{carol_fp}"),
        &as_dave(()),
        "",
    )
    .await;
    r.assert_error(404, "ResourceNotFound");
    let keys = stack
        .ufds()
        .list_keys(ufds::ListKeysRequest {
            account: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "carol's key is still there");

    // Unknown paths and methods keep Triton's error shape.
    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/my/nothing-here",
        &as_dave(()),
        "",
    )
    .await;
    r.assert_error(404, "ResourceNotFound");
    let r = raw_request(stack.cloudapi(), "PATCH", "/my/keys", &as_dave(()), "").await;
    r.assert_error(405, "BadMethod");
}

fn rsa_public_key(bits: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id_rsa");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "rsa", "-b", &bits.to_string(), "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_under_2048_bits_are_refused() {
    let stack = Dc::start(Options::cloudapi()).await;
    let key = HandKey::new();
    let fp = register(&stack, "erin", &key).await;
    let key_id = format!("/erin/keys/{fp}");
    let add = |name: &str, public: &str| {
        let mut headers = key.sign(&key_id, 0);
        headers.push(("content-type", "application/json".to_string()));
        (
            headers,
            serde_json::json!({"name": name, "key": public}).to_string(),
        )
    };

    let (headers, body) = add("weak", &rsa_public_key(1024));
    let r = raw_request(stack.cloudapi(), "POST", "/my/keys", &headers, &body).await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(
        msg.contains("at least 2048 bits") && msg.contains("1024"),
        "{msg}"
    );

    let (headers, body) = add("strong", &rsa_public_key(2048));
    let r = raw_request(stack.cloudapi(), "POST", "/my/keys", &headers, &body).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let r = raw_request(
        stack.cloudapi(),
        "GET",
        "/my/keys",
        &key.sign(&key_id, 0),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"strong".to_string()), "{names:?}");
    assert!(!names.contains(&"weak".to_string()), "{names:?}");
}
