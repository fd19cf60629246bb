//! nfsserver's network path on arbitrary bytes: the input is a TCP stream, cut into
//! records by `record_mark` as the server does, each record handed to
//! `proto::handle_record` on a scratch export (a directory, a file, a symlink out of the
//! export). Must hold: no panic; a record over the limit ends the stream; every reply
//! starts with the call's xid and is a REPLY that fits the limits; nothing outside the
//! export changes (a sentinel beside it keeps its content and its directory its entries).
//!
//! To reach past handle decoding, every 20 bytes that start `FH0` and a digit 0..3 are
//! replaced by the handle of the export's root, `dir`, `dir/file` or `link` (seeds use
//! them).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nfsserver::fs::{HANDLE_LEN, Tree};
use nfsserver::proto::{Server, handle_record};

struct Scratch {
    base: PathBuf,
    root: PathBuf,
    server: Server,
    handles: Vec<[u8; HANDLE_LEN]>,
}

const SENTINEL: &[u8] = b"outside the export";

fn seed(root: &std::path::Path) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/file"), b"hello").unwrap();
    std::os::unix::fs::symlink("../sentinel", root.join("link")).unwrap();
}

fn scratch() -> &'static std::sync::Mutex<Scratch> {
    static S: OnceLock<std::sync::Mutex<Scratch>> = OnceLock::new();
    S.get_or_init(|| {
        // what runs of this target that are gone left behind
        for e in std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("nfsserver-fuzz-")
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let base = PathBuf::from(format!("/dev/shm/nfsserver-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("sentinel"), SENTINEL).unwrap();
        let root = base.join("export");
        std::sync::Mutex::new(fresh(base, root))
    })
}

fn fresh(base: PathBuf, root: PathBuf) -> Scratch {
    seed(&root);
    let tree = Tree::open(&root).unwrap();
    let mut handles = Vec::new();
    let rh = tree.root_handle().unwrap();
    handles.push(rh.encode());
    let root_fh = rh.encode();
    let (d, _) = tree.lookup(&root_fh, b"dir").unwrap();
    handles.push(d.encode());
    let (f, _) = tree.lookup(&d.encode(), b"file").unwrap();
    handles.push(f.encode());
    let (l, _) = tree.lookup(&root_fh, b"link").unwrap();
    handles.push(l.encode());
    Scratch {
        base,
        root,
        server: Server { tree, verf: [1; 8] },
        handles,
    }
}

fn substitute(record: &mut [u8], handles: &[[u8; HANDLE_LEN]]) {
    let mut i = 0;
    while i + HANDLE_LEN <= record.len() {
        if &record[i..i + 3] == b"FH0" && (b'0'..=b'3').contains(&record[i + 3]) {
            let h = &handles[usize::from(record[i + 3] - b'0')];
            record[i..i + HANDLE_LEN].copy_from_slice(h);
            i += HANDLE_LEN;
        } else {
            i += 1;
        }
    }
}

static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let mut s = scratch().lock().unwrap_or_else(|e| e.into_inner());
    if RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2000 == 1999 {
        let (base, root) = (s.base.clone(), s.root.clone());
        *s = fresh(base, root);
    }
    let mut rest = data;
    let mut record = Vec::new();
    loop {
        if rest.len() < 4 {
            break;
        }
        let mark = [rest[0], rest[1], rest[2], rest[3]];
        rest = &rest[4..];
        let Ok((len, last)) = nfsserver::record_mark(mark, record.len()) else {
            assert!(
                record.len() + (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize
                    > nfsserver::MAX_RECORD
            );
            break;
        };
        if len > rest.len() {
            break;
        }
        record.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
        if !last {
            continue;
        }
        substitute(&mut record, &s.handles);
        if let Some(reply) = handle_record(&s.server, &record) {
            assert!(
                record.len() >= 8,
                "a reply to a record without xid and type"
            );
            assert_eq!(reply[..4], record[..4], "the reply carries the call's xid");
            assert_eq!(reply[4..8], [0, 0, 0, 1], "a REPLY");
            assert!(
                reply.len() <= nfsserver::MAX_RECORD + 4096,
                "reply of {} bytes",
                reply.len()
            );
        }
        record.clear();
    }
    assert_eq!(std::fs::read(s.base.join("sentinel")).unwrap(), SENTINEL);
    let entries = std::fs::read_dir(&s.base).unwrap().count();
    assert_eq!(
        entries, 2,
        "only the sentinel and the export beside each other"
    );
});
