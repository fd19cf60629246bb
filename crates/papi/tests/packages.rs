//! Packages through the gRPC API, on a real Moray and PostgreSQL.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use dc_testkit::{Dc, Options, Service, assert_error, assert_refused};
use triton_common::status::{error_message, error_name};
use triton_proto::papi::v1 as proto;

const OWNER_A: &str = "ecc73356-f797-4cd2-8f80-514c27031efe";
const OWNER_B: &str = "ac503e10-a979-496d-a54e-0ec9eb2f999f";
const NET: &str = "1e7bb0e1-25a9-43b6-bb19-f79ae9540b39";

/// The example package of sdc-papi's docs.
fn fields(name: &str, version: &str) -> proto::PackageFields {
    proto::PackageFields {
        name: Some(name.into()),
        version: Some(version.into()),
        active: Some(true),
        max_physical_memory: Some(256),
        max_swap: Some(512),
        quota: Some(16384),
        cpu_cap: Some(25),
        max_lwps: Some(4000),
        zfs_io_priority: Some(100),
        ..Default::default()
    }
}

fn create(uuid: &str, fields: proto::PackageFields) -> proto::CreatePackageRequest {
    proto::CreatePackageRequest {
        uuid: uuid.into(),
        fields: Some(fields),
    }
}

type Client = proto::papi_client::PapiClient<tonic::transport::Channel>;

/// GetPackage of `uuid` as an operator would ask (no owner filter).
async fn get(c: &mut Client, uuid: &str) -> Result<tonic::Response<proto::Package>, tonic::Status> {
    c.get_package(proto::GetPackageRequest {
        uuid: uuid.into(),
        owner_uuids: vec![],
    })
    .await
}

/// DeletePackage of `uuid`.
async fn delete(
    c: &mut Client,
    uuid: &str,
    force: bool,
) -> Result<tonic::Response<proto::DeletePackageResponse>, tonic::Status> {
    c.delete_package(proto::DeletePackageRequest {
        uuid: uuid.into(),
        force,
    })
    .await
}

