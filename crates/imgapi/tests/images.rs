//! IMGAPI against a real Moray on a real PostgreSQL, files on a temp dir: import,
//! upload, activation and the other transitions, listing, and the file over gRPC and
//! plain HTTP.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_proto::imgapi::v1 as proto;
use triton_proto::imgapi::v1::imgapi_client::ImgapiClient;
use triton_testkit::MorayFixture;
use triton_testkit::bytes::pattern;

const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

struct TestImgapi {
    client: ImgapiClient<Channel>,
    http: std::net::SocketAddr,
    data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    _moray: MorayFixture,
}

impl TestImgapi {
    async fn start(max_file_bytes: u64) -> TestImgapi {
        let moray = MorayFixture::start().await;
        let shutdown = CancellationToken::new();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = imgapi::Config {
            http_listen: "127.0.0.1:0".into(),
            data_dir: data_dir.path().display().to_string(),
            max_file_bytes,
            ..Default::default()
        };
        config.service.listen = "127.0.0.1:0".into();
        config.service.moray_url = moray.url().to_string();
        let running = imgapi::start(config, shutdown.clone())
            .await
            .expect("IMGAPI starts");
        let client = ImgapiClient::connect(format!("http://{}", running.addr))
            .await
            .expect("client connects");
        TestImgapi {
            client,
            http: running.http_addr,
            data_dir,
            shutdown,
            _moray: moray,
        }
    }

    fn c(&self) -> ImgapiClient<Channel> {
        self.client.clone()
    }

    fn file_path(&self, uuid: &str) -> PathBuf {
        self.data_dir.path().join("images").join(uuid).join("file")
    }

    /// Every file under the data dir (images and staged uploads).
    fn files_on_disk(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.data_dir.path(), &mut out);
        out
    }

    /// `GET path` over HTTP/1.1: status, headers (lower-case names), body.
    async fn http_get(&self, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("connect HTTP");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: imgapi\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
        {
            body = dechunk(&body);
        }
        (status, headers, body)
    }
}

impl Drop for TestImgapi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        b = &b[line_end + 2 + size + 2..];
    }
}

fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn manifest(name: &str, version: &str) -> proto::Image {
    proto::Image {
        owner: OWNER.into(),
        name: name.into(),
        version: version.into(),
        r#type: "zone-dataset".into(),
        os: "smartos".into(),
        public: true,
        ..Default::default()
    }
}

fn img(uuid: impl Into<String>) -> proto::ImageRequest {
    proto::ImageRequest {
        uuid: uuid.into(),
        account: None,
    }
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The import stream: header, then the data in 64 KiB chunks.
fn import_stream(
    image: proto::Image,
    activate: bool,
    data: &[u8],
) -> impl futures::Stream<Item = proto::ImportImageRequest> + use<> {
    let mut msgs = vec![proto::ImportImageRequest {
        part: Some(proto::import_image_request::Part::Header(
            proto::ImportImageHeader {
                manifest: Some(image),
                activate,
            },
        )),
    }];
    for chunk in data.chunks(64 * 1024) {
        msgs.push(proto::ImportImageRequest {
            part: Some(proto::import_image_request::Part::Chunk(chunk.to_vec())),
        });
    }
    futures::stream::iter(msgs)
}

fn add_file_stream(
    header: proto::AddImageFileHeader,
    data: &[u8],
) -> impl futures::Stream<Item = proto::AddImageFileRequest> + use<> {
    let mut msgs = vec![proto::AddImageFileRequest {
        part: Some(proto::add_image_file_request::Part::Header(header)),
    }];
    for chunk in data.chunks(100_000) {
        msgs.push(proto::AddImageFileRequest {
            part: Some(proto::add_image_file_request::Part::Chunk(chunk.to_vec())),
        });
    }
    futures::stream::iter(msgs)
}

/// The answer of a call that must succeed.
#[track_caller]
fn ok<T>(result: Result<tonic::Response<T>, tonic::Status>) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(status) => panic!("the call should succeed: {status:?}"),
    }
}

