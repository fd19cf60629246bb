//! What sdcadm's tests share.

use std::path::Path;

/// Unpacks the gzipped tarball `tarball` into `into` (made if missing) with GNU tar, as
/// a node would.
pub fn unpack(tarball: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar -xzf {}", tarball.display());
}