fn traits(pairs: &[(&str, bool)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::BoolValue(*v)),
                    },
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn package_lifecycle() {
    let stack = Dc::start(Options::only(Service::Papi)).await;
    // SERVING (1) in the standard health service, under the service's full name.
    assert_eq!(
        dc_testkit::health(stack.addr(Service::Papi), papi::SERVICE_NAME).await,
        1
    );
    let c = &mut stack.papi();

    let full = proto::PackageFields {
        vcpus: Some(1),
        fss: Some(25),
        default: Some(true),
        group: Some("Standard".into()),
        description: Some("Micro 0.25 GB RAM 0.125 CPUs 16 GB Disk".into()),
        common_name: Some("Standard 0.25".into()),
        owner_uuids: Some(proto::UuidList {
            uuids: vec![OWNER_A.into()],
        }),
        networks: Some(proto::UuidList {
            uuids: vec![NET.into()],
        }),
        traits: Some(traits(&[("ssd", true), ("img_mgmt", false)])),
        billing_tag: Some("micro".into()),
        brand: Some("bhyve".into()),
        os: Some("linux".into()),
        parent: Some("g3-standard-4-smartos".into()),
        min_platform: Some(proto::StringMap {
            entries: [("7.0".to_string(), "20130917T001310Z".to_string())].into(),
        }),
        flexible_disk: Some(true),
        disks: Some(proto::DiskList {
            disks: vec![
                proto::Disk {
                    size: Some(proto::disk::Size::Mib(10240)),
                },
                proto::Disk {
                    size: Some(proto::disk::Size::Remaining(true)),
                },
            ],
        }),
        alloc_server_spread: Some("min-ram".into()),
        ..fields("g3-standard-0.25-smartos", "1.0.0")
    };
    let uuid = "7fc87f43-2def-4e6f-9f8c-980b0385b36e";
    let created = c
        .create_package(create(uuid, full))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.v, 1);
    assert_eq!(created.uuid, uuid);
    assert_eq!(created.name, "g3-standard-0.25-smartos");
    assert_eq!(created.max_physical_memory, 256);
    assert_eq!(created.quota, 16384);
    assert_eq!(created.cpu_cap, Some(25));
    assert_eq!(created.vcpus, Some(1));
    assert!(created.default);
    assert_eq!(created.owner_uuids, [OWNER_A]);
    assert_eq!(created.networks, [NET]);
    assert_eq!(
        created.traits,
        Some(traits(&[("ssd", true), ("img_mgmt", false)]))
    );
    assert_eq!(
        created.min_platform,
        BTreeMap::from([("7.0".to_string(), "20130917T001310Z".to_string())])
            .into_iter()
            .collect()
    );
    assert_eq!(created.disks.len(), 2);
    assert_eq!(
        created.disks[1].size,
        Some(proto::disk::Size::Remaining(true))
    );
    assert!(created.created_at.ends_with('Z'));

    let got = get(c, uuid).await.unwrap().into_inner();
    assert_eq!(got, created);

    // A uuid is made when none is given.
    let made = c
        .create_package(create("", fields("sdc_128", "1.0.0")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.uuid.len(), 36);
    assert_eq!(made.cpu_cap, Some(25));
    assert_eq!(made.owner_uuids, Vec::<String>::new());

    // Update mutable fields; immutable ones may be restated unchanged; remove some.
    let updated = c
        .update_package(proto::UpdatePackageRequest {
            uuid: uuid.into(),
            fields: Some(proto::PackageFields {
                active: Some(false),
                description: Some("retired".into()),
                traits: Some(traits(&[("ssd", false)])),
                owner_uuids: Some(proto::UuidList {
                    uuids: vec![OWNER_A.into(), OWNER_B.into()],
                }),
                max_physical_memory: Some(256),
                name: Some("g3-standard-0.25-smartos".into()),
                ..Default::default()
            }),
            remove: vec!["group".into(), "billing_tag".into(), "default".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.active);
    assert_eq!(updated.description, "retired");
    assert_eq!(updated.traits, Some(traits(&[("ssd", false)])));
    assert_eq!(updated.owner_uuids, [OWNER_A, OWNER_B]);
    assert_eq!(updated.group, "");
    assert_eq!(updated.billing_tag, "");
    assert!(!updated.default);
    assert_eq!(updated.common_name, "Standard 0.25");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    let got = get(c, uuid).await.unwrap().into_inner();
    assert_eq!(got, updated);

    // Deleting needs force, as in Triton.
    assert_error(
        delete(c, uuid, false).await,
        "BadMethod",
        &["cannot be deleted"],
    );
    get(c, uuid).await.unwrap();
    delete(c, uuid, true).await.unwrap();
    assert_error(get(c, uuid).await, "ResourceNotFound", &[uuid]);
    assert_error(delete(c, uuid, true).await, "ResourceNotFound", &[uuid]);
}

#[tokio::test]
async fn bad_packages_are_refused_naming_the_fields() {
    let stack = Dc::start(Options::only(Service::Papi)).await;
    let c = &mut stack.papi();

    let msg = assert_error(
        c.create_package(create("", <proto::PackageFields as Default>::default()))
            .await,
        "MissingParameter",
        &[
            "name is missing",
            "version is missing",
            "active is missing",
            "max_physical_memory is missing",
            "max_swap is missing",
            "quota is missing",
            "max_lwps is missing",
            "zfs_io_priority is missing",
            "cpu_cap is missing",
        ],
    );
    assert!(!msg.message().contains("must be"), "{msg:?}");

    // Each bad package is refused with every rule it breaks named.
    let invalid: Vec<(proto::PackageFields, &[&str])> = vec![
        (
            proto::PackageFields {
                max_physical_memory: Some(32),
                max_swap: Some(64),
                quota: Some(512),
                cpu_cap: Some(10),
                max_lwps: Some(100),
                zfs_io_priority: Some(20000),
                vcpus: Some(65),
                ..fields("small", "1.0.0")
            },
            &[
                "max_physical_memory must be greater or equal to 64",
                "max_swap must be greater or equal to 128",
                "quota must be greater or equal to 1024",
                "cpu_cap must be greater or equal to 20",
                "max_lwps must be greater or equal to 250",
                "zfs_io_priority must be greater or equal to 0, and less than or equal to 16383",
                "vcpus must be greater or equal to 1, and less or equal to 64",
            ],
        ),
        (
            proto::PackageFields {
                max_physical_memory: Some(1024),
                max_swap: Some(512),
                quota: Some(10000),
                ..fields("small", "1.0.0")
            },
            &[
                "max_swap cannot be less than max_physical_memory",
                "quota must be a multiple of 1024",
            ],
        ),
        (fields("a--b", "1.0.0"), &["name"]),
        (fields("-ab", "1.0.0"), &["name"]),
        (fields("ok", "1.0"), &["version"]),
        (
            proto::PackageFields {
                brand: Some("solaris".into()),
                owner_uuids: Some(proto::UuidList {
                    uuids: vec!["bob".into()],
                }),
                disks: Some(proto::DiskList { disks: vec![] }),
                ..fields("ok", "1.0.0")
            },
            &[
                "brand must be one of",
                "owner_uuids must only contain UUIDs",
                "disks",
            ],
        ),
    ];
    for (i, (fields, complaints)) in invalid.into_iter().enumerate() {
        let case = format!("case {i} ({}@{})", fields.name(), fields.version());
        let status = match c.create_package(create("", fields)).await {
            Ok(created) => panic!("{case}: created {:?}", created.into_inner()),
            Err(status) => status,
        };
        assert_eq!(
            error_name(&status),
            Some("InvalidArgument"),
            "{case}: {status:?}"
        );
        let message = error_message(&status);
        for complaint in complaints {
            assert!(
                message.contains(complaint),
                "{case}: {message:?} should contain {complaint:?}"
            );
        }
    }
    assert_error(
        c.create_package(create("not-a-uuid", fields("ok", "1.0.0")))
            .await,
        "InvalidArgument",
        &["uuid \"not-a-uuid\" is not a UUID"],
    );

    // Duplicates: the uuid, and the (name, version) pair.
    let uuid = "00956725-4689-4e2c-9d25-f2172f496f9c";
    c.create_package(create(uuid, fields("sdc_256", "1.0.0")))
        .await
        .unwrap();
    assert_error(
        c.create_package(create(uuid, fields("other", "1.0.0")))
            .await,
        "ConflictError",
        &["uuid", uuid],
    );
    assert_error(
        c.create_package(create("", fields("sdc_256", "1.0.0")))
            .await,
        "ConflictError",
        &["name, version", "\"sdc_256\", \"1.0.0\""],
    );
    // A new version of the same name is how a package "changes".
    c.create_package(create("", fields("sdc_256", "1.0.1")))
        .await
        .unwrap();

    // With ignore_cpu_cap (Triton's IGNORE_CPU_CAP) cpu_cap may be left out.
    let mut config = papi::Config {
        ignore_cpu_cap: true,
        ..Default::default()
    };
    config.service.listen = "127.0.0.1:0".into();
    config.service.moray_url = stack.moray_url();
    let lenient = papi::start(config, stack.shutdown.clone())
        .await
        .expect("second PAPI starts");
    let mut lenient = proto::papi_client::PapiClient::connect(format!("http://{}", lenient.addr))
        .await
        .expect("client connects");
    let uncapped = lenient
        .create_package(create(
            "",
            proto::PackageFields {
                cpu_cap: None,
                ..fields("uncapped", "1.0.0")
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uncapped.cpu_cap, None);

    let list = stack
        .papi()
        .list_packages(<proto::ListPackagesRequest as Default>::default())
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<String> = list
        .packages
        .iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    names.sort();
    assert_eq!(names, ["sdc_256@1.0.0", "sdc_256@1.0.1", "uncapped@1.0.0"]);
}

#[tokio::test]
async fn updates_refuse_immutable_fields_by_name() {
    let stack = Dc::start(Options::only(Service::Papi)).await;
    let c = &mut stack.papi();
    let uuid = "b65b8ce2-29e7-4f63-b529-357f42bf0742";
    let created = c
        .create_package(create(uuid, fields("test-1", "1.0.0")))
        .await
        .unwrap()
        .into_inner();

    let update = |fields: proto::PackageFields, remove: &[&str]| proto::UpdatePackageRequest {
        uuid: uuid.into(),
        fields: Some(fields),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    };
    // Each refused, naming what is wrong; none changes the package.
    let refused = [
        (
            "immutable fields",
            update(
                proto::PackageFields {
                    max_physical_memory: Some(512),
                    version: Some("2.0.0".into()),
                    cpu_cap: Some(50),
                    brand: Some("lx".into()),
                    description: Some("bigger".into()),
                    ..Default::default()
                },
                &[],
            ),
            "InvalidArgument",
            &[
                "version is immutable (it is 1.0.0)",
                "max_physical_memory is immutable (it is 256)",
                "cpu_cap is immutable (it is 25)",
                "brand is immutable (it is unset)",
            ][..],
        ),
        (
            "removing fields",
            update(Default::default(), &["quota", "active", "colour"]),
            "InvalidArgument",
            &[
                "quota is immutable and cannot be removed",
                "active is required and cannot be removed",
                "remove \"colour\" is not a package field",
            ],
        ),
        (
            "a bad owner uuid",
            update(
                proto::PackageFields {
                    owner_uuids: Some(proto::UuidList {
                        uuids: vec!["nope".into()],
                    }),
                    ..Default::default()
                },
                &[],
            ),
            "InvalidArgument",
            &["owner_uuids"],
        ),
        (
            "a package that does not exist",
            proto::UpdatePackageRequest {
                uuid: "c65b8ce2-29e7-4f63-b529-357f42bf0742".into(),
                fields: Some(proto::PackageFields {
                    active: Some(false),
                    ..Default::default()
                }),
                remove: vec![],
            },
            "ResourceNotFound",
            &["c65b8ce2"],
        ),
        (
            "a bad uuid",
            proto::UpdatePackageRequest {
                uuid: "NOT-A-UUID".into(),
                ..Default::default()
            },
            "InvalidArgument",
            &["uuid"],
        ),
    ];
    for (case, request, name, fragments) in refused {
        assert_refused(case, c.update_package(request).await, name, fragments);
    }
    // Nothing above changed the package.
    let got = get(c, uuid).await.unwrap().into_inner();
    assert_eq!(got, created);
}

#[tokio::test]
async fn list_filters_sort_and_page() {
    let stack = Dc::start(Options::only(Service::Papi)).await;
    let c = &mut stack.papi();
    let owned = |owner: &str| {
        Some(proto::UuidList {
            uuids: vec![owner.to_string()],
        })
    };
    let specs: Vec<proto::PackageFields> = vec![
        proto::PackageFields {
            group: Some("Standard".into()),
            ..fields("sdc_128", "1.0.0")
        },
        proto::PackageFields {
            max_physical_memory: Some(1024),
            max_swap: Some(2048),
            group: Some("Standard".into()),
            ..fields("sdc_1024", "1.0.0")
        },
        proto::PackageFields {
            max_physical_memory: Some(1024),
            max_swap: Some(2048),
            active: Some(false),
            ..fields("sdc_1024", "2.0.0")
        },
        proto::PackageFields {
            max_physical_memory: Some(4096),
            max_swap: Some(8192),
            vcpus: Some(2),
            brand: Some("bhyve".into()),
            flexible_disk: Some(true),
            owner_uuids: owned(OWNER_A),
            ..fields("g4-bhyve-4G", "1.0.0")
        },
        proto::PackageFields {
            max_physical_memory: Some(2048),
            max_swap: Some(4096),
            owner_uuids: owned(OWNER_B),
            ..fields("private-b", "1.0.0")
        },
    ];
    for f in specs {
        c.create_package(create("", f)).await.unwrap();
    }

    async fn names(
        c: &mut triton_proto::papi::v1::papi_client::PapiClient<tonic::transport::Channel>,
        req: proto::ListPackagesRequest,
    ) -> (Vec<String>, u64) {
        let r = c.list_packages(req).await.unwrap().into_inner();
        (
            r.packages
                .iter()
                .map(|p| format!("{}@{}", p.name, p.version))
                .collect(),
            r.total,
        )
    }
    let all = <proto::ListPackagesRequest as Default>::default;

    let (got, total) = names(c, all()).await;
    assert_eq!(total, 5);
    assert_eq!(
        got,
        [
            "sdc_128@1.0.0",
            "sdc_1024@1.0.0",
            "sdc_1024@2.0.0",
            "g4-bhyve-4G@1.0.0",
            "private-b@1.0.0"
        ],
        "creation order by default"
    );

    let cases: Vec<(proto::ListPackagesRequest, Vec<&str>)> = vec![
        (
            proto::ListPackagesRequest {
                name: "sdc_*".into(),
                ..all()
            },
            vec!["sdc_128@1.0.0", "sdc_1024@1.0.0", "sdc_1024@2.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                name: "sdc_1024".into(),
                version: "2.0.0".into(),
                ..all()
            },
            vec!["sdc_1024@2.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                active: Some(false),
                ..all()
            },
            vec!["sdc_1024@2.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                group: "Standard".into(),
                active: Some(true),
                ..all()
            },
            vec!["sdc_128@1.0.0", "sdc_1024@1.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                max_physical_memory: Some(1024),
                ..all()
            },
            vec!["sdc_1024@1.0.0", "sdc_1024@2.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                brand: "bhyve".into(),
                flexible_disk: Some(true),
                vcpus: Some(2),
                ..all()
            },
            vec!["g4-bhyve-4G@1.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                owner_uuids: vec![OWNER_A.into(), OWNER_B.into()],
                ..all()
            },
            vec!["g4-bhyve-4G@1.0.0", "private-b@1.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                visible_to: OWNER_B.into(),
                ..all()
            },
            vec![
                "sdc_128@1.0.0",
                "sdc_1024@1.0.0",
                "sdc_1024@2.0.0",
                "private-b@1.0.0",
            ],
        ),
        (
            proto::ListPackagesRequest {
                filter: "(&(max_physical_memory>=2048)(active=true))".into(),
                name: "ignored-when-filter-is-set".into(),
                ..all()
            },
            vec!["g4-bhyve-4G@1.0.0", "private-b@1.0.0"],
        ),
        (
            proto::ListPackagesRequest {
                name: "sdc_(*)".into(),
                ..all()
            },
            vec![],
        ),
        // Besides `*` globs, values are taken literally: `)(` and `\` neither widen the
        // filter nor break it, and a `*` name stays within what the caller may see.
        (
            proto::ListPackagesRequest {
                name: "sdc_128)(owner_uuids=*".into(),
                visible_to: OWNER_A.into(),
                ..all()
            },
            vec![],
        ),
        (
            proto::ListPackagesRequest {
                name: "x)(|(name=*".into(),
                ..all()
            },
            vec![],
        ),
        (
            proto::ListPackagesRequest {
                group: "Standard\\".into(),
                ..all()
            },
            vec![],
        ),
        (
            proto::ListPackagesRequest {
                name: "*".into(),
                visible_to: OWNER_A.into(),
                ..all()
            },
            vec![
                "sdc_128@1.0.0",
                "sdc_1024@1.0.0",
                "sdc_1024@2.0.0",
                "g4-bhyve-4G@1.0.0",
            ],
        ),
    ];
    for (req, want) in cases {
        let shown = format!("{req:?}");
        let (got, total) = names(c, req).await;
        assert_eq!(got, want, "{shown}");
        if !want.is_empty() {
            assert_eq!(total, want.len() as u64, "{shown}");
        }
    }

    let (got, total) = names(
        c,
        proto::ListPackagesRequest {
            sort: "max_physical_memory".into(),
            order: "desc".into(),
            limit: 2,
            offset: 1,
            ..all()
        },
    )
    .await;
    assert_eq!(total, 5);
    assert_eq!(got[0], "private-b@1.0.0");
    assert_eq!(got.len(), 2);
    assert!(got[1].starts_with("sdc_1024@"), "{got:?}");

    // Visibility on GetPackage.
    let private_b = c
        .list_packages(proto::ListPackagesRequest {
            name: "private-b".into(),
            ..all()
        })
        .await
        .unwrap()
        .into_inner()
        .packages
        .remove(0);
    let get = |owners: &[&str]| proto::GetPackageRequest {
        uuid: private_b.uuid.clone(),
        owner_uuids: owners.iter().map(|s| s.to_string()).collect(),
    };
    c.get_package(get(&[OWNER_B])).await.unwrap();
    c.get_package(get(&[OWNER_A, OWNER_B])).await.unwrap();
    assert_error(
        c.get_package(get(&[OWNER_A])).await,
        "ResourceNotFound",
        &[&private_b.uuid],
    );

    for (req, field) in [
        (
            proto::ListPackagesRequest {
                sort: "traits".into(),
                ..all()
            },
            "sort",
        ),
        (
            proto::ListPackagesRequest {
                order: "sideways".into(),
                ..all()
            },
            "order",
        ),
        (
            proto::ListPackagesRequest {
                limit: 1001,
                ..all()
            },
            "limit",
        ),
        (
            proto::ListPackagesRequest {
                filter: "(&(name=x)".into(),
                ..all()
            },
            "filter",
        ),
        (
            proto::ListPackagesRequest {
                owner_uuids: vec!["x".into()],
                ..all()
            },
            "owner_uuids[0]",
        ),
    ] {
        assert_error(c.list_packages(req).await, "InvalidArgument", &[field]);
    }
}
