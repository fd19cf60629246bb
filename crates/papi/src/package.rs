//! Packages: the stored form, how request fields apply to one, and sdc-papi's rules
//! (`lib/validations.js`, `sapi_manifests/papi/template`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use triton_proto::papi::v1 as proto;

use crate::error::FieldError;
pub use triton_types::is_uuid;
use triton_types::value::struct_to_json;

pub const MIN_RAM: u64 = 64;
pub const MIN_SWAP: u64 = 128;
pub const MIN_DISK: u64 = 1024;
pub const MIN_CPU_CAP: u32 = 20;
pub const MIN_LWPS: u32 = 250;
pub const MIN_VCPUS: u32 = 1;
pub const MAX_VCPUS: u32 = 64;
pub const MAX_ZFS_IO_PRIORITY: u32 = 16383;
/// Largest RAM, swap or quota accepted, in MiB (1 PiB). Triton has no cap; ours keeps
/// sizes exact in JSON numbers (below 2^53) and catches unit mistakes (bytes for MiB).
pub const MAX_SIZE_MIB: u64 = 1 << 30;
/// Longest package name. Triton has no cap; names appear in CLIs and URLs.
pub const MAX_NAME_LEN: usize = 256;
/// Longest free-text field (description, group, ...).
pub const MAX_TEXT_LEN: usize = 4096;
pub const VALID_BRANDS: &[&str] = &["bhyve", "joyent", "joyent-minimal", "kvm", "lx"];
pub const VALID_SPREADS: &[&str] = &["min-ram", "random", "min-owner"];
/// Format version of the package object (Triton's `v`).
pub const PACKAGE_FORMAT_VERSION: u32 = 1;

/// Fields that never change once a package exists: packages are the billing record of
/// the instances made from them (sdc-papi "Immutable Attributes").
pub const IMMUTABLE: &[&str] = &[
    "uuid",
    "name",
    "version",
    "max_physical_memory",
    "max_swap",
    "quota",
    "cpu_cap",
    "vcpus",
    "max_lwps",
    "zfs_io_priority",
    "brand",
    "os",
];

/// Fields every package has.
pub const REQUIRED: &[&str] = &[
    "name",
    "version",
    "active",
    "max_physical_memory",
    "max_swap",
    "quota",
    "max_lwps",
    "zfs_io_priority",
];

/// Optional mutable fields, which UpdatePackage may remove.
pub const REMOVABLE: &[&str] = &[
    "fss",
    "default",
    "group",
    "description",
    "common_name",
    "owner_uuids",
    "networks",
    "traits",
    "billing_tag",
    "parent",
    "min_platform",
    "flexible_disk",
    "disks",
    "alloc_server_spread",
];

/// A package as stored in `papi_packages` (key: uuid). Unset optional fields are left
/// out, so an absent `owner_uuids` means "public" to Moray's presence filter too.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Package {
    pub uuid: String,
    pub name: String,
    pub version: String,
    pub active: bool,
    pub max_physical_memory: u64,
    pub max_swap: u64,
    pub quota: u64,
    pub cpu_cap: Option<u32>,
    pub vcpus: Option<u32>,
    pub max_lwps: u32,
    pub zfs_io_priority: u32,
    pub fss: Option<u32>,
    #[serde(default)]
    pub default: bool,
    pub group: Option<String>,
    pub description: Option<String>,
    pub common_name: Option<String>,
    pub owner_uuids: Option<Vec<String>>,
    pub networks: Option<Vec<String>>,
    pub traits: Option<Map<String, Value>>,
    pub billing_tag: Option<String>,
    pub brand: Option<String>,
    pub os: Option<String>,
    pub parent: Option<String>,
    pub min_platform: Option<BTreeMap<String, String>>,
    pub flexible_disk: Option<bool>,
    /// `[{"size": MiB}, {"size": "remaining"}, {}]`, as Triton writes them.
    pub disks: Option<Vec<Value>>,
    pub alloc_server_spread: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `<name>@<version>`, under a unique index: one package per name and version (the
    /// role the unique `urn` `sdc:<owner>:<name>:<version>` had in earlier PAPI).
    #[serde(default)]
    pub name_version: String,
}

