//! Zone images: per service a gzipped tarball of the zone's files and an IMGAPI manifest;
//! and CoaL's `base-64` instance image built from busybox-static.
//!
//! A service image's tarball is the root file system of the service's zone (what the
//! `linux` cn-agent mounts as the lower layer of the instance's overlay):
//!
//! ```text
//! opt/triton/<svc>/bin/<binary>            the release binary
//! opt/triton/<svc>/etc/<svc>.toml          its config for a zone (from deploy/services.toml)
//! opt/triton/<svc>/etc/<svc>.toml.in       the same with the placeholders unfilled
//! opt/triton/<svc>/start                   what starts it (a zone's init, systemd, docker)
//! etc/systemd/system/triton-<svc>.service  the systemd unit, which runs `start`
//! sbin/init -> /opt/triton/<svc>/start     pid 1 of the zone
//! bin/busybox, bin/sh, ...                 a shell and its applets, for `start`
//! lib/..., lib64/ld-linux-*.so.*           the shared libraries the binary needs (ldd)
//! etc/passwd, etc/group, etc/nsswitch.conf
//! ```
//!
//! The binary is linked against the build machine's glibc; the image carries exactly the
//! libraries `ldd` resolves for it, so the zone needs nothing from the host. To run a
//! service outside a zone (a container, a host), take only `opt/triton` and
//! `etc/systemd` from the tarball: the rest would replace the host's own userland.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value as Json, json};
use sha1::{Digest, Sha1};

use crate::deploy::{Context, ContextKind, Deployment, Service};
use crate::error::Error;
use crate::tar::{self, Entry};

/// IMGAPI's type for our images: a Linux userland run as a container on a Linux host is
/// what Triton's `lx-dataset` means (`zone-dataset` is a SmartOS userland).
pub const IMAGE_TYPE: &str = "lx-dataset";
pub const IMAGE_OS: &str = "linux";
/// The namespace of image uuids: uuid v5 of `<name>@<version>` in it, so a rebuild of one
/// version keeps its uuid.
const UUID_NAMESPACE: uuid::Uuid = uuid::uuid!("5b2f4d4e-7a61-4c0e-9d1e-2f1b7c3e9a10");

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub name: String,
    pub tarball: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Json,
}

