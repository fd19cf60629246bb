//! PAPI's operations on packages, all state in Moray's `papi_packages` bucket (key: the
//! package uuid; unique indexes on `uuid` and `name_version`).

use moray_client::filter::Filter;
use moray_client::typed::{
    Bucket, Change, RetryPolicy, Versioned, is_etag_conflict, is_unique_violation,
};
use moray_client::{BucketConfig, EtagCondition, FindOptions, IndexDef, MorayClient, SortOrder};
use triton_common::time::now_rfc3339;
use triton_proto::papi::v1 as proto;

use crate::error::{Error, FieldError, Result, StoreError};
use crate::package::{self, Package};

pub const BUCKET: &str = "papi_packages";
/// Version of the bucket config; raise it when an index is added.
pub const BUCKET_VERSION: u32 = 1;
/// Most packages one ListPackages returns (Triton's internal-API page limit).
pub const MAX_LIMIT: u32 = 1000;
/// Longest raw LDAP filter accepted.
pub const MAX_FILTER_LEN: usize = 4096;

/// Indexed fields and their Moray types: what ListPackages can filter and sort on.
pub const INDEXES: &[(&str, &str)] = &[
    ("name", "string"),
    ("version", "string"),
    ("active", "boolean"),
    ("default", "boolean"),
    ("max_physical_memory", "number"),
    ("max_swap", "number"),
    ("quota", "number"),
    ("cpu_cap", "number"),
    ("vcpus", "number"),
    ("max_lwps", "number"),
    ("zfs_io_priority", "number"),
    ("fss", "number"),
    ("group", "string"),
    ("description", "string"),
    ("common_name", "string"),
    ("owner_uuids", "[string]"),
    ("networks", "[string]"),
    ("billing_tag", "string"),
    ("brand", "string"),
    ("os", "string"),
    ("parent", "string"),
    ("flexible_disk", "boolean"),
    ("alloc_server_spread", "string"),
    ("created_at", "string"),
    ("updated_at", "string"),
];

pub fn bucket_config() -> BucketConfig {
    INDEXES.iter().fold(
        BucketConfig::versioned(BUCKET_VERSION)
            .with_index("uuid", IndexDef::unique("string"))
            .with_index("name_version", IndexDef::unique("string")),
        |config, (field, kind)| config.with_index(*field, IndexDef::new(*kind)),
    )
}

#[derive(Debug, Clone)]
pub struct Papi {
    packages: Bucket<Package>,
    ignore_cpu_cap: bool,
}

impl Papi {
    pub fn new(moray: MorayClient, ignore_cpu_cap: bool) -> Self {
        Papi {
            packages: Bucket::new(moray, BUCKET, bucket_config()),
            ignore_cpu_cap,
        }
    }

    pub async fn ensure_buckets(&self) -> Result<()> {
        self.packages
            .ensure()
            .await
            .map_err(Error::moray("putBucket"))
    }

