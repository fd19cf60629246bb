//! CloudAPI in a test datacenter: tenants with SSH keys in their own `$HOME/.ssh`, the
//! real `triton` CLI (npm `triton@7`) run as a tenant runs it, and raw HTTP requests
//! signed by hand where the CLI cannot send what a test needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ring::signature::KeyPair as _;
use serde_json::Value;
use triton_proto::imgapi::v1 as imgapi;
use triton_proto::napi::v1 as napi;
use triton_proto::papi::v1 as papi;
use triton_proto::ufds::v1 as ufds;

use crate::{ADMIN_UUID, Dc, Options, Service};

impl Options {
    /// [`Options::cloudapi`] with compute: instances run on its sim node.
    pub fn cloudapi_compute() -> Options {
        Options {
            compute: true,
            ..Options::cloudapi()
        }
    }

    /// [`Options::cloudapi_compute`] with fabrics: the sim node also carries
    /// `sdc_overlay`, and NAPI gives every account its default fabric network.
    pub fn cloudapi_fabrics() -> Options {
        Options {
            default_fabrics: true,
            nic_tags: vec!["admin".into(), "external".into(), "sdc_overlay".into()],
            ..Options::cloudapi_compute()
        }
    }
}

/// What the CloudAPI tests provision from ([`Dc::catalog`]).
pub struct Catalog {
    /// `g1-small`.
    pub package: papi::Package,
    /// `base-64-lts` 24.4.1, public.
    pub image: imgapi::Image,
}

impl Dc {
    /// CloudAPI's plain HTTP address.
    #[track_caller]
    pub fn cloudapi(&self) -> SocketAddr {
        self.addr(Service::Cloudapi)
    }

    /// CloudAPI's HTTPS address, with [`crate::Options::tls`].
    pub fn tls(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// CloudAPI's plain HTTP URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.cloudapi())
    }

