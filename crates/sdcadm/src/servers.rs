//! `sdcadm server ...`: the compute nodes as Triton's `sdc-server` shows them (list,
//! setup) and their boot parameters (CNAPI's GetBootParams / SetBootParams).

use std::collections::HashMap;

use serde_json::Value;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;

use crate::error::Error;

/// The admin IP a server reports in its sysinfo: the address of its NIC (or bridge)
/// carrying the `admin` nic tag; empty when none has one.
pub fn admin_ip(sysinfo_json: &str) -> String {
    let Ok(sysinfo) = serde_json::from_str::<Value>(sysinfo_json) else {
        return String::new();
    };
    for key in ["Network Interfaces", "Virtual Network Interfaces"] {
        let Some(nics) = sysinfo.get(key).and_then(Value::as_object) else {
            continue;
        };
        for nic in nics.values() {
            let admin = nic
                .get("NIC Names")
                .and_then(Value::as_array)
                .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some("admin")));
            let ip = nic.get("ip4addr").and_then(Value::as_str).unwrap_or("");
            if admin && !ip.is_empty() {
                return ip.to_string();
            }
        }
    }
    String::new()
}

/// Every server CNAPI knows.
pub async fn list(ch: Channel) -> Result<Vec<cnapi::Server>, Error> {
    let mut c = CnapiClient::new(ch);
    let mut servers = c
        .list_servers(cnapi::ListServersRequest::default())
        .await
        .map_err(Error::api("cnapi ListServers"))?
        .into_inner()
        .servers;
    servers.sort_by(|a, b| (!a.headnode, &a.hostname).cmp(&(!b.headnode, &b.hostname)));
    Ok(servers)
}

/// The `sdc-server list` table: uuid, hostname, admin IP, setup, status (one header line
/// then a line per server; `-` for an unknown hostname or admin IP).
pub fn table(servers: &[cnapi::Server]) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<15}  {:<5}  {:<8}\n",
        "UUID", "HOSTNAME", "ADMIN_IP", "SETUP", "STATUS"
    );
    for s in servers {
        let status = if s.transitional_status.is_empty() {
            s.status.clone()
        } else {
            s.transitional_status.clone()
        };
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<15}  {:<5}  {:<8}\n",
            s.uuid,
            if s.hostname.is_empty() {
                "-"
            } else {
                &s.hostname
            },
            Some(admin_ip(&s.sysinfo_json))
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "-".into()),
            s.setup,
            status
        ));
    }
    out
}

/// ServerSetup of `uuid` (and its hostname, when given).
pub async fn setup(
    ch: Channel,
    uuid: &str,
    hostname: Option<&str>,
) -> Result<cnapi::Server, Error> {
    let mut c = CnapiClient::new(ch);
    Ok(c.server_setup(cnapi::ServerSetupRequest {
        uuid: uuid.into(),
        hostname: hostname.unwrap_or_default().into(),
    })
    .await
    .map_err(Error::api(format!("cnapi ServerSetup {uuid}")))?
    .into_inner())
}

/// UpdateServer of `uuid`'s `reserved` (a reserved server gets no new instances).
pub async fn set_reserved(ch: Channel, uuid: &str, reserved: bool) -> Result<cnapi::Server, Error> {
    let mut c = CnapiClient::new(ch);
    Ok(c.update_server(cnapi::UpdateServerRequest {
        uuid: uuid.into(),
        reserved: Some(reserved),
        ..Default::default()
    })
    .await
    .map_err(Error::api(format!("cnapi UpdateServer {uuid}")))?
    .into_inner())
}

/// `key=value` words as kernel arguments; a word without `=` is refused naming it.
pub fn parse_args(words: &[String]) -> Result<HashMap<String, String>, Error> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::Usage(format!("--arg {w}: not NAME=VALUE")))
        })
        .collect()
}

/// SetBootParams of `key` (a server uuid or `default`).
pub async fn set_boot_params(
    ch: Channel,
    request: cnapi::SetBootParamsRequest,
) -> Result<cnapi::BootParams, Error> {
    let key = request.server_uuid.clone();
    let mut c = CnapiClient::new(ch);
    Ok(c.set_boot_params(request)
        .await
        .map_err(Error::api(format!("cnapi SetBootParams {key}")))?
        .into_inner())
}

/// GetBootParams of an admin MAC.
pub async fn get_boot_params(ch: Channel, mac: &str) -> Result<cnapi::BootParams, Error> {
    let mut c = CnapiClient::new(ch);
    Ok(
        c.get_boot_params(cnapi::GetBootParamsRequest { mac: mac.into() })
            .await
            .map_err(Error::api(format!("cnapi GetBootParams {mac}")))?
            .into_inner(),
    )
}

/// Boot parameters as lines: platform, server, hostname, then each argument and flag.
pub fn show_boot_params(p: &cnapi::BootParams) -> String {
    let mut out = format!("platform      {}\n", p.platform);
    if !p.server_uuid.is_empty() {
        out.push_str(&format!("server_uuid   {}\n", p.server_uuid));
    }
    if !p.hostname.is_empty() {
        out.push_str(&format!("hostname      {}\n", p.hostname));
    }
    let mut args: Vec<_> = p.kernel_args.iter().collect();
    args.sort();
    for (k, v) in args {
        out.push_str(&format!("kernel_arg    {k}={v}\n"));
    }
    for f in &p.kernel_flags {
        out.push_str(&format!("kernel_flag   {f}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_ip_is_the_admin_tagged_nics() {
        let sysinfo = serde_json::json!({
            "Network Interfaces": {"eth1": {"ip4addr": "10.88.88.9", "NIC Names": ["external"]}},
            "Virtual Network Interfaces": {"coal-admin": {"ip4addr": "10.99.99.40", "NIC Names": ["admin"]}},
        });
        assert_eq!(admin_ip(&sysinfo.to_string()), "10.99.99.40");
        assert_eq!(admin_ip("not json"), "");
    }

    #[test]
    fn args_are_name_equals_value() {
        let a = parse_args(&["console=ttyS0".into(), "x=".into()]).unwrap();
        assert_eq!(a["console"], "ttyS0");
        assert_eq!(a["x"], "");
        let e = parse_args(&["novalue".into()]).unwrap_err().to_string();
        assert!(e.contains("novalue"), "{e}");
    }
}
