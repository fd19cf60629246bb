//! Refusals: requests with no signature, a wrong key, a stale date or a tampered
//! signature, and one account reaching for another's resources. Built by hand, so each
//! fault is exactly the one under test.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dc_testkit::cloudapi::{HandKey, RawResponse, raw_request, ssh_public_key};
use dc_testkit::{Dc, Options};

/// `GET path` with `headers`, as sent.
async fn get(stack: &Dc, path: &str, headers: &[(&str, String)]) -> RawResponse {
    raw_request(stack.cloudapi(), "GET", path, headers, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_needs_no_auth_and_carries_tritons_headers() {
    let stack = Dc::start(Options::cloudapi()).await;
    let r = get(&stack, "/--ping", &[]).await;
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

    let r = get(&stack, "/--ping", &[("Accept-Version", "~8||~7".into())]).await;
    assert_eq!(r.header("api-version"), Some("8.0.0"));
    let r = get(&stack, "/--ping", &[("Accept-Version", "~6".into())]).await;
    r.assert_error(400, "InvalidVersion");
    let r = get(&stack, "/--ping", &[("x-request-id", "abc-123".into())]).await;
    assert_eq!(r.header("request-id"), Some("abc-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrong_key_stale_and_tampered_requests_are_refused() {
    let stack = Dc::start(Options::cloudapi()).await;
    let carol = stack.hand_account("carol").await;
    let (key, fp, key_id) = (&carol.key, &carol.fingerprint, carol.key_id());

    // The right signature works, by fingerprint and by name.
    let r = get(&stack, "/my", &key.sign(&key_id, 0)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["login"], "carol");
    let r = get(&stack, "/carol/keys", &key.sign("/carol/keys/hand", 0)).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // No signature.
    let r = get(&stack, "/my", &[]).await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(msg.contains("authenticated requests"), "{msg}");

    // A key the account does not have: signed by another key under carol's keyId...
    let other = HandKey::new();
    let r = get(&stack, "/my", &other.sign(&key_id, 0)).await;
    r.assert_error(401, "InvalidCredentials");
    // ...or naming a key carol does not have.
    let r = get(&stack, "/my", &other.sign("/carol/keys/aa:bb:cc", 0)).await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(msg.contains("aa:bb:cc"), "{msg}");
    // ...or an account that does not exist.
    let r = get(&stack, "/my", &key.sign(&format!("/nobody/keys/{fp}"), 0)).await;
    r.assert_error(401, "InvalidCredentials");
    // A keyId of the wrong shape.
    let r = get(&stack, "/my", &key.sign(&format!("carol/{fp}"), 0)).await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(msg.contains("Invalid KeyId"), "{msg}");

    // A stale date (and one from the future), signed correctly.
    let r = get(&stack, "/my", &key.sign(&key_id, -301)).await;
    let msg = r.assert_error(400, "InvalidHeader");
    assert!(msg.contains("clock skew"), "{msg}");
    let r = get(&stack, "/my", &key.sign(&key_id, 400)).await;
    r.assert_error(400, "InvalidHeader");
    // Within the skew is fine.
    let r = get(&stack, "/my", &key.sign(&key_id, -200)).await;
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
    let r = get(&stack, "/my", &headers).await;
    let msg = r.assert_error(401, "InvalidCredentials");
    assert!(
        msg.contains("signature we calculated does not match"),
        "{msg}"
    );
    let mut headers = key.sign(&key_id, 0);
    headers[0].1 =
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(5));
    let r = get(&stack, "/my", &headers).await;
    r.assert_error(401, "InvalidCredentials");

    // date not among the signed headers.
    let mut headers = key.sign(&key_id, 0);
    headers[1].1 = headers[1].1.replace("headers=\"date\"", "headers=\"host\"");
    let r = get(&stack, "/my", &headers).await;
    r.assert_error(400, "InvalidHeader");

    // An unsupported algorithm.
    let mut headers = key.sign(&key_id, 0);
    headers[1].1 = headers[1].1.replace("ed25519-sha512", "hmac-sha256");
    let r = get(&stack, "/my", &headers).await;
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
    let r = get(&stack, "/my", &headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_reach_another() {
    let stack = Dc::start(Options::cloudapi()).await;
    let carol_fp = stack.hand_account("carol").await.fingerprint;
    let dave = stack.hand_account("dave").await;
    let dave_fp = &dave.fingerprint;

    // Dave naming carol's account in the path is refused; an unknown login is not found.
    let r = dave.send("GET", "/carol", "").await;
    r.assert_error(403, "NotAuthorized");
    let r = dave.send("GET", "/carol/keys", "").await;
    r.assert_error(403, "NotAuthorized");
    let r = dave.send("GET", "/nobody/keys", "").await;
    r.assert_error(404, "ResourceNotFound");

    // Carol's key, by name, is not dave's.
    let r = dave.send("GET", "/my/keys/hand", "").await;
    assert_eq!(r.status, 200, "dave has his own key named hand");
    assert_eq!(r.json()["fingerprint"], dave_fp.as_str());
    let r = dave
        .send("DELETE", &format!("/my/keys/{carol_fp}"), "")
        .await;
    r.assert_error(404, "ResourceNotFound");
    let keys = stack.keys_of("carol").await;
    assert_eq!(keys.len(), 1, "carol's key is still there");

    // Unknown paths and methods keep Triton's error shape.
    let r = dave.send("GET", "/my/nothing-here", "").await;
    r.assert_error(404, "ResourceNotFound");
    let r = dave.send("PATCH", "/my/keys", "").await;
    r.assert_error(405, "BadMethod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_under_2048_bits_are_refused() {
    let stack = Dc::start(Options::cloudapi()).await;
    let erin = stack.hand_account("erin").await;
    let add = async |name: &str, public: &str| {
        let body = serde_json::json!({"name": name, "key": public}).to_string();
        erin.send("POST", "/my/keys", &body).await
    };

    let r = add("weak", &ssh_public_key("rsa-1024")).await;
    let msg = r.assert_error(409, "InvalidArgument");
    assert!(
        msg.contains("at least 2048 bits") && msg.contains("1024"),
        "{msg}"
    );

    let r = add("strong", &ssh_public_key("rsa")).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let names: Vec<String> = erin
        .send("GET", "/my/keys", "")
        .await
        .assert_list()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"strong".to_string()), "{names:?}");
    assert!(!names.contains(&"weak".to_string()), "{names:?}");
}