/// The stable uuid of an image name and version.
pub fn image_uuid(name: &str, version: &str) -> uuid::Uuid {
    let mut h = Sha1::new();
    h.update(UUID_NAMESPACE.as_bytes());
    h.update(format!("{name}@{version}").as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// Gzips `data` with `gzip -n` (no name or time in the header, so reproducible).
pub fn gzip(data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut child = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            command: "gzip".into(),
            detail: e.to_string(),
        })?;
    let mut stdin = child.stdin.take().ok_or_else(|| Error::Command {
        command: "gzip".into(),
        detail: "no stdin".into(),
    })?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| Error::Command {
        command: "gzip".into(),
        detail: e.to_string(),
    })?;
    let wrote = writer.join().map_err(|_| Error::Command {
        command: "gzip".into(),
        detail: "writer thread panicked".into(),
    })?;
    if !out.status.success() || wrote.is_err() {
        return Err(Error::Command {
            command: "gzip".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

fn sha1_hex(data: &[u8]) -> String {
    let digest = Sha1::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest of an image file, in IMGAPI's JSON (v2).
#[allow(clippy::too_many_arguments)]
pub fn manifest(
    name: &str,
    version: &str,
    description: &str,
    owner: &str,
    file: &[u8],
    service_image: bool,
) -> Json {
    let mut m = json!({
        "v": 2,
        "uuid": image_uuid(name, version).to_string(),
        "owner": owner,
        "name": name,
        "version": version,
        "description": description,
        "state": "active",
        "disabled": false,
        "public": !service_image,
        "type": IMAGE_TYPE,
        "os": IMAGE_OS,
        "files": [{
            "sha1": sha1_hex(file),
            "size": file.len(),
            "compression": "gzip",
        }],
    });
    if service_image {
        m["tags"] = json!({ "smartdc_service": true });
    }
    m
}

/// The key of `internal_metadata` holding a zone's config: `sdcadm create` renders the
/// service's config for the datacenter and puts it there; cn-agent writes it into the
/// zone as `/etc/triton/metadata/internal/<key>`, where `start` reads it.
pub const CONFIG_METADATA_KEY: &str = "triton:config";

/// Where cn-agent's `linux` backend puts an instance's `internal_metadata` inside it.
pub const ZONE_INTERNAL_METADATA: &str = "/etc/triton/metadata/internal";

/// What a service image carries beside the service itself.
#[derive(Debug, Clone)]
pub struct Userland {
    /// busybox-static: `/bin/sh` and the applets `start` uses.
    pub busybox: PathBuf,
}

impl Userland {
    /// busybox from PATH (or /bin, /usr/bin).
    pub fn find() -> Result<Userland, Error> {
        let busybox = crate::coal::process::which("busybox")
            .or_else(|| {
                ["/bin/busybox", "/usr/bin/busybox"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| Error::Command {
                command: "busybox".into(),
                detail: "not installed (busybox-static): a service zone's shell comes from it"
                    .into(),
            })?;
        Ok(Userland { busybox })
    }
}

/// The shared libraries `binary` loads, as `ldd` resolves them on this machine: (path in
/// the zone, file on this machine). None for a static binary or a script.
pub fn shared_libraries(binary: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| Error::Command {
            command: format!("ldd {}", binary.display()),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Error::Command {
            command: format!("ldd {}", binary.display()),
            detail: format!("{}{}", err.trim(), text.trim()),
        });
    }
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in text.lines().map(str::trim) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the loader itself,
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let target = rest.split_whitespace().next().unwrap_or("");
                if target == "not" || target.is_empty() {
                    missing.push(name.trim().to_string());
                    continue;
                }
                target
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push((
                path.trim_start_matches('/').to_string(),
                PathBuf::from(path),
            ));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Command {
            command: format!("ldd {}", binary.display()),
            detail: format!("libraries not found: {}", missing.join(", ")),
        });
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// Directory entries for every parent of `path` not in `seen` yet, outermost first.
fn parents(path: &str, seen: &mut std::collections::BTreeSet<String>, out: &mut Vec<Entry>) {
    let mut at = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        if seen.insert(at.clone()) {
            out.push(Entry::dir(at.clone()));
        }
    }
}

/// busybox at `bin/busybox` with a symlink per applet (but `sbin/init`, which is the
/// image's own), the usual top-level directories, and a passwd and group for root.
fn busybox_entries(busybox: &Path) -> Result<Vec<Entry>, Error> {
    let bin = std::fs::read(busybox).map_err(|e| Error::io("read busybox", busybox, e))?;
    let list = crate::error::output(
        Command::new(busybox).arg("--list-full"),
        &format!("{} --list-full", busybox.display()),
    )?;
    let mut entries = Vec::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
        "var", "var/www",
    ] {
        let mode = if d == "tmp" { 0o1777 } else { 0o755 };
        entries.push(Entry::Dir {
            path: d.into(),
            mode,
        });
    }
    entries.push(Entry::file("bin/busybox", 0o755, bin));
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| {
            !l.is_empty() && l != "bin/busybox" && l != "sbin/init" && l.matches('/').count() <= 2
        })
        .collect();
    applets.sort();
    applets.dedup();
    for a in applets {
        entries.push(Entry::Symlink {
            path: a,
            target: "/bin/busybox".into(),
        });
    }
    entries.push(Entry::file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    ));
    entries.push(Entry::file(
        "etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n",
    ));
    Ok(entries)
}

/// The start script of a service: the zone's pid 1 (`/sbin/init` links to it), and what
/// systemd and docker run. It takes the config `sdcadm create` left in the instance's
/// metadata when there is one, else the image's own.
pub fn start_script(service: &Service, data_dir: &Path) -> String {
    let name = &service.name;
    let bin = service.binary.rsplit('/').next().unwrap_or(&service.binary);
    let root = format!("/opt/triton/{name}");
    format!(
        r#"#!/bin/sh
# Starts {name}: pid 1 of its zone (/sbin/init), or run by systemd or docker.
# The config is the one the datacenter gave this instance (`sdcadm create` puts it in the
# instance's internal_metadata; cn-agent writes that into the zone), else the image's own.
set -e
config={root}/etc/{name}.toml
if [ -f "{md}/{key}" ]; then
    config="{md}/{key}"
fi
mkdir -p {data}
exec {root}/bin/{bin} --config "$config" "$@"
"#,
        md = ZONE_INTERNAL_METADATA,
        key = CONFIG_METADATA_KEY,
        data = data_dir.display(),
    )
}

/// The entries of one service's zone image: the service's own files, then its zone's
/// userland (busybox, the binary's shared libraries, `/sbin/init`).
pub fn service_entries(
    deployment: &Deployment,
    service: &Service,
    binary: &Path,
    userland: &Userland,
) -> Result<Vec<Entry>, Error> {
    let bin_data =
        std::fs::read(binary).map_err(|e| Error::io("read the service binary", binary, e))?;
    let ctx = Context::new(ContextKind::Zone, deployment);
    let rendered = deployment.render(service, &ctx)?;
    let name = &service.name;
    let bin = service.binary.rsplit('/').next().unwrap_or(&service.binary);
    let root = format!("opt/triton/{name}");
    let data_dir = ctx.data_dir(name);
    let config = toml::to_string(&rendered.config).map_err(|e| Error::Check(e.to_string()))?;
    let mut template_table = service.config.clone().unwrap_or_default();
    if let Some(extra) = service.context.get("zone").and_then(|o| o.config.as_ref()) {
        for (k, v) in extra {
            template_table.insert(k.clone(), v.clone());
        }
    }
    let template = toml::to_string(&template_table).map_err(|e| Error::Check(e.to_string()))?;
    let header = format!(
        "# {name}: {}\n# Made by `sdcadm images build` from deploy/services.toml (zone context).\n# Every key can also be set as {}<KEY> in the environment.\n",
        service.description,
        crate::deploy::env_prefix(&service.binary)
    );
    let start = start_script(service, &data_dir);
    let kill_mode = if service.binary == "cn-agent" {
        // Instances are cn-agent's children and must outlive a restart of the agent.
        "KillMode=process\n"
    } else {
        ""
    };
    let unit = format!(
        "[Unit]\nDescription=Triton {name}: {desc}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\nExecStart=/{root}/start\nRestart=always\nRestartSec=2\n{kill_mode}\n[Install]\nWantedBy=multi-user.target\n",
        desc = service.description,
    );
    let mut entries = vec![
        Entry::dir("opt"),
        Entry::dir("opt/triton"),
        Entry::dir(root.clone()),
        Entry::dir(format!("{root}/bin")),
        Entry::file(format!("{root}/bin/{bin}"), 0o755, bin_data),
        Entry::dir(format!("{root}/etc")),
        Entry::file(
            format!("{root}/etc/{name}.toml"),
            0o644,
            format!("{header}\n{config}"),
        ),
        Entry::file(
            format!("{root}/etc/{name}.toml.in"),
            0o644,
            format!("{header}# Placeholders as in deploy/services.toml.\n\n{template}"),
        ),
        Entry::file(format!("{root}/start"), 0o755, start),
        Entry::dir("etc"),
        Entry::dir("etc/systemd"),
        Entry::dir("etc/systemd/system"),
        Entry::file(
            format!("etc/systemd/system/triton-{name}.service"),
            0o644,
            unit,
        ),
    ];
    // The zone's userland.
    let mut seen = dirs_of(&entries);
    for e in busybox_entries(&userland.busybox)? {
        match &e {
            Entry::Dir { path, .. } if !seen.insert(path.clone()) => {}
            _ => entries.push(e),
        }
    }
    entries.push(Entry::Symlink {
        path: "sbin/init".into(),
        target: format!("/{root}/start"),
    });
    entries.push(Entry::file(
        "etc/nsswitch.conf",
        0o644,
        b"passwd: files\ngroup: files\nhosts: files dns\n",
    ));
    for d in ["var/lib", "var/lib/triton"] {
        if seen.insert(d.to_string()) {
            entries.push(Entry::dir(d));
        }
    }
    for (path, file) in shared_libraries(binary)? {
        parents(&path, &mut seen, &mut entries);
        let data = std::fs::read(&file).map_err(|e| Error::io("read a library", &file, e))?;
        entries.push(Entry::file(path, 0o755, data));
    }
    Ok(entries)
}

/// The directories among `entries`.
fn dirs_of(entries: &[Entry]) -> std::collections::BTreeSet<String> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Dir { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// File names of a service image in `out`.
pub fn artifact_paths(out: &Path, name: &str, version: &str) -> (PathBuf, PathBuf) {
    (
        out.join(format!("{name}-{version}.tar.gz")),
        out.join(format!("{name}-{version}.imgmanifest")),
    )
}

/// Builds one service's image from `binary` into `out`.
pub fn build_service_image(
    deployment: &Deployment,
    service: &Service,
    binary: &Path,
    out: &Path,
    version: &str,
) -> Result<BuiltImage, Error> {
    let entries = service_entries(deployment, service, binary, &Userland::find()?)?;
    let mut raw = Vec::new();
    tar::write(&mut raw, &entries).map_err(|e| Error::io("write the tarball", out, e))?;
    let file = gzip(&raw)?;
    let owner = deployment.admin_uuid();
    let description = service
        .image
        .description
        .clone()
        .unwrap_or_else(|| service.description.clone());
    let m = manifest(&service.name, version, &description, &owner, &file, true);
    std::fs::create_dir_all(out).map_err(|e| Error::io("create the image folder", out, e))?;
    let (tarball, manifest_path) = artifact_paths(out, &service.name, version);
    write_atomically(&tarball, &file)?;
    let text = serde_json::to_string_pretty(&m).map_err(|e| Error::Check(e.to_string()))? + "\n";
    write_atomically(&manifest_path, text.as_bytes())?;
    Ok(BuiltImage {
        name: service.name.clone(),
        tarball,
        manifest_path,
        manifest: m,
    })
}

pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, data).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
}

