//! Installed images: each image is extracted once into `<state_dir>/images/<uuid>/root`
//! and shared, read-only, as the lower layer of every instance made from it (the ZFS
//! clone of SmartOS). Extraction goes to a temporary directory renamed into place, so a
//! crash never leaves a half-extracted image that looks installed.
//!
//! An image is whatever its publisher put in it, so extraction is done here, in Rust,
//! through a strict [`Tree`] on the new root rather than by `tar` as root, and what it
//! reads is what it writes (no listing checked first and extracted after):
//!
//! * a member named with `..` or an absolute path is refused;
//! * a member whose path goes through a symlink (`a -> /etc`, then `a/passwd`) is
//!   refused: nothing is written through a link. Symlinks themselves are kept as they
//!   are, absolute ones too: they resolve inside the instance, after `pivot_root`;
//! * a hard link must name a member inside the image, reached without a symlink;
//! * device nodes are dropped (FIFOs are kept), and so are setuid and setgid bits;
//! * owners are the members' numeric ids, and modes and times are kept otherwise.
//!
//! A refused member fails the whole import with an error naming it and the rule. The
//! tarball may be plain or compressed with gzip (read here), xz, bzip2 or zstd (through
//! the host's decompressor). A directory as the source is copied with the same rules.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use uuid::Uuid;

use super::safefs::{self, Owner, Tree};
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
        if meta.is_dir() {
            copy_dir(&source.path, &tmp_root)?;
        } else {
            extract(&source.path, &tmp_root)?;
        }
        let final_dir = images_dir.join(source.image_uuid.to_string());
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))
    })();
    if result.is_err()
        && let Err(e) = safefs::remove_host_tree(&tmp)
    {
        tracing::warn!(error = %e.chain(), "cleanup of a failed image import failed");
    }
    result
}

/// What a member of an image is.
enum Kind<'a> {
    Dir,
    File(&'a mut dyn Read),
    Symlink(Vec<u8>),
    /// A hard link to the member of this name.
    HardLink(Vec<u8>),
    Fifo,
    Device,
}

/// A member's owner, mode and modification time.
struct Attrs {
    owner: Owner,
    mode: u32,
    mtime: Option<i64>,
}

/// Writes an image's members into a new root.
struct Importer {
    tree: Tree,
    /// Directories and their times, set at the end (their entries change them).
    dir_times: Vec<(PathBuf, i64)>,
    /// Members left out (devices), for the log.
    dropped: Vec<String>,
    /// Members whose setuid or setgid bit was dropped, for the log.
    stripped: Vec<String>,
}

impl Importer {
    fn new(root: &Path) -> Result<Importer> {
        Ok(Importer {
            tree: Tree::open_strict(root)?,
            dir_times: Vec::new(),
            dropped: Vec::new(),
            stripped: Vec::new(),
        })
    }

