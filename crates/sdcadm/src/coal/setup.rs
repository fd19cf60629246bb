//! What CoaL prepares on the host: PostgreSQL's data directory and Moray's database, the
//! bridges of the nic tags, CloudAPI's self-signed certificate, and the admin's SSH key
//! with an ssh-agent holding it (how the `triton` CLI finds a private key).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use md5::{Digest, Md5};

use crate::deploy::Bridge;
use crate::error::Error;

/// Runs a command; its output becomes the error on failure.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// initdb of `<data_dir>/data` (owned by `user`) listening on 127.0.0.1:`port` only, when
/// not done yet. Returns whether it ran.
pub fn postgres_initdb(
    pg_bindir: &Path,
    data_dir: &Path,
    port: u16,
    user: &str,
) -> Result<bool, Error> {
    let data = data_dir.join("data");
    if data.join("PG_VERSION").is_file() {
        return Ok(false);
    }
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io("create", data_dir, e))?;
    let dir = data_dir.display().to_string();
    run("chown", &[&format!("{user}:"), &dir])?;
    let initdb = pg_bindir.join("initdb").display().to_string();
    let data_s = data.display().to_string();
    run(
        "runuser",
        &[
            "-u", user, "--", &initdb, "-D", &data_s, "-U", "postgres", "-A", "trust", "-E", "UTF8",
        ],
    )?;
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).map_err(|e| Error::io("read", &conf, e))?;
    text.push_str(&format!(
        "\n# CoaL\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\nmax_connections = 200\n"
    ));
    std::fs::write(&conf, text).map_err(|e| Error::io("write", &conf, e))?;
    Ok(true)
}

/// Creates database `db` unless it exists. Returns whether it did.
pub fn createdb(pg_bindir: &Path, port: u16, user: &str, db: &str) -> Result<bool, Error> {
    // A PostgreSQL client tool, run as `user` against the CoaL server as `postgres`.
    let client = |tool: &str, args: &[&str]| {
        let tool = pg_bindir.join(tool).display().to_string();
        let port = port.to_string();
        let mut argv = vec!["-u", user, "--", &tool, "-h", "127.0.0.1", "-p", &port];
        argv.extend(["-U", "postgres"]);
        argv.extend(args);
        run("runuser", &argv)
    };
    let q = format!("select 1 from pg_database where datname = '{db}'");
    if client("psql", &["-tAc", &q])?.trim() == "1" {
        return Ok(false);
    }
    client("createdb", &[db])?;
    Ok(true)
}

/// The newest `/usr/lib/postgresql/<v>/bin`, or `$PG_BINDIR`.
pub fn pg_bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Makes each bridge (up, with the host's address) unless it is there. Returns what it made.
pub fn bridges(bridges: &[Bridge]) -> Result<Vec<String>, Error> {
    let mut made = Vec::new();
    for b in bridges {
        if !link_exists(&b.name) {
            run("ip", &["link", "add", "name", &b.name, "type", "bridge"])?;
            made.push(b.name.clone());
        }
        let have = run("ip", &["-o", "addr", "show", "dev", &b.name])?;
        if !have.contains(&format!(" {} ", b.address)) {
            run("ip", &["addr", "add", &b.address, "dev", &b.name])?;
        }
        run("ip", &["link", "set", "dev", &b.name, "up"])?;
    }
    Ok(made)
}

/// The password file of Moray's PostgreSQL role at `path` (32 random bytes as hex, one
/// line, mode 0600), unless there. Moray reads it (`postgres_password_file`) and the
/// sitters set the role's password from it (`moray_password_file`); making it before
/// either starts means neither waits on the other. Returns whether it made one.
pub fn password_file(path: &Path) -> Result<bool, Error> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if path.is_file() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| r.read_exact(&mut bytes))
        .map_err(|e| Error::io("read", Path::new("/dev/urandom"), e))?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all(format!("{password}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", path, e))?;
    Ok(true)
}

/// A self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost in `dir`
/// (cert.pem, key.pem), unless there. Returns whether it made one.
pub fn tls(dir: &Path) -> Result<bool, Error> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "3650",
            "-subj",
            "/CN=cloudapi.coal",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
    )?;
    Ok(true)
}

/// The admin's key pair in `dir` (`id_ecdsa`, `id_ecdsa.pub`), made at first up. ECDSA
/// P-256: UFDS and CloudAPI take RSA, ECDSA and Ed25519; node-triton signs with all, and
/// ECDSA is the one every smartdc-auth/sshpk version handles in the agent too.
pub fn ssh_key(dir: &Path) -> Result<(PathBuf, bool), Error> {
    let key = dir.join("id_ecdsa");
    if key.is_file() && key.with_extension("pub").is_file() {
        return Ok((key, false));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    let k = key.display().to_string();
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ecdsa",
            "-b",
            "256",
            "-N",
            "",
            "-C",
            "admin@coal",
            "-f",
            &k,
        ],
    )?;
    Ok((key, true))
}

/// MD5 fingerprint of an OpenSSH public key line, `aa:bb:...` (Triton's key id).
pub fn md5_fingerprint(public_line: &str) -> Result<String, Error> {
    let b64 = public_line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| Error::Check("not an OpenSSH public key".into()))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::Check(format!("public key is not base64: {e}")))?;
    let d = Md5::digest(&blob);
    Ok(d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}