impl Package {
    /// Recomputes derived fields after a change.
    pub fn derive(&mut self) {
        self.name_version = format!("{}@{}", self.name, self.version);
    }

    /// The value of an immutable field, as text for comparison and messages.
    fn immutable_value(&self, field: &str) -> Option<String> {
        Some(match field {
            "uuid" => self.uuid.clone(),
            "name" => self.name.clone(),
            "version" => self.version.clone(),
            "max_physical_memory" => self.max_physical_memory.to_string(),
            "max_swap" => self.max_swap.to_string(),
            "quota" => self.quota.to_string(),
            "cpu_cap" => self.cpu_cap?.to_string(),
            "vcpus" => self.vcpus?.to_string(),
            "max_lwps" => self.max_lwps.to_string(),
            "zfs_io_priority" => self.zfs_io_priority.to_string(),
            "brand" => self.brand.clone()?,
            "os" => self.os.clone()?,
            _ => return None,
        })
    }
}

/// Which request fields are set, by name (for required and immutable checks).
pub fn set_fields(f: &proto::PackageFields) -> Vec<&'static str> {
    let flags = [
        ("name", f.name.is_some()),
        ("version", f.version.is_some()),
        ("active", f.active.is_some()),
        ("max_physical_memory", f.max_physical_memory.is_some()),
        ("max_swap", f.max_swap.is_some()),
        ("quota", f.quota.is_some()),
        ("cpu_cap", f.cpu_cap.is_some()),
        ("vcpus", f.vcpus.is_some()),
        ("max_lwps", f.max_lwps.is_some()),
        ("zfs_io_priority", f.zfs_io_priority.is_some()),
        ("fss", f.fss.is_some()),
        ("default", f.default.is_some()),
        ("group", f.group.is_some()),
        ("description", f.description.is_some()),
        ("common_name", f.common_name.is_some()),
        ("owner_uuids", f.owner_uuids.is_some()),
        ("networks", f.networks.is_some()),
        ("traits", f.traits.is_some()),
        ("billing_tag", f.billing_tag.is_some()),
        ("brand", f.brand.is_some()),
        ("os", f.os.is_some()),
        ("parent", f.parent.is_some()),
        ("min_platform", f.min_platform.is_some()),
        ("flexible_disk", f.flexible_disk.is_some()),
        ("disks", f.disks.is_some()),
        ("alloc_server_spread", f.alloc_server_spread.is_some()),
    ];
    flags
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| n)
        .collect()
}

/// Immutable fields that `fields` would change on `stored`: a field set to the value
/// it already has is no change (as in Triton).
pub fn immutable_changes(stored: &Package, fields: &proto::PackageFields) -> Vec<FieldError> {
    let mut probe = stored.clone();
    apply(&mut probe, fields.clone());
    IMMUTABLE
        .iter()
        .filter(|f| set_fields(fields).contains(f))
        .filter(|f| stored.immutable_value(f) != probe.immutable_value(f))
        .map(|f| {
            let was = stored
                .immutable_value(f)
                .unwrap_or_else(|| "unset".to_string());
            FieldError::invalid(f, format!("is immutable (it is {was})"))
        })
        .collect()
}

/// Sets every field present in `fields`. An empty string clears an optional text field.
pub fn apply(p: &mut Package, f: proto::PackageFields) {
    fn set<T>(slot: &mut T, value: Option<T>) {
        if let Some(v) = value {
            *slot = v;
        }
    }
    // An empty text or list clears an optional field.
    fn text(slot: &mut Option<String>, value: Option<String>) {
        set(slot, value.map(|v| (!v.is_empty()).then_some(v)));
    }
    fn list(slot: &mut Option<Vec<String>>, value: Option<proto::UuidList>) {
        set(
            slot,
            value.map(|v| (!v.uuids.is_empty()).then_some(v.uuids)),
        );
    }
    triton_common::set_given!(f => p [
        name,
        version,
        active,
        max_physical_memory,
        max_swap,
        quota,
        max_lwps,
        zfs_io_priority,
        default,
    ]);
    set(&mut p.cpu_cap, f.cpu_cap.map(Some));
    set(&mut p.vcpus, f.vcpus.map(Some));
    set(&mut p.fss, f.fss.map(Some));
    text(&mut p.group, f.group);
    text(&mut p.description, f.description);
    text(&mut p.common_name, f.common_name);
    list(&mut p.owner_uuids, f.owner_uuids);
    list(&mut p.networks, f.networks);
    if let Some(t) = f.traits {
        let map = struct_to_json(&t);
        p.traits = (!map.is_empty()).then_some(map);
    }
    text(&mut p.billing_tag, f.billing_tag);
    text(&mut p.brand, f.brand);
    text(&mut p.os, f.os);
    text(&mut p.parent, f.parent);
    if let Some(m) = f.min_platform {
        p.min_platform = (!m.entries.is_empty()).then(|| m.entries.into_iter().collect());
    }
    set(&mut p.flexible_disk, f.flexible_disk.map(Some));
    if let Some(d) = f.disks {
        p.disks = Some(d.disks.iter().map(disk_to_json).collect());
    }
    text(&mut p.alloc_server_spread, f.alloc_server_spread);
    p.derive();
}

