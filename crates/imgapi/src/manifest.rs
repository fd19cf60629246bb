//! Image manifests (v2): the stored form, validation of what clients send, and the wire
//! forms (gRPC and IMGAPI's JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use triton_proto::imgapi::v1 as proto;

use crate::error::FieldError;
use triton_types::{ImageState, is_uuid};

pub const TYPES: &[&str] = &[
    "zone-dataset",
    "lx-dataset",
    "zvol",
    "docker",
    "lxd",
    "other",
];
pub const OSES: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
pub const COMPRESSIONS: &[&str] = &["gzip", "bzip2", "xz", "none"];
pub const STATES: &[&str] = ImageState::NAMES;
pub const MAX_NAME: usize = 512;
pub const MAX_VERSION: usize = 128;
pub const MAX_DESCRIPTION: usize = 512;
pub const MAX_URL: usize = 128;
pub const MAX_BILLING_TAG: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    pub sha1: String,
    pub size: u64,
    pub compression: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dataset_guid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageError {
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementNetwork {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<RequirementNetwork>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub brand: String,
    pub ssh_key: Option<bool>,
    pub min_ram: Option<u64>,
    pub max_ram: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_platform: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_platform: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bootrom: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
}

/// A manifest as stored in `imgapi_images` (key: uuid). Serialized, it is IMGAPI's
/// manifest JSON plus two internal fields, `activated` and `tags_search`, which
/// [`Manifest::to_api_json`] leaves out.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u32,
    pub uuid: String,
    pub owner: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub homepage: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub eula: String,
    #[serde(default)]
    pub icon: bool,
    pub state: String,
    pub error: Option<ImageError>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub public: bool,
    /// Internal: activated once (state is computed from it and `disabled`).
    #[serde(default)]
    pub activated: bool,
    pub published_at: Option<String>,
    #[serde(rename = "type")]
    pub image_type: String,
    pub os: String,
    pub origin: Option<String>,
    #[serde(default)]
    pub files: Vec<ImageFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<String>,
    pub requirements: Option<Requirements>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<User>,
    pub generate_passwords: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billing_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Internal: `key=value` of every tag, for the `[string]` index behind tag filters.
    #[serde(default)]
    pub tags_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited_directories: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nic_driver: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub disk_driver: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu_type: String,
    pub image_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

impl Manifest {
    /// The state that `activated` and `disabled` give (creating and failed are set
    /// explicitly and kept).
    pub fn computed_state(&self) -> &'static str {
        match (self.state.as_str(), self.activated, self.disabled) {
            ("creating", false, _) => "creating",
            ("failed", false, _) => "failed",
            (_, false, _) => "unactivated",
            (_, true, false) => "active",
            (_, true, true) => "disabled",
        }
    }

    /// Recomputes the derived fields (`state`, `tags_search`) before a write.
    pub fn refresh(&mut self) {
        self.state = self.computed_state().to_string();
        self.tags_search = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    }

    /// Whether `account` may see this image: it owns it, or the image is activated
    /// and public or has the account in its acl.
    pub fn visible_to(&self, account: &str) -> bool {
        self.owner == account
            || (self.activated && (self.public || self.acl.iter().any(|a| a == account)))
    }

    /// IMGAPI's JSON form (no internal fields).
    pub fn to_api_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("activated");
            o.remove("tags_search");
        }
        v
    }
}

/// How a manifest reached us, which decides what it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// CreateImage: IMGAPI sets uuid, state, published_at and files.
    Create,
    /// ImportImage: uuid and one file are required; published_at is kept.
    Import,
}

/// A lower-case canonical uuid, or the field's error.
pub fn uuid(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    let lower = value.to_ascii_lowercase();
    if is_uuid(&lower) {
        Ok(lower)
    } else {
        Err(FieldError::invalid(
            field,
            format!("{value:?} is not a UUID"),
        ))
    }
}

pub fn sha1(field: &str, value: &str) -> Result<String, FieldError> {
    let lower = value.to_ascii_lowercase();
    if lower.len() == 40 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(FieldError::invalid(
            field,
            format!("{value:?} is not a SHA-1 (40 hex digits)"),
        ))
    }
}

pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, FieldError> {
    FieldError::one_of(field, value, allowed, |list| {
        format!("{value:?} must be one of {list}")
    })
}

