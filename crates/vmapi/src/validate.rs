//! Checks of what callers send: every bad field is named, all at once, before anything
//! is written. Format checks are pure ([`Checker`]); reference checks (the owner, image,
//! package, networks and server exist and may be used) call the other APIs and live in
//! `service.rs`.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Triton's alias rule: ≤ 189 chars, `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`.
pub const ALIAS_MAX: usize = 189;
/// Brands a Linux compute node can run (HVM brands need a hypervisor we do not have).
pub const BRANDS: &[&str] = &["joyent", "joyent-minimal", "lx"];
pub const DEFAULT_BRAND: &str = "joyent-minimal";
/// MiB. PAPI's floor; the ceiling is a 1 TiB instance.
pub const RAM_MIN: u64 = 64;
pub const RAM_MAX: u64 = 1024 * 1024;
/// GiB.
pub const QUOTA_MIN: u64 = 1;
pub const QUOTA_MAX: u64 = 64 * 1024;
/// Quota of a VM that names neither a quota nor a package, GiB.
pub const DEFAULT_QUOTA: u64 = 10;
/// Percent of one CPU: up to 256 CPUs; 0 is uncapped.
pub const CPU_CAP_MAX: u32 = 25_600;
pub const MAX_LWPS_MIN: u64 = 1;
pub const MAX_LWPS_MAX: u64 = 2_000_000;
pub const DEFAULT_MAX_LWPS: u64 = 2000;
/// Triton's floor for max_swap, MiB.
pub const MAX_SWAP_MIN: u64 = 256;
pub const MAX_NETWORKS: usize = 32;
pub const MAX_TAGS: usize = 512;
pub const KEY_MAX: usize = 128;
pub const METADATA_VALUE_MAX: usize = 64 * 1024;
pub const HOSTNAME_MAX: usize = 63;

/// Collects every problem, then fails once.
#[derive(Default)]
pub struct Checker {
    problems: Vec<String>,
}

impl Checker {
    pub fn add(&mut self, field: &str, why: impl std::fmt::Display) {
        self.problems.push(format!("{field}: {why}"));
    }

    pub fn take<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(Error::Validation(p)) => {
                self.problems.extend(p);
                None
            }
            Err(e) => {
                self.problems.push(e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.problems))
        }
    }

    /// A required uuid, lower-cased.
    pub fn uuid(&mut self, field: &str, value: &str) -> Option<String> {
        if value.is_empty() {
            self.add(field, "is required");
            return None;
        }
        self.take(uuid(field, value))
    }

    /// An optional uuid: empty is `None`.
    pub fn opt_uuid(&mut self, field: &str, value: &str) -> Option<String> {
        if value.is_empty() {
            None
        } else {
            self.take(uuid(field, value))
        }
    }

    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        field: &str,
        value: Option<T>,
        min: T,
        max: T,
        unit: &str,
    ) -> Option<T> {
        let v = value?;
        if v < min || v > max {
            self.add(
                field,
                format!("must be between {min} and {max}{unit} (got {v})"),
            );
            return None;
        }
        Some(v)
    }
}

/// A uuid in its canonical lower-case form.
pub fn uuid(field: &str, value: &str) -> Result<String> {
    match Uuid::parse_str(value) {
        Ok(u) if value.len() == 36 => Ok(u.hyphenated().to_string()),
        _ => Err(Error::invalid(field, format!("{value:?} is not a UUID"))),
    }
}

pub fn alias(c: &mut Checker, field: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|ch| ch.is_ascii_alphanumeric());
    let rest_ok = chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
    if value.len() > ALIAS_MAX || !first_ok || !rest_ok {
        c.add(
            field,
            format!(
                "{value:?} must be 1 to {ALIAS_MAX} letters, digits, '_', '.' or '-', starting with a letter or digit"
            ),
        );
    }
}

/// Longest snapshot name, as in Triton.
pub const SNAPSHOT_NAME_MAX: usize = 64;

