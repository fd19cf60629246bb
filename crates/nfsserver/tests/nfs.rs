//! A real NFSv3 client (the `nfs3_client` crate, over TCP) against `nfsserver::serve` on
//! a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use triton_testkit::bytes::pattern;

type Conn = Nfs3Connection<TokioIo<TcpStream>>;

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), nfsserver::Error>>,
}

impl Server {
    async fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(nfsserver::serve(listener, root.to_path_buf(), stop.clone()));
        Self { addr, stop, task }
    }

    /// A server on `root`, a connection as root and the export's root handle.
    async fn start_as_root(root: &Path) -> (Self, Conn, nfs_fh3) {
        let server = Self::start(root).await;
        let c = server.connect(0, 0).await;
        let fh = c.root_nfs_fh3();
        (server, c, fh)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn connect(&self, uid: u32, gid: u32) -> Conn {
        let cred = opaque_auth::auth_unix(&auth_unix {
            stamp: 1,
            machinename: Opaque::borrowed(b"test"),
            uid,
            gid,
            gids: vec![gid],
        });
        Nfs3ConnectionBuilder::new(TokioConnector, self.addr.ip().to_string(), "/exports/data")
            .mount_port(self.addr.port())
            .nfs3_port(self.addr.port())
            .connect_from_privileged_port(false)
            .credential(cred)
            .mount()
            .await
            .unwrap()
    }
}

fn name(s: &str) -> filename3<'static> {
    filename3(Opaque::owned(s.as_bytes().to_vec()))
}

fn dirop(dir: &nfs_fh3, n: &str) -> diropargs3<'static> {
    diropargs3 {
        dir: dir.clone(),
        name: name(n),
    }
}

/// A reply's success, or the status it was refused with.
fn ok<T, E>(res: Nfs3Result<T, E>) -> Result<T, nfsstat3> {
    match res {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((e, _)) => Err(e),
    }
}

async fn try_create(
    c: &mut Conn,
    dir: &nfs_fh3,
    n: &str,
    how: createhow3,
) -> Result<CREATE3resok, nfsstat3> {
    let args = CREATE3args {
        where_: dirop(dir, n),
        how,
    };
    ok(c.create(&args).await.unwrap())
}

async fn create(c: &mut Conn, dir: &nfs_fh3, n: &str) -> nfs_fh3 {
    let how = createhow3::GUARDED(sattr3::default());
    try_create(c, dir, n, how).await.unwrap().obj.unwrap()
}

async fn try_mkdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<nfs_fh3, nfsstat3> {
    let args = MKDIR3args {
        where_: dirop(dir, n),
        attributes: sattr3::default(),
    };
    ok(c.mkdir(&args).await.unwrap()).map(|res| res.obj.unwrap())
}

async fn mkdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> nfs_fh3 {
    try_mkdir(c, dir, n).await.unwrap()
}

async fn remove(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(), nfsstat3> {
    let object = dirop(dir, n);
    ok(c.remove(&REMOVE3args { object }).await.unwrap()).map(drop)
}

async fn rmdir(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(), nfsstat3> {
    let object = dirop(dir, n);
    ok(c.rmdir(&RMDIR3args { object }).await.unwrap()).map(drop)
}

async fn rename(c: &mut Conn, from: (&nfs_fh3, &str), to: (&nfs_fh3, &str)) {
    let args = RENAME3args {
        from: dirop(from.0, from.1),
        to: dirop(to.0, to.1),
    };
    ok(c.rename(&args).await.unwrap()).unwrap();
}

async fn lookup(c: &mut Conn, dir: &nfs_fh3, n: &str) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    let what = dirop(dir, n);
    let res = ok(c.lookup(&LOOKUP3args { what }).await.unwrap())?;
    Ok((res.object, res.obj_attributes.unwrap()))
}

async fn write(
    c: &mut Conn,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<WRITE3resok, nfsstat3> {
    let args = WRITE3args {
        file: fh.clone(),
        offset,
        count: data.len() as u32,
        stable,
        data: Opaque::borrowed(data),
    };
    ok(c.write(&args).await.unwrap())
}

/// A FILE_SYNC write that must succeed and take all of `data`.
async fn write_synced(c: &mut Conn, fh: &nfs_fh3, offset: u64, data: &[u8]) {
    let ok = write(c, fh, offset, data, stable_how::FILE_SYNC)
        .await
        .expect("WRITE");
    assert_eq!(ok.count as usize, data.len(), "a short write");
}

async fn read(
    c: &mut Conn,
    fh: &nfs_fh3,
    offset: u64,
    count: u32,
) -> Result<READ3resok<'static>, nfsstat3> {
    let args = READ3args {
        file: fh.clone(),
        offset,
        count,
    };
    ok(c.read(&args).await.unwrap())
}

async fn read_all(c: &mut Conn, fh: &nfs_fh3) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let res = read(c, fh, out.len() as u64, 1024 * 1024).await.unwrap();
        out.extend_from_slice(&res.data);
        if res.eof {
            return out;
        }
        assert!(res.count > 0, "a read short of the end returned nothing");
    }
}

