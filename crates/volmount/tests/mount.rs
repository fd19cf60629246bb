//! volmount, the real binary, mounting the real NFS server (`nfsserver::serve` on a
//! temporary directory) through FUSE. As root (FUSE mounts).

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use triton_testkit::bytes::pattern;

/// The NFS server on its own runtime thread.
struct Server {
    addr: SocketAddr,
    root: PathBuf,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path, addr: SocketAddr) -> Server {
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (token, dir) = (shutdown.clone(), root.to_path_buf());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // The port a restarted server takes again may linger in TIME_WAIT.
                let listener = loop {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.set_reuseaddr(true).unwrap();
                    if socket.bind(addr).is_ok() {
                        break socket.listen(64).unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                tx.send(listener.local_addr().unwrap()).unwrap();
                nfsserver::serve(listener, dir, token).await.unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Server {
            addr,
            root: root.to_path_buf(),
            shutdown,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running volmount; unmounted and stopped on drop.
struct Mount {
    dir: tempfile::TempDir,
    child: Child,
}

impl Mount {
    fn start(server: SocketAddr, extra: &[&str]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_volmount"))
            .arg("--source")
            .arg(format!("{}:{}", server.ip(), nfsserver::EXPORT_PATH))
            .arg("--port")
            .arg(server.port().to_string())
            .arg("--mountpoint")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut mount = Mount { dir, child };
        mount.wait_mounted();
        mount
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let me = self.dir.path().to_str().unwrap();
            if mounts
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(me) && l.contains(" - fuse "))
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("volmount exited before mounting: {status}");
            }
            assert!(Instant::now() < deadline, "volmount did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn a_50_mb_file_written_through_the_mount_is_the_same_on_the_server_and_read_back() {
    let export = tempfile::tempdir().unwrap();
    let server = Server::start(export.path(), local());
    let mount = Mount::start(server.addr, &[]);
    let data = pattern(50 << 20, 7);
    let path = mount.path().join("big.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let on_server = std::fs::read(server.root.join("big.bin")).unwrap();
    assert_eq!(on_server.len(), data.len());
    assert!(on_server == data, "the server's copy differs");
    // Read back through the mount (past the page cache: a fresh open after a drop).
    let mut back = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "the copy read through the mount differs");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 50 << 20);
}

#[test]
fn directories_list_rename_and_remove_as_on_a_local_disk() {
    let export = tempfile::tempdir().unwrap();
    let server = Server::start(export.path(), local());
    let mount = Mount::start(server.addr, &[]);
    let root = mount.path();
    std::fs::create_dir(root.join("d")).unwrap();
    for i in 0..300 {
        std::fs::write(root.join("d").join(format!("f{i:03}")), format!("{i}")).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    assert_eq!(names, expected);

    std::fs::rename(root.join("d/f007"), root.join("moved")).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("moved")).unwrap(), "7");
    assert!(!server.root.join("d/f007").exists());
    assert_eq!(
        std::fs::read_to_string(server.root.join("moved")).unwrap(),
        "7"
    );

    std::os::unix::fs::symlink("moved", root.join("link")).unwrap();
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("moved")
    );
    assert_eq!(std::fs::read_to_string(root.join("link")).unwrap(), "7");

    let err = std::fs::remove_dir(root.join("d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_dir_all(root.join("d")).unwrap();
    assert!(!server.root.join("d").exists());

    // Truncate and write in the middle.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("moved"))
        .unwrap();
    f.set_len(4).unwrap();
    f.seek(SeekFrom::Start(1)).unwrap();
    f.write_all(b"ab").unwrap();
    drop(f);
    assert_eq!(std::fs::read(server.root.join("moved")).unwrap(), b"7ab\0");
    let stat = nix_statvfs(root);
    assert!(stat > 0, "statfs gives the server's size");
}

fn nix_statvfs(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs(2) into a zeroed struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_blocks
    }
}

#[test]
fn a_read_only_mount_refuses_writes_with_erofs() {
    let export = tempfile::tempdir().unwrap();
    std::fs::write(export.path().join("kept"), "data").unwrap();
    let server = Server::start(export.path(), local());
    let mount = Mount::start(server.addr, &["--read-only"]);
    let root = mount.path();
    assert_eq!(std::fs::read_to_string(root.join("kept")).unwrap(), "data");
    for result in [
        std::fs::write(root.join("new"), "x"),
        std::fs::write(root.join("kept"), "x"),
        std::fs::create_dir(root.join("dir")),
        std::fs::remove_file(root.join("kept")),
    ] {
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EROFS));
    }
    assert_eq!(
        std::fs::read_to_string(export.path().join("kept")).unwrap(),
        "data"
    );
    assert!(!export.path().join("new").exists());
}

#[test]
fn the_server_restarted_mid_use_answers_the_next_read_on_the_same_handle() {
    let export = tempfile::tempdir().unwrap();
    let mut server = Server::start(export.path(), local());
    let addr = server.addr;
    let mount = Mount::start(addr, &[]);
    let data = pattern(3 << 20, 11);
    std::fs::write(mount.path().join("f"), &data).unwrap();
    // An open file and a directory entry the kernel holds across the restart.
    let mut open = std::fs::File::open(mount.path().join("f")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    open.read_exact(&mut first).unwrap();
    assert_eq!(first, data[..1 << 20]);

    server.stop();
    // The next request finds no server; it waits for one instead of failing.
    let root = export.path().to_path_buf();
    let restarted = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        Server::start(&root, addr)
    });
    let mut rest = Vec::new();
    // O_DIRECT-like: past the page cache, the data comes from the server again.
    open.seek(SeekFrom::Start(1 << 20)).unwrap();
    open.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, data[1 << 20..]);
    let _server = restarted.join().unwrap();
    // New files work too.
    std::fs::write(mount.path().join("after"), "restart").unwrap();
    assert_eq!(
        std::fs::read_to_string(mount.path().join("after")).unwrap(),
        "restart"
    );
}

#[test]
fn server_ids_show_in_the_instance_range_and_callers_map_back() {
    let export = tempfile::tempdir().unwrap();
    std::fs::write(export.path().join("roots"), "x").unwrap();
    std::os::unix::fs::chown(export.path().join("roots"), Some(0), Some(0)).unwrap();
    std::fs::write(export.path().join("users"), "x").unwrap();
    std::os::unix::fs::chown(export.path().join("users"), Some(1000), Some(1000)).unwrap();
    let server = Server::start(export.path(), local());
    let mount = Mount::start(
        server.addr,
        &["--uid-base", "300000", "--id-count", "65536"],
    );
    let meta = std::fs::metadata(mount.path().join("roots")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (300_000, 300_000));
    let meta = std::fs::metadata(mount.path().join("users")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (301_000, 301_000));
    // The instance's root (host uid 300000) creates a file: the server's root owns it.
    use std::os::unix::process::CommandExt;
    let status = Command::new("sh")
        .arg("-c")
        .arg("echo hi > \"$1\"/made")
        .arg("sh")
        .arg(mount.path())
        .uid(300_000)
        .gid(300_000)
        .status()
        .unwrap();
    assert!(status.success());
    let on_server = std::fs::metadata(export.path().join("made")).unwrap();
    assert_eq!((on_server.uid(), on_server.gid()), (0, 0));
    let meta = std::fs::metadata(mount.path().join("made")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (300_000, 300_000));
}
