//! cn-agent's image import on arbitrary bytes, through its public entry point
//! (`linux::image::ensure_present` on a file, as an image downloaded from IMGAPI is).
//!
//! The first byte picks the form, the rest is a tar:
//!
//! * bit 0 gzips it (so the gzip path reads a tar the fuzzer shapes);
//! * bit 1 puts "planted" symlinks in front of it that lead out of the image (`s` and `S`
//!   to the sentinel directory, `p` and `P` to the outside file; the lower-case ones
//!   relative, the upper-case ones absolute), so members written through them are tried
//!   from the first input on;
//! * bit 2 leaves the header checksums as they are; otherwise every header's checksum is
//!   made right first (walking the headers by their sizes), since a mutated header
//!   rarely keeps a valid one and the tar reader stops at the first that is wrong.
//!
//! Each input is extracted into a fresh directory under one temporary root
//! (`/dev/shm/cn-agent-fuzz-<pid>`, or under `$TMPDIR` without /dev/shm):
//!
//! ```text
//! <root>/images/            the images directory (the import's `.partial-*`, then <uuid>)
//! <root>/input              the tarball
//! <root>/sentinel/          must stay empty
//! <root>/outside/passwd     must stay as it was made (contents, mode, owner, links)
//! ```
//!
//! The import must return (never panic). Afterwards nothing outside `images/` and
//! `input` has changed; a failed import left nothing in `images/`; a successful one left
//! exactly the image's directory, with no device node and no setuid or setgid file in
//! it. The image is then removed with `safefs::remove_host_tree` (as a failed import is
//! cleaned up), and the outside is checked again.
//!
//! `IMAGE_FUZZ_PRINT=1` prints each input's form and result (for a look at a seed or a
//! crash by hand: `image <file>`).
//!
//! Every file the process writes is capped at 1 MiB (`RLIMIT_FSIZE`, `SIGXFSZ` ignored),
//! so a member that claims gigabytes (a GNU sparse file is a few header bytes) fails
//! with EFBIG instead of filling the disk.
#![no_main]

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cn_agent::ImageSource;
use cn_agent::linux::{image, safefs};
use libfuzzer_sys::fuzz_target;

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
const FILE_SIZE_LIMIT: u64 = 1 << 20;

struct Place {
    root: PathBuf,
    /// What `outside/passwd` looked like when it was made.
    passwd: (u64, u32, u32, u32, i64, u64),
}

impl Place {
    fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    fn input(&self) -> PathBuf {
        self.root.join("input")
    }
}

fn passwd_state(path: &Path) -> (u64, u32, u32, u32, i64, u64) {
    let m = std::fs::symlink_metadata(path).expect("outside/passwd is there");
    (m.ino(), m.mode(), m.uid(), m.gid(), m.mtime(), m.nlink())
}

static PLACE: OnceLock<Place> = OnceLock::new();

/// Removes the temporary root when libFuzzer exits (not after a crash: its state is
/// then worth a look).
extern "C" fn remove_place() {
    if let Some(place) = PLACE.get() {
        let _ = std::fs::remove_dir_all(&place.root);
    }
}