async fn getattr(c: &mut Conn, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    let object = fh.clone();
    ok(c.getattr(&GETATTR3args { object }).await.unwrap()).map(|res| res.obj_attributes)
}

async fn setattr(c: &mut Conn, fh: &nfs_fh3, new_attributes: sattr3) {
    let args = SETATTR3args {
        object: fh.clone(),
        new_attributes,
        guard: Nfs3Option::None,
    };
    ok(c.setattr(&args).await.unwrap()).unwrap();
}

/// What ACCESS grants of all six bits.
async fn access(c: &mut Conn, fh: &nfs_fh3) -> u32 {
    let args = ACCESS3args {
        object: fh.clone(),
        access: 0x3f,
    };
    ok(c.access(&args).await.unwrap()).unwrap().access
}

/// One READDIR page from `cookie`: its names and cookies, and whether it is the last.
async fn readdir(
    c: &mut Conn,
    dir: &nfs_fh3,
    cookie: u64,
    count: u32,
) -> Result<(Vec<(String, u64)>, bool), nfsstat3> {
    let args = READDIR3args {
        dir: dir.clone(),
        cookie,
        cookieverf: cookieverf3::default(),
        count,
    };
    let res = ok(c.readdir(&args).await.unwrap())?;
    let entries = res.reply.entries.0.iter();
    let named = entries.map(|e| named(&e.name, e.cookie)).collect();
    Ok((named, res.reply.eof))
}

fn named(name: &filename3, cookie: u64) -> (String, u64) {
    (String::from_utf8_lossy(name.as_ref()).into_owned(), cookie)
}

