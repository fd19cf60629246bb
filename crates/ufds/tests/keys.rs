//! SSH keys through the gRPC API, on a real Moray and PostgreSQL, with keys made by
//! `ssh-keygen` and every fingerprint checked against what `ssh-keygen -l` prints.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{account, new_key, ok};
use dc_testkit::assert_refused;
use dc_testkit::{Dc, Options, Service, assert_error};
use triton_proto::ufds::v1 as proto;

struct GeneratedKey {
    /// ssh-keygen -t
    kind: &'static str,
    bits: Option<u32>,
    path: PathBuf,
    pub_path: PathBuf,
    text: String,
}

/// `ssh-keygen` (package openssh-client) with `args`; what it prints.
fn ssh_keygen(args: &[&str]) -> String {
    dc_testkit::run("ssh-keygen", args)
}

fn generate(dir: &Path, kind: &'static str, bits: Option<u32>, comment: &str) -> GeneratedKey {
    let name = format!("{kind}-{}-{}", bits.unwrap_or(0), comment.replace('@', "-"));
    let path = dir.join(&name);
    let mut args = vec!["-q", "-t", kind, "-N", "", "-C", comment, "-f"];
    let path_str = path.to_str().expect("utf-8 temp path").to_string();
    args.push(&path_str);
    let bits_str = bits.map(|b| b.to_string());
    if let Some(b) = &bits_str {
        args.extend(["-b", b]);
    }
    ssh_keygen(&args);
    let pub_path = dir.join(format!("{name}.pub"));
    let text = std::fs::read_to_string(&pub_path).expect("read .pub");
    GeneratedKey {
        kind,
        bits,
        path,
        pub_path,
        text: text.trim().to_string(),
    }
}

/// (bits, fingerprint) from `ssh-keygen -l -E <hash> -f <pub>`: "2048 MD5:aa:.. comment (RSA)".
fn keygen_fingerprint(pub_path: &Path, hash: &str) -> (u32, String) {
    let out = ssh_keygen(&["-l", "-E", hash, "-f", pub_path.to_str().expect("utf-8")]);
    let mut fields = out.split_whitespace();
    let bits = fields.next().and_then(|b| b.parse().ok()).expect("bits");
    let fp = fields.next().expect("fingerprint").to_string();
    (bits, fp)
}

/// `key` (a name or a fingerprint) of `account` (a login or a uuid).
fn key_of(account: &str, key: &str) -> proto::GetKeyRequest {
    proto::GetKeyRequest {
        account: account.into(),
        key: key.into(),
    }
}

fn with_fingerprint(fingerprint: &str) -> proto::FindKeysRequest {
    proto::FindKeysRequest {
        fingerprint: fingerprint.into(),
    }
}

fn keys_of(account: &str) -> proto::ListKeysRequest {
    proto::ListKeysRequest {
        account: account.into(),
    }
}

