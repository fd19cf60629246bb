//! A node's iPXE script, from CNAPI's boot parameters for its admin MAC
//! (`GetBootParams`) and its admin address in NAPI:
//!
//! ```text
//! #!ipxe
//! kernel http://10.99.99.7:8082/os/<platform>/vmlinuz initrd=initrd <k=v ...> <flags ...>
//! initrd --name initrd http://10.99.99.7:8082/os/<platform>/initrd
//! boot
//! ```
//!
//! The kernel arguments are dhcpd's `triton.cnapi_url`, `triton.admin_ip`,
//! `triton.admin_mac`, `triton.admin_netmask` and `triton.admin_gateway` (what the
//! platform's init and cn-agent read), then CNAPI's, sorted by name; a CNAPI argument of
//! the same name wins, with a warning (as Triton's booter). Flags follow, sorted.

use std::collections::BTreeMap;
use std::sync::Arc;

use triton_proto::cnapi::v1 as cnapi_pb;

use crate::dhcp::leases::{LeaseError, Leases};
use crate::dhcp::packet::{Lease, Mac};

/// Why a script cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}")]
    Lease(#[from] LeaseError),
    #[error("CNAPI GetBootParams: {}", .0.message())]
    Cnapi(tonic::Status),
    /// CNAPI's parameters would not make a safe script line.
    #[error("boot parameters: {0}")]
    Invalid(String),
}

/// Makes scripts.
pub struct Scripts {
    pub leases: Arc<Leases>,
    /// Where iPXE fetches the kernel and initrd: `http://host:port` or `tftp://host`.
    pub base: String,
    /// What nodes are told as `triton.cnapi_url`.
    pub cnapi_url: String,
}

impl Scripts {
    /// The script for `mac`.
    pub async fn script(&self, mac: Mac) -> Result<String, ScriptError> {
        let lease = match self.leases.cached(mac) {
            Some(l) => l,
            None => {
                self.leases
                    .lease(mac, std::net::Ipv4Addr::UNSPECIFIED, false)
                    .await?
            }
        };
        let params = self
            .leases
            .boot_params(mac)
            .await
            .map_err(ScriptError::Cnapi)?;
        render(mac, &lease, &params, &self.base, &self.cnapi_url)
    }
}

/// A word on a script line: no whitespace, quotes or iPXE's `$`/`#` expansions, so CNAPI's
/// values cannot add a command or change one.
fn safe(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '$' | '#' | '\\'))
}

/// The script (module doc).
pub fn render(
    mac: Mac,
    lease: &Lease,
    params: &cnapi_pb::BootParams,
    base: &str,
    cnapi_url: &str,
) -> Result<String, ScriptError> {
    let platform = &params.platform;
    if !safe(platform) || platform.contains('/') || platform.starts_with('.') {
        return Err(ScriptError::Invalid(format!(
            "platform {platform:?} is not a platform name ([A-Za-z0-9._-], not starting with '.')"
        )));
    }
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    args.insert("triton.cnapi_url".into(), cnapi_url.into());
    args.insert("triton.admin_ip".into(), lease.ip.to_string());
    args.insert("triton.admin_mac".into(), mac.to_string());
    args.insert("triton.admin_netmask".into(), lease.netmask.to_string());
    if let Some(gw) = lease.gateway {
        args.insert("triton.admin_gateway".into(), gw.to_string());
    }
    for (k, v) in &params.kernel_args {
        if !safe(k) || k.contains('=') || !(v.is_empty() || safe(v)) {
            return Err(ScriptError::Invalid(format!(
                "kernel argument {k:?}={v:?}: names and values are single words without \
                 quotes, '$', '#' or '\\'"
            )));
        }
        if let Some(ours) = args.insert(k.clone(), v.clone())
            && &ours != v
        {
            tracing::warn!(%mac, arg = %k, dhcpd = %ours, cnapi = %v, "CNAPI's kernel argument wins over dhcpd's");
        }
    }
    let mut flags: Vec<&str> = params.kernel_flags.iter().map(String::as_str).collect();
    flags.sort_unstable();
    if let Some(bad) = flags.iter().find(|f| !safe(f)) {
        return Err(ScriptError::Invalid(format!(
            "kernel flag {bad:?} is not a single word without quotes, '$', '#' or '\\'"
        )));
    }
    let mut line: Vec<String> = vec![
        format!("{base}/os/{platform}/vmlinuz"),
        "initrd=initrd".into(),
    ];
    line.extend(args.iter().map(|(k, v)| {
        if v.is_empty() {
            k.clone()
        } else {
            format!("{k}={v}")
        }
    }));
    line.extend(flags.iter().map(|f| f.to_string()));
    Ok(format!(
        "#!ipxe\n# {mac}{}\nkernel {}\ninitrd --name initrd {base}/os/{platform}/initrd\nboot\n",
        params
            .hostname
            .is_empty()
            .then(String::new)
            .unwrap_or_else(|| format!(" {}", params.hostname)),
        line.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 99, 99, 40),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(Ipv4Addr::new(10, 99, 99, 1)),
            resolvers: vec![],
            hostname: None,
        }
    }

    #[test]
    fn script_has_kernel_initrd_and_the_triton_args() {
        let params = cnapi_pb::BootParams {
            platform: "20261206T000000Z".into(),
            kernel_args: [
                ("console".to_string(), "ttyS0".to_string()),
                (
                    "triton.admin_netmask".to_string(),
                    "255.255.0.0".to_string(),
                ),
            ]
            .into(),
            kernel_flags: vec!["quiet".into(), "debug".into()],
            server_uuid: String::new(),
            hostname: "cn1".into(),
        };
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let s = render(
            mac,
            &lease(),
            &params,
            "http://10.99.99.7:8082",
            "http://10.99.99.7:2030",
        )
        .unwrap();
        assert_eq!(
            s,
            "#!ipxe\n# 02:00:00:00:00:01 cn1\n\
             kernel http://10.99.99.7:8082/os/20261206T000000Z/vmlinuz initrd=initrd \
             console=ttyS0 triton.admin_gateway=10.99.99.1 triton.admin_ip=10.99.99.40 \
             triton.admin_mac=02:00:00:00:00:01 triton.admin_netmask=255.255.0.0 \
             triton.cnapi_url=http://10.99.99.7:2030 debug quiet\n\
             initrd --name initrd http://10.99.99.7:8082/os/20261206T000000Z/initrd\nboot\n"
        );
    }

    #[test]
    fn unsafe_parameters_are_refused() {
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        for params in [
            cnapi_pb::BootParams {
                platform: "../etc".into(),
                ..Default::default()
            },
            cnapi_pb::BootParams {
                platform: "p".into(),
                kernel_args: [("a".to_string(), "b\nshell".to_string())].into(),
                ..Default::default()
            },
            cnapi_pb::BootParams {
                platform: "p".into(),
                kernel_flags: vec!["${evil}".into()],
                ..Default::default()
            },
        ] {
            let e = render(mac, &lease(), &params, "http://x", "http://y").unwrap_err();
            assert!(matches!(e, ScriptError::Invalid(_)), "{params:?}: {e}");
        }
    }
}
