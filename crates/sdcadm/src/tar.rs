//! A small, reproducible ustar writer: the same entries always make the same bytes (owner
//! root, fixed mtime), so an image's sha1 changes only when its contents do.

use std::io::Write;

/// Every entry's mtime: 2020-01-01T00:00:00Z.
pub const MTIME: u64 = 1_577_836_800;

pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    /// A directory anyone may read and enter (0755).
    pub fn dir(path: impl Into<String>) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }

    /// A file of `data` with permissions `mode`.
    pub fn file(path: impl Into<String>, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.into(),
            mode,
            data: data.into(),
        }
    }

    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// Writes `entries` in the order given, then the two zero blocks that end an archive.
pub fn write<W: Write>(out: &mut W, entries: &[Entry]) -> std::io::Result<()> {
    for e in entries {
        let (kind, mode, size, link) = match e {
            Entry::Dir { mode, .. } => (b'5', *mode, 0usize, ""),
            Entry::File { mode, data, .. } => (b'0', *mode, data.len(), ""),
            Entry::Symlink { target, .. } => (b'2', 0o777, 0, target.as_str()),
        };
        let mut path = e.path().trim_start_matches('/').to_string();
        if matches!(e, Entry::Dir { .. }) && !path.ends_with('/') {
            path.push('/');
        }
        let header = header(&path, kind, mode, size as u64, link)?;
        out.write_all(&header)?;
        if let Entry::File { data, .. } = e {
            out.write_all(data)?;
            let pad = (512 - data.len() % 512) % 512;
            out.write_all(&vec![0u8; pad])?;
        }
    }
    out.write_all(&[0u8; 1024])
}

fn header(path: &str, kind: u8, mode: u32, size: u64, link: &str) -> std::io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let (prefix, name) = split_path(path)?;
    put(&mut h[0..100], name.as_bytes());
    put(&mut h[100..108], format!("{mode:07o}\0").as_bytes());
    put(&mut h[108..116], b"0000000\0");
    put(&mut h[116..124], b"0000000\0");
    put(&mut h[124..136], format!("{size:011o}\0").as_bytes());
    put(&mut h[136..148], format!("{MTIME:011o}\0").as_bytes());
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    if link.len() > 100 {
        return Err(too_long(link));
    }
    put(&mut h[157..257], link.as_bytes());
    put(&mut h[257..263], b"ustar\0");
    put(&mut h[263..265], b"00");
    put(&mut h[265..297], b"root");
    put(&mut h[297..329], b"root");
    put(&mut h[345..500], prefix.as_bytes());
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h[148..156], format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn put(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

fn too_long(path: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("path too long for ustar: {path}"),
    )
}

/// ustar keeps names over 100 bytes as prefix (up to 155) + "/" + name (up to 100).
fn split_path(path: &str) -> std::io::Result<(&str, &str)> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0 {
            return Ok((&path[..i], &path[i + 1..]));
        }
    }
    Err(too_long(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_tar_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("t.tar");
        let long = format!("{}/file", "d".repeat(120));
        let entries = vec![
            Entry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "bin/hello".into(),
                mode: 0o755,
                data: b"#!/bin/sh\necho hi\n".to_vec(),
            },
            Entry::Symlink {
                path: "bin/hi".into(),
                target: "hello".into(),
            },
            Entry::File {
                path: long.clone(),
                mode: 0o644,
                data: vec![7u8; 1000],
            },
        ];
        let mut bytes = Vec::new();
        write(&mut bytes, &entries).unwrap();
        std::fs::write(&tarball, &bytes).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&tarball)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.contains("bin/hi -> hello"), "{listing}");
        assert!(listing.contains(&long), "{listing}");
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(x.join(&long)).unwrap(), vec![7u8; 1000]);
        assert_eq!(
            std::fs::read_link(x.join("bin/hi")).unwrap().to_str(),
            Some("hello")
        );
        // Reproducible: the same entries give the same bytes.
        let mut again = Vec::new();
        write(&mut again, &entries).unwrap();
        assert_eq!(bytes, again);
    }
}
