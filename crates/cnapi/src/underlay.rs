//! Compute nodes' underlay addresses in NAPI. A node reports its underlay in sysinfo as
//! Triton's nodes do (a NIC, real or virtual, whose "NIC Names" hold `sdc_underlay`, with
//! its "ip4addr"); CNAPI then makes sure NAPI has that node's underlay NIC: belongs_to
//! the server, on NAPI's network named `sdc_underlay`, with that address, `underlay`
//! set. NAPI keeps Portolan's underlay mapping of the node with the NIC, so fabric
//! traffic finds the node.
//!
//! A periodic task (`task:underlay` in health) does it for every server whose reported
//! address is not registered yet by this CNAPI: a new node, a changed address (the old
//! NIC is deleted), NAPI down earlier, or no underlay network in NAPI yet (CoaL makes it
//! after CNAPI starts).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_proto::napi::v1 as napi;
use triton_proto::napi::v1::napi_client::NapiClient;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The nic tag (and the name of NAPI's network) of the underlay, as in Triton.
pub const UNDERLAY_TAG: &str = "sdc_underlay";

/// Where NAPI is, and who owns the NICs CNAPI makes there (the operator account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlaySettings {
    pub napi_url: String,
    pub admin_uuid: String,
}

/// The underlay address a sysinfo reports: the first NIC of "Network Interfaces" or
/// "Virtual Network Interfaces" (in that order, by name) whose "NIC Names" hold
/// `sdc_underlay` and whose "ip4addr" is an IPv4 address.
pub fn sysinfo_underlay_ip(sysinfo: &Value) -> Option<Ipv4Addr> {
    ["Network Interfaces", "Virtual Network Interfaces"]
        .iter()
        .filter_map(|key| sysinfo.get(key).and_then(Value::as_object))
        .flat_map(|nics| nics.values())
        .filter(|nic| {
            nic.get("NIC Names")
                .and_then(Value::as_array)
                .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(UNDERLAY_TAG)))
        })
        .find_map(|nic| nic.get("ip4addr")?.as_str()?.parse().ok())
}

pub struct Underlay {
    napi: NapiClient<Channel>,
    admin_uuid: String,
    /// Server -> the address its NIC in NAPI has, as this CNAPI made or found it.
    registered: Mutex<HashMap<Uuid, Ipv4Addr>>,
    /// Whether the missing network was logged (once, not at every pass).
    warned: AtomicBool,
}

fn napi_error(what: String) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Napi { what, status }
}