/// CreateImage of `manifest`.
async fn create(
    c: &mut ImgapiClient<Channel>,
    manifest: proto::Image,
) -> Result<tonic::Response<proto::Image>, tonic::Status> {
    c.create_image(proto::CreateImageRequest {
        manifest: Some(manifest),
    })
    .await
}

#[track_caller]
fn assert_error<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    name: &str,
    words: &[&str],
) {
    let status = result.expect_err("the call should fail");
    assert_eq!(
        triton_common::status::error_name(&status),
        Some(name),
        "unexpected error: {status:?}"
    );
    for w in words {
        assert!(
            status.message().contains(w),
            "{:?} does not mention {w:?}",
            status.message()
        );
    }
}

async fn get_file_grpc(c: &mut ImgapiClient<Channel>, uuid: &str) -> Vec<u8> {
    let mut stream = c
        .get_image_file(img(uuid))
        .await
        .expect("GetImageFile")
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        assert!(chunk.data.len() <= 1024 * 1024);
        out.extend_from_slice(&chunk.data);
    }
    out
}

#[tokio::test]
async fn import_activate_and_fetch_over_grpc_and_http() {
    let t = TestImgapi::start(64 * 1024 * 1024).await;
    let mut c = t.c();
    let data = pattern(3 * 1024 * 1024 + 17, 1);
    let uuid = new_uuid();
    let mut image = manifest("base-64", "24.4.0");
    image.uuid = uuid.clone();
    image.tags = [("role".to_string(), "os".to_string())].into();
    image.files = vec![proto::ImageFile {
        sha1: sha1_hex(&data),
        size: data.len() as u64,
        compression: "gzip".into(),
        ..Default::default()
    }];

    // A wrong sha1 is refused and leaves nothing: no manifest, no file.
    let mut wrong = image.clone();
    wrong.files[0].sha1 = sha1_hex(b"something else");
    assert_error(
        c.import_image(import_stream(wrong, false, &data)).await,
        "ChecksumError",
        &["sha1", &sha1_hex(&data)],
    );
    assert_error(
        c.get_image(img(uuid.clone())).await,
        "ResourceNotFound",
        &[],
    );
    assert!(
        t.files_on_disk().is_empty(),
        "left behind: {:?}",
        t.files_on_disk()
    );
    // So is a wrong size.
    let mut short = image.clone();
    short.files[0].size += 1;
    assert_error(
        c.import_image(import_stream(short, false, &data)).await,
        "SizeMismatch",
        &["size"],
    );
    assert!(t.files_on_disk().is_empty());

    // The right file: imported with its uuid, unactivated until activated.
    let imported = c
        .import_image(import_stream(image.clone(), false, &data))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.uuid, uuid);
    assert_eq!(imported.state, "unactivated");
    assert_eq!(imported.published_at, "");
    assert_eq!(std::fs::read(t.file_path(&uuid)).unwrap(), data);
    assert_error(
        c.import_image(import_stream(image.clone(), false, &data))
            .await,
        "ImageUuidAlreadyExists",
        &[&uuid],
    );

    let active = ok(c.activate_image(img(uuid.clone())).await);
    assert_eq!(active.state, "active");
    assert!(
        active.published_at.ends_with('Z'),
        "{}",
        active.published_at
    );
    assert_error(
        c.activate_image(img(uuid.clone())).await,
        "ImageAlreadyActivated",
        &[],
    );

    // The same bytes over gRPC and over HTTP.
    let over_grpc = get_file_grpc(&mut c, &uuid).await;
    assert_eq!(over_grpc, data);
    let (status, headers, over_http) = t.http_get(&format!("/images/{uuid}/file")).await;
    assert_eq!(status, 200);
    assert_eq!(over_http, over_grpc);
    assert!(
        headers.contains(&("content-length".into(), data.len().to_string())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("x-image-sha1".into(), sha1_hex(&data))),
        "{headers:?}"
    );
    let (status, _, body) = t.http_get(&format!("/images/{uuid}")).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["uuid"], uuid);
    assert_eq!(json["state"], "active");
    assert_eq!(json["files"][0]["sha1"], sha1_hex(&data));
    assert!(json.get("activated").is_none());
    let (status, _, body) = t.http_get(&format!("/images/{}/file", new_uuid())).await;
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "ResourceNotFound");
    let (status, _, _) = t.http_get("/images/not-a-uuid/file").await;
    assert_eq!(status, 422);
    let (status, _, _) = t.http_get("/ping").await;
    assert_eq!(status, 200);

    // An activated image's file cannot change.
    let header = proto::AddImageFileHeader {
        uuid: uuid.clone(),
        compression: "none".into(),
        ..Default::default()
    };
    assert_error(
        c.add_image_file(add_file_stream(header, b"new")).await,
        "ImageFilesImmutable",
        &[&uuid],
    );

    // Disable and enable.
    let disabled = ok(c.disable_image(img(uuid.clone())).await);
    assert_eq!(disabled.state, "disabled");
    assert!(disabled.disabled);
    let listed = c
        .list_images(proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        listed.is_empty(),
        "a disabled image is not listed by default"
    );
    let enabled = ok(c.enable_image(img(uuid.clone())).await);
    assert_eq!(enabled.state, "active");

    // Delete removes the manifest and the file.
    c.delete_image(img(uuid.clone())).await.unwrap();
    assert!(!t.file_path(&uuid).exists());
    assert!(t.files_on_disk().is_empty());
    assert_error(
        c.get_image(img(uuid.clone())).await,
        "ResourceNotFound",
        &[],
    );
    assert_error(
        c.get_image_file(img(uuid.clone())).await,
        "ResourceNotFound",
        &[],
    );
}

