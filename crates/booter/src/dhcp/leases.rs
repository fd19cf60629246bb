//! Addresses from NAPI: there is no lease table (reference 4.4). A MAC's address is the
//! static IP of its admin NIC in NAPI; a MAC NAPI has not seen gets an admin NIC
//! (`belongs_to_type` server, owned by the admin account) on the admin network, or on the
//! relay's network when the request came through one. The hostname, when CNAPI knows the
//! MAC's server, comes from CNAPI's boot parameters.
//!
//! A DISCOVER always asks NAPI. What it was told is kept for `cache_secs`, for the REQUEST
//! that follows (Triton's booter reads its `<mac>.json` for a REQUEST).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use triton_proto::cnapi::v1 as cnapi_pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::napi::v1 as napi_pb;
use triton_proto::napi::v1::napi_client::NapiClient;

use super::packet::{Lease, Mac};

/// How long the list of admin networks is kept before NAPI is asked again.
const NETWORKS_TTL: Duration = Duration::from_secs(10);
/// CNAPI's hostname is a nicety: a DISCOVER does not wait longer for it.
const HOSTNAME_TIMEOUT: Duration = Duration::from_secs(2);
/// The most entries the REQUEST cache holds; when full, the expired ones go, and if none
/// has, the cache starts over (a REQUEST then asks NAPI).
const CACHE_MAX: usize = 65_536;

/// Why a MAC gets no address; logged with the MAC.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("NAPI: {}", .0.message())]
    Napi(tonic::Status),
    /// The MAC's NIC is not one dhcpd may hand out (another network, no IP).
    #[error("refused: {0}")]
    Refused(String),
    /// NAPI has no NIC for the MAC and this request may not make one (REQUEST, INFORM).
    #[error("NAPI has no NIC with this MAC (no DISCOVER came first)")]
    Unknown,
    #[error("NAPI has no network named {0:?} (config admin_network)")]
    NoAdminNetwork(String),
    #[error("relay {0} is in no admin network NAPI knows")]
    UnknownRelay(Ipv4Addr),
}

/// An IPv4 network of NAPI's that dhcpd serves.
#[derive(Debug, Clone)]
struct AdminNet {
    uuid: String,
    name: String,
    base: Ipv4Addr,
    prefix: u8,
    nic_tag: String,
}

impl AdminNet {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = prefix_mask(self.prefix);
        u32::from(ip) & mask == u32::from(self.base) & mask
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// "10.99.99.0/24" as its base and prefix.
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((ip.parse().ok()?, prefix))
}

#[derive(Debug)]
struct AdminNets {
    /// The network named by `admin_network`.
    admin: AdminNet,
    /// It and every network on its nic tag or on an `admin_rack_*` tag (reference 4.3).
    all: Vec<AdminNet>,
}

/// NAPI's and CNAPI's answers about MACs.
pub struct Leases {
    napi: NapiClient<Channel>,
    cnapi: CnapiClient<Channel>,
    admin_network: String,
    admin_uuid: String,
    cache_ttl: Duration,
    networks: tokio::sync::Mutex<Option<(Instant, Arc<AdminNets>)>>,
    cache: Mutex<HashMap<Mac, (Instant, Lease)>>,
}