/// The init of the base image: busybox httpd on port 80 serving a page naming the
/// instance, then it waits for SIGTERM (pid 1 ignores signals it has no handler for).
pub const BASE_INIT: &str = r#"#!/bin/sh
# base-64 init (pid 1): serve HTTP on port 80, then wait for SIGTERM.
/bin/busybox mount -t tmpfs tmpfs /tmp 2>/dev/null || true
/bin/busybox mkdir -p /var/www
echo "hello from $(/bin/busybox hostname)" > /var/www/index.html
/bin/busybox httpd -p 80 -h /var/www
trap 'exit 0' TERM INT
while :; do
    /bin/busybox sleep 3600 &
    wait $!
done
"#;

/// CoaL's instance image: busybox-static, a symlink per applet, and [`BASE_INIT`] as
/// `/sbin/init`. Returns the gzipped tarball.
pub fn base_image(busybox: &Path) -> Result<Vec<u8>, Error> {
    let mut entries = busybox_entries(busybox)?;
    entries.push(Entry::file("sbin/init", 0o755, BASE_INIT.as_bytes()));
    let mut raw = Vec::new();
    tar::write(&mut raw, &entries).map_err(|e| Error::io("write the base image", busybox, e))?;
    gzip(&raw)
}

/// The name of the image a volume's storage instance runs (VolAPI finds it by name).
pub const NFSSERVER_IMAGE: &str = "nfsserver";
/// Its version.
pub const NFSSERVER_IMAGE_VERSION: &str = "1.0.0";