/// Every name READDIRPLUS (or READDIR) lists, a page of `count` bytes at a time.
async fn list(c: &mut Conn, dir: &nfs_fh3, count: u32, plus: bool) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut cookie = 0;
    let mut pages = 0;
    loop {
        pages += 1;
        let (entries, eof) = if plus {
            let r = c
                .readdirplus(&READDIRPLUS3args {
                    dir: dir.clone(),
                    cookie,
                    cookieverf: cookieverf3::default(),
                    dircount: count,
                    maxcount: count,
                })
                .await
                .unwrap()
                .unwrap();
            for e in &r.reply.entries.0 {
                assert!(
                    e.name_handle.is_some() && e.name_attributes.is_some(),
                    "READDIRPLUS gives a handle and attributes"
                );
            }
            let entries = r.reply.entries.0.iter();
            let named = entries.map(|e| named(&e.name, e.cookie)).collect();
            (named, r.reply.eof)
        } else {
            readdir(c, dir, cookie, count).await.unwrap()
        };
        for (n, ck) in entries {
            cookie = ck;
            if n != "." && n != ".." {
                names.push(n);
            }
        }
        if eof {
            return (names, pages);
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A temporary root that users other than root may write in.
fn world_writable_tempdir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_20_mb_file_reads_back_with_the_same_checksum() {
    let dir = tempdir();
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    let fh = create(&mut c, &root, "big.bin").await;
    let data = pattern(20 * 1024 * 1024 + 123, 1);
    let mut verf = None;
    for (i, chunk) in data.chunks(1024 * 1024).enumerate() {
        let stable = if i % 2 == 0 {
            stable_how::UNSTABLE
        } else {
            stable_how::FILE_SYNC
        };
        let ok = write(&mut c, &fh, (i * 1024 * 1024) as u64, chunk, stable)
            .await
            .unwrap();
        assert_eq!(ok.count as usize, chunk.len());
        assert_eq!(ok.committed, stable);
        verf.get_or_insert(ok.verf);
    }
    let commit = c
        .commit(&COMMIT3args {
            file: fh.clone(),
            offset: 0,
            count: 0,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(commit.verf),
        verf,
        "the write verifier stays the same while the server runs"
    );
    assert_eq!(getattr(&mut c, &fh).await.unwrap().size, data.len() as u64);
    let back = read_all(&mut c, &fh).await;
    assert_eq!(sha2::Sha256::digest(&back), sha2::Sha256::digest(&data));
    // and on the server's disk
    let local = std::fs::read(dir.path().join("big.bin")).unwrap();
    assert_eq!(sha2::Sha256::digest(&local), sha2::Sha256::digest(&data));
    server.stop().await;
}

#[tokio::test]
async fn rename_moves_a_file_and_its_handle_keeps_working() {
    let dir = tempdir();
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    let sub = mkdir(&mut c, &root, "sub").await;
    let fh = create(&mut c, &root, "a.txt").await;
    write_synced(&mut c, &fh, 0, b"hello").await;
    rename(&mut c, (&root, "a.txt"), (&sub, "b.txt")).await;
    assert_eq!(
        lookup(&mut c, &root, "a.txt").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOENT
    );
    let (moved, _) = lookup(&mut c, &sub, "b.txt").await.unwrap();
    assert_eq!(moved, fh, "a file keeps its handle when renamed");
    assert_eq!(read_all(&mut c, &fh).await, b"hello");
    assert_eq!(
        std::fs::read(dir.path().join("sub/b.txt")).unwrap(),
        b"hello"
    );
    // renaming a directory keeps what is under it reachable by the old handles
    rename(&mut c, (&root, "sub"), (&root, "sub2")).await;
    assert_eq!(read_all(&mut c, &fh).await, b"hello");
    server.stop().await;
}

#[tokio::test]
async fn readdir_pages_2000_entries_with_cookies_that_stay_valid() {
    let dir = tempdir();
    for i in 0..2000 {
        std::fs::write(dir.path().join(format!("file-{i:04}")), b"x").unwrap();
    }
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    for plus in [false, true] {
        let (mut names, pages) = list(&mut c, &root, 8192, plus).await;
        assert!(
            pages > 5,
            "2000 entries in 8 KiB pages take many pages, not {pages}"
        );
        names.sort();
        let want: Vec<String> = (0..2000).map(|i| format!("file-{i:04}")).collect();
        assert_eq!(names, want, "plus={plus}");
    }
    // removing entries between pages does not lose or repeat the others
    let (seen, _) = readdir(&mut c, &root, 0, 4096).await.unwrap();
    let last_cookie = seen.last().unwrap().1;
    for (n, _) in &seen {
        if n != "." && n != ".." {
            remove(&mut c, &root, n).await.unwrap();
        }
    }
    for i in (0..2000).step_by(7) {
        let n = format!("file-{i:04}");
        if !seen.iter().any(|(s, _)| *s == n) {
            remove(&mut c, &root, &n).await.unwrap();
        }
    }
    let mut rest = Vec::new();
    let mut cookie = last_cookie;
    loop {
        let (entries, eof) = readdir(&mut c, &root, cookie, 4096).await.unwrap();
        for (n, ck) in entries {
            rest.push(n);
            cookie = ck;
        }
        if eof {
            break;
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    rest.sort();
    assert_eq!(
        rest, on_disk,
        "what is left is listed once each after the old cookie"
    );
    server.stop().await;
}

#[tokio::test]
async fn remove_and_rmdir_of_a_directory_that_is_not_empty() {
    let dir = tempdir();
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    let d = mkdir(&mut c, &root, "d").await;
    create(&mut c, &d, "f").await;
    assert_eq!(
        rmdir(&mut c, &root, "d").await,
        Err(nfsstat3::NFS3ERR_NOTEMPTY)
    );
    assert_eq!(
        remove(&mut c, &root, "d").await,
        Err(nfsstat3::NFS3ERR_ISDIR)
    );
    assert_eq!(
        try_mkdir(&mut c, &root, "d").await.unwrap_err(),
        nfsstat3::NFS3ERR_EXIST
    );
    remove(&mut c, &d, "f").await.unwrap();
    rmdir(&mut c, &root, "d").await.unwrap();
    assert!(!dir.path().join("d").exists());
    assert_eq!(
        getattr(&mut c, &d).await.unwrap_err(),
        nfsstat3::NFS3ERR_STALE,
        "a removed directory's handle is stale"
    );
    assert_eq!(
        remove(&mut c, &root, "nothing").await,
        Err(nfsstat3::NFS3ERR_NOENT)
    );
    server.stop().await;
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_never_followed() {
    let outside = tempdir();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    let dir = tempdir();
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    for (n, target) in [
        ("abs", outside.path().to_str().unwrap().to_string()),
        ("rel", "../../../..".to_string()),
    ] {
        let res = c
            .symlink(&SYMLINK3args {
                where_: dirop(&root, n),
                symlink: symlinkdata3 {
                    symlink_attributes: sattr3::default(),
                    symlink_data: nfspath3(Opaque::owned(target.clone().into_bytes())),
                },
            })
            .await
            .unwrap()
            .unwrap();
        let link = res.obj.unwrap();
        let (looked, attr) = lookup(&mut c, &root, n).await.unwrap();
        assert_eq!(looked, link);
        assert_eq!(attr.type_, ftype3::NF3LNK);
        let rl = c
            .readlink(&READLINK3args {
                symlink: link.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            rl.data.0.as_ref(),
            target.as_bytes(),
            "the link reads back as written"
        );
        // looking a name up through the link, reading it, listing it: none goes out
        let r = lookup(&mut c, &link, "secret").await.unwrap_err();
        assert_eq!(r, nfsstat3::NFS3ERR_NOTDIR);
        let r = read(&mut c, &link, 0, 100).await;
        assert!(
            r.is_err(),
            "reading a symlink gives an error, not its target: {r:?}"
        );
        let r = readdir(&mut c, &link, 0, 4096).await;
        assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_NOTDIR);
        let how = createhow3::UNCHECKED(sattr3::default());
        let r = try_create(&mut c, &link, "planted", how).await;
        assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_NOTDIR);
    }
    // `..` of the root is the root
    let (up, _) = lookup(&mut c, &root, "..").await.unwrap();
    assert_eq!(up, root);
    assert_eq!(
        lookup(&mut c, &root, "a/b").await.unwrap_err(),
        nfsstat3::NFS3ERR_INVAL
    );
    assert!(!outside.path().join("planted").exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn forged_handles_are_badhandle_or_stale() {
    let dir = tempdir();
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    let f = create(&mut c, &root, "f").await;
    let junk = nfs_fh3 {
        data: Opaque::owned(vec![7u8; 33]),
    };
    assert_eq!(
        getattr(&mut c, &junk).await.unwrap_err(),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    let empty = nfs_fh3 {
        data: Opaque::owned(vec![]),
    };
    assert_eq!(
        getattr(&mut c, &empty).await.unwrap_err(),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    // our layout, an inode that is not there
    let mut forged = f.data.to_vec();
    forged[4..12].copy_from_slice(&u64::MAX.to_be_bytes());
    let forged = nfs_fh3 {
        data: Opaque::owned(forged),
    };
    assert_eq!(
        getattr(&mut c, &forged).await.unwrap_err(),
        nfsstat3::NFS3ERR_STALE
    );
    // the right inode with another birth time (a reused inode number)
    let mut reborn = f.data.to_vec();
    reborn[19] ^= 1;
    let reborn = nfs_fh3 {
        data: Opaque::owned(reborn),
    };
    let attr = getattr(&mut c, &f).await.unwrap();
    let r = getattr(&mut c, &reborn).await;
    if attr.fileid != 0 && f.data[12..20] != [0; 8] {
        assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    }
    let r = write(&mut c, &forged, 0, b"x", stable_how::FILE_SYNC).await;
    assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    let how = createhow3::UNCHECKED(sattr3::default());
    let r = try_create(&mut c, &junk, "x", how).await;
    assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_BADHANDLE);
    // the server still answers
    assert!(getattr(&mut c, &root).await.is_ok());
    server.stop().await;
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> (tempfile::TempDir, Self) {
        let dir = tempdir();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs (the tests run as root)");
        let path = dir.path().to_path_buf();
        (dir, Self(path))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_is_nospc_and_leaves_no_partial_data() {
    let (_dir, fs) = Tmpfs::mount("4m");
    let (server, mut c, root) = Server::start_as_root(&fs.0).await;
    let fsstat = c
        .fsstat(&FSSTAT3args {
            fsroot: root.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fsstat.tbytes,
        4 * 1024 * 1024,
        "the volume's size is its file system's"
    );
    let fh = create(&mut c, &root, "fill").await;
    let chunk = pattern(512 * 1024, 2);
    let mut written = 0u64;
    let err = loop {
        match write(&mut c, &fh, written, &chunk, stable_how::FILE_SYNC).await {
            Ok(ok) => {
                assert_eq!(ok.count as usize, chunk.len());
                written += chunk.len() as u64;
                assert!(written <= 8 * 1024 * 1024, "4 MiB took more than 8 MiB");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, nfsstat3::NFS3ERR_NOSPC);
    assert!(
        written >= 2 * 1024 * 1024,
        "the disk held only {written} bytes"
    );
    let attr = getattr(&mut c, &fh).await.unwrap();
    assert_eq!(
        attr.size, written,
        "the failed write left nothing past what was acknowledged"
    );
    assert_eq!(std::fs::metadata(fs.0.join("fill")).unwrap().len(), written);
    let back = read_all(&mut c, &fh).await;
    assert!(back.chunks(chunk.len()).all(|c| c == &chunk[..]));
    // removing the file frees the space again
    remove(&mut c, &root, "fill").await.unwrap();
    let fh = create(&mut c, &root, "again").await;
    write_synced(&mut c, &fh, 0, &chunk).await;
    server.stop().await;
}

#[tokio::test]
async fn handles_stay_valid_after_the_server_restarts() {
    let dir = tempdir();
    let (server, mut c, root) = Server::start_as_root(dir.path()).await;
    let a = mkdir(&mut c, &root, "a").await;
    let b = mkdir(&mut c, &a, "b").await;
    let f = create(&mut c, &b, "f").await;
    write_synced(&mut c, &f, 0, b"kept").await;
    server.stop().await;

    let server = Server::start(dir.path()).await;
    let mut c = server.connect(0, 0).await;
    assert_eq!(c.root_nfs_fh3(), root, "the root's handle is the same");
    // no LOOKUP first: the handles from before the restart
    assert_eq!(read_all(&mut c, &f).await, b"kept");
    write_synced(&mut c, &f, 4, b"+more").await;
    create(&mut c, &b, "g").await;
    let (names, _) = list(&mut c, &a, 4096, true).await;
    assert_eq!(names, vec!["b".to_string()]);
    assert_eq!(
        std::fs::read(dir.path().join("a/b/f")).unwrap(),
        b"kept+more"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_4_gib_record_closes_the_connection() {
    let dir = tempdir();
    let server = Server::start(dir.path()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the server closed the connection without a reply");
    // fragments adding up to over the limit too
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let frag = vec![0u8; 600 * 1024];
    let mut closed = false;
    for _ in 0..4 {
        let mut rec = (frag.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(&frag);
        if s.write_all(&rec).await.is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
    }
    // others are still served
    let mut c = server.connect(0, 0).await;
    let root = c.root_nfs_fh3();
    assert!(getattr(&mut c, &root).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn files_belong_to_the_caller_and_permissions_hold() {
    let dir = world_writable_tempdir();
    let server = Server::start(dir.path()).await;
    let mut c = server.connect(1234, 4321).await;
    let root = c.root_nfs_fh3();
    let f = create(&mut c, &root, "mine").await;
    let d = mkdir(&mut c, &root, "mydir").await;
    let meta = std::fs::metadata(dir.path().join("mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    let attr = getattr(&mut c, &d).await.unwrap();
    assert_eq!((attr.uid, attr.gid), (1234, 4321));
    // setattr: mode, size, times
    let mtime = nfstime3 {
        seconds: 1_600_000_000,
        nseconds: 5,
    };
    let changes = sattr3 {
        mode: Nfs3Option::Some(0o600),
        size: Nfs3Option::Some(10),
        mtime: set_mtime::SET_TO_CLIENT_TIME(mtime),
        ..Default::default()
    };
    setattr(&mut c, &f, changes).await;
    let attr = getattr(&mut c, &f).await.unwrap();
    assert_eq!((attr.mode, attr.size, attr.mtime), (0o600, 10, mtime));
    let meta = std::fs::metadata(dir.path().join("mine")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.len()), (0o600, 10));
    // another user cannot write the file (0600) nor read it
    let mut other = server.connect(5678, 5678).await;
    let r = write(&mut other, &f, 0, b"x", stable_how::FILE_SYNC).await;
    assert_eq!(r.unwrap_err(), nfsstat3::NFS3ERR_ACCES);
    assert_eq!(access(&mut other, &f).await, 0);
    assert_eq!(
        access(&mut c, &f).await & 0x05,
        0x05,
        "the owner may read and modify"
    );
    // root is not squashed
    let mut root_c = server.connect(0, 0).await;
    write_synced(&mut root_c, &f, 0, b"root").await;
    server.stop().await;
}

#[tokio::test]
async fn mount_refuses_other_paths_and_exports_lists_the_one() {
    let dir = tempdir();
    let server = Server::start(dir.path()).await;
    let r = Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/etc")
        .mount_port(server.addr.port())
        .nfs3_port(server.addr.port())
        .connect_from_privileged_port(false)
        .mount()
        .await;
    assert!(r.is_err(), "mounting /etc is refused");
    let mut c = server.connect(0, 0).await;
    let exports = c.mount_client.export().await.unwrap();
    let paths: Vec<Vec<u8>> = exports.0.iter().map(|e| e.ex_dir.0.to_vec()).collect();
    assert_eq!(paths, vec![b"/exports/data".to_vec()]);
    let fsroot = c.root_nfs_fh3();
    let info = c.fsinfo(&FSINFO3args { fsroot }).await.unwrap().unwrap();
    assert_eq!(info.wtmax, nfsserver::MAX_IO);
    server.stop().await;
}

#[tokio::test]
async fn the_owner_writes_a_file_it_made_read_only() {
    // git's objects, tar and cp -p: create with mode 0444, then write
    let dir = world_writable_tempdir();
    let server = Server::start(dir.path()).await;
    let mut c = server.connect(1000, 1000).await;
    let root = c.root_nfs_fh3();
    let how = createhow3::GUARDED(sattr3 {
        mode: Nfs3Option::Some(0o444),
        ..Default::default()
    });
    let res = try_create(&mut c, &root, "obj", how).await.unwrap();
    let fh = res.obj.unwrap();
    assert_eq!(res.obj_attributes.unwrap().mode, 0o444);
    write_synced(&mut c, &fh, 0, b"blob").await;
    assert_eq!(read_all(&mut c, &fh).await, b"blob");
    let changes = sattr3 {
        size: Nfs3Option::Some(2),
        ..Default::default()
    };
    setattr(&mut c, &fh, changes).await;
    assert_eq!(read_all(&mut c, &fh).await, b"bl");
    // someone else may not
    let mut other = server.connect(1001, 1001).await;
    assert_eq!(
        write(&mut other, &fh, 0, b"x", stable_how::FILE_SYNC)
            .await
            .unwrap_err(),
        nfsstat3::NFS3ERR_ACCES
    );
    server.stop().await;
}

/// One NFSv3 GETATTR call of the root, as bytes on the wire.
fn raw_getattr(xid: u32, fh: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [xid, 0, 2, 100_003, 3, 1, 0, 0, 0, 0] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&(fh.len() as u32).to_be_bytes());
    body.extend_from_slice(fh);
    let mut rec = (0x8000_0000u32 | body.len() as u32).to_be_bytes().to_vec();
    rec.extend_from_slice(&body);
    rec
}

#[tokio::test]
async fn calls_sent_back_to_back_are_all_answered_by_xid() {
    let dir = tempdir();
    let server = Server::start(dir.path()).await;
    let c = server.connect(0, 0).await;
    let root = c.root_nfs_fh3().data.to_vec();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut calls = Vec::new();
    for xid in 100..150u32 {
        calls.extend_from_slice(&raw_getattr(xid, &root));
    }
    s.write_all(&calls).await.unwrap();
    let mut xids = Vec::new();
    for _ in 0..50 {
        let mut mark = [0u8; 4];
        s.read_exact(&mut mark).await.unwrap();
        let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
        let mut reply = vec![0u8; len];
        s.read_exact(&mut reply).await.unwrap();
        xids.push(u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]));
        // accepted, SUCCESS, NFS3_OK
        assert_eq!(&reply[8..28], &[0u8; 20]);
    }
    xids.sort();
    assert_eq!(xids, (100..150).collect::<Vec<_>>());
    server.stop().await;
}

/// An overlayfs as an instance's root is: the image's files below (here a tmpfs), the
/// instance's own above (here the temporary directory's file system), so the layers are
/// on different file systems.
struct Overlay {
    merged: PathBuf,
    // dropped in this order: unmounted, then removed
    _lower: Tmpfs,
    _lower_dir: tempfile::TempDir,
    _dirs: tempfile::TempDir,
}

impl Overlay {
    fn mount() -> Self {
        let dirs = tempdir();
        let (lower_dir, lower) = Tmpfs::mount("8m");
        std::fs::create_dir_all(lower.0.join("exports")).unwrap();
        std::fs::write(lower.0.join("image-file"), b"from the image").unwrap();
        let (upper, work, merged) = (
            dirs.path().join("upper"),
            dirs.path().join("work"),
            dirs.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.0.display(),
                upper.display(),
                work.display()
            ))
            .arg(&merged)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t overlay");
        Self {
            merged,
            _lower: lower,
            _lower_dir: lower_dir,
            _dirs: dirs,
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.merged)
            .status();
    }
}

#[tokio::test]
async fn an_export_on_overlayfs_keeps_its_handles_across_restarts() {
    let ov = Overlay::mount();
    // as the image's init does at first boot
    let root = ov.merged.join("exports/data");
    std::fs::create_dir_all(&root).unwrap();
    let (server, mut c, top) = Server::start_as_root(&root).await;
    let d = mkdir(&mut c, &top, "d").await;
    let f = create(&mut c, &d, "f").await;
    write_synced(&mut c, &f, 0, b"on overlay").await;
    let (names, _) = list(&mut c, &d, 4096, true).await;
    assert_eq!(names, vec!["f".to_string()]);
    let (looked, attr) = lookup(&mut c, &d, "f").await.unwrap();
    assert_eq!(looked, f);
    assert_eq!(attr.size, 10);
    server.stop().await;

    let server = Server::start(&root).await;
    let mut c = server.connect(0, 0).await;
    assert_eq!(read_all(&mut c, &f).await, b"on overlay");
    assert_eq!(getattr(&mut c, &d).await.unwrap().type_, ftype3::NF3DIR);
    // nothing of the image's own files is reachable from the export
    assert_eq!(lookup(&mut c, &top, "..").await.unwrap().0, top);
    assert_eq!(
        lookup(&mut c, &top, "image-file").await.unwrap_err(),
        nfsstat3::NFS3ERR_NOENT
    );
    server.stop().await;
}