/// A snapshot name: 1 to 64 letters, digits, '_', '-' and '.', and not `.` or `..`.
pub fn snapshot_name(c: &mut Checker, field: &str, value: &str) {
    let chars_ok = value
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
    if value.is_empty()
        || value.len() > SNAPSHOT_NAME_MAX
        || !chars_ok
        || value == "."
        || value == ".."
    {
        c.add(
            field,
            format!(
                "{value:?} must be 1 to {SNAPSHOT_NAME_MAX} letters, digits, '_', '.' or '-' (and not \".\" or \"..\")"
            ),
        );
    }
}

pub fn is_hostname(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= HOSTNAME_MAX
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !value.starts_with('-')
}

pub fn hostname(c: &mut Checker, field: &str, value: &str) {
    if !value.is_empty() && !is_hostname(value) {
        c.add(
            field,
            format!("{value:?} must be 1 to {HOSTNAME_MAX} letters, digits, '-' or '.'"),
        );
    }
}

pub fn brand(c: &mut Checker, value: &str) -> String {
    if value.is_empty() {
        return DEFAULT_BRAND.to_string();
    }
    if !BRANDS.contains(&value) {
        c.add(
            "brand",
            format!(
                "{value:?} is not supported on Linux compute nodes (one of {})",
                BRANDS.join(", ")
            ),
        );
    }
    value.to_string()
}

/// The one volume type (Triton's).
pub const VOLUME_TYPE: &str = "tritonnfs";
/// VolAPI's name rule: ≤ 256 chars, `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
pub const VOLUME_NAME_MAX: usize = 256;
/// Longest mountpoint (Linux's PATH_MAX less its NUL).
pub const MOUNTPOINT_MAX: usize = 4095;
/// Where no volume may be mounted (the instance's own kernel file systems), nor below.
pub const RESERVED_MOUNTPOINTS: &[&str] = &["/proc", "/dev", "/sys"];

/// The `volumes` of a create: each named field checked, defaults filled in (`type`
/// tritonnfs, `mode` rw), one volume per mountpoint. HVM brands are refused: nothing in
/// them would mount the volume (as Triton, which does not automount into kvm/bhyve).
pub fn volumes(
    c: &mut Checker,
    brand: &str,
    given: &[triton_proto::vmapi::v1::VolumeMount],
) -> Vec<crate::params::VolumeParam> {
    if given.is_empty() {
        return Vec::new();
    }
    if matches!(brand, "kvm" | "bhyve") {
        c.add(
            "volumes",
            format!(
                "are not supported with brand {brand} (volumes are mounted only in containers)"
            ),
        );
    }
    let mut out: Vec<crate::params::VolumeParam> = Vec::new();
    for (i, v) in given.iter().enumerate() {
        let field = |f: &str| format!("volumes[{i}].{f}");
        let name = &v.name;
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|ch| ch.is_ascii_alphanumeric());
        let rest_ok = chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
        if name.len() < 2 || name.len() > VOLUME_NAME_MAX || !first_ok || !rest_ok {
            c.add(
                &field("name"),
                format!(
                    "{name:?} must be 2 to {VOLUME_NAME_MAX} letters, digits, '_', '.' or '-', starting with a letter or digit"
                ),
            );
        }
        let kind = if v.r#type.is_empty() {
            VOLUME_TYPE
        } else {
            v.r#type.as_str()
        };
        if kind != VOLUME_TYPE {
            c.add(
                &field("type"),
                format!("volume {name}: type {kind:?} must be {VOLUME_TYPE}"),
            );
        }
        let mode = if v.mode.is_empty() {
            "rw"
        } else {
            v.mode.as_str()
        };
        if !matches!(mode, "rw" | "ro") {
            c.add(
                &field("mode"),
                format!("volume {name}: mode {mode:?} must be one of ro, rw"),
            );
        }
        let mp = v.mountpoint.as_str();
        if let Some(why) = mountpoint_problem(mp) {
            c.add(
                &field("mountpoint"),
                format!("volume {name}: mountpoint {mp:?} {why}"),
            );
        } else if let Some(other) = out.iter().find(|o| o.mountpoint == mp) {
            c.add(
                &field("mountpoint"),
                format!(
                    "volume {name}: mountpoint {mp:?} is already that of volume {}",
                    other.name
                ),
            );
        }
        out.push(crate::params::VolumeParam {
            name: name.clone(),
            kind: kind.to_string(),
            mode: mode.to_string(),
            mountpoint: mp.to_string(),
        });
    }
    out
}

