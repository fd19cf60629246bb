//! Zone images: per service a gzipped tarball of the zone's files and an IMGAPI manifest;
//! and CoaL's `base-64` instance image built from busybox-static.
//!
//! A service image's tarball holds, relative to the zone's root:
//!
//! ```text
//! opt/triton/<svc>/bin/<binary>            the release binary
//! opt/triton/<svc>/etc/<svc>.toml          its config for a zone (from deploy/services.toml)
//! opt/triton/<svc>/etc/<svc>.toml.in       the same with the placeholders unfilled
//! opt/triton/<svc>/start                   what starts it inside a zone (and a container)
//! etc/systemd/system/triton-<svc>.service  the systemd unit, which runs `start`
//! ```

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

/// The entries of one service's zone image.
pub fn service_entries(
    deployment: &Deployment,
    service: &Service,
    binary: &[u8],
) -> Result<Vec<Entry>, Error> {
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
    let start = format!(
        "#!/bin/sh\n# Starts {name} in its zone (or container): systemd runs this, and so does docker.\nset -e\nmkdir -p {data}\nexec /{root}/bin/{bin} --config /{root}/etc/{name}.toml \"$@\"\n",
        data = data_dir.display(),
    );
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
    Ok(vec![
        Entry::Dir {
            path: "opt".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "opt/triton".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: root.clone(),
            mode: 0o755,
        },
        Entry::Dir {
            path: format!("{root}/bin"),
            mode: 0o755,
        },
        Entry::File {
            path: format!("{root}/bin/{bin}"),
            mode: 0o755,
            data: binary.to_vec(),
        },
        Entry::Dir {
            path: format!("{root}/etc"),
            mode: 0o755,
        },
        Entry::File {
            path: format!("{root}/etc/{name}.toml"),
            mode: 0o644,
            data: format!("{header}\n{config}").into_bytes(),
        },
        Entry::File {
            path: format!("{root}/etc/{name}.toml.in"),
            mode: 0o644,
            data: format!("{header}# Placeholders as in deploy/services.toml.\n\n{template}")
                .into_bytes(),
        },
        Entry::File {
            path: format!("{root}/start"),
            mode: 0o755,
            data: start.into_bytes(),
        },
        Entry::Dir {
            path: "etc".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "etc/systemd".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "etc/systemd/system".into(),
            mode: 0o755,
        },
        Entry::File {
            path: format!("etc/systemd/system/triton-{name}.service"),
            mode: 0o644,
            data: unit.into_bytes(),
        },
    ])
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
    let bin = std::fs::read(binary).map_err(|e| Error::io("read the service binary", binary, e))?;
    let entries = service_entries(deployment, service, &bin)?;
    let mut raw = Vec::new();
    tar::write(&mut raw, &entries).map_err(|e| Error::io("write the tarball", out, e))?;
    let file = gzip(&raw)?;
    let owner = deployment
        .vars
        .get("admin_uuid")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
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
    let bin = std::fs::read(busybox).map_err(|e| Error::io("read busybox", busybox, e))?;
    let list = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| Error::Command {
            command: format!("{} --list-full", busybox.display()),
            detail: e.to_string(),
        })?;
    if !list.status.success() {
        return Err(Error::Command {
            command: format!("{} --list-full", busybox.display()),
            detail: String::from_utf8_lossy(&list.stderr).into_owned(),
        });
    }
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
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data: bin,
    });
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
    entries.push(Entry::File {
        path: "sbin/init".into(),
        mode: 0o755,
        data: BASE_INIT.as_bytes().to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        mode: 0o644,
        data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        mode: 0o644,
        data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
    });
    let mut raw = Vec::new();
    tar::write(&mut raw, &entries).map_err(|e| Error::io("write the base image", busybox, e))?;
    gzip(&raw)
}