/// An RFC 3339 UTC time as IMGAPI writes them (`2013-01-02T03:04:05Z`, with optional
/// fraction).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21))
}

/// Validates a manifest from a client and builds the stored form. Every bad field is
/// reported. `max_file_bytes` bounds `files[0].size`.
pub fn validate(
    image: &proto::Image,
    origin: Origin,
    max_file_bytes: u64,
) -> Result<Manifest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut check = |r: Result<String, FieldError>| -> String {
        match r {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                String::new()
            }
        }
    };
    if image.v != 0 && image.v != 2 {
        check(Err(FieldError::invalid(
            "v",
            "only manifest version 2 is supported",
        )));
    }
    let uuid_value = match origin {
        Origin::Create if !image.uuid.is_empty() => check(Err(FieldError::invalid(
            "uuid",
            "cannot be given to CreateImage: IMGAPI assigns it (use ImportImage to keep one)",
        ))),
        Origin::Create => uuid::Uuid::new_v4().to_string(),
        Origin::Import => check(uuid("uuid", &image.uuid)),
    };
    let owner = check(uuid("owner", &image.owner));
    let name = check(text("name", &image.name, MAX_NAME, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ' ')
    }));
    let version = check(text("version", &image.version, MAX_VERSION, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
    }));
    if image.description.len() > MAX_DESCRIPTION {
        check(Err(FieldError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )));
    }
    for (field, value) in [("homepage", &image.homepage), ("eula", &image.eula)] {
        if !value.is_empty()
            && (value.len() > MAX_URL
                || !(value.starts_with("http://") || value.starts_with("https://")))
        {
            check(Err(FieldError::invalid(
                field,
                format!("must be an http(s) URL of at most {MAX_URL} characters"),
            )));
        }
    }
    if image.icon {
        check(Err(FieldError::invalid("icon", "icons are not supported")));
    }
    let image_type = check(one_of("type", &image.r#type, TYPES));
    let os = check(one_of("os", &image.os, OSES));
    let origin_uuid = if image.origin.is_empty() {
        None
    } else {
        Some(check(uuid("origin", &image.origin)))
    };
    let published_at = match origin {
        Origin::Create if !image.published_at.is_empty() => {
            check(Err(FieldError::invalid(
                "published_at",
                "is set by activation",
            )));
            None
        }
        Origin::Import if !image.published_at.is_empty() => {
            if !is_timestamp(&image.published_at) {
                check(Err(FieldError::invalid(
                    "published_at",
                    "must be an RFC 3339 UTC time, e.g. 2024-01-02T03:04:05Z",
                )));
            }
            Some(image.published_at.clone())
        }
        _ => None,
    };
    if origin == Origin::Create && !image.state.is_empty() {
        check(Err(FieldError::invalid("state", "is computed by IMGAPI")));
    }
    let mut files = Vec::new();
    match origin {
        Origin::Create if !image.files.is_empty() => {
            check(Err(FieldError::invalid(
                "files",
                "cannot be given to CreateImage: upload the file with AddImageFile",
            )));
        }
        Origin::Create => {}
        Origin::Import => match image.files.as_slice() {
            [f] => {
                let sha1 = check(sha1("files.0.sha1", &f.sha1));
                if f.size == 0 || f.size > max_file_bytes {
                    check(Err(FieldError::invalid(
                        "files.0.size",
                        format!("must be between 1 and {max_file_bytes} bytes"),
                    )));
                }
                let compression =
                    check(one_of("files.0.compression", &f.compression, COMPRESSIONS));
                files.push(ImageFile {
                    sha1,
                    size: f.size,
                    compression,
                    dataset_guid: f.dataset_guid.clone(),
                });
            }
            [] => {
                check(Err(FieldError::missing("files")));
            }
            _ => {
                check(Err(FieldError::invalid(
                    "files",
                    "an image has exactly one file",
                )));
            }
        },
    }
    let mut acl = Vec::new();
    for a in &image.acl {
        let a = check(uuid("acl", a));
        if !a.is_empty() && !acl.contains(&a) {
            acl.push(a);
        }
    }
    let requirements = image.requirements.as_ref().map(|r| {
        if let (Some(min), Some(max)) = (r.min_ram, r.max_ram)
            && min > max
        {
            check(Err(FieldError::invalid(
                "requirements.min_ram",
                "must not be greater than requirements.max_ram",
            )));
        }
        for n in &r.networks {
            if n.name.is_empty() {
                check(Err(FieldError::missing("requirements.networks.name")));
            }
        }
        Requirements {
            networks: r
                .networks
                .iter()
                .map(|n| RequirementNetwork {
                    name: n.name.clone(),
                    description: n.description.clone(),
                })
                .collect(),
            brand: r.brand.clone(),
            ssh_key: r.ssh_key,
            min_ram: r.min_ram,
            max_ram: r.max_ram,
            min_platform: r.min_platform.clone().into_iter().collect(),
            max_platform: r.max_platform.clone().into_iter().collect(),
            bootrom: r.bootrom.clone(),
        }
    });
    for u in &image.users {
        if u.name.is_empty() {
            check(Err(FieldError::missing("users.name")));
        }
    }
    for t in &image.billing_tags {
        if t.is_empty() || t.len() > MAX_BILLING_TAG {
            check(Err(FieldError::invalid(
                "billing_tags",
                format!("each must be 1 to {MAX_BILLING_TAG} characters"),
            )));
        }
    }
    for k in image.tags.keys() {
        if k.is_empty() || k.contains('=') {
            check(Err(FieldError::invalid(
                "tags",
                format!("tag name {k:?} must be non-empty and hold no '='"),
            )));
        }
    }
    if image_type == "zvol" && image.image_size.is_none() {
        check(Err(FieldError::invalid(
            "image_size",
            "is required for a zvol image (MiB)",
        )));
    }
    if image_type != "zvol" && !image_type.is_empty() && image.image_size.is_some() {
        check(Err(FieldError::invalid(
            "image_size",
            "applies to zvol images only",
        )));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut manifest = Manifest {
        v: 2,
        uuid: uuid_value,
        owner,
        name,
        version,
        description: image.description.clone(),
        homepage: image.homepage.clone(),
        eula: image.eula.clone(),
        icon: false,
        state: String::new(),
        error: None,
        disabled: false,
        public: image.public,
        activated: false,
        published_at,
        image_type,
        os,
        origin: origin_uuid,
        files,
        acl,
        requirements,
        users: image
            .users
            .iter()
            .map(|u| User {
                name: u.name.clone(),
            })
            .collect(),
        generate_passwords: image.generate_passwords,
        billing_tags: image.billing_tags.clone(),
        traits: image.traits.clone().into_iter().collect(),
        tags: image.tags.clone().into_iter().collect(),
        tags_search: Vec::new(),
        inherited_directories: image.inherited_directories.clone(),
        nic_driver: image.nic_driver.clone(),
        disk_driver: image.disk_driver.clone(),
        cpu_type: image.cpu_type.clone(),
        image_size: image.image_size,
        channels: image.channels.clone(),
    };
    manifest.refresh();
    Ok(manifest)
}

fn text(
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    if value.chars().count() > max {
        return Err(FieldError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(FieldError::invalid(field, format!("may not contain {c:?}")));
    }
    Ok(value.to_string())
}

impl From<Manifest> for proto::Image {
    fn from(m: Manifest) -> Self {
        proto::Image {
            v: m.v,
            uuid: m.uuid,
            owner: m.owner,
            name: m.name,
            version: m.version,
            description: m.description,
            homepage: m.homepage,
            eula: m.eula,
            icon: m.icon,
            state: m.state,
            error: m.error.map(|e| proto::ImageError {
                message: e.message,
                code: e.code,
            }),
            disabled: m.disabled,
            public: m.public,
            published_at: m.published_at.unwrap_or_default(),
            r#type: m.image_type,
            os: m.os,
            origin: m.origin.unwrap_or_default(),
            files: m
                .files
                .into_iter()
                .map(|f| proto::ImageFile {
                    sha1: f.sha1,
                    size: f.size,
                    compression: f.compression,
                    dataset_guid: f.dataset_guid,
                })
                .collect(),
            acl: m.acl,
            requirements: m.requirements.map(|r| proto::Requirements {
                networks: r
                    .networks
                    .into_iter()
                    .map(|n| proto::RequirementNetwork {
                        name: n.name,
                        description: n.description,
                    })
                    .collect(),
                brand: r.brand,
                ssh_key: r.ssh_key,
                min_ram: r.min_ram,
                max_ram: r.max_ram,
                min_platform: r.min_platform.into_iter().collect(),
                max_platform: r.max_platform.into_iter().collect(),
                bootrom: r.bootrom,
            }),
            users: m
                .users
                .into_iter()
                .map(|u| proto::ImageUser { name: u.name })
                .collect(),
            generate_passwords: m.generate_passwords,
            billing_tags: m.billing_tags,
            traits: m.traits.into_iter().collect(),
            tags: m.tags.into_iter().collect(),
            inherited_directories: m.inherited_directories,
            nic_driver: m.nic_driver,
            disk_driver: m.disk_driver,
            cpu_type: m.cpu_type,
            image_size: m.image_size,
            channels: m.channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

    fn base() -> proto::Image {
        proto::Image {
            owner: OWNER.into(),
            name: "base-64".into(),
            version: "24.4.0".into(),
            r#type: "zone-dataset".into(),
            os: "smartos".into(),
            ..Default::default()
        }
    }

    fn fields(e: Vec<FieldError>) -> Vec<String> {
        e.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_manifest_is_unactivated_with_a_new_uuid() {
        let m = validate(&base(), Origin::Create, 10).unwrap();
        assert!(is_uuid(&m.uuid));
        assert_eq!(m.state, "unactivated");
        assert_eq!(m.v, 2);
        let json = m.to_api_json();
        assert_eq!(json["type"], "zone-dataset");
        assert!(json.get("activated").is_none());
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut i = base();
        i.owner = "nope".into();
        i.name = String::new();
        i.version = "1 0".into();
        i.r#type = "vm".into();
        i.os = "plan9".into();
        i.uuid = OWNER.into();
        i.files = vec![proto::ImageFile::default()];
        let errs = validate(&i, Origin::Create, 10).unwrap_err();
        assert_eq!(
            fields(errs),
            vec!["uuid", "owner", "name", "version", "type", "os", "files"]
        );
    }

    #[test]
    fn import_needs_uuid_and_one_good_file() {
        let mut i = base();
        i.uuid = "0B5B8A2E-1A1D-4C1C-9C1A-9C1A9C1A9C1A".into();
        i.files = vec![proto::ImageFile {
            sha1: "x".into(),
            size: 11,
            compression: "lzma".into(),
            ..Default::default()
        }];
        let errs = validate(&i, Origin::Import, 10).unwrap_err();
        assert_eq!(
            fields(errs),
            vec!["files.0.sha1", "files.0.size", "files.0.compression"]
        );
        i.files[0] = proto::ImageFile {
            sha1: "a".repeat(40),
            size: 10,
            compression: "gzip".into(),
            ..Default::default()
        };
        i.published_at = "2024-01-02T03:04:05.123Z".into();
        let m = validate(&i, Origin::Import, 10).unwrap();
        assert_eq!(m.uuid, "0b5b8a2e-1a1d-4c1c-9c1a-9c1a9c1a9c1a");
        assert_eq!(m.published_at.as_deref(), Some("2024-01-02T03:04:05.123Z"));
        i.published_at = "yesterday".into();
        assert_eq!(
            fields(validate(&i, Origin::Import, 10).unwrap_err()),
            vec!["published_at"]
        );
    }

    #[test]
    fn zvol_needs_image_size() {
        let mut i = base();
        i.r#type = "zvol".into();
        assert_eq!(
            fields(validate(&i, Origin::Create, 10).unwrap_err()),
            vec!["image_size"]
        );
        i.image_size = Some(10240);
        assert!(validate(&i, Origin::Create, 10).is_ok());
    }

    #[test]
    fn states_follow_activation_and_disabling() {
        let mut m = validate(&base(), Origin::Create, 10).unwrap();
        m.disabled = true;
        assert_eq!(m.computed_state(), "unactivated");
        m.activated = true;
        assert_eq!(m.computed_state(), "disabled");
        m.disabled = false;
        assert_eq!(m.computed_state(), "active");
        m.tags.insert("role".into(), "db".into());
        m.refresh();
        assert_eq!(m.tags_search, vec!["role=db"]);
    }
}
