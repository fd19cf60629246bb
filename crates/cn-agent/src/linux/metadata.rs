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
use std::path::Path;

use uuid::Uuid;

use super::safefs::{Owner, Tree};
use crate::error::Result;

/// Where the metadata is, relative to the instance's root.
pub const METADATA_DIR: &str = "etc/triton/metadata";

/// Writes both maps under `upper` (the instance's disk, the overlay's upper layer), every
/// file and directory owned by `owner` (the instance's root). The disk is the tenant's:
/// paths resolve inside it as the instance sees them, so a symlink planted on the way
/// leads to the instance's own files, never the host's ([`super::safefs`]).
pub fn write(
    uuid: Uuid,
    upper: &Path,
    customer: &BTreeMap<String, String>,
    internal: &BTreeMap<String, String>,
    owner: Owner,
) -> Result<()> {
    let tree = Tree::open(upper)?;
    let dir = Path::new(METADATA_DIR);
    if let Some(parent) = dir.parent() {
        tree.create_dir_all(parent, 0o755, owner)?;
    }
    tree.remove_tree(dir)?;
    tree.create_dir(dir, 0o755, owner)?;
    for (sub, map, mode) in [("customer", customer, 0o644), ("internal", internal, 0o600)] {
        let sub_dir = dir.join(sub);
        let dir_mode = if mode == 0o600 { 0o700 } else { 0o755 };
        tree.create_dir(&sub_dir, dir_mode, owner)?;
        for (key, value) in map {
            if key.is_empty() || key == "." || key == ".." || key.contains(['/', '\0']) {
                tracing::warn!(%uuid, key, "metadata key cannot be a file name; not written");
                continue;
            }
            tree.write_file(&sub_dir.join(key), value.as_bytes(), mode, owner)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use triton_common::pairs::owned as map;

    #[test]
    fn each_key_is_a_file_and_a_reboot_drops_removed_keys() {
        let upper = tempfile::tempdir().unwrap();
        let uuid = Uuid::new_v4();
        write(
            uuid,
            upper.path(),
            &map(&[("user-script", "#!/bin/sh\n"), ("../escape", "x")]),
            &map(&[("triton:config", "listen = \"0.0.0.0:8080\"\n")]),
            Owner::ROOT,
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

        write(uuid, upper.path(), &map(&[]), &map(&[]), Owner::ROOT).unwrap();
        assert!(!md.join("customer/user-script").exists());
        assert!(!md.join("internal/triton:config").exists());
    }

    /// Writes one customer key, `k` = `v`, into the instance at `upper`.
    fn write_k_v(upper: &Path) {
        write(
            Uuid::new_v4(),
            upper,
            &map(&[("k", "v")]),
            &map(&[]),
            Owner::ROOT,
        )
        .unwrap();
    }

    #[test]
    fn a_symlink_planted_on_the_way_leads_inside_the_instance() {
        let upper = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), upper.path().join("etc/triton")).unwrap();
        write_k_v(upper.path());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // As the instance sees it: /etc/triton -> <outside>, inside the instance.
        let inside = upper
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("metadata/customer/k");
        assert_eq!(std::fs::read_to_string(inside).unwrap(), "v");
        let tree = Tree::open(upper.path()).unwrap();
        assert_eq!(
            tree.read_file(Path::new("etc/triton/metadata/customer/k"), 16)
                .unwrap(),
            b"v"
        );
    }

    #[test]
    fn a_planted_metadata_link_is_replaced_and_its_target_kept() {
        let upper = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep").unwrap();
        std::fs::create_dir_all(upper.path().join("etc/triton")).unwrap();
        std::os::unix::fs::symlink(outside.path(), upper.path().join(METADATA_DIR)).unwrap();
        write_k_v(upper.path());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep"
        );
        let md = upper.path().join(METADATA_DIR);
        assert!(std::fs::symlink_metadata(&md).unwrap().is_dir());
        assert_eq!(std::fs::read_to_string(md.join("customer/k")).unwrap(), "v");
    }
}