    pub async fn create(&self, req: proto::CreatePackageRequest) -> Result<Package> {
        let fields = req.fields.unwrap_or_default();
        let set = package::set_fields(&fields);
        let mut required: Vec<&str> = package::REQUIRED.to_vec();
        if !self.ignore_cpu_cap {
            required.push("cpu_cap");
        }
        let missing: Vec<FieldError> = required
            .iter()
            .filter(|f| !set.contains(f))
            .map(|f| FieldError::missing(f))
            .collect();
        let now = now_rfc3339();
        let mut pkg = Package {
            uuid: if req.uuid.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                req.uuid
            },
            created_at: now.clone(),
            updated_at: now,
            ..Default::default()
        };
        package::apply(&mut pkg, fields);
        if !missing.is_empty() {
            // Rules on fields that are missing would only repeat that they are missing.
            let mut errors = missing;
            errors.extend(
                package::validate(&pkg, self.ignore_cpu_cap)
                    .into_iter()
                    .filter(|e| set.contains(&e.field.as_str()) || e.field == "uuid"),
            );
            return Err(Error::Invalid(errors));
        }
        let errors = package::validate(&pkg, self.ignore_cpu_cap);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        match self.packages.insert(&pkg.uuid, &pkg).await {
            Ok(_) => Ok(pkg),
            Err(e) if is_etag_conflict(&e) || is_unique_violation(&e, "uuid") => Err(
                Error::conflict("uuid", &pkg.uuid, " (a package with this uuid exists)"),
            ),
            Err(e) if is_unique_violation(&e, "name_version") => {
                Err(Error::from(StoreError::Conflict {
                    field: "name, version",
                    value: format!("{:?}, {:?}", pkg.name, pkg.version),
                    detail: " (a package with this name and version exists)".to_string(),
                }))
            }
            Err(e) => Err(Error::moray("putObject")(e)),
        }
    }

    /// The package; with `owner_uuids`, only if public or owned by one of them.
    pub async fn get(&self, uuid: &str, owner_uuids: &[String]) -> Result<Package> {
        check_uuid("uuid", uuid)?;
        for (i, owner) in owner_uuids.iter().enumerate() {
            check_uuid(&format!("owner_uuids[{i}]"), owner)?;
        }
        let pkg = self.load(uuid).await?.value;
        let visible = owner_uuids.is_empty()
            || pkg
                .owner_uuids
                .as_ref()
                .is_none_or(|owners| owners.iter().any(|o| owner_uuids.contains(o)));
        if !visible {
            return Err(Error::PackageNotFound(uuid.to_string()));
        }
        Ok(pkg)
    }

    pub async fn list(&self, req: &proto::ListPackagesRequest) -> Result<(Vec<Package>, u64)> {
        let filter = list_filter(req)?;
        let mut errors = Vec::new();
        if req.limit > MAX_LIMIT {
            errors.push(FieldError::invalid(
                "limit",
                format!("must be at most {MAX_LIMIT}"),
            ));
        }
        let order = match req.order.to_ascii_uppercase().as_str() {
            "" | "ASC" => SortOrder::Asc,
            "DESC" => SortOrder::Desc,
            other => {
                errors.push(FieldError::invalid(
                    "order",
                    format!("{other:?} is neither ASC nor DESC"),
                ));
                SortOrder::Asc
            }
        };
        let sort_field = if req.sort.is_empty() {
            "_id"
        } else if req.sort == "uuid" || INDEXES.iter().any(|(f, _)| *f == req.sort) {
            req.sort.as_str()
        } else {
            errors.push(FieldError::invalid(
                "sort",
                format!("{:?} is not an indexed package field", req.sort),
            ));
            "_id"
        };
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let options = FindOptions::listing(sort_field, order, req.limit, MAX_LIMIT, req.offset);
        match self
            .packages
            .find_counted(&Filter::Verbatim(filter), &options)
            .await
        {
            Ok(page) => Ok(page),
            Err(e) if matches!(e.name(), "InvalidQueryError" | "NotIndexedError") => {
                Err(Error::invalid(
                    "filter",
                    format!("is not a valid search filter: {}", e.message()),
                ))
            }
            Err(e) => Err(Error::moray("findObjects")(e)),
        }
    }

    pub async fn update(&self, req: proto::UpdatePackageRequest) -> Result<Package> {
        check_uuid("uuid", &req.uuid)?;
        let fields = req.fields.unwrap_or_default();
        let updated = self
            .packages
            .update(&req.uuid, |pkg| {
                let mut errors = package::immutable_changes(pkg, &fields);
                package::apply(pkg, fields.clone());
                for field in &req.remove {
                    if let Err(e) = package::remove(pkg, field) {
                        errors.push(e);
                    }
                }
                if !errors.is_empty() {
                    return Err(Error::Invalid(errors));
                }
                let errors = package::validate(pkg, self.ignore_cpu_cap);
                if !errors.is_empty() {
                    return Err(Error::Invalid(errors));
                }
                pkg.updated_at = now_rfc3339();
                Ok(Change::Write)
            })
            .await;
        let uuid = &req.uuid;
        let attempts = RetryPolicy::DEFAULT.attempts;
        updated.map(|v| v.value).map_err(|e| {
            e.resolve(
                || Error::PackageNotFound(uuid.clone()),
                || {
                    let busy = format!(
                        "package {uuid} changed {attempts} times during the request; try again"
                    );
                    StoreError::Busy(busy).into()
                },
                Error::moray("putObject"),
            )
        })
    }

    pub async fn delete(&self, uuid: &str, force: bool) -> Result<()> {
        check_uuid("uuid", uuid)?;
        let etag = self.load(uuid).await?.etag;
        if !force {
            return Err(Error::BadMethod(
                "Packages cannot be deleted: instances made from them bill against them; \
                 set active=false instead, or force=true"
                    .to_string(),
            ));
        }
        match self.packages.delete(uuid, EtagCondition::Is(etag)).await {
            Ok(()) => Ok(()),
            Err(e) if e.name() == "ObjectNotFoundError" => {
                Err(Error::PackageNotFound(uuid.to_string()))
            }
            Err(e) if is_etag_conflict(&e) => Err(Error::from(StoreError::Busy(format!(
                "package {uuid} changed during the delete; try again"
            )))),
            Err(e) => Err(Error::moray("delObject")(e)),
        }
    }

    async fn load(&self, uuid: &str) -> Result<Versioned<Package>> {
        self.packages
            .get(uuid)
            .await
            .map_err(Error::moray("getObject"))?
            .ok_or_else(|| Error::PackageNotFound(uuid.to_string()))
    }
}

