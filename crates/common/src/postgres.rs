//! Where the packaged PostgreSQL is, for the sitter that runs it and the test kit.

use std::path::PathBuf;

/// The directory of the packaged PostgreSQL binaries: `$PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin` that holds a `postgres`; None when there is none.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}