/// The init of the `nfsserver` image (pid 1): makes `/exports/data` (the volume's data,
/// on the instance's own disk) at first boot and serves it over NFSv3 on port 2049,
/// starting `nfsserver` again whenever it exits; SIGTERM stops both.
pub const NFSSERVER_INIT: &str = r#"#!/bin/sh
# nfsserver init (pid 1): serve /exports/data over NFSv3 and MOUNT v3 on TCP port 2049,
# restart the server if it exits, stop on SIGTERM.
/bin/busybox mount -t tmpfs tmpfs /tmp 2>/dev/null || true
/bin/busybox mkdir -p /exports/data
child=
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 0' TERM INT
while :; do
    /opt/triton/nfsserver/bin/nfsserver --listen 0.0.0.0:2049 --root /exports/data &
    child=$!
    wait "$child"
    echo "nfsserver exited ($?); starting it again in 1s" >&2
    /bin/busybox sleep 1
done
"#;

/// The `nfsserver` image: busybox-static as in the base image, the `nfsserver` binary
/// at `opt/triton/nfsserver/bin/nfsserver` with the shared libraries it needs, and
/// [`NFSSERVER_INIT`] as `/sbin/init`. Returns the gzipped tarball.
pub fn nfsserver_image(busybox: &Path, nfsserver: &Path) -> Result<Vec<u8>, Error> {
    let bin = std::fs::read(nfsserver)
        .map_err(|e| Error::io("read the nfsserver binary", nfsserver, e))?;
    let mut entries = busybox_entries(busybox)?;
    let mut seen = dirs_of(&entries);
    for d in [
        "opt",
        "opt/triton",
        "opt/triton/nfsserver",
        "opt/triton/nfsserver/bin",
        "exports",
    ] {
        if seen.insert(d.to_string()) {
            entries.push(Entry::dir(d));
        }
    }
    entries.push(Entry::file(
        "opt/triton/nfsserver/bin/nfsserver",
        0o755,
        bin,
    ));
    entries.push(Entry::file("sbin/init", 0o755, NFSSERVER_INIT.as_bytes()));
    for (path, file) in shared_libraries(nfsserver)? {
        parents(&path, &mut seen, &mut entries);
        let data = std::fs::read(&file).map_err(|e| Error::io("read a library", &file, e))?;
        entries.push(Entry::file(path, 0o755, data));
    }
    let mut raw = Vec::new();
    tar::write(&mut raw, &entries)
        .map_err(|e| Error::io("write the nfsserver image", nfsserver, e))?;
    gzip(&raw)
}