/// The Moray filter of a ListPackages request.
pub fn list_filter(req: &proto::ListPackagesRequest) -> Result<String> {
    if !req.filter.is_empty() {
        if req.filter.len() > MAX_FILTER_LEN {
            return Err(Error::invalid(
                "filter",
                format!("must be at most {MAX_FILTER_LEN} bytes"),
            ));
        }
        return Ok(req.filter.clone());
    }
    let mut errors = Vec::new();
    let mut terms = Vec::new();
    for (field, value) in [
        ("name", &req.name),
        ("version", &req.version),
        ("group", &req.group),
        ("brand", &req.brand),
        ("os", &req.os),
        ("billing_tag", &req.billing_tag),
    ] {
        if !value.is_empty() {
            terms.push(Filter::glob(field, value));
        }
    }
    for (field, value) in [
        ("active", req.active),
        ("flexible_disk", req.flexible_disk),
        ("default", req.default),
    ] {
        if let Some(v) = value {
            terms.push(Filter::eq(field, v));
        }
    }
    for (field, value) in [
        ("max_physical_memory", req.max_physical_memory),
        ("max_swap", req.max_swap),
        ("quota", req.quota),
        ("vcpus", req.vcpus.map(u64::from)),
        ("max_lwps", req.max_lwps.map(u64::from)),
    ] {
        if let Some(v) = value {
            terms.push(Filter::eq(field, v));
        }
    }
    let mut owners = Vec::new();
    for (i, owner) in req.owner_uuids.iter().enumerate() {
        if package::is_uuid(owner) {
            owners.push(Filter::eq("owner_uuids", owner));
        } else {
            errors.push(FieldError::invalid(
                &format!("owner_uuids[{i}]"),
                format!("{owner:?} is not a UUID"),
            ));
        }
    }
    if !owners.is_empty() {
        terms.push(Filter::or(owners));
    }
    if !req.visible_to.is_empty() {
        if package::is_uuid(&req.visible_to) {
            terms.push(Filter::or([
                Filter::eq("owner_uuids", &req.visible_to),
                Filter::negate(Filter::present("owner_uuids")),
            ]));
        } else {
            errors.push(FieldError::invalid(
                "visible_to",
                format!("{:?} is not a UUID", req.visible_to),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    Ok(Filter::and_else(terms, Filter::present("uuid")).to_string())
}

fn check_uuid(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::missing(field));
    }
    if !package::is_uuid(value) {
        return Err(Error::invalid(field, format!("{value:?} is not a UUID")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filters_lists_everything() {
        assert_eq!(
            list_filter(&<proto::ListPackagesRequest as Default>::default()).unwrap(),
            "(uuid=*)"
        );
    }

    #[test]
    fn filters_combine_and_escape() {
        let req = proto::ListPackagesRequest {
            name: "sdc_*".into(),
            group: "a(b)".into(),
            active: Some(true),
            max_physical_memory: Some(1024),
            owner_uuids: vec![
                "7fc87f43-2def-4e6f-9f8c-980b0385b36e".into(),
                "ecc73356-f797-4cd2-8f80-514c27031efe".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            list_filter(&req).unwrap(),
            "(&(name=sdc_*)(group=a\\28b\\29)(active=true)(max_physical_memory=1024)\
             (|(owner_uuids=7fc87f43-2def-4e6f-9f8c-980b0385b36e)(owner_uuids=ecc73356-f797-4cd2-8f80-514c27031efe)))"
        );
    }

    #[test]
    fn visible_to_includes_public_packages() {
        let req = proto::ListPackagesRequest {
            visible_to: "7fc87f43-2def-4e6f-9f8c-980b0385b36e".into(),
            ..Default::default()
        };
        assert_eq!(
            list_filter(&req).unwrap(),
            "(|(owner_uuids=7fc87f43-2def-4e6f-9f8c-980b0385b36e)(!(owner_uuids=*)))"
        );
    }

    #[test]
    fn bad_owner_uuids_are_named() {
        let req = proto::ListPackagesRequest {
            owner_uuids: vec!["nope".into()],
            visible_to: "x".into(),
            ..Default::default()
        };
        let Err(Error::Invalid(errors)) = list_filter(&req) else {
            panic!("expected Invalid");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["owner_uuids[0]", "visible_to"]);
    }

    #[test]
    fn raw_filter_overrides() {
        let req = proto::ListPackagesRequest {
            name: "ignored".into(),
            filter: "(max_physical_memory>=1024)".into(),
            ..Default::default()
        };
        assert_eq!(list_filter(&req).unwrap(), "(max_physical_memory>=1024)");
    }
}
