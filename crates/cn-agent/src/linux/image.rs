//! Installed images: each image is extracted once into `<state_dir>/images/<uuid>/root`
//! and shared, read-only, as the lower layer of every instance made from it (the ZFS
//! clone of SmartOS). Extraction goes to a temporary directory renamed into place, so a
//! crash never leaves a half-extracted image that looks installed.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::command::run;
use crate::backend::ImageSource;
use crate::error::{Error, Result};

pub fn image_root(images_dir: &Path, uuid: Uuid) -> PathBuf {
    images_dir.join(uuid.to_string()).join("root")
}

pub fn is_present(images_dir: &Path, uuid: Uuid) -> bool {
    image_root(images_dir, uuid).is_dir()
}

/// Installs the image unless it is there. The caller holds the image's lock.
pub fn ensure_present(images_dir: &Path, source: &ImageSource) -> Result<()> {
    if is_present(images_dir, source.image_uuid) {
        return Ok(());
    }
    let meta = std::fs::metadata(&source.path).map_err(|e| Error::io(&source.path, e))?;
    std::fs::create_dir_all(images_dir).map_err(|e| Error::io(images_dir, e))?;
    let tmp = images_dir.join(format!(".partial-{}-{}", source.image_uuid, Uuid::new_v4()));
    let tmp_root = tmp.join("root");
    std::fs::create_dir_all(&tmp_root).map_err(|e| Error::io(&tmp_root, e))?;
    let result = (|| {
        let dest = tmp_root.display().to_string();
        let src = source.path.display().to_string();
        if meta.is_dir() {
            run("cp", &["-a", "--", &format!("{src}/."), &dest])?;
        } else {
            // GNU tar recognises gzip, xz, bzip2 and zstd on its own.
            run("tar", &["-x", "--numeric-owner", "-f", &src, "-C", &dest])?;
        }
        let final_dir = images_dir.join(source.image_uuid.to_string());
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