    /// An account with an SSH key of `key_type` (`rsa`, `ecdsa-256`, `ecdsa-384`,
    /// `ecdsa-521`, `ed25519`) in its own `$HOME/.ssh`, registered in UFDS.
    pub async fn tenant(&self, login: &str, key_type: &str) -> Tenant {
        triton_cli();
        let account = self.account(login).await;
        let home = tempfile::tempdir().expect("home dir");
        let ssh = home.path().join(".ssh");
        std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
        let key_path = ssh.join(format!("id_{}", key_type.replace('-', "_")));
        ssh_keygen(&key_path, key_type);
        let public = std::fs::read_to_string(key_path.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", key_path.display())))
            .expect("public key");
        let key = self
            .ufds()
            .create_key(ufds::CreateKeyRequest {
                account: account.uuid.clone(),
                name: "id".into(),
                key: public.trim().into(),
            })
            .await
            .expect("CreateKey")
            .into_inner();
        Tenant {
            login: login.into(),
            uuid: account.uuid,
            home,
            key_path,
            fingerprint: key.fingerprint,
            url: self.url(),
            insecure: false,
        }
    }

    /// A new key named `hand` of `login`'s account (uuid `account`), registered in
    /// UFDS, and a function giving `Date` and `Authorization` headers signed with it
    /// now: for requests made by hand, where the CLI cannot send what a test needs.
    pub async fn hand_signer(
        &self,
        login: &str,
        account: &str,
    ) -> impl Fn() -> Vec<(&'static str, String)> + use<> {
        let client = self.hand_client(login, account).await;
        move || client.sign()
    }

    /// A new key named `hand` of `login`'s account (uuid `account`), registered in
    /// UFDS, and a client that signs requests to CloudAPI with it.
    pub async fn hand_client(&self, login: &str, account: &str) -> HandClient {
        let key = HandKey::new();
        let fingerprint = self
            .ufds()
            .create_key(ufds::CreateKeyRequest {
                account: account.to_string(),
                name: "hand".into(),
                key: key.openssh.clone(),
            })
            .await
            .expect("CreateKey")
            .into_inner()
            .fingerprint;
        HandClient {
            addr: self.cloudapi(),
            login: login.to_string(),
            account: account.to_string(),
            key: std::sync::Arc::new(key),
            fingerprint,
        }
    }

    /// A new account `login` (approved for provisioning, with no key for the CLI) and
    /// a [`HandClient`] signing with its one key, `hand`.
    pub async fn hand_account(&self, login: &str) -> HandClient {
        let account = self.account(login).await;
        self.hand_client(login, &account.uuid).await
    }

    /// A new account `login` (`<login>@example.com`), approved for provisioning.
    pub async fn account(&self, login: &str) -> ufds::Account {
        self.ufds()
            .create_account(ufds::CreateAccountRequest {
                login: login.into(),
                email: format!("{login}@example.com"),
                approved_for_provisioning: true,
                ..Default::default()
            })
            .await
            .expect("CreateAccount")
            .into_inner()
    }

    /// The keys UFDS holds for `account` (a login or a uuid).
    pub async fn keys_of(&self, account: &str) -> Vec<ufds::Key> {
        self.ufds()
            .list_keys(ufds::ListKeysRequest {
                account: account.to_string(),
            })
            .await
            .expect("ListKeys")
            .into_inner()
            .keys
    }

    /// The IPs NAPI holds on network `network` (a uuid).
    pub async fn ips_of(&self, network: &str) -> Vec<napi::Ip> {
        self.napi()
            .list_ips(napi::ListIpsRequest {
                network_uuid: network.to_string(),
                ..Default::default()
            })
            .await
            .expect("ListIps")
            .into_inner()
            .ips
    }

    /// A network `name` on nic tag `external` (the sim node's): `<prefix>.0/24`, handing
    /// out `<prefix>.10` to `<prefix>.250`, as `customize` leaves it.
    pub async fn external_network(
        &self,
        name: &str,
        prefix: &str,
        customize: impl FnOnce(&mut napi::CreateNetworkRequest),
    ) -> napi::Network {
        let mut request = napi::CreateNetworkRequest {
            name: name.into(),
            subnet: format!("{prefix}.0/24"),
            provision_start_ip: format!("{prefix}.10"),
            provision_end_ip: format!("{prefix}.250"),
            nic_tag: "external".into(),
            ..Default::default()
        };
        customize(&mut request);
        self.napi()
            .create_network(request)
            .await
            .expect("CreateNetwork")
            .into_inner()
    }

    /// What the CloudAPI tests provision from: package `g1-small` with `ram` MiB and
    /// the public image `base-64-lts` 24.4.1 whose file is `file` (a gzip'd tar for a
    /// linux node; anything for a sim node).
    pub async fn catalog(&self, ram: u64, file: Vec<u8>) -> Catalog {
        let package = self.package("g1-small", ram, &[]).await;
        let image = self
            .image("base-64-lts", "24.4.1", true, ADMIN_UUID, file)
            .await;
        Catalog { package, image }
    }
}

/// Where the CloudAPI instance tests start: a datacenter with a sim node
/// ([`Options::cloudapi_compute`]), the [`Dc::catalog`] (`g1-small` with 1 GiB), and two
/// tenants, `alice` (an RSA key) and `bob` (Ed25519).
pub struct TwoTenants {
    /// The datacenter.
    pub dc: Dc,
    /// `alice`, with an RSA key.
    pub alice: Tenant,
    /// `bob`, with an Ed25519 key.
    pub bob: Tenant,
    /// What they provision from.
    pub catalog: Catalog,
}

impl TwoTenants {
    /// Starts the datacenter and makes the catalog and the tenants.
    pub async fn start() -> TwoTenants {
        let dc = Dc::start(Options::cloudapi_compute()).await;
        let alice = dc.tenant("alice", "rsa").await;
        let bob = dc.tenant("bob", "ed25519").await;
        let catalog = dc.catalog(1024, b"simulated".to_vec()).await;
        TwoTenants {
            dc,
            alice,
            bob,
            catalog,
        }
    }
}

/// Requests signed by hand with one key of an account: for what the CLI cannot send.
#[derive(Clone)]
pub struct HandClient {
    /// CloudAPI's plain HTTP address.
    pub addr: SocketAddr,
    /// The account's login.
    pub login: String,
    /// The account's uuid.
    pub account: String,
    /// The key it signs with.
    pub key: std::sync::Arc<HandKey>,
    /// The key's fingerprint (MD5, colon-hex).
    pub fingerprint: String,
}

impl HandClient {
    /// The keyId requests are signed as: `/<login>/keys/<fingerprint>`.
    pub fn key_id(&self) -> String {
        format!("/{}/keys/{}", self.login, self.fingerprint)
    }

    /// `Date` and `Authorization` headers signed now.
    pub fn sign(&self) -> Vec<(&'static str, String)> {
        self.key.sign(&self.key_id(), 0)
    }

    /// Sends `method path` with `body` (JSON, or none when empty), signed now.
    pub async fn send(&self, method: &str, path: &str, body: &str) -> RawResponse {
        raw_request(self.addr, method, path, &self.sign(), body).await
    }

