//! The instance's metadata where software inside it can read it: at every boot the agent
//! writes the spec's `customer_metadata` and `internal_metadata` onto the instance's disk,
//! one file per key:
//!
//! ```text
//! /etc/triton/metadata/customer/<key>   customer_metadata (mode 0644)
//! /etc/triton/metadata/internal/<key>   internal_metadata (mode 0600)
//! ```
//!
//! This is the Linux stand-in for SmartOS's `mdata-get`: a service zone's start script
//! reads its config from here (sdcadm puts it in `internal_metadata`). The directory is
//! replaced at each boot, so it always holds what VMAPI has for the instance; a key that
//! cannot be a file name (empty, `.`, `..`, holding `/`) is left out with a warning.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use uuid::Uuid;

use crate::error::{Error, Result};

/// Where the metadata is, relative to the instance's root.
pub const METADATA_DIR: &str = "etc/triton/metadata";

/// Writes both maps under `upper` (the instance's disk, the overlay's upper layer).
pub fn write(
    uuid: Uuid,
    upper: &Path,
    customer: &BTreeMap<String, String>,
    internal: &BTreeMap<String, String>,
) -> Result<()> {
    // Every directory on the way must be a real one: the instance owns its disk, and a
    // symlink planted there must not lead the agent's writes onto the host.
    let mut dir = upper.to_path_buf();
    for part in METADATA_DIR.split('/') {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => std::fs::remove_file(&dir).map_err(|e| Error::io(&dir, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    for (sub, map, mode) in [("customer", customer, 0o644), ("internal", internal, 0o600)] {
        let sub_dir = dir.join(sub);
        std::fs::create_dir(&sub_dir).map_err(|e| Error::io(&sub_dir, e))?;
        let dir_mode = if mode == 0o600 { 0o700 } else { 0o755 };
        std::fs::set_permissions(&sub_dir, std::fs::Permissions::from_mode(dir_mode))
            .map_err(|e| Error::io(&sub_dir, e))?;
        for (key, value) in map {
            if key.is_empty() || key == "." || key == ".." || key.contains(['/', '\0']) {
                tracing::warn!(%uuid, key, "metadata key cannot be a file name; not written");
                continue;
            }
            let path = sub_dir.join(key);
            std::fs::write(&path, value).map_err(|e| Error::io(&path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_key_is_a_file_and_a_reboot_drops_removed_keys() {
        let upper = tempfile::tempdir().unwrap();
        let uuid = Uuid::new_v4();
        write(
            uuid,
            upper.path(),
            &map(&[("user-script", "#!/bin/sh\n"), ("../escape", "x")]),
            &map(&[("triton:config", "listen = \"0.0.0.0:8080\"\n")]),
        )
        .unwrap();
        let md = upper.path().join(METADATA_DIR);
        assert_eq!(
            std::fs::read_to_string(md.join("customer/user-script")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(
            std::fs::read_to_string(md.join("internal/triton:config")).unwrap(),
            "listen = \"0.0.0.0:8080\"\n"
        );
        let mode = std::fs::metadata(md.join("internal/triton:config"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!upper.path().join("etc/triton/escape").exists());

        write(uuid, upper.path(), &map(&[]), &map(&[])).unwrap();
        assert!(!md.join("customer/user-script").exists());
        assert!(!md.join("internal/triton:config").exists());
    }

    #[test]
    fn a_symlink_planted_on_the_way_is_not_followed() {
        let upper = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), upper.path().join("etc/triton")).unwrap();
        write(Uuid::new_v4(), upper.path(), &map(&[("k", "v")]), &map(&[])).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(
            upper
                .path()
                .join("etc/triton/metadata/customer/k")
                .is_file()
        );
    }
}