impl Leases {
    pub fn new(
        napi: Channel,
        cnapi: Channel,
        admin_network: &str,
        admin_uuid: &str,
        cache_ttl: Duration,
    ) -> Leases {
        Leases {
            napi: NapiClient::new(napi),
            cnapi: CnapiClient::new(cnapi),
            admin_network: admin_network.to_string(),
            admin_uuid: admin_uuid.to_string(),
            cache_ttl,
            networks: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn admin_nets(&self) -> Result<Arc<AdminNets>, LeaseError> {
        let mut held = self.networks.lock().await;
        if let Some((at, nets)) = held.as_ref()
            && at.elapsed() < NETWORKS_TTL
        {
            return Ok(nets.clone());
        }
        let list = self
            .napi
            .clone()
            .list_networks(napi_pb::ListNetworksRequest {
                fabric: Some(false),
                ..Default::default()
            })
            .await
            .map_err(LeaseError::Napi)?
            .into_inner()
            .networks;
        let parsed: Vec<AdminNet> = list
            .iter()
            .filter_map(|n| {
                let (base, prefix) = parse_cidr(&n.subnet)?;
                Some(AdminNet {
                    uuid: n.uuid.clone(),
                    name: n.name.clone(),
                    base,
                    prefix,
                    nic_tag: n.nic_tag.clone(),
                })
            })
            .collect();
        let admin = parsed
            .iter()
            .find(|n| n.name == self.admin_network)
            .cloned()
            .ok_or_else(|| LeaseError::NoAdminNetwork(self.admin_network.clone()))?;
        let all = parsed
            .into_iter()
            .filter(|n| {
                n.nic_tag == admin.nic_tag
                    || n.nic_tag.to_ascii_lowercase().starts_with("admin_rack_")
            })
            .collect();
        let nets = Arc::new(AdminNets { admin, all });
        *held = Some((Instant::now(), nets.clone()));
        Ok(nets)
    }

    /// Whether `ip` is on one of the admin networks (a relay's `giaddr`, a client's
    /// `ciaddr`).
    pub async fn on_admin_network(&self, ip: Ipv4Addr) -> Result<bool, LeaseError> {
        Ok(self.admin_nets().await?.all.iter().any(|n| n.contains(ip)))
    }

    /// The address for `mac`: its admin NIC's, made on the admin network (or `giaddr`'s,
    /// for a relayed request) when NAPI has none and `create` is set.
    pub async fn lease(
        &self,
        mac: Mac,
        giaddr: Ipv4Addr,
        create: bool,
    ) -> Result<Lease, LeaseError> {
        let nets = self.admin_nets().await?;
        let relay_net = if giaddr.is_unspecified() {
            None
        } else {
            Some(
                nets.all
                    .iter()
                    .find(|n| n.contains(giaddr))
                    .ok_or(LeaseError::UnknownRelay(giaddr))?,
            )
        };
        let hostname = self.hostname(mac);
        let nic = async {
            match self.get_nic(mac).await? {
                Some(nic) => Ok(nic),
                None if create => {
                    let net = relay_net.unwrap_or(&nets.admin);
                    self.create_nic(mac, net).await
                }
                None => Err(LeaseError::Unknown),
            }
        };
        let (nic, hostname) = tokio::join!(nic, hostname);
        let nic = nic?;
        let lease = lease_of(mac, &nic, &nets, hostname)?;
        self.remember(mac, &lease);
        Ok(lease)
    }

    /// What the last DISCOVER was told, while fresh.
    pub fn cached(&self, mac: Mac) -> Option<Lease> {
        let cache = self.cache.lock().ok()?;
        let (at, lease) = cache.get(&mac)?;
        (at.elapsed() < self.cache_ttl).then(|| lease.clone())
    }

    fn remember(&self, mac: Mac, lease: &Lease) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= CACHE_MAX {
            let ttl = self.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(mac, (Instant::now(), lease.clone()));
    }

    async fn get_nic(&self, mac: Mac) -> Result<Option<napi_pb::Nic>, LeaseError> {
        match self
            .napi
            .clone()
            .get_nic(napi_pb::GetNicRequest {
                mac: mac.to_string(),
            })
            .await
        {
            Ok(nic) => Ok(Some(nic.into_inner())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(LeaseError::Napi(s)),
        }
    }

    async fn create_nic(&self, mac: Mac, net: &AdminNet) -> Result<napi_pb::Nic, LeaseError> {
        if self.admin_uuid.is_empty() {
            return Err(LeaseError::Refused(
                "a new MAC needs an admin NIC, and admin_uuid (its owner) is not configured".into(),
            ));
        }
        tracing::info!(%mac, network = %net.name, "creating an admin NIC in NAPI for a new MAC");
        let made = self
            .napi
            .clone()
            .create_nic(napi_pb::CreateNicRequest {
                mac: Some(mac.to_string()),
                owner_uuid: self.admin_uuid.clone(),
                belongs_to_uuid: self.admin_uuid.clone(),
                belongs_to_type: "server".into(),
                network_uuid: Some(net.uuid.clone()),
                nic_tags_provided: vec![net.nic_tag.clone()],
                ..Default::default()
            })
            .await;
        match made {
            Ok(nic) => Ok(nic.into_inner()),
            // Another request for the same MAC made it first.
            Err(s) if s.code() == Code::AlreadyExists => {
                self.get_nic(mac).await?.ok_or(LeaseError::Napi(s))
            }
            Err(s) => Err(LeaseError::Napi(s)),
        }
    }

    async fn hostname(&self, mac: Mac) -> Option<String> {
        let mut cnapi = self.cnapi.clone();
        let call = cnapi.get_boot_params(cnapi_pb::GetBootParamsRequest {
            mac: mac.to_string(),
        });
        match tokio::time::timeout(HOSTNAME_TIMEOUT, call).await {
            Ok(Ok(p)) => Some(p.into_inner().hostname).filter(|h| !h.is_empty()),
            Ok(Err(s)) => {
                tracing::debug!(%mac, error = %s.message(), "no hostname from CNAPI");
                None
            }
            Err(_) => {
                tracing::debug!(%mac, "no hostname: CNAPI did not answer in time");
                None
            }
        }
    }
}

/// The lease a NIC gives, or why it gives none.
fn lease_of(
    mac: Mac,
    nic: &napi_pb::Nic,
    nets: &AdminNets,
    hostname: Option<String>,
) -> Result<Lease, LeaseError> {
    let Some(net) = nets.all.iter().find(|n| n.uuid == nic.network_uuid) else {
        let on = if nic.network_uuid.is_empty() {
            format!("no network (nic tag {:?})", nic.nic_tag)
        } else {
            format!("network {} (nic tag {:?})", nic.network_uuid, nic.nic_tag)
        };
        return Err(LeaseError::Refused(format!(
            "MAC {mac} is bound in NAPI to {on}, not to an admin network; only admin NICs \
             boot (belongs to {} {})",
            nic.belongs_to_type, nic.belongs_to_uuid
        )));
    };
    let ip: Ipv4Addr = nic.ip.parse().map_err(|_| {
        LeaseError::Refused(format!(
            "MAC {mac}'s admin NIC on {} has no IPv4 address ({:?})",
            net.name, nic.ip
        ))
    })?;
    let netmask = nic
        .netmask
        .parse()
        .unwrap_or_else(|_| Ipv4Addr::from(prefix_mask(net.prefix)));
    Ok(Lease {
        ip,
        netmask,
        gateway: nic.gateway.parse().ok(),
        resolvers: nic
            .resolvers
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect(),
        hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_membership() {
        let (base, prefix) = parse_cidr("10.99.99.0/24").unwrap();
        let net = AdminNet {
            uuid: String::new(),
            name: "admin".into(),
            base,
            prefix,
            nic_tag: "admin".into(),
        };
        assert!(net.contains(Ipv4Addr::new(10, 99, 99, 200)));
        assert!(!net.contains(Ipv4Addr::new(10, 99, 98, 200)));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("10.0.0.0"), None);
        assert_eq!(
            Ipv4Addr::from(prefix_mask(20)),
            Ipv4Addr::new(255, 255, 240, 0)
        );
        assert_eq!(prefix_mask(0), 0);
    }
}