    /// Sends `method path` with `body` as its JSON body, signed now.
    pub async fn send_json(&self, method: &str, path: &str, body: &Value) -> RawResponse {
        self.send(method, path, &body.to_string()).await
    }
}

/// The `triton` CLI, or a failure saying how to install it.
pub fn triton_cli() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("triton");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the `triton` CLI is not installed: these tests drive the real node-triton client; \
         install it with `npm install -g triton@7` (node and npm are needed)"
    );
}

/// An SSH key pair of `key_type` (as [`Dc::tenant`] takes it, or `rsa-1024`, too weak
/// for CloudAPI) made by `ssh-keygen` at `path` and `path.pub`.
pub fn ssh_keygen(path: &Path, key_type: &str) {
    let kind: &[&str] = match key_type {
        "rsa" => &["-t", "rsa", "-b", "2048", "-m", "PEM"],
        "rsa-1024" => &["-t", "rsa", "-b", "1024"],
        "ecdsa-256" => &["-t", "ecdsa", "-b", "256", "-m", "PEM"],
        "ecdsa-384" => &["-t", "ecdsa", "-b", "384", "-m", "PEM"],
        "ecdsa-521" => &["-t", "ecdsa", "-b", "521", "-m", "PEM"],
        "ed25519" => &["-t", "ed25519"],
        other => panic!("unknown key type {other}"),
    };
    let file = crate::path_str(path);
    let args = [&["-q", "-N", "", "-C", "cloudapi-test", "-f", file], kind].concat();
    crate::run("ssh-keygen", &args);
}

/// A new public key of `key_type` (see [`ssh_keygen`]) in OpenSSH's one-line form.
pub fn ssh_public_key(key_type: &str) -> String {
    let dir = tempfile::tempdir().expect("key dir");
    let path = dir.path().join("id");
    ssh_keygen(&path, key_type);
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

pub(crate) fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cloudapi-cert.pem");
    let key = dir.join("cloudapi-key.pem");
    crate::run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cloudapi.coal",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            crate::path_str(&key),
            "-out",
            crate::path_str(&cert),
        ],
    );
    (cert, key)
}

/// A tenant: an account, its key, and a `$HOME` the `triton` CLI finds the key in.
pub struct Tenant {
    /// Its login, the `TRITON_ACCOUNT` the CLI runs as.
    pub login: String,
    /// Its account's uuid.
    pub uuid: String,
    /// Its `$HOME`, with the key in `.ssh`.
    pub home: tempfile::TempDir,
    /// The private key's file.
    pub key_path: PathBuf,
    /// MD5, colon-hex: the keyId the CLI signs with.
    pub fingerprint: String,
    /// The `TRITON_URL` the CLI is given (HTTPS with `https://`).
    pub url: String,
    /// Sets `TRITON_TLS_INSECURE`, for a self-signed certificate.
    pub insecure: bool,
}

/// What one `triton` run printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// What it printed on standard output.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
}

impl CliOutput {
    /// A list printed with `-j`: one JSON object per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The output as JSON (`-j`): one document, or one per line.
    pub fn json(&self) -> Value {
        if let Ok(v) = serde_json::from_str(&self.stdout) {
            return v;
        }
        Value::Array(
            self.stdout
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect(),
        )
    }
}