/// The `nfsserver` image's manifest: owned by `owner` (the admin account), not public.
pub fn nfsserver_manifest(owner: &str, file: &[u8]) -> Json {
    let mut m = manifest(
        NFSSERVER_IMAGE,
        NFSSERVER_IMAGE_VERSION,
        "A volume's NFS server: NFSv3 and MOUNT v3 on TCP port 2049 exporting /exports/data (userspace nfsserver on busybox)",
        owner,
        file,
        false,
    );
    m["public"] = json!(false);
    m
}

/// Builds the `nfsserver` image from the `nfsserver` binary into `out`
/// (`nfsserver-<version>.tar.gz` and its manifest).
pub fn build_nfsserver_image(
    nfsserver: &Path,
    out: &Path,
    owner: &str,
) -> Result<BuiltImage, Error> {
    let userland = Userland::find()?;
    let file = nfsserver_image(&userland.busybox, nfsserver)?;
    let m = nfsserver_manifest(owner, &file);
    std::fs::create_dir_all(out).map_err(|e| Error::io("create the image folder", out, e))?;
    let (tarball, manifest_path) = artifact_paths(out, NFSSERVER_IMAGE, NFSSERVER_IMAGE_VERSION);
    write_atomically(&tarball, &file)?;
    let text = serde_json::to_string_pretty(&m).map_err(|e| Error::Check(e.to_string()))? + "\n";
    write_atomically(&manifest_path, text.as_bytes())?;
    Ok(BuiltImage {
        name: NFSSERVER_IMAGE.to_string(),
        tarball,
        manifest_path,
        manifest: m,
    })
}
