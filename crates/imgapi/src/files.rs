//! Image files on local disk: `<data_dir>/images/<uuid>/file`. An upload is written to
//! `<data_dir>/tmp/` while its SHA-1 and size are computed, and renamed into place only
//! once the manifest that describes it is stored; a refused or abandoned upload removes
//! its temporary file, so nothing is left behind.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result, StoreError};

#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
}

impl Files {
    /// Creates the directories under `root` if needed, and removes uploads left behind
    /// by a crash.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Files> {
        let files = Files { root: root.into() };
        for dir in [files.root.join("images"), files.tmp_dir()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        }
        let tmp = files.tmp_dir();
        let mut entries = tokio::fs::read_dir(&tmp)
            .await
            .map_err(Error::io(format!("cannot list {}", tmp.display())))?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
        Ok(files)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn image_dir(&self, uuid: &str) -> PathBuf {
        self.root.join("images").join(uuid)
    }

    /// Where the file of image `uuid` (a validated uuid) lives.
    pub fn path(&self, uuid: &str) -> PathBuf {
        self.image_dir(uuid).join("file")
    }

    pub async fn exists(&self, uuid: &str) -> bool {
        tokio::fs::metadata(self.path(uuid)).await.is_ok()
    }

    /// Starts an upload of at most `max_bytes`.
    pub async fn begin(&self, max_bytes: u64) -> Result<Upload> {
        let path = self
            .tmp_dir()
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(Error::io(format!("cannot create {}", path.display())))?;
        Ok(Upload {
            file: Some(file),
            temp: TempFile { path: Some(path) },
            sha1: Sha1::new(),
            size: 0,
            max_bytes,
        })
    }

    /// Removes the file of image `uuid` and its directory; a missing file is fine.
    pub async fn remove(&self, uuid: &str) -> Result<()> {
        let dir = self.image_dir(uuid);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot remove {}", dir.display()))(e)),
        }
    }

    /// Checks that the data directory takes writes.
    pub async fn check_writable(&self) -> Result<()> {
        let probe = self
            .tmp_dir()
            .join(format!(".probe-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&probe, b"ok")
            .await
            .map_err(Error::io(format!("cannot write {}", probe.display())))?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }
}

/// An upload in progress.
pub struct Upload {
    file: Option<tokio::fs::File>,
    temp: TempFile,
    sha1: Sha1,
    size: u64,
    max_bytes: u64,
}

/// What an upload turned out to be.
pub struct Uploaded {
    pub sha1: String,
    pub size: u64,
    pub temp: TempFile,
}

impl Upload {
    /// Appends `chunk`; refuses to grow past the limit (the error names `size`).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let new_size = self.size + chunk.len() as u64;
        if new_size > self.max_bytes {
            return Err(Error::invalid(
                "size",
                format!("the file is over the limit of {} bytes", self.max_bytes),
            ));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::corrupt("upload", "written after finish"))?;
        file.write_all(chunk)
            .await
            .map_err(Error::io("cannot write the upload"))?;
        self.sha1.update(chunk);
        self.size = new_size;
        Ok(())
    }

    /// Flushes the file to disk and gives its SHA-1 and size.
    pub async fn finish(mut self) -> Result<Uploaded> {
        if let Some(mut file) = self.file.take() {
            file.flush()
                .await
                .map_err(Error::io("cannot flush the upload"))?;
            file.sync_all()
                .await
                .map_err(Error::io("cannot sync the upload"))?;
        }
        let digest = std::mem::take(&mut self.sha1).finalize();
        let sha1 = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Uploaded {
            sha1,
            size: self.size,
            temp: self.temp,
        })
    }
}

/// A temporary upload file, removed when dropped unless persisted.
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Moves the file into place as the file of image `uuid`, replacing any.
    pub async fn persist(mut self, files: &Files, uuid: &str) -> Result<()> {
        let Some(from) = self.path.take() else {
            return Ok(());
        };
        let dir = files.image_dir(uuid);
        let result = async {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(Error::io(format!("cannot create {}", dir.display())))?;
            let to = files.path(uuid);
            tokio::fs::rename(&from, &to)
                .await
                .map_err(Error::io(format!(
                    "cannot move {} to {}",
                    from.display(),
                    to.display()
                )))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&from);
        }
        result
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files in a new temporary directory, and an upload begun there limited to `limit`
    /// bytes.
    async fn upload_in_temp_dir(limit: u64) -> (tempfile::TempDir, Files, Upload) {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).await.unwrap();
        let up = files.begin(limit).await.unwrap();
        (dir, files, up)
    }

    #[tokio::test]
    async fn upload_hashes_and_persists_or_vanishes() {
        let (_dir, files, mut up) = upload_in_temp_dir(100).await;
        up.write(b"hello ").await.unwrap();
        up.write(b"world").await.unwrap();
        let done = up.finish().await.unwrap();
        assert_eq!(done.sha1, "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed");
        assert_eq!(done.size, 11);
        let temp_path = done.temp.path().unwrap().to_path_buf();
        done.temp.persist(&files, "u1").await.unwrap();
        assert!(!temp_path.exists());
        assert_eq!(std::fs::read(files.path("u1")).unwrap(), b"hello world");

        let mut up = files.begin(100).await.unwrap();
        up.write(b"abandoned").await.unwrap();
        let done = up.finish().await.unwrap();
        let temp_path = done.temp.path().unwrap().to_path_buf();
        assert!(temp_path.exists());
        drop(done);
        assert!(!temp_path.exists());

        files.remove("u1").await.unwrap();
        assert!(!files.exists("u1").await);
        files.remove("u1").await.unwrap();
    }

    #[tokio::test]
    async fn uploads_over_the_limit_are_refused() {
        let (dir, _files, mut up) = upload_in_temp_dir(4).await;
        up.write(b"1234").await.unwrap();
        let e = up.write(b"5").await.unwrap_err();
        assert_eq!(e.name(), "ValidationFailed");
        assert!(e.to_string().starts_with("size: "));
        drop(up);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
