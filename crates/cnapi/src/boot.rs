//! Boot parameters, Triton's booter API (`GET/PUT/POST /boot/:uuid`): what a compute node
//! boots (the platform) and the kernel command line it boots with. The datacenter's
//! defaults are the record `default` of the Moray bucket `cnapi_boot_params`, a server's
//! overrides the record named by its UUID. What a node boots is the defaults with its
//! overrides on top ([`effective`]).
//!
//! A platform is known when the platforms directory (config `platforms_dir`, the booter's
//! `os/`) holds `<platform>/vmlinuz` and `<platform>/initrd`. Without a directory every
//! well-formed name is taken, and the default platform is whatever was set.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::ServerRecord;

/// The key of the datacenter's defaults.
pub const DEFAULT_KEY: &str = "default";
/// Longest kernel argument name, value, flag and platform name taken.
const MAX_NAME: usize = 128;
const MAX_VALUE: usize = 1024;
/// Most kernel arguments one record holds.
const MAX_ARGS: usize = 256;

/// One stored record: the defaults or a server's overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BootParamsRecord {
    /// Empty: the defaults' (or, for the defaults, the newest platform known).
    pub platform: String,
    pub kernel_args: BTreeMap<String, String>,
    pub kernel_flags: Vec<String>,
}

/// A change from SetBootParams, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParamsChange {
    pub platform: String,
    pub kernel_args: BTreeMap<String, String>,
    pub kernel_flags: Vec<String>,
    pub replace: bool,
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// A platform name as a directory name: letters, digits, `_.-`, not `.` or `..`.
fn platform_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Checks a SetBootParams change: argument names `[a-z0-9_.-]+`, values without spaces
/// or control characters (empty only to delete in a merge), flags as names (a leading
/// `-` allowed), at most 256 arguments.
pub fn check_change(
    platform: &str,
    kernel_args: &std::collections::HashMap<String, String>,
    kernel_flags: &[String],
    replace: bool,
) -> Result<BootParamsChange> {
    if !platform.is_empty() && !platform_name_ok(platform) {
        return Err(Error::invalid(
            "platform",
            format!("{platform:?} is not a platform name ([A-Za-z0-9_.-]+, at most {MAX_NAME})"),
        ));
    }
    if kernel_args.len() > MAX_ARGS {
        return Err(Error::invalid(
            "kernel_args",
            format!("{} arguments, at most {MAX_ARGS}", kernel_args.len()),
        ));
    }
    let mut args = BTreeMap::new();
    for (name, value) in kernel_args {
        if !name_ok(name) {
            return Err(Error::invalid(
                "kernel_args",
                format!("name {name:?} must match [a-z0-9_.-]+ (at most {MAX_NAME})"),
            ));
        }
        if value.len() > MAX_VALUE {
            return Err(Error::invalid(
                &format!("kernel_args.{name}"),
                format!("value longer than {MAX_VALUE}"),
            ));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                &format!("kernel_args.{name}"),
                format!("value {value:?} must not contain spaces or control characters"),
            ));
        }
        if value.contains('"') {
            return Err(Error::invalid(
                &format!("kernel_args.{name}"),
                format!("value {value:?} must not contain quotes"),
            ));
        }
        args.insert(name.clone(), value.clone());
    }
    let mut flags: Vec<String> = Vec::new();
    for flag in kernel_flags {
        if !name_ok(flag.strip_prefix('-').unwrap_or(flag)) {
            return Err(Error::invalid(
                "kernel_flags",
                format!("{flag:?} must match -?[a-z0-9_.-]+ (at most {MAX_NAME})"),
            ));
        }
        if !flags.contains(flag) {
            flags.push(flag.clone());
        }
    }
    Ok(BootParamsChange {
        platform: platform.to_string(),
        kernel_args: args,
        kernel_flags: flags,
        replace,
    })
}

/// `stored` after `change`: replaced whole, or merged (an empty value deletes that
/// argument; flags are added; an empty platform keeps the stored one).
pub fn apply(stored: Option<BootParamsRecord>, change: &BootParamsChange) -> BootParamsRecord {
    let nonempty = |args: &BTreeMap<String, String>| {
        args.iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    if change.replace {
        return BootParamsRecord {
            platform: change.platform.clone(),
            kernel_args: nonempty(&change.kernel_args),
            kernel_flags: change.kernel_flags.clone(),
        };
    }
    let mut record = stored.unwrap_or_default();
    if !change.platform.is_empty() {
        record.platform = change.platform.clone();
    }
    for (k, v) in &change.kernel_args {
        if v.is_empty() {
            record.kernel_args.remove(k);
        } else {
            record.kernel_args.insert(k.clone(), v.clone());
        }
    }
    for f in &change.kernel_flags {
        if !record.kernel_flags.contains(f) {
            record.kernel_flags.push(f.clone());
        }
    }
    record
}

/// What a server boots: the defaults with its overrides on top (its platform if it has
/// one, its arguments over the defaults', the flags of both), then `triton.server_uuid`
/// and, once it has one, `hostname`.
pub fn effective(
    defaults: &BootParamsRecord,
    server: Option<(&ServerRecord, Option<&BootParamsRecord>)>,
) -> BootParamsRecord {
    let mut out = defaults.clone();
    let Some((record, overrides)) = server else {
        return out;
    };
    if let Some(o) = overrides {
        if !o.platform.is_empty() {
            out.platform = o.platform.clone();
        }
        out.kernel_args
            .extend(o.kernel_args.iter().map(|(k, v)| (k.clone(), v.clone())));
        for f in &o.kernel_flags {
            if !out.kernel_flags.contains(f) {
                out.kernel_flags.push(f.clone());
            }
        }
    }
    out.kernel_args
        .insert("triton.server_uuid".into(), record.uuid.to_string());
    if !record.hostname.is_empty() && !record.hostname.contains(char::is_whitespace) {
        out.kernel_args
            .insert("hostname".into(), record.hostname.clone());
    }
    out
}

/// A MAC as CNAPI compares them: `aa:bb:cc:dd:ee:ff` (`-` or `:`, any case).
pub fn normalize_mac(text: &str) -> Result<String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(Error::invalid(
            "mac",
            format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        ));
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

/// Whether one of the NICs of `sysinfo` ("Network Interfaces") has MAC `mac`
/// (normalized).
pub fn has_mac(sysinfo: &Value, mac: &str) -> bool {
    sysinfo
        .get("Network Interfaces")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|nics| nics.values())
        .filter_map(|nic| nic.get("MAC Address").and_then(Value::as_str))
        .any(|m| normalize_mac(m).is_ok_and(|m| m == mac))
}