    fn add(&mut self, raw_name: &[u8], kind: Kind<'_>, attrs: Attrs) -> Result<()> {
        let shown = String::from_utf8_lossy(raw_name).into_owned();
        let rel = member_path(raw_name).map_err(|rule| refused(&shown, rule))?;
        if matches!(kind, Kind::Device) {
            self.dropped.push(shown);
            return Ok(());
        }
        let mut attrs = attrs;
        if attrs.mode & 0o6000 != 0 && !matches!(kind, Kind::Symlink(_)) {
            self.stripped.push(shown.clone());
            attrs.mode &= !0o6000;
        }
        attrs.mode &= 0o1777;
        let is_dir = matches!(kind, Kind::Dir) && !rel.as_os_str().is_empty();
        let tree = &self.tree;
        // Directories a tarball does not list are made as tar makes them.
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let parent_made = match parent {
            Some(parent) => tree.create_dir_all(parent, 0o755, Owner::ROOT),
            None => Ok(()),
        };
        let done = parent_made.and_then(|()| match kind {
            Kind::Dir if rel.as_os_str().is_empty() => {
                tree.set_dir_attrs(&rel, attrs.owner, attrs.mode, None)
            }
            Kind::Dir => tree.create_dir(&rel, attrs.mode, attrs.owner),
            Kind::File(data) => tree.create_file(&rel).and_then(|mut file| {
                std::io::copy(data, &mut file)
                    .map_err(|e| Error::io(tree.display_path(&rel), e))?;
                safefs::set_attrs(&file, attrs.owner, attrs.mode, attrs.mtime)
                    .map_err(|e| Error::io(tree.display_path(&rel), e))
            }),
            Kind::Symlink(target) => {
                if target.is_empty() || target.contains(&0) {
                    return Err(refused(
                        &shown,
                        "a symlink needs a target without NUL bytes",
                    ));
                }
                tree.symlink(&rel, &target, attrs.owner, attrs.mtime)
            }
            Kind::HardLink(target) => {
                let target = member_path(&target).map_err(|rule| {
                    refused(&shown, &format!("its hard link target is refused: {rule}"))
                })?;
                if target.as_os_str().is_empty() {
                    return Err(refused(&shown, "a hard link cannot name the image's root"));
                }
                tree.hard_link(&target, &rel)
            }
            Kind::Fifo => tree.mkfifo(&rel, attrs.mode, attrs.owner, attrs.mtime),
            Kind::Device => Ok(()),
        });

        done.map_err(|e| match e {
            Error::Io { source, .. } if source.kind() != std::io::ErrorKind::StorageFull => {
                refused(&shown, &source.to_string())
            }
            e => e,
        })?;
        if let (true, Some(mtime)) = (is_dir, attrs.mtime) {
            self.dir_times.push((rel, mtime));
        }
        Ok(())
    }

    /// Directory times (last, deepest first), and the log of what was left out.
    fn finish(self, source: &Path) -> Result<()> {
        for (rel, mtime) in self.dir_times.iter().rev() {
            self.tree.set_dir_mtime(rel, *mtime)?;
        }
        if !self.dropped.is_empty() {
            tracing::warn!(
                image = %source.display(),
                count = self.dropped.len(),
                first = ?self.dropped.iter().take(5).collect::<Vec<_>>(),
                "device nodes in the image were left out"
            );
        }
        if !self.stripped.is_empty() {
            tracing::warn!(
                image = %source.display(),
                count = self.stripped.len(),
                first = ?self.stripped.iter().take(5).collect::<Vec<_>>(),
                "setuid and setgid bits in the image were dropped"
            );
        }
        Ok(())
    }
}

/// A member's name as a path inside the image: relative, `.` and empty components
/// dropped (`./bin/sh` is `bin/sh`, `./` the root), never `..` or absolute.
fn member_path(raw: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    if raw.is_empty() {
        return Err("a member needs a name");
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute member names are refused");
    }
    if raw.contains(&0) {
        return Err("a member name may not hold a NUL byte");
    }
    let mut out = PathBuf::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("member names may not hold '..'"),
            part => out.push(std::ffi::OsStr::from_bytes(part)),
        }
    }
    Ok(out)
}

fn refused(member: &str, rule: &str) -> Error {
    Error::invalid("image", format!("member {member:?}: {rule}"))
}