impl Tenant {
    /// `triton <args>` as this tenant, in a fresh environment, to be run.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(triton_cli());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("TRITON_URL", &self.url)
            .env("TRITON_ACCOUNT", &self.login)
            .env("TRITON_KEY_ID", &self.fingerprint)
            .kill_on_drop(true);
        if self.insecure {
            cmd.env("TRITON_TLS_INSECURE", "1");
        }
        cmd
    }

    /// Runs `triton <args>` as this tenant, in a fresh environment.
    pub async fn triton(&self, args: &[&str]) -> CliOutput {
        let mut cmd = self.command(args);
        let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .expect("triton finishes within 10 minutes")
            .expect("triton runs");
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `triton <args>`, which must succeed.
    pub async fn ok(&self, args: &[&str]) -> CliOutput {
        let out = self.triton(args).await;
        assert!(
            out.success,
            "triton {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out
    }

    /// `triton instance create -w -j -n <name> base-64-lts g1-small` (the
    /// [`Dc::catalog`]), which must succeed: the running instance's id.
    pub async fn create_instance(&self, name: &str) -> String {
        self.create_instance_with(name, &[], "g1-small").await
    }

    /// `triton instance create -w -j -n <name> <options> base-64-lts <package>`, which
    /// must succeed: the running instance's id.
    pub async fn create_instance_with(
        &self,
        name: &str,
        options: &[&str],
        package: &str,
    ) -> String {
        let args = ["instance", "create", "-w", "-j", "-n", name];
        let out = self
            .ok(&[&args[..], options, &["base-64-lts", package]].concat())
            .await;
        let created = out.json_lines();
        let last = created.last().expect("the created instance");
        assert_eq!(last["state"], "running", "{}", out.stdout);
        last["id"].as_str().expect("an id").to_string()
    }

    /// `triton <args>`, which must succeed and print every one of `words`; its output.
    pub async fn prints(&self, args: &[&str], words: &[&str]) -> CliOutput {
        let out = self.ok(args).await;
        assert_printed(args, &out.stdout, words);
        out
    }

    /// `triton <args>`, which must succeed: what it printed, trimmed.
    pub async fn text(&self, args: &[&str]) -> String {
        self.ok(args).await.stdout.trim().to_string()
    }

    /// `triton <args>` (`-j` among them), which must succeed: its output as JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        self.ok(args).await.json()
    }

    /// `triton <args>` (a list, `-j` among them), which must succeed: one JSON object per
    /// line.
    pub async fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args).await.json_lines()
    }

    /// The tenant's instances (`triton instance list -j`).
    pub async fn instances(&self) -> Vec<Value> {
        self.json_lines(&["instance", "list", "-j"]).await
    }

    /// `triton <args>`, which must fail; its output.
    pub async fn fails(&self, args: &[&str]) -> CliOutput {
        let out = self.triton(args).await;
        assert!(
            !out.success,
            "triton {} should fail but printed:\n{}",
            args.join(" "),
            out.stdout
        );
        out
    }

    /// `triton <args>`, which must fail saying `says` on standard error; its output.
    pub async fn fails_saying(&self, args: &[&str], says: &str) -> CliOutput {
        let out = self.fails(args).await;
        assert_printed(args, &out.stderr, &[says]);
        out
    }

    /// [`Tenant::fails_saying`] for each `(args, says)` in turn.
    pub async fn refuses(&self, cases: &[(&[&str], &str)]) {
        for (args, says) in cases {
            self.fails_saying(args, says).await;
        }
    }
}

/// Asserts that `printed`, what `triton <args>` printed, holds every one of `words`.
#[track_caller]
fn assert_printed(args: &[&str], printed: &str, words: &[&str]) {
    for w in words {
        assert!(
            printed.contains(w),
            "triton {} should print {w:?} but printed:\n{printed}",
            args.join(" "),
        );
    }
}

// ------------------------------------------------------------------ raw HTTP

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: String,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    /// Asserts a 200 whose body is a JSON array, and gives its items.
    #[track_caller]
    pub fn assert_list(&self) -> Vec<Value> {
        assert_eq!(self.status, 200, "{}", self.body);
        match self.json() {
            Value::Array(items) => items,
            other => panic!("not a JSON array: {other}"),
        }
    }

    /// Asserts a Triton error body with `code` and `status`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        let body = self.json();
        assert_eq!(body["code"], code, "body: {}", self.body);
        body["message"].as_str().unwrap_or_default().to_string()
    }
}

/// Sends one HTTP/1.1 request (Connection: close) and reads the whole response.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to CloudAPI");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

/// An Ed25519 key made in the test, registered (or not) with an account, that signs
/// requests by hand.
pub struct HandKey {
    /// The key pair.
    pub pair: ring::signature::Ed25519KeyPair,
    /// The public key in OpenSSH's one-line form, as UFDS takes it.
    pub openssh: String,
}

impl Default for HandKey {
    fn default() -> Self {
        HandKey::new()
    }
}

impl HandKey {
    /// A new random key.
    pub fn new() -> HandKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let mut blob = Vec::new();
        for part in [b"ssh-ed25519".as_slice(), pair.public_key().as_ref()] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        let openssh = format!(
            "ssh-ed25519 {} hand@test",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        HandKey { pair, openssh }
    }

    /// `Date` and `Authorization` headers for a request signed with this key as
    /// `key_id`, with the date `offset_secs` from now.
    pub fn sign(&self, key_id: &str, offset_secs: i64) -> Vec<(&'static str, String)> {
        let now = std::time::SystemTime::now();
        let when = if offset_secs >= 0 {
            now + Duration::from_secs(offset_secs as u64)
        } else {
            now - Duration::from_secs((-offset_secs) as u64)
        };
        let date = httpdate::fmt_http_date(when);
        let sig = self.pair.sign(format!("date: {date}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        vec![
            ("Date", date),
            (
                "Authorization",
                format!(
                    r#"Signature keyId="{key_id}",algorithm="ed25519-sha512",headers="date",signature="{sig}""#
                ),
            ),
        ]
    }
}
