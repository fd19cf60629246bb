//! What CMon's test files share: certificates from the real `triton profile
//! cmon-certgen`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dc_testkit::cloudapi::Tenant;
use dc_testkit::eventually;

/// Runs `triton profile cmon-certgen -y` as `tenant` in `dir`, its SSH key in an
/// ssh-agent of its own: the paths of the certificate and key it writes.
pub async fn certgen(tenant: &Tenant, dir: &Path) -> (PathBuf, PathBuf) {
    let sock = dir.join("agent.sock");
    let mut agent = tokio::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh-agent runs");
    eventually("ssh-agent listens", Duration::from_secs(30), || async {
        sock.exists()
    })
    .await;
    let added = std::process::Command::new("ssh-add")
        .arg(&tenant.key_path)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("ssh-add runs");
    assert!(added.status.success(), "{added:?}");
    let out = tenant
        .command(&["profile", "cmon-certgen", "-y"])
        .current_dir(dir)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .await
        .expect("triton runs");
    agent.kill().await.ok();
    assert!(out.status.success(), "cmon-certgen: {out:?}");
    (
        dir.join(format!("cmon-{}-cert.pem", tenant.login)),
        dir.join(format!("cmon-{}-key.pem", tenant.login)),
    )
}