/// Deletes an optional mutable field (UpdatePackage's `remove`).
pub fn remove(p: &mut Package, field: &str) -> Result<(), FieldError> {
    match field {
        "fss" => p.fss = None,
        "default" => p.default = false,
        "group" => p.group = None,
        "description" => p.description = None,
        "common_name" => p.common_name = None,
        "owner_uuids" => p.owner_uuids = None,
        "networks" => p.networks = None,
        "traits" => p.traits = None,
        "billing_tag" => p.billing_tag = None,
        "parent" => p.parent = None,
        "min_platform" => p.min_platform = None,
        "flexible_disk" => p.flexible_disk = None,
        "disks" => p.disks = None,
        "alloc_server_spread" => p.alloc_server_spread = None,
        f if IMMUTABLE.contains(&f) => {
            return Err(FieldError::invalid(f, "is immutable and cannot be removed"));
        }
        f if REQUIRED.contains(&f) => {
            return Err(FieldError::invalid(f, "is required and cannot be removed"));
        }
        f => {
            return Err(FieldError::invalid(
                "remove",
                format!("{f:?} is not a package field"),
            ));
        }
    }
    Ok(())
}

/// Every rule `p` breaks, each naming its field.
pub fn validate(p: &Package, ignore_cpu_cap: bool) -> Vec<FieldError> {
    let mut e = Vec::new();
    let mut invalid = |field: &str, msg: String| e.push(FieldError::invalid(field, msg));

    if !is_uuid(&p.uuid) {
        invalid("uuid", format!("{:?} is not a UUID", p.uuid));
    }
    if let Some(reason) = name_problem(&p.name) {
        invalid("name", reason);
    }
    if !is_semver(&p.version) {
        invalid(
            "version",
            format!(
                "{:?} is not a semver version (MAJOR.MINOR.PATCH, e.g. 1.0.0)",
                p.version
            ),
        );
    }
    if p.max_physical_memory < MIN_RAM {
        invalid(
            "max_physical_memory",
            format!("must be greater or equal to {MIN_RAM}"),
        );
    }
    if p.max_swap < MIN_SWAP {
        invalid(
            "max_swap",
            format!("must be greater or equal to {MIN_SWAP}"),
        );
    } else if p.max_swap < p.max_physical_memory {
        invalid(
            "max_swap",
            "cannot be less than max_physical_memory".to_string(),
        );
    }
    if p.quota < MIN_DISK {
        invalid("quota", format!("must be greater or equal to {MIN_DISK}"));
    } else if !p.quota.is_multiple_of(1024) {
        invalid("quota", "must be a multiple of 1024".to_string());
    }
    for (field, value) in [
        ("max_physical_memory", p.max_physical_memory),
        ("max_swap", p.max_swap),
        ("quota", p.quota),
    ] {
        if value > MAX_SIZE_MIB {
            invalid(field, format!("must be at most {MAX_SIZE_MIB} (MiB)"));
        }
    }
    match p.cpu_cap {
        Some(cap) if cap < MIN_CPU_CAP => {
            invalid(
                "cpu_cap",
                format!("must be greater or equal to {MIN_CPU_CAP}"),
            );
        }
        None if !ignore_cpu_cap => e.push(FieldError::missing("cpu_cap")),
        _ => {}
    }
    let mut invalid = |field: &str, msg: String| e.push(FieldError::invalid(field, msg));
    if p.max_lwps < MIN_LWPS {
        invalid(
            "max_lwps",
            format!("must be greater or equal to {MIN_LWPS}"),
        );
    }
    if p.zfs_io_priority > MAX_ZFS_IO_PRIORITY {
        invalid(
            "zfs_io_priority",
            format!(
                "must be greater or equal to 0, and less than or equal to {MAX_ZFS_IO_PRIORITY}"
            ),
        );
    }
    if let Some(v) = p.vcpus
        && !(MIN_VCPUS..=MAX_VCPUS).contains(&v)
    {
        invalid(
            "vcpus",
            format!("must be greater or equal to {MIN_VCPUS}, and less or equal to {MAX_VCPUS}"),
        );
    }
    if let Some(b) = &p.brand
        && !VALID_BRANDS.contains(&b.as_str())
    {
        invalid(
            "brand",
            format!("must be one of: {}", VALID_BRANDS.join(", ")),
        );
    }
    if let Some(s) = &p.alloc_server_spread
        && !VALID_SPREADS.contains(&s.as_str())
    {
        invalid(
            "alloc_server_spread",
            format!("must be one of: {}", VALID_SPREADS.join(", ")),
        );
    }
    for (field, list) in [("owner_uuids", &p.owner_uuids), ("networks", &p.networks)] {
        let bad: Vec<&String> = list.iter().flatten().filter(|u| !is_uuid(u)).collect();
        if !bad.is_empty() {
            invalid(field, format!("must only contain UUIDs (not {bad:?})"));
        }
    }
    if p.disks.is_some() && p.flexible_disk != Some(true) {
        invalid(
            "disks",
            "disks can be specified only for flexible_disk packages".to_string(),
        );
    }
    for (field, value) in [
        ("group", &p.group),
        ("description", &p.description),
        ("common_name", &p.common_name),
        ("billing_tag", &p.billing_tag),
        ("os", &p.os),
        ("parent", &p.parent),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_TEXT_LEN)
        {
            invalid(field, format!("must be at most {MAX_TEXT_LEN} characters"));
        }
    }
    if let Some(m) = &p.min_platform
        && m.iter().any(|(k, v)| k.is_empty() || v.is_empty())
    {
        invalid(
            "min_platform",
            "keys (SDC versions) and values (platform stamps) must not be empty".to_string(),
        );
    }
    e
}