/// Why `mp` cannot be a mountpoint, if it cannot.
fn mountpoint_problem(mp: &str) -> Option<String> {
    if mp.is_empty() {
        return Some("is required".into());
    }
    if mp.len() > MOUNTPOINT_MAX {
        return Some(format!("is longer than {MOUNTPOINT_MAX} bytes"));
    }
    if mp.chars().any(|ch| ch.is_control()) {
        return Some("must not hold control characters".into());
    }
    if !mp.starts_with('/') {
        return Some("must be absolute (start with /)".into());
    }
    if mp == "/" {
        return Some("must not be / (the instance's root)".into());
    }
    let parts: Vec<&str> = mp[1..].split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Some("must be normalized (no empty, . or .. component, no trailing /)".into());
    }
    if let Some(r) = RESERVED_MOUNTPOINTS.iter().find(|r| {
        mp == **r
            || mp
                .strip_prefix(**r)
                .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return Some(format!(
            "is reserved ({r} and below are the instance's own)"
        ));
    }
    None
}

pub fn ipv4(c: &mut Checker, field: &str, value: &str) -> Option<String> {
    match value.parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => {
            c.add(field, format!("{value:?} is not an IPv4 address"));
            None
        }
    }
}

/// A MAC address as NAPI keeps it (`aa:bb:cc:dd:ee:ff`), from that form or from
/// CloudAPI's path form without colons (`aabbccddeeff`).
pub fn mac(c: &mut Checker, field: &str, value: &str) -> Option<String> {
    let colons = value.chars().filter(|ch| *ch == ':').count();
    let mac = triton_types::mac::colon_form(value).filter(|_| matches!(colons, 0 | 5));
    if mac.is_none() {
        c.add(field, format!("{value:?} is not a MAC address"));
    }
    mac
}

pub fn tags(c: &mut Checker, field: &str, tags: &Map<String, Value>) {
    if tags.len() > MAX_TAGS {
        c.add(field, format!("at most {MAX_TAGS} tags"));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > KEY_MAX {
            c.add(
                field,
                format!("tag name {k:?} must be 1 to {KEY_MAX} characters"),
            );
        }
        match v {
            Value::String(s) if s.len() <= METADATA_VALUE_MAX => {}
            Value::Bool(_) | Value::Number(_) => {}
            _ => c.add(
                &format!("{field}.{k}"),
                "must be a string, a number or a boolean",
            ),
        }
    }
}

