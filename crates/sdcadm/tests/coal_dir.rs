//! `$COAL_DIR` is CoaL's alone: made private, and refused when someone else made it first.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sdcadm::coal::private_dir;

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_new_coal_dir_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/coal");
    private_dir(&dir).unwrap();
    let meta = std::fs::metadata(&dir).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    // Only the owner; at most passage for PostgreSQL's group.
    assert!(mode == 0o700 || mode == 0o710, "mode {mode:o}");
    assert_eq!(mode & 0o007, 0, "others have {mode:o}");
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    // A second time, over a directory left too open, it is closed again.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    private_dir(&dir).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o067 & !0o010, 0, "mode {mode:o}");
}

#[test]
fn a_coal_dir_of_another_user_or_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    let link = tmp.path().join("coal-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = private_dir(&link).unwrap_err().to_string();
    assert!(e.contains("symbolic link") && e.contains("COAL_DIR"), "{e}");

    if !is_root() {
        eprintln!("not root: the other user's directory is not checked");
        return;
    }
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let e = private_dir(&theirs).unwrap_err().to_string();
    assert!(e.contains("owned by uid 65534"), "{e}");
    // Left as it was.
    let meta = std::fs::metadata(&theirs).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o777),
        (65534, 0o777)
    );
}