fn place() -> &'static Place {
    PLACE.get_or_init(|| {
        // SAFETY: setrlimit(2), signal(2) and atexit(3) with valid arguments.
        unsafe {
            libc::atexit(remove_place);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: FILE_SIZE_LIMIT,
                rlim_max: FILE_SIZE_LIMIT,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        // A tmpfs when there is one: on a disk busy with builds every unlink or rename
        // can wait for the journal, and the run does little else.
        let shm = Path::new("/dev/shm");
        let top = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let root = top.join(format!("cn-agent-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("images")).expect("make the images directory");
        std::fs::create_dir(root.join("sentinel")).expect("make sentinel/");
        std::fs::create_dir(root.join("outside")).expect("make outside/");
        let passwd = root.join("outside/passwd");
        std::fs::write(&passwd, PASSWD).expect("write outside/passwd");
        Place {
            passwd: passwd_state(&passwd),
            root,
        }
    })
}

/// A tar header block for a symlink `name -> target` (old-style header: the names are
/// taken as they are).
fn symlink_member(out: &mut Vec<u8>, name: &str, target: &[u8]) {
    let mut header = tar::Header::new_old();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    let n = target.len().min(old.linkname.len());
    old.linkname[..n].copy_from_slice(&target[..n]);
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header.set_mtime(1_600_000_000);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
}

/// The planted symlinks, relative to the import's root `images/.partial-<id>/root`.
fn planted(place: &Place) -> Vec<u8> {
    let mut out = Vec::new();
    symlink_member(&mut out, "s", b"../../../sentinel");
    symlink_member(&mut out, "p", b"../../../outside/passwd");
    let sentinel = place.root.join("sentinel");
    let passwd = place.root.join("outside/passwd");
    symlink_member(&mut out, "S", sentinel.as_os_str().as_encoded_bytes());
    symlink_member(&mut out, "P", passwd.as_os_str().as_encoded_bytes());
    out
}

/// Sets the checksum of every header of the tar in `buf`, from the first block on, to
/// what its bytes sum to; stops at a zero block, a size that does not parse or the end.
fn fix_checksums(buf: &mut [u8]) {
    let mut at = 0usize;
    while let Some(block) = buf.get_mut(at..at + 512) {
        if block.iter().all(|b| *b == 0) {
            return;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let header = tar::Header::from_byte_slice(block);
        let Ok(size) = header.entry_size() else {
            return;
        };
        // A GNU sparse header's extension blocks follow it, each flagging the next.
        let mut extended = header.entry_type().is_gnu_sparse() && block[482] == 1;
        at += 512;
        while extended {
            match buf.get(at..at + 512) {
                Some(ext) => extended = ext[504] == 1,
                None => return,
            }
            at += 512;
        }
        let Some(next) = size
            .checked_next_multiple_of(512)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| at.checked_add(s))
        else {
            return;
        };
        at = next;
    }
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Nothing outside `images/` and `input` has changed.
fn outside_untouched(place: &Place, input: &str) {
    assert_eq!(
        names(&place.root),
        ["images", "input", "outside", "sentinel"],
        "{input}"
    );
    assert_eq!(
        names(&place.root.join("sentinel")),
        Vec::<String>::new(),
        "{input}"
    );
    assert_eq!(names(&place.root.join("outside")), ["passwd"], "{input}");
    let passwd = place.root.join("outside/passwd");
    assert_eq!(passwd_state(&passwd), place.passwd, "{input}");
    assert_eq!(
        std::fs::read(&passwd).expect("read outside/passwd"),
        PASSWD,
        "{input}"
    );
}

/// No device node and no setuid or setgid file under `dir` (symlinks not followed).
fn no_devices_or_set_id(dir: &Path, input: &str) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("stat an extracted member");
        let kind = meta.file_type();
        assert!(
            !kind.is_block_device() && !kind.is_char_device(),
            "device node {} from {input}",
            path.display()
        );
        if !kind.is_symlink() {
            assert_eq!(
                meta.mode() & 0o6000,
                0,
                "set-id bit on {} from {input}",
                path.display()
            );
        }
        if kind.is_dir() {
            no_devices_or_set_id(&path, input);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let place = place();
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let mut tarball = if form & 2 != 0 {
        planted(place)
    } else {
        Vec::new()
    };
    let start = tarball.len();
    tarball.extend_from_slice(rest);
    if form & 4 == 0 {
        fix_checksums(&mut tarball[start..]);
    }
    if form & 1 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tarball).expect("gzip into memory");
        tarball = gz.finish().expect("gzip into memory");
    }
    std::fs::write(place.input(), &tarball).expect("write the input file");

    // For the assertions' messages (libFuzzer keeps the input itself).
    let input = format!("input of {} bytes, form {form}", data.len());
    let uuid = uuid::Uuid::new_v4();
    let source = ImageSource {
        image_uuid: uuid,
        path: place.input(),
    };
    let result = image::ensure_present(&place.images(), &source);
    if std::env::var_os("IMAGE_FUZZ_PRINT").is_some() {
        eprintln!("form {form}: {result:?}");
    }
    outside_untouched(place, &input);
    let image_dir = place.images().join(uuid.to_string());
    match &result {
        Ok(()) => {
            assert_eq!(names(&place.images()), [uuid.to_string()], "{input}");
            let root = image::image_root(&place.images(), uuid);
            assert!(root.is_dir(), "{input}");
            no_devices_or_set_id(&root, &input);
        }
        Err(_) => {
            assert_eq!(
                names(&place.images()),
                Vec::<String>::new(),
                "a failed import left something: {result:?} {input}"
            );
        }
    }
    safefs::remove_host_tree(&image_dir).expect("remove the imported image");
    assert_eq!(names(&place.images()), Vec::<String>::new(), "{input}");
    outside_untouched(place, &input);
});