pub fn metadata<'a>(
    c: &mut Checker,
    field: &str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (k, v) in entries {
        if k.is_empty() || k.len() > KEY_MAX {
            c.add(
                field,
                format!("key {k:?} must be 1 to {KEY_MAX} characters"),
            );
        }
        if v.len() > METADATA_VALUE_MAX {
            c.add(
                &format!("{field}.{k}"),
                format!("must be at most {METADATA_VALUE_MAX} bytes"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named() {
        let mut c = Checker::default();
        c.uuid("owner_uuid", "nope");
        c.uuid("image_uuid", "");
        alias(&mut c, "alias", "-bad");
        c.range("ram", Some(1u64), RAM_MIN, RAM_MAX, " MiB");
        brand(&mut c, "kvm");
        let e = c.finish().unwrap_err().to_string();
        for field in [
            "owner_uuid:",
            "image_uuid: is required",
            "alias:",
            "ram:",
            "brand:",
        ] {
            assert!(e.contains(field), "{field} in {e}");
        }
    }

    #[test]
    fn macs_take_both_forms() {
        let mut c = Checker::default();
        assert_eq!(
            mac(&mut c, "m", "90B8D0C0FFEE").as_deref(),
            Some("90:b8:d0:c0:ff:ee")
        );
        assert_eq!(
            mac(&mut c, "m", "90:b8:d0:c0:ff:ee").as_deref(),
            Some("90:b8:d0:c0:ff:ee")
        );
        assert!(c.is_empty());
        assert_eq!(mac(&mut c, "macs[0]", "90:b8:d0"), None);
        assert_eq!(mac(&mut c, "macs[1]", "90b8d0c0ffeg"), None);
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("macs[0]:") && e.contains("macs[1]:"), "{e}");
    }

    #[test]
    fn uuids_are_canonical() {
        assert_eq!(
            uuid("x", "930896AF-BF8C-48D4-885C-6573A94B1853").unwrap(),
            "930896af-bf8c-48d4-885c-6573a94b1853"
        );
        assert!(uuid("x", "930896afbf8c48d4885c6573a94b1853").is_err());
        let mut c = Checker::default();
        alias(&mut c, "alias", "web-0.prod_1");
        assert!(c.is_empty());
    }

    fn mount(name: &str, mode: &str, mp: &str) -> triton_proto::vmapi::v1::VolumeMount {
        triton_proto::vmapi::v1::VolumeMount {
            name: name.into(),
            r#type: String::new(),
            mode: mode.into(),
            mountpoint: mp.into(),
        }
    }

    #[test]
    fn volumes_take_defaults() {
        let mut c = Checker::default();
        let v = volumes(
            &mut c,
            "joyent",
            &[mount("v1", "", "/data"), mount("v1", "ro", "/data/ro")],
        );
        assert!(c.is_empty());
        assert_eq!(v[0].kind, "tritonnfs");
        assert_eq!((v[0].mode.as_str(), v[1].mode.as_str()), ("rw", "ro"));
        assert_eq!(v[1].mountpoint, "/data/ro");
    }

    #[test]
    fn volumes_refuse_each_bad_field_by_name() {
        let mountpoints = [
            ("data", "absolute"),
            ("/", "root"),
            ("/proc", "reserved"),
            ("/dev/x", "reserved"),
            ("/sys/fs", "reserved"),
            ("/a/../etc", "normalized"),
            ("/a//b", "normalized"),
            ("/a/", "normalized"),
            ("/a/./b", "normalized"),
            ("", "required"),
            ("/a\nb", "control"),
        ];
        let cases = mountpoints
            .iter()
            .map(|(mp, says)| (mount("v1", "rw", mp), "volumes[0].mountpoint", *says))
            .chain([
                (mount("v1", "rx", "/a"), "volumes[0].mode", "one of ro, rw"),
                (mount("-v", "rw", "/a"), "volumes[0].name", "starting with"),
                (mount("", "rw", "/a"), "volumes[0].name", "starting with"),
            ]);
        for (m, field, says) in cases {
            let mut c = Checker::default();
            volumes(&mut c, "joyent", std::slice::from_ref(&m));
            let e = c.finish().unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(says), "{m:?}: {e}");
        }
        // /procfs and /device are fine: only the directories and below are reserved.
        let mut c = Checker::default();
        volumes(
            &mut c,
            "joyent",
            &[mount("v1", "rw", "/procfs"), mount("v2", "rw", "/device")],
        );
        assert!(c.is_empty());
        let mut c = Checker::default();
        let mut t = mount("v1", "rw", "/a");
        t.r#type = "nfs".into();
        volumes(&mut c, "joyent", &[t]);
        assert!(
            c.finish()
                .unwrap_err()
                .to_string()
                .contains("volumes[0].type")
        );
    }

    #[test]
    fn volumes_one_per_mountpoint_and_no_hvm() {
        let mut c = Checker::default();
        volumes(
            &mut c,
            "joyent",
            &[mount("v1", "rw", "/a"), mount("v2", "ro", "/a")],
        );
        let e = c.finish().unwrap_err().to_string();
        assert!(
            e.contains("volumes[1].mountpoint") && e.contains("already that of volume v1"),
            "{e}"
        );
        let mut c = Checker::default();
        volumes(&mut c, "bhyve", &[mount("v1", "rw", "/a")]);
        let e = c.finish().unwrap_err().to_string();
        assert!(
            e.contains("volumes: are not supported with brand bhyve"),
            "{e}"
        );
    }
}