#[tokio::test]
async fn fingerprints_match_ssh_keygen_for_every_key_type() {
    let stack = Dc::start(Options::only(Service::Ufds)).await;
    let bob = account(&stack, "bob").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        generate(dir.path(), "rsa", Some(2048), "bob@rsa"),
        generate(dir.path(), "rsa", Some(3072), "bob@rsa3072"),
        generate(dir.path(), "ecdsa", Some(256), "bob@p256"),
        generate(dir.path(), "ecdsa", Some(384), "bob@p384"),
        generate(dir.path(), "ecdsa", Some(521), "bob@p521"),
        generate(dir.path(), "ed25519", None, "bob@ed25519"),
    ];
    for (i, k) in keys.iter().enumerate() {
        let created = stack
            .ufds()
            .create_key(proto::CreateKeyRequest {
                account: "bob".into(),
                name: format!("key{i}"),
                key: k.text.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{} {:?}: {e:?}", k.kind, k.bits))
            .into_inner();
        let (bits, md5) = keygen_fingerprint(&k.pub_path, "md5");
        let (_, sha256) = keygen_fingerprint(&k.pub_path, "sha256");
        let what = format!("{} {:?}", k.kind, k.bits);
        assert_eq!(format!("MD5:{}", created.fingerprint), md5, "{what}");
        assert_eq!(created.sha256_fingerprint, sha256, "{what}");
        assert_eq!(created.bits, bits, "{what}");
        assert_eq!(created.account_uuid, bob.uuid);
        assert_eq!(created.openssh, k.text, "{what}");
        let mut fields = k.text.split_whitespace();
        assert_eq!(created.r#type, fields.next().unwrap(), "{what}");
        let blob = base64::engine::general_purpose::STANDARD
            .decode(fields.next().unwrap())
            .unwrap();
        assert_eq!(created.blob, blob, "{what}");
        assert_eq!(created.comment, fields.collect::<Vec<_>>().join(" "));
        // ssh-keygen exports RSA and ECDSA (not Ed25519) as PKCS8 PEM.
        if k.kind != "ed25519" {
            let pem = ssh_keygen(&["-e", "-m", "PKCS8", "-f", k.pub_path.to_str().unwrap()]);
            assert_eq!(created.pkcs, pem, "{what}");
        } else {
            assert!(
                created
                    .pkcs
                    .starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA")
            );
        }
        // What comes back from storage is what was made.
        let stored = key_of(&bob.uuid, &created.fingerprint);
        let got = ok(stack.ufds().get_key(stored).await);
        assert_eq!(got, created, "{what}");
    }
}

#[tokio::test]
async fn keys_are_found_by_name_fingerprint_login_and_uuid() {
    let stack = Dc::start(Options::only(Service::Ufds)).await;
    let bob = account(&stack, "bob").await;
    let alice = account(&stack, "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let laptop = generate(dir.path(), "ed25519", None, "bob@laptop");
    let desktop = generate(dir.path(), "ecdsa", Some(256), "bob@desktop");

    let c = &mut stack.ufds();
    let k1 = ok(c.create_key(new_key("bob", "laptop", &laptop.text)).await);
    // No name: the MD5 fingerprint is the name, as in Triton.
    let k2 = ok(c.create_key(new_key(&bob.uuid, "", &desktop.text)).await);
    assert_eq!(k2.name, k2.fingerprint);
    // The same key may belong to another account.
    let alices = ok(c.create_key(new_key("alice", "shared", &laptop.text)).await);
    assert_eq!(alices.fingerprint, k1.fingerprint);
    assert_eq!(alices.account_uuid, alice.uuid);

    let upper_md5 = format!("MD5:{}", k1.fingerprint.to_uppercase());
    for (account, key) in [
        ("bob", "laptop"),
        ("bob", k1.fingerprint.as_str()),
        ("bob", upper_md5.as_str()),
        ("bob", k1.sha256_fingerprint.as_str()),
        (bob.uuid.as_str(), "laptop"),
    ] {
        let got = c
            .get_key(key_of(account, key))
            .await
            .unwrap_or_else(|e| panic!("{account} {key}: {e:?}"))
            .into_inner();
        assert_eq!(got, k1, "{account} {key}");
    }

    let list = ok(c.list_keys(keys_of("bob")).await);
    let mut want = vec![k2.clone(), k1.clone()];
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(list.keys, want);

    let found = ok(c.find_keys(with_fingerprint(&k1.sha256_fingerprint)).await);
    let mut owners: Vec<&str> = found.keys.iter().map(|k| k.account_uuid.as_str()).collect();
    owners.sort();
    let mut expected = vec![bob.uuid.as_str(), alice.uuid.as_str()];
    expected.sort();
    assert_eq!(owners, expected);

    // Another account's key is not bob's.
    assert_error(
        c.get_key(key_of("bob", "shared")).await,
        "ResourceNotFound",
        &["shared"],
    );

    c.delete_key(proto::DeleteKeyRequest {
        account: "bob".into(),
        key: "laptop".into(),
    })
    .await
    .unwrap();
    assert_error(
        c.get_key(key_of("bob", &k1.fingerprint)).await,
        "ResourceNotFound",
        &[],
    );
    assert_error(
        c.delete_key(proto::DeleteKeyRequest {
            account: "bob".into(),
            key: "laptop".into(),
        })
        .await,
        "ResourceNotFound",
        &["laptop"],
    );

    // Deleting an account deletes its keys.
    let bobs = proto::DeleteAccountRequest {
        account: "bob".into(),
    };
    let deleted = ok(c.delete_account(bobs).await);
    assert_eq!(deleted.keys_deleted, 1);
    let found = ok(c.find_keys(with_fingerprint(&k2.fingerprint)).await);
    assert!(found.keys.is_empty(), "{found:?}");
    // Alice's copy of the shared key stays.
    let found = ok(c.find_keys(with_fingerprint(&k1.fingerprint)).await);
    assert_eq!(found.keys, vec![alices]);
}

#[tokio::test]
async fn bad_keys_are_refused_with_the_reason() {
    let stack = Dc::start(Options::only(Service::Ufds)).await;
    account(&stack, "bob").await;
    let dir = tempfile::tempdir().unwrap();
    let good = generate(dir.path(), "ed25519", None, "bob@good");
    let other = generate(dir.path(), "ed25519", None, "bob@other");
    let private_key = std::fs::read_to_string(&good.path).unwrap();
    let c = &mut stack.ufds();

    let create = |name: &str, key: &str| new_key("bob", name, key);
    let blob_b64 = good.text.split_whitespace().nth(1).unwrap().to_string();
    let truncated = format!("ssh-ed25519 {}", &blob_b64[..40]);
    let cases: Vec<(String, &str)> = vec![
        ("not a key".into(), "not supported"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP".into(), "not supported"),
        ("ssh-ed25519".into(), "no base64"),
        ("ssh-ed25519 @@@@".into(), "not valid base64"),
        (truncated, "truncated"),
        (format!("ssh-rsa {blob_b64}"), "does not match"),
        (private_key, "PEM"),
        (
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----".into(),
            "PEM",
        ),
    ];
    for (text, reason) in &cases {
        assert_refused(
            text,
            c.create_key(create("k", text)).await,
            "InvalidArgument",
            &["key is invalid", reason],
        );
    }
    assert_error(
        c.create_key(create("k", "")).await,
        "MissingParameter",
        &["key is missing"],
    );
    assert_error(
        c.create_key(create("a/b", &good.text)).await,
        "InvalidArgument",
        &["name", "'/'"],
    );
    assert_error(
        c.create_key(new_key("nobody", "k", &good.text)).await,
        "ResourceNotFound",
        &["nobody"],
    );

    let first = ok(c.create_key(create("main", &good.text)).await);
    assert_error(
        c.create_key(create("main", &other.text)).await,
        "ConflictError",
        &["name \"main\""],
    );
    assert_error(
        c.create_key(create("again", &good.text)).await,
        "ConflictError",
        &["fingerprint", &first.fingerprint],
    );
    assert_error(
        c.find_keys(with_fingerprint("laptop")).await,
        "InvalidArgument",
        &["fingerprint"],
    );
    let list = ok(c.list_keys(keys_of("bob")).await);
    assert_eq!(list.keys, vec![first]);
}