/// Whether a server booted from the network: its sysinfo's "Boot Parameters" (the kernel
/// command line cn-agent read) name `triton.cnapi_url`, which only the booter's iPXE
/// script gives.
pub fn network_booted(sysinfo: &Value) -> bool {
    sysinfo
        .get("Boot Parameters")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key("triton.cnapi_url"))
}

/// The platforms in `dir` (each a directory holding `vmlinuz` and `initrd`), sorted, so
/// the last is the newest build stamp.
pub fn platforms(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("vmlinuz").is_file() && e.path().join("initrd").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| platform_name_ok(n))
        .collect();
    out.sort();
    out
}

/// Checks that `platform` is one the platforms directory holds (any name without one).
pub fn check_known(dir: Option<&Path>, platform: &str) -> Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    if platforms(dir).iter().any(|p| p == platform) {
        Ok(())
    } else {
        Err(Error::invalid(
            "platform",
            format!(
                "{platform:?} is not a known platform (none such in {})",
                dir.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triton_common::pairs::owned as args;

    #[test]
    fn merge_adds_changes_and_deletes_replace_replaces() {
        let set =
            check_change("p1", &args(&[("a", "1"), ("b", "2")]), &["-k".into()], true).unwrap();
        let r = apply(None, &set);
        assert_eq!(r.platform, "p1");
        assert_eq!(r.kernel_args.len(), 2);
        let merge = check_change("", &args(&[("a", ""), ("c", "3")]), &[], false).unwrap();
        let r = apply(Some(r), &merge);
        assert_eq!(r.platform, "p1");
        assert_eq!(
            r.kernel_args.keys().collect::<Vec<_>>(),
            vec!["b", "c"],
            "a deleted, c added"
        );
        assert_eq!(r.kernel_flags, vec!["-k"]);
        let replace = check_change("", &args(&[("d", "4")]), &[], true).unwrap();
        let r = apply(Some(r), &replace);
        assert_eq!(r.platform, "");
        assert_eq!(r.kernel_args.keys().collect::<Vec<_>>(), vec!["d"]);
        assert!(r.kernel_flags.is_empty());
    }

    #[test]
    fn bad_names_values_and_flags_are_refused_by_field() {
        for (platform, a, flags, field) in [
            ("../x", args(&[]), vec![], "platform"),
            ("", args(&[("Upper", "1")]), vec![], "kernel_args"),
            ("", args(&[("a b", "1")]), vec![], "kernel_args"),
            ("", args(&[("a", "x y")]), vec![], "kernel_args.a"),
            ("", args(&[("a", "x\ny")]), vec![], "kernel_args.a"),
            ("", args(&[("a", "\"x")]), vec![], "kernel_args.a"),
            ("", args(&[]), vec!["a b".to_string()], "kernel_flags"),
        ] {
            let e = check_change(platform, &a, &flags, false).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid { field: f, .. } if f == field),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn macs_normalize_and_match_sysinfo() {
        assert_eq!(
            normalize_mac("AA-bb-CC-00-11-22").unwrap(),
            "aa:bb:cc:00:11:22"
        );
        assert!(normalize_mac("aa:bb:cc:00:11").is_err());
        assert!(normalize_mac("zz:bb:cc:00:11:22").is_err());
        let sysinfo = serde_json::json!({"Network Interfaces": {"eth0": {"MAC Address": "AA:BB:CC:00:11:22"}}});
        assert!(has_mac(&sysinfo, "aa:bb:cc:00:11:22"));
        assert!(!has_mac(&sysinfo, "aa:bb:cc:00:11:23"));
    }

    #[test]
    fn platforms_are_directories_with_a_kernel_and_an_initrd() {
        let dir = tempfile::tempdir().unwrap();
        for (name, files) in [
            ("20261206T0900Z", &["vmlinuz", "initrd"][..]),
            ("20261207T0900Z", &["vmlinuz", "initrd"][..]),
            ("half", &["vmlinuz"][..]),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            for f in files {
                std::fs::write(dir.path().join(name).join(f), b"x").unwrap();
            }
        }
        assert_eq!(
            platforms(dir.path()),
            vec!["20261206T0900Z", "20261207T0900Z"]
        );
        assert!(check_known(Some(dir.path()), "half").is_err());
        assert!(check_known(Some(dir.path()), "20261206T0900Z").is_ok());
        assert!(check_known(None, "anything").is_ok());
    }
}