/// sdc-papi's name rule: `^[a-zA-Z0-9]([a-zA-Z0-9_\-.]+)?[a-zA-Z0-9]$`, no two of
/// `_`, `-`, `.` in a row.
fn name_problem(name: &str) -> Option<String> {
    let chars: Vec<char> = name.chars().collect();
    let punct = |c: char| matches!(c, '_' | '-' | '.');
    let ok = chars.len() >= 2
        && chars.len() <= MAX_NAME_LEN
        && chars[0].is_ascii_alphanumeric()
        && chars[chars.len() - 1].is_ascii_alphanumeric()
        && chars.iter().all(|&c| c.is_ascii_alphanumeric() || punct(c))
        && !chars.windows(2).any(|w| punct(w[0]) && punct(w[1]));
    (!ok).then(|| {
        format!(
            "{name:?} must be 2 to {MAX_NAME_LEN} characters matching \
             /^[a-zA-Z0-9]([a-zA-Z0-9_\\-.]+)?[a-zA-Z0-9]$/ and not contain repeated '-', '_' or '.' characters"
        )
    })
}

/// `MAJOR.MINOR.PATCH` with an optional `-prerelease` and `+build` (semver 2.0).
pub fn is_semver(v: &str) -> bool {
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let numeric = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let ident = |s: &str| {
        s.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(ident)
        && build.is_none_or(ident)
}

fn disk_to_json(d: &proto::Disk) -> Value {
    match d.size {
        Some(proto::disk::Size::Mib(mib)) => serde_json::json!({ "size": mib }),
        Some(proto::disk::Size::Remaining(true)) => serde_json::json!({ "size": "remaining" }),
        _ => serde_json::json!({}),
    }
}

pub fn disk_from_json(v: &Value) -> proto::Disk {
    let size = match v.get("size") {
        Some(Value::Number(n)) => n.as_u64().map(proto::disk::Size::Mib),
        Some(Value::String(s)) if s == "remaining" => Some(proto::disk::Size::Remaining(true)),
        _ => None,
    };
    proto::Disk { size }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn valid() -> Package {
        let mut p = Package {
            uuid: "7fc87f43-2def-4e6f-9f8c-980b0385b36e".into(),
            name: "g3-standard-0.25-smartos".into(),
            version: "1.0.0".into(),
            active: true,
            max_physical_memory: 256,
            max_swap: 512,
            quota: 16384,
            cpu_cap: Some(25),
            max_lwps: 4000,
            zfs_io_priority: 100,
            ..Default::default()
        };
        p.derive();
        p
    }

    fn fields_of(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_docs_example_is_valid() {
        assert_eq!(validate(&valid(), false), vec![]);
    }

    #[test]
    fn sizes_out_of_range_name_their_fields() {
        let p = Package {
            max_physical_memory: 32,
            max_swap: 64,
            quota: 1500,
            cpu_cap: Some(10),
            max_lwps: 100,
            zfs_io_priority: 20000,
            vcpus: Some(65),
            ..valid()
        };
        assert_eq!(
            fields_of(validate(&p, false)),
            [
                "max_physical_memory",
                "max_swap",
                "quota",
                "cpu_cap",
                "max_lwps",
                "zfs_io_priority",
                "vcpus"
            ]
        );
        let p = Package {
            max_physical_memory: 1024,
            max_swap: 512,
            quota: MAX_SIZE_MIB * 2,
            ..valid()
        };
        let errors = validate(&p, false);
        assert_eq!(fields_of(errors.clone()), ["max_swap", "quota"]);
        assert!(errors[0].message.contains("less than max_physical_memory"));
    }

    #[test]
    fn cpu_cap_is_required_unless_ignored() {
        let p = Package {
            cpu_cap: None,
            ..valid()
        };
        assert_eq!(validate(&p, false), vec![FieldError::missing("cpu_cap")]);
        assert_eq!(validate(&p, true), vec![]);
    }

    #[test]
    fn names() {
        for ok in ["ab", "g3-standard-0.25-smartos", "sdc_128", "A1"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in ["a", "-ab", "ab-", "a--b", "a._b", "a b", "ab!"] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["1.0.0", "0.1.2", "10.20.30", "1.0.0-rc.1", "1.0.0+build.5"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["1", "1.0", "1.0.0.0", "01.0.0", "1.0.x", "", "1.0.0-"] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn brands_spreads_uuids_and_disks() {
        let p = Package {
            brand: Some("solaris".into()),
            alloc_server_spread: Some("max-ram".into()),
            owner_uuids: Some(vec!["not-a-uuid".into()]),
            networks: Some(vec!["7FC87F43-2DEF-4E6F-9F8C-980B0385B36E".into()]),
            disks: Some(vec![serde_json::json!({"size": 1024})]),
            ..valid()
        };
        assert_eq!(
            fields_of(validate(&p, false)),
            [
                "brand",
                "alloc_server_spread",
                "owner_uuids",
                "networks",
                "disks"
            ]
        );
    }

    #[test]
    fn immutable_changes_ignore_equal_values() {
        let stored = valid();
        let same = proto::PackageFields {
            name: Some(stored.name.clone()),
            max_physical_memory: Some(256),
            active: Some(false),
            ..Default::default()
        };
        assert_eq!(immutable_changes(&stored, &same), vec![]);
        let changed = proto::PackageFields {
            max_physical_memory: Some(512),
            version: Some("2.0.0".into()),
            vcpus: Some(2),
            group: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            fields_of(immutable_changes(&stored, &changed)),
            ["version", "max_physical_memory", "vcpus"]
        );
    }

    #[test]
    fn remove_refuses_immutable_required_and_unknown() {
        let mut p = valid();
        p.group = Some("g".into());
        remove(&mut p, "group").unwrap();
        assert_eq!(p.group, None);
        assert!(
            remove(&mut p, "quota")
                .unwrap_err()
                .message
                .contains("immutable")
        );
        assert!(
            remove(&mut p, "active")
                .unwrap_err()
                .message
                .contains("required")
        );
        assert_eq!(remove(&mut p, "colour").unwrap_err().field, "remove");
    }
}