/// Extracts the tarball at `tarball` into `root` (an empty directory).
fn extract(tarball: &Path, root: &Path) -> Result<()> {
    let mut magic = [0u8; 6];
    let mut file = std::fs::File::open(tarball).map_err(|e| Error::io(tarball, e))?;
    let got = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(tarball, e))?;
    let magic = &magic[..got];
    let decompressor = if magic.starts_with(&[0x1f, 0x8b]) {
        None
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else {
        None
    };
    let file = std::fs::File::open(tarball).map_err(|e| Error::io(tarball, e))?;
    if let Some(program) = decompressor {
        let mut child = Command::new(program)
            .args(["-d", "-c"])
            .stdin(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                command: format!("{program} -d -c {}", tarball.display()),
                source,
            })?;
        let result = match child.stdout.take() {
            Some(out) => extract_stream(BufReader::new(out), tarball, root),
            None => Err(Error::Command {
                command: program.into(),
                output: "no output pipe".into(),
            }),
        };
        return finish_decompressor(child, program, tarball, result);
    }
    if magic.starts_with(&[0x1f, 0x8b]) {
        let reader = flate2::read::MultiGzDecoder::new(BufReader::new(file));
        extract_stream(reader, tarball, root)
    } else {
        extract_stream(BufReader::new(file), tarball, root)
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Waits for the decompressor: its failure is the import's (a truncated or corrupt
/// file), unless the import failed first.
fn finish_decompressor(
    mut child: Child,
    program: &str,
    tarball: &Path,
    result: Result<()>,
) -> Result<()> {
    if result.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        command: program.into(),
        source,
    })?;
    result?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} -d -c {}", tarball.display()),
            output: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn extract_stream(reader: impl Read, tarball: &Path, root: &Path) -> Result<()> {
    let bad = |e: std::io::Error| {
        Error::invalid(
            "image",
            format!("{} is not a readable tarball: {e}", tarball.display()),
        )
    };
    let mut importer = Importer::new(root)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path_bytes().into_owned();
        let header = entry.header();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let id = |v: std::io::Result<u64>, what: &str| -> Result<u32> {
            v.ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| refused(&shown, &format!("its {what} is not a 32-bit id")))
        };
        let attrs = Attrs {
            owner: Owner {
                uid: id(header.uid(), "uid")?,
                gid: id(header.gid(), "gid")?,
            },
            mode: header.mode().map_err(bad)?,
            mtime: header.mtime().ok().and_then(|t| i64::try_from(t).ok()),
        };
        let entry_type = header.entry_type();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let kind = if entry_type.is_dir() {
            Kind::Dir
        } else if entry_type.is_file() || entry_type.is_contiguous() || entry_type.is_gnu_sparse() {
            Kind::File(&mut entry)
        } else if entry_type.is_symlink() {
            Kind::Symlink(link.unwrap_or_default())
        } else if entry_type.is_hard_link() {
            Kind::HardLink(link.unwrap_or_default())
        } else if entry_type.is_fifo() {
            Kind::Fifo
        } else if entry_type.is_character_special() || entry_type.is_block_special() {
            Kind::Device
        } else if entry_type.is_pax_global_extensions()
            || entry_type.is_pax_local_extensions()
            || entry_type.is_gnu_longname()
            || entry_type.is_gnu_longlink()
        {
            continue;
        } else {
            return Err(refused(
                &shown,
                &format!("a member of type {:?} is not supported", entry_type),
            ));
        };
        let name = if matches!(kind, Kind::Dir) && !name.ends_with(b"/") {
            let mut n = name;
            n.push(b'/');
            n
        } else {
            name
        };
        importer.add(&name, kind, attrs)?;
    }
    importer.finish(tarball)
}

/// Copies the directory `source` into `root` with the same rules as a tarball; hard
/// links within it stay hard links.
fn copy_dir(source: &Path, root: &Path) -> Result<()> {
    let mut importer = Importer::new(root)?;
    let meta = std::fs::symlink_metadata(source).map_err(|e| Error::io(source, e))?;
    importer.add(b"./", Kind::Dir, attrs_of(&meta))?;
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = source.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(&dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = rel.join(entry.file_name());
            let path = source.join(&rel);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let mut name = rel.as_os_str().as_bytes().to_vec();
            let file_type = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_dir() {
                name.push(b'/');
                importer.add(&name, Kind::Dir, attrs_of(&meta))?;
                pending.push(rel);
            } else if file_type.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                let target = target.as_os_str().as_bytes().to_vec();
                importer.add(&name, Kind::Symlink(target), attrs_of(&meta))?;
            } else if file_type.is_fifo() {
                importer.add(&name, Kind::Fifo, attrs_of(&meta))?;
            } else if file_type.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                        importer.add(&name, Kind::HardLink(first.clone()), attrs_of(&meta))?;
                        continue;
                    }
                    links.insert((meta.dev(), meta.ino()), name.clone());
                }
                let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                importer.add(&name, Kind::File(&mut file), attrs_of(&meta))?;
            } else {
                // Devices and sockets.
                importer.add(&name, Kind::Device, attrs_of(&meta))?;
            }
        }
    }
    importer.finish(source)
}

