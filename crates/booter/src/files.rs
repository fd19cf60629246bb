//! What a TFTP or HTTP path names, the same for both: a node's iPXE script
//! (`boot/<mac>.ipxe`), one of the iPXE binaries (from `ipxe_dir`), or a file under the
//! data dir (`os/<platform>/vmlinuz`, ...). Nothing outside those is served: a path with
//! `..`, or one whose real path (symlinks followed) leaves the data dir, is refused.

use std::path::{Component, Path, PathBuf};

use crate::dhcp::packet::Mac;

/// The iPXE binaries served from `ipxe_dir` (Debian's `ipxe` package).
pub const IPXE_FILES: &[&str] = &[
    "undionly.kpxe",
    "undionly.kkpxe",
    "snponly.efi",
    "ipxe.efi",
    "ipxe.pxe",
];

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The iPXE script of the node with this MAC.
    Script(Mac),
    /// A file to send as it is.
    File(PathBuf),
}

/// Why a path is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    /// Nothing there.
    #[error("{0}: no such file")]
    Missing(String),
    /// The path tries to leave what is served.
    #[error("{0}: outside what dhcpd serves")]
    Outside(String),
}

/// The served roots.
/// dhcpd's own cache under `data_dir` (NAPI's NICs, CNAPI's boot parameters): never
/// served.
pub const CACHE_DIR: &str = "cache";
/// The cache file, under `data_dir`.
pub const CACHE_FILE: &str = "cache/booter.json";

#[derive(Debug, Clone)]
pub struct Files {
    data_dir: PathBuf,
    ipxe_dir: PathBuf,
}

impl Files {
    pub fn new(data_dir: &Path, ipxe_dir: &Path) -> Files {
        Files {
            data_dir: data_dir.to_path_buf(),
            ipxe_dir: ipxe_dir.to_path_buf(),
        }
    }

    /// The target of `path` (a leading `/` or none).
    pub fn resolve(&self, path: &str) -> Result<Target, NotServed> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
            return Err(NotServed::Outside(path.into()));
        }
        let p = Path::new(rel);
        if !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(NotServed::Outside(path.into()));
        }
        if p.starts_with(CACHE_DIR) {
            return Err(NotServed::Outside(path.into()));
        }
        if let Some(name) = rel.strip_prefix("boot/")
            && let Some(mac) = name.strip_suffix(".ipxe")
        {
            return Mac::parse(mac)
                .map(Target::Script)
                .ok_or_else(|| NotServed::Missing(path.into()));
        }
        if IPXE_FILES.contains(&rel) {
            let file = self.ipxe_dir.join(rel);
            return if file.is_file() {
                Ok(Target::File(file))
            } else {
                Err(NotServed::Missing(path.into()))
            };
        }
        let root = self
            .data_dir
            .canonicalize()
            .map_err(|_| NotServed::Missing(path.into()))?;
        let real = root
            .join(p)
            .canonicalize()
            .map_err(|_| NotServed::Missing(path.into()))?;
        if !real.starts_with(&root) || real.starts_with(root.join(CACHE_DIR)) {
            return Err(NotServed::Outside(path.into()));
        }
        if !real.is_file() {
            return Err(NotServed::Missing(path.into()));
        }
        Ok(Target::File(real))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jail_holds() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ipxe = dir.path().join("ipxe");
        std::fs::create_dir_all(data.join("os/p1")).unwrap();
        std::fs::create_dir_all(&ipxe).unwrap();
        std::fs::write(data.join("os/p1/vmlinuz"), b"k").unwrap();
        std::fs::write(ipxe.join("undionly.kpxe"), b"u").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), data.join("os/p1/link")).unwrap();
        std::fs::create_dir_all(data.join("cache")).unwrap();
        std::fs::write(data.join(CACHE_FILE), b"{}").unwrap();
        std::os::unix::fs::symlink(data.join(CACHE_FILE), data.join("os/p1/cached")).unwrap();
        let f = Files::new(&data, &ipxe);
        assert_eq!(
            f.resolve("/os/p1/vmlinuz").unwrap(),
            Target::File(data.canonicalize().unwrap().join("os/p1/vmlinuz"))
        );
        assert_eq!(
            f.resolve("undionly.kpxe").unwrap(),
            Target::File(ipxe.join("undionly.kpxe"))
        );
        assert_eq!(
            f.resolve("boot/02:00:00:00:00:01.ipxe").unwrap(),
            Target::Script(Mac([2, 0, 0, 0, 0, 1]))
        );
        for bad in [
            "../secret",
            "os/../../secret",
            "/os/p1/link",
            "./os/p1/vmlinuz",
            "cache/booter.json",
            "/cache/booter.json",
            "/os/p1/cached",
        ] {
            assert!(
                matches!(f.resolve(bad), Err(NotServed::Outside(_))),
                "{bad}: {:?}",
                f.resolve(bad)
            );
        }
        for missing in ["os/p1/initrd", "os", "boot/nope.ipxe", "snponly.efi"] {
            assert!(
                matches!(f.resolve(missing), Err(NotServed::Missing(_))),
                "{missing}"
            );
        }
    }
}
