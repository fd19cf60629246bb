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
    let hex: String = value.chars().filter(|ch| *ch != ':').collect();
    let colons = value.chars().filter(|ch| *ch == ':').count();
    if hex.len() != 12 || !hex.chars().all(|ch| ch.is_ascii_hexdigit()) || !matches!(colons, 0 | 5)
    {
        c.add(field, format!("{value:?} is not a MAC address"));
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join(":"),
    )
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
}