fn attrs_of(meta: &std::fs::Metadata) -> Attrs {
    Attrs {
        owner: Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        },
        mode: meta.mode() & 0o7777,
        mtime: Some(meta.mtime()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    /// One member as a tarball holds it, names and link targets taken as they are (the
    /// tar crate's own builder refuses the hostile ones).
    struct Member<'a> {
        name: &'a [u8],
        kind: tar::EntryType,
        link: &'a [u8],
        mode: u32,
        data: &'a [u8],
    }

    fn member<'a>(name: &'a str, kind: tar::EntryType) -> Member<'a> {
        Member {
            name: name.as_bytes(),
            kind,
            link: b"",
            mode: 0o644,
            data: b"",
        }
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> Member<'a> {
        Member {
            data,
            ..member(name, tar::EntryType::Regular)
        }
    }

    fn symlink<'a>(name: &'a str, link: &'a [u8]) -> Member<'a> {
        Member {
            link,
            ..member(name, tar::EntryType::Symlink)
        }
    }

    fn hard_link<'a>(name: &'a str, link: &'a [u8]) -> Member<'a> {
        Member {
            link,
            ..member(name, tar::EntryType::Link)
        }
    }

    fn tarball(members: &[Member<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for m in members {
            let mut header = tar::Header::new_old();
            let old = header.as_old_mut();
            old.name[..m.name.len()].copy_from_slice(m.name);
            old.linkname[..m.link.len()].copy_from_slice(m.link);
            header.set_entry_type(m.kind);
            header.set_mode(m.mode);
            header.set_uid(1000);
            header.set_gid(1000);
            header.set_mtime(1_600_000_000);
            header.set_size(m.data.len() as u64);
            if m.kind.is_character_special() {
                header.as_old_mut().linkname[0] = 0;
            }
            header.set_cksum();
            builder.append(&header, m.data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A sandbox: the images directory and a host directory beside it whose files the
    /// import must never touch.
    struct Place {
        top: tempfile::TempDir,
    }

    impl Place {
        fn new() -> Place {
            let top = tempfile::tempdir().unwrap();
            std::fs::create_dir(top.path().join("images")).unwrap();
            std::fs::create_dir(top.path().join("host")).unwrap();
            std::fs::write(top.path().join("host/passwd"), "root:x:0:0").unwrap();
            Place { top }
        }
        fn images(&self) -> PathBuf {
            self.top.path().join("images")
        }
        fn host(&self) -> PathBuf {
            self.top.path().join("host")
        }
        fn import(&self, bytes: &[u8]) -> (Uuid, Result<()>) {
            let file = self.top.path().join(format!("{}.tar", Uuid::new_v4()));
            std::fs::write(&file, bytes).unwrap();
            let uuid = Uuid::new_v4();
            let result = ensure_present(
                &self.images(),
                &ImageSource {
                    image_uuid: uuid,
                    path: file.clone(),
                },
            );
            std::fs::remove_file(&file).unwrap();
            (uuid, result)
        }
        /// Everything under the sandbox but the images directory, as it was made.
        fn host_untouched(&self) {
            let mut names: Vec<String> = std::fs::read_dir(self.top.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, vec!["host", "images"]);
            let host: Vec<_> = std::fs::read_dir(self.host()).unwrap().collect();
            assert_eq!(host.len(), 1, "{host:?}");
            let passwd = self.host().join("passwd");
            assert_eq!(std::fs::read_to_string(&passwd).unwrap(), "root:x:0:0");
            assert_eq!(std::fs::metadata(&passwd).unwrap().nlink(), 1);
        }
        /// A refused import leaves nothing in the images directory.
        fn refused(&self, bytes: &[u8], member: &str, rule: &str) {
            let (uuid, result) = self.import(bytes);
            let err = result.expect_err("a hostile image is refused");
            let text = err.chain();
            assert!(
                text.contains(&format!("{member:?}")) && text.contains(rule),
                "{text}"
            );
            assert_eq!(err.name(), "ValidationFailedError", "{text}");
            assert!(!is_present(&self.images(), uuid));
            assert_eq!(std::fs::read_dir(self.images()).unwrap().count(), 0);
            self.host_untouched();
        }
    }

    #[test]
    fn a_good_image_keeps_its_files_links_and_fifos() {
        let place = Place::new();
        let bytes = gzip(&tarball(&[
            Member {
                mode: 0o755,
                ..member("./", tar::EntryType::Directory)
            },
            Member {
                mode: 0o755,
                ..member("./bin/", tar::EntryType::Directory)
            },
            Member {
                mode: 0o755,
                data: b"#!/bin/sh\n",
                ..member("./bin/sh", tar::EntryType::Regular)
            },
            hard_link("./bin/ash", b"./bin/sh"),
            symlink("./bin/bash", b"/bin/sh"),
            symlink("./etc/resolv.conf", b"../run/resolv.conf"),
            member("./run/", tar::EntryType::Directory),
            member("./run/initctl", tar::EntryType::Fifo),
        ]));
        let (uuid, result) = place.import(&bytes);
        result.unwrap();
        let root = image_root(&place.images(), uuid);
        assert_eq!(
            std::fs::read_to_string(root.join("bin/sh")).unwrap(),
            "#!/bin/sh\n"
        );
        let sh = std::fs::metadata(root.join("bin/sh")).unwrap();
        assert_eq!(sh.mode() & 0o7777, 0o755);
        assert_eq!((sh.uid(), sh.gid()), (1000, 1000));
        assert_eq!(sh.mtime(), 1_600_000_000);
        assert_eq!(sh.nlink(), 2, "bin/ash is a hard link to bin/sh");
        // Links are kept as their contents say, absolute ones too: they resolve inside
        // the instance.
        assert_eq!(
            std::fs::read_link(root.join("bin/bash")).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/resolv.conf")).unwrap(),
            Path::new("../run/resolv.conf")
        );
        assert!(
            std::fs::symlink_metadata(root.join("run/initctl"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let bin = std::fs::metadata(root.join("bin")).unwrap();
        assert_eq!(bin.mtime(), 1_600_000_000);
        place.host_untouched();
    }

    #[test]
    fn devices_and_set_id_bits_are_dropped() {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: owners other than the caller need root");
            return;
        }
        let place = Place::new();
        let bytes = tarball(&[
            member("dev/", tar::EntryType::Directory),
            member("dev/sda", tar::EntryType::Block),
            member("dev/mem", tar::EntryType::Char),
            Member {
                mode: 0o4755,
                data: b"suid",
                ..member("bin/su", tar::EntryType::Regular)
            },
            Member {
                mode: 0o2755,
                ..member("var/mail/", tar::EntryType::Directory)
            },
            Member {
                mode: 0o1777,
                ..member("tmp/", tar::EntryType::Directory)
            },
        ]);
        let (uuid, result) = place.import(&bytes);
        result.unwrap();
        let root = image_root(&place.images(), uuid);
        let dev: Vec<_> = std::fs::read_dir(root.join("dev")).unwrap().collect();
        assert!(dev.is_empty(), "{dev:?}");
        let su = std::fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o755);
        let mail = std::fs::metadata(root.join("var/mail")).unwrap();
        assert_eq!(mail.permissions().mode() & 0o7777, 0o755);
        let tmp = std::fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(
            tmp.permissions().mode() & 0o7777,
            0o1777,
            "the sticky bit stays"
        );
        place.host_untouched();
    }

    #[test]
    fn dot_dot_and_absolute_members_are_refused() {
        let place = Place::new();
        place.refused(
            &tarball(&[file("../host/evil", b"x")]),
            "../host/evil",
            "may not hold '..'",
        );
        place.refused(
            &tarball(&[
                member("a/", tar::EntryType::Directory),
                file("a/../../host/evil", b"x"),
            ]),
            "a/../../host/evil",
            "may not hold '..'",
        );
        let absolute = format!("{}/evil", place.host().display());
        place.refused(
            &tarball(&[file(&absolute, b"x")]),
            &absolute,
            "absolute member names are refused",
        );
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let place = Place::new();
        let host = place.host().display().to_string();
        // An absolute link to a host directory, then a member through it.
        place.refused(
            &tarball(&[symlink("a", host.as_bytes()), file("a/passwd", b"evil")]),
            "a/passwd",
            "symlinks are not followed",
        );
        // A relative one up and out, then a directory through it.
        place.refused(
            &tarball(&[
                symlink("up", b"../../../../../../../../.."),
                member("up/tmp/x/", tar::EntryType::Directory),
            ]),
            "up/tmp/x/",
            "symlinks are not followed",
        );
        // A link inside the image is no way through either.
        place.refused(
            &tarball(&[
                member("real/", tar::EntryType::Directory),
                symlink("alias", b"real"),
                file("alias/file", b"x"),
            ]),
            "alias/file",
            "symlinks are not followed",
        );
    }

    #[test]
    fn hard_links_outside_the_image_are_refused() {
        let place = Place::new();
        place.refused(
            &tarball(&[hard_link("passwd", b"../host/passwd")]),
            "passwd",
            "hard link target is refused",
        );
        let absolute = format!("{}/passwd", place.host().display());
        place.refused(
            &tarball(&[hard_link("passwd", absolute.as_bytes())]),
            "passwd",
            "absolute member names are refused",
        );
        // Through a symlink that leads to the host's directory.
        let host = place.host().display().to_string();
        place.refused(
            &tarball(&[
                symlink("h", host.as_bytes()),
                hard_link("passwd", b"h/passwd"),
            ]),
            "passwd",
            "symlinks are not followed",
        );
    }

    #[test]
    fn xz_tarballs_and_directories_import_too() {
        let place = Place::new();
        let plain = tarball(&[file("etc/motd", b"hello")]);
        let raw = place.top.path().join("raw.tar");
        std::fs::write(&raw, &plain).unwrap();
        let out = Command::new("xz")
            .args(["-z", "-c"])
            .arg(&raw)
            .output()
            .unwrap();
        std::fs::remove_file(&raw).unwrap();
        assert!(out.status.success());
        let (uuid, result) = place.import(&out.stdout);
        result.unwrap();
        let root = image_root(&place.images(), uuid);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/motd")).unwrap(),
            "hello"
        );
        // The extracted tree as a directory source: the same files.
        let copy = Uuid::new_v4();
        ensure_present(
            &place.images(),
            &ImageSource {
                image_uuid: copy,
                path: root.clone(),
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(image_root(&place.images(), copy).join("etc/motd")).unwrap(),
            "hello"
        );
        // A corrupt compressed file is an error, and leaves nothing.
        let mut corrupt = out.stdout.clone();
        corrupt.truncate(corrupt.len() / 2);
        let (uuid, result) = place.import(&corrupt);
        assert!(result.is_err());
        assert!(!is_present(&place.images(), uuid));
        place.host_untouched();
    }
}
