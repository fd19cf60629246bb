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
    std::fs::create_dir_all(images_dir).map_err(|e| Error::io(images_dir, e))?;
    // An IMGAPI file URL (`http://imgapi/images/<uuid>/file`): download it first.
    if let Some(url) = source.path.to_str().filter(|p| p.starts_with("http://")) {
        let file = images_dir.join(format!(
            ".download-{}-{}",
            source.image_uuid,
            Uuid::new_v4()
        ));
        let result = download::fetch(url, &file).and_then(|()| {
            ensure_present(
                images_dir,
                &ImageSource {
                    image_uuid: source.image_uuid,
                    path: file.clone(),
                },
            )
        });
        let _ = std::fs::remove_file(&file);
        return result;
    }
    let meta = std::fs::metadata(&source.path).map_err(|e| Error::io(&source.path, e))?;
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

/// A plain HTTP/1.0 GET of an image file (IMGAPI serves them on the admin network, no
/// TLS), written to `dest`. Kept to the standard library: one request, no redirects.
mod download {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::time::Duration;

    use crate::error::{Error, Result};

    /// No byte for this long means the server is gone.
    const READ_TIMEOUT: Duration = Duration::from_secs(60);

    fn failed(url: &str, why: impl std::fmt::Display) -> Error {
        Error::invalid(
            "image_ensure_present.source",
            format!("cannot download {url}: {why}"),
        )
    }

    pub fn fetch(url: &str, dest: &Path) -> Result<()> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| failed(url, "not http"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut stream = TcpStream::connect(host).map_err(|e| failed(url, e))?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| failed(url, e))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")
            .map_err(|e| failed(url, e))?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).map_err(|e| failed(url, e))?;
        let code = status.split_whitespace().nth(1).unwrap_or("");
        let mut length: Option<u64> = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| failed(url, e))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().ok();
            }
        }
        if code != "200" {
            let mut body = String::new();
            let _ = reader.take(4096).read_to_string(&mut body);
            return Err(failed(url, format!("HTTP {code}: {}", body.trim())));
        }
        let mut out = std::fs::File::create(dest).map_err(|e| Error::io(dest, e))?;
        let copied = std::io::copy(&mut reader, &mut out).map_err(|e| failed(url, e))?;
        if length.is_some_and(|l| l != copied) {
            return Err(failed(
                url,
                format!("got {copied} of {} bytes", length.unwrap_or(0)),
            ));
        }
        out.sync_all().map_err(|e| Error::io(dest, e))
    }
}