#[tokio::test]
async fn create_upload_transitions_and_list_filters() {
    let t = TestImgapi::start(1024 * 1024).await;
    let mut c = t.c();

    // Bad manifests: every bad field named.
    let mut bad = manifest("", "1 0");
    bad.owner = "me".into();
    bad.r#type = "vm".into();
    bad.os = "plan9".into();
    bad.uuid = new_uuid();
    assert_error(
        create(&mut c, bad).await,
        "ValidationFailed",
        &["uuid:", "owner:", "name:", "version:", "type:", "os:"],
    );

    let created = ok(create(&mut c, manifest("ubuntu", "22.04")).await);
    let uuid = created.uuid.clone();
    assert_eq!(created.state, "unactivated");
    assert_eq!(created.v, 2);

    // Illegal transitions from unactivated.
    assert_error(
        c.activate_image(img(uuid.clone())).await,
        "NoActivationNoFile",
        &[&uuid],
    );
    assert_error(
        c.disable_image(img(uuid.clone())).await,
        "ImageNotActivated",
        &["unactivated"],
    );
    assert_error(
        c.enable_image(img(uuid.clone())).await,
        "ImageNotActivated",
        &[],
    );

    // Uploads: bad header, wrong sha1, too big; none leaves a file.
    let data = pattern(300_000, 2);
    let header = |sha1: Option<String>, size: Option<u64>| proto::AddImageFileHeader {
        uuid: uuid.clone(),
        compression: "xz".into(),
        sha1,
        size,
        ..Default::default()
    };
    let mut bad_header = header(Some("zz".into()), Some(0));
    bad_header.compression = "rar".into();
    assert_error(
        c.add_image_file(add_file_stream(bad_header, &data)).await,
        "ValidationFailed",
        &["compression", "sha1", "size"],
    );
    assert_error(
        c.add_image_file(add_file_stream(header(Some(sha1_hex(b"x")), None), &data))
            .await,
        "ChecksumError",
        &[],
    );
    assert_error(
        c.add_image_file(add_file_stream(
            header(None, None),
            &pattern(1024 * 1024 + 1, 3),
        ))
        .await,
        "ValidationFailed",
        &["size", "limit"],
    );
    let no_header = futures::stream::iter(vec![proto::AddImageFileRequest {
        part: Some(proto::add_image_file_request::Part::Chunk(vec![1, 2, 3])),
    }]);
    assert_error(
        c.add_image_file(no_header).await,
        "ValidationFailed",
        &["header"],
    );
    assert!(t.files_on_disk().is_empty(), "{:?}", t.files_on_disk());
    assert_eq!(
        c.get_image(img(uuid.clone()))
            .await
            .unwrap()
            .into_inner()
            .files
            .len(),
        0
    );

    // A good upload (replacing an earlier one is fine while unactivated).
    c.add_image_file(add_file_stream(header(None, None), b"first try"))
        .await
        .unwrap();
    let with_file = c
        .add_image_file(add_file_stream(
            header(Some(sha1_hex(&data)), Some(data.len() as u64)),
            &data,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_file.files[0].sha1, sha1_hex(&data));
    assert_eq!(with_file.files[0].compression, "xz");
    assert_eq!(with_file.state, "unactivated");
    assert_eq!(get_file_grpc(&mut c, &uuid).await, data);
    let active = ok(c.activate_image(img(uuid.clone())).await);
    assert_eq!(active.state, "active");

    // More images for the filters.
    let mut linux = manifest("centos", "7");
    linux.os = "linux".into();
    linux.r#type = "lx-dataset".into();
    linux.public = false;
    linux.tags = [("role".to_string(), "db".to_string())].into();
    let centos = ok(create(&mut c, linux).await);
    let mut other_owner = manifest("ubuntu", "24.04");
    other_owner.owner = new_uuid();
    let ubuntu24 = ok(create(&mut c, other_owner.clone()).await);

    let names = |r: proto::ListImagesResponse| -> Vec<String> {
        let mut v: Vec<String> = r
            .images
            .into_iter()
            .map(|i| format!("{}@{}", i.name, i.version))
            .collect();
        v.sort();
        v
    };
    let list = |req: proto::ListImagesRequest| {
        let mut c = t.c();
        async move { names(c.list_images(req).await.unwrap().into_inner()) }
    };
    assert_eq!(list(Default::default()).await, vec!["ubuntu@22.04"]);
    let all = |req: proto::ListImagesRequest| proto::ListImagesRequest {
        state: Some("all".into()),
        ..req
    };
    assert_eq!(
        list(all(Default::default())).await,
        vec!["centos@7", "ubuntu@22.04", "ubuntu@24.04"]
    );
    // Each filter alone (besides `state`, over every state), and what it finds.
    let with = |set: &dyn Fn(&mut proto::ListImagesRequest)| {
        let mut req = all(Default::default());
        set(&mut req);
        req
    };
    let role_tag = |v: &str| [("role".to_string(), v.to_string())].into();
    let filters: Vec<(&str, proto::ListImagesRequest, Vec<&str>)> = vec![
        (
            "state unactivated",
            with(&|r| r.state = Some("unactivated".into())),
            vec!["centos@7", "ubuntu@24.04"],
        ),
        (
            "name",
            with(&|r| r.name = Some("ubuntu".into())),
            vec!["ubuntu@22.04", "ubuntu@24.04"],
        ),
        (
            "name ~substring",
            with(&|r| r.name = Some("~ent".into())),
            vec!["centos@7"],
        ),
        (
            "a tag value with filter characters",
            with(&|r| r.tags = role_tag("*)(name=*")),
            vec![],
        ),
        (
            "version",
            with(&|r| r.version = Some("24.04".into())),
            vec!["ubuntu@24.04"],
        ),
        (
            "os",
            with(&|r| r.os = Some("linux".into())),
            vec!["centos@7"],
        ),
        (
            "type, negated",
            with(&|r| r.r#type = Some("!zone-dataset".into())),
            vec!["centos@7"],
        ),
        (
            "type",
            with(&|r| r.r#type = Some("zone-dataset".into())),
            vec!["ubuntu@22.04", "ubuntu@24.04"],
        ),
        (
            "owner",
            with(&|r| r.owner = Some(OWNER.into())),
            vec!["centos@7", "ubuntu@22.04"],
        ),
        (
            "public",
            with(&|r| r.public = Some(false)),
            vec!["centos@7"],
        ),
        ("tag", with(&|r| r.tags = role_tag("db")), vec!["centos@7"]),
    ];
    for (what, req, want) in filters {
        assert_eq!(list(req).await, want, "{what}");
    }
    // Values are taken literally: `*`, `)(` and `\` neither match every image nor widen
    // the filter, also inside a `~` substring.
    for name in [
        "*",
        "ubuntu)(name=*",
        "ubuntu)(|(name=*",
        "~*",
        "~)(",
        "ubuntu\\",
        "~\\",
    ] {
        for req in [
            proto::ListImagesRequest {
                name: Some(name.into()),
                ..Default::default()
            },
            proto::ListImagesRequest {
                version: Some(name.into()),
                ..Default::default()
            },
        ] {
            assert_eq!(list(all(req)).await, Vec::<String>::new(), "{name:?}");
        }
    }
    // Paging by uuid.
    let mut uuids = [uuid.clone(), centos.uuid.clone(), ubuntu24.uuid.clone()];
    uuids.sort();
    let listed_uuids = |req: proto::ListImagesRequest| {
        let mut c = t.c();
        async move {
            let images = ok(c.list_images(req).await).images;
            images.into_iter().map(|i| i.uuid).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed_uuids(with(&|r| r.limit = Some(2))).await, uuids[..2]);
    assert_eq!(
        listed_uuids(with(&|r| r.marker = Some(uuids[1].clone()))).await,
        uuids[2..]
    );
    assert_error(
        c.list_images(proto::ListImagesRequest {
            os: Some("beos".into()),
            state: Some("gone".into()),
            limit: Some(5000),
            owner: Some("x".into()),
            ..Default::default()
        })
        .await,
        "ValidationFailed",
        &["os", "state", "limit", "owner"],
    );

    // What an account may see: its own images, activated public ones, and activated
    // ones with it on the ACL.
    let stranger = new_uuid();
    let mut shared = manifest("shared", "1");
    shared.public = false;
    shared.acl = vec![stranger.clone()];
    let shared = ok(create(&mut c, shared).await);
    let as_account = |account: &str| {
        all(proto::ListImagesRequest {
            account: Some(account.to_string()),
            ..Default::default()
        })
    };
    assert_eq!(list(as_account(&stranger)).await, vec!["ubuntu@22.04"]);
    assert_eq!(
        list(as_account(OWNER)).await,
        vec!["centos@7", "shared@1", "ubuntu@22.04"]
    );
    let mine = proto::ImageRequest {
        uuid: shared.uuid.clone(),
        account: Some(OWNER.into()),
    };
    c.get_image(mine)
        .await
        .expect("the owner sees an unactivated image");
    let theirs = proto::ImageRequest {
        uuid: centos.uuid.clone(),
        account: Some(stranger.clone()),
    };
    assert_error(c.get_image(theirs).await, "ResourceNotFound", &[]);
    let public = proto::ImageRequest {
        uuid: uuid.clone(),
        account: Some(stranger.clone()),
    };
    c.get_image(public)
        .await
        .expect("an active public image is everyone's");
    c.delete_image(img(shared.uuid.clone())).await.unwrap();

    // Origins: must exist; an origin cannot be deleted under its children.
    let mut child = manifest("ubuntu-custom", "1");
    child.origin = new_uuid();
    assert_error(
        create(&mut c, child.clone()).await,
        "OriginDoesNotExist",
        &["origin"],
    );
    child.origin = uuid.clone();
    let child = ok(create(&mut c, child).await);
    assert_error(
        c.delete_image(img(uuid.clone())).await,
        "ImageHasDependentImages",
        &[&child.uuid],
    );
    c.delete_image(img(child.uuid.clone())).await.unwrap();
    c.delete_image(img(uuid.clone())).await.unwrap();
    assert!(t.files_on_disk().is_empty(), "{:?}", t.files_on_disk());
    assert_error(
        c.delete_image(img(uuid.clone())).await,
        "ResourceNotFound",
        &[],
    );
    assert_error(
        c.get_image(img("nope")).await,
        "ValidationFailed",
        &["uuid"],
    );
}