impl Underlay {
    /// Checks the settings (naming the bad key) and makes NAPI's client; nothing is
    /// called yet.
    pub fn new(settings: &UnderlaySettings) -> Result<Underlay> {
        Uuid::parse_str(&settings.admin_uuid).map_err(|_| {
            Error::invalid(
                "admin_uuid",
                format!(
                    "{:?} is not a UUID (it owns the underlay NICs CNAPI makes in NAPI)",
                    settings.admin_uuid
                ),
            )
        })?;
        let channel = ChannelBuilder::new(&settings.napi_url)
            .lazy()
            .map_err(|e| Error::invalid("napi_url", triton_common::service::chain(&e)))?;
        Ok(Underlay {
            napi: NapiClient::new(channel),
            admin_uuid: settings.admin_uuid.clone(),
            registered: Mutex::new(HashMap::new()),
            warned: AtomicBool::new(false),
        })
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Ipv4Addr>> {
        self.registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One pass over `servers` (each with its reported underlay address): registers
    /// those not registered yet. Returns the servers whose NIC it made; the first
    /// failure, after trying them all.
    pub async fn sync(&self, servers: &[(Uuid, Ipv4Addr)]) -> Result<Vec<Uuid>> {
        let mut made = Vec::new();
        let mut first_error = None;
        for &(server, ip) in servers {
            if self.registered().get(&server) == Some(&ip) {
                continue;
            }
            match self.ensure(server, ip).await {
                Ok(true) => made.push(server),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(server_uuid = %server, %ip, error = %triton_common::service::chain(&e), "cannot register the underlay NIC in NAPI");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(made),
        }
    }

    /// Makes NAPI hold exactly one underlay NIC of `server`, with `ip`. Returns whether
    /// it made one; false also when NAPI has no underlay network yet.
    async fn ensure(&self, server: Uuid, ip: Ipv4Addr) -> Result<bool> {
        let mut napi = self.napi.clone();
        let networks = napi
            .list_networks(napi::ListNetworksRequest {
                name: Some(UNDERLAY_TAG.into()),
                ..Default::default()
            })
            .await
            .map_err(napi_error(format!(
                "list the networks named {UNDERLAY_TAG}"
            )))?
            .into_inner()
            .networks;
        let Some(network) = networks.into_iter().find(|n| n.nic_tag == UNDERLAY_TAG) else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "NAPI has no network {UNDERLAY_TAG:?} (nic tag {UNDERLAY_TAG}): compute nodes' underlay addresses are not registered until it does"
                );
            }
            return Ok(false);
        };
        let server_text = server.to_string();
        let nics = napi
            .list_nics(napi::ListNicsRequest {
                belongs_to_uuid: Some(server_text.clone()),
                belongs_to_type: Some("server".into()),
                nic_tag: Some(UNDERLAY_TAG.into()),
                ..Default::default()
            })
            .await
            .map_err(napi_error(format!(
                "list the underlay NICs of server {server}"
            )))?
            .into_inner()
            .nics;
        let mut have = false;
        for nic in nics {
            if nic.ip == ip.to_string() && nic.network_uuid == network.uuid && !have {
                have = true;
                continue;
            }
            // The node's address changed (or a duplicate): the old NIC goes, and with it
            // Portolan's old mapping.
            napi.delete_nic(napi::DeleteNicRequest {
                mac: nic.mac.clone(),
            })
            .await
            .map_err(napi_error(format!(
                "delete the old underlay NIC {} ({}) of server {server}",
                nic.mac, nic.ip
            )))?;
            tracing::info!(server_uuid = %server, mac = %nic.mac, old_ip = %nic.ip, "old underlay NIC deleted");
        }
        if !have {
            napi.create_nic(napi::CreateNicRequest {
                owner_uuid: self.admin_uuid.clone(),
                belongs_to_uuid: server_text.clone(),
                belongs_to_type: "server".into(),
                network_uuid: Some(network.uuid.clone()),
                ip: Some(ip.to_string()),
                cn_uuid: Some(server_text),
                underlay: true,
                ..Default::default()
            })
            .await
            .map_err(napi_error(format!(
                "create the underlay NIC of server {server} with {ip}"
            )))?;
            tracing::info!(server_uuid = %server, %ip, "underlay NIC registered in NAPI");
        }
        self.registered().insert(server, ip);
        Ok(!have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_underlay_is_the_tagged_nic_with_an_address() {
        // As a linux node reports it: the bridge's member carries the tag without an
        // address, the device holding the address carries it with one.
        let s = json!({
            "Network Interfaces": {"eth0": {"NIC Names": ["admin"], "ip4addr": "10.99.99.7"}},
            "Virtual Network Interfaces": {
                "coalcn2-ul": {"NIC Names": ["sdc_underlay"], "ip4addr": ""},
                "underlay0": {"NIC Names": ["sdc_overlay", "sdc_underlay"], "ip4addr": "10.99.100.22"},
            },
        });
        assert_eq!(
            sysinfo_underlay_ip(&s),
            Some(Ipv4Addr::new(10, 99, 100, 22))
        );
        let none = json!({
            "Network Interfaces": {"eth0": {"NIC Names": ["admin"], "ip4addr": "10.99.99.7"}},
            "Virtual Network Interfaces": {"x": {"NIC Names": "sdc_underlay", "ip4addr": "10.0.0.1"}},
        });
        assert_eq!(sysinfo_underlay_ip(&none), None);
        assert_eq!(sysinfo_underlay_ip(&json!({})), None);
    }

    #[tokio::test]
    async fn bad_settings_name_the_key() {
        let bad_uuid = Underlay::new(&UnderlaySettings {
            napi_url: "http://127.0.0.1:2023".into(),
            admin_uuid: "admin".into(),
        })
        .err()
        .unwrap();
        assert!(
            bad_uuid.to_string().starts_with("invalid admin_uuid"),
            "{bad_uuid}"
        );
        let bad_url = Underlay::new(&UnderlaySettings {
            napi_url: "http://bad host:1".into(),
            admin_uuid: Uuid::new_v4().to_string(),
        })
        .err()
        .unwrap();
        assert!(
            bad_url.to_string().starts_with("invalid napi_url"),
            "{bad_url}"
        );
    }
}
