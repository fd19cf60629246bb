//! NAPI's operations: validation, then reads and conditional writes in Moray. Request
//! handlers only; no background work.

mod fabrics;
mod ips;
mod networks;
mod nic_tags;
mod nics;
mod pools;
mod portolan;
mod seed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use moray_client::typed::RetryPolicy;
use moray_client::{FindOptions, Sort, SortOrder};

use crate::allocation;
use crate::error::{Error, FieldError, Result};
use crate::ip::Subnet;
use crate::model::{Network, Provisionable};
use crate::store::{Store, Stored};
use crate::validate::{self, Checks};
use triton_proto::napi::v1 as proto;

pub use portolan::{Mapping, Overlay, UNDERLAY_NIC_TAG};

/// Attempts at provisioning one NIC before giving up with `ConcurrentUpdate`: the one
/// place that raises the one policy's 20 attempts. Each attempt that loses a race
/// re-reads the network's used IPs and takes another free address, so many racers on
/// one network each need several; 200 concurrent provisions on one /24 (the tested
/// worst case) settle in well under 30. Other read-modify-writes (updates, fabric
/// creation) use [`RetryPolicy::DEFAULT`].
pub const IP_PROVISION: RetryPolicy = RetryPolicy::DEFAULT.with_attempts(50);
/// IP records read per page while looking for free addresses.
const IP_PAGE: u64 = 1000;

/// The NAPI application: every operation, on one Moray.
#[derive(Debug, Clone)]
pub struct Napi {
    store: Store,
    oui: u64,
    admin_uuid: String,
    /// Per network: the free addresses this NAPI hands out ([`allocation::Cursor`]).
    cursors: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<allocation::Cursor>>>>>,
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn random_u64() -> u64 {
    let b = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[9], b[10]])
}

fn not_found(kind: &'static str, id: impl Into<String>) -> Error {
    Error::NotFound {
        kind,
        id: id.into(),
    }
}

/// `what` lost every one of [`RetryPolicy::DEFAULT`]'s attempts to concurrent writers.
fn gave_up(what: String) -> Error {
    Error::Contention {
        what,
        attempts: RetryPolicy::DEFAULT.attempts,
    }
}

fn paged(limit: u32, offset: u32, sort: &str) -> FindOptions {
    FindOptions {
        limit: Some(u64::from(limit)),
        offset: u64::from(offset),
        no_count: true,
        sort: vec![Sort {
            attribute: sort.to_string(),
            order: SortOrder::Asc,
        }],
        ..Default::default()
    }
}

/// Validated provision range and gateway of a network on `subnet`.
fn check_range(
    c: &mut Checks,
    subnet: &Subnet,
    start: &str,
    end: &str,
    gateway: Option<&str>,
) -> Option<(u32, u32, Option<u32>)> {
    let s = c.take(validate::ip_in("provision_start_ip", start, subnet));
    let e = c.take(validate::ip_in("provision_end_ip", end, subnet));
    if let (Some(s), Some(e)) = (s, e)
        && s > e
    {
        c.push(FieldError::invalid(
            "provision_start_ip",
            "provision_start_ip must be before provision_end_ip",
        ));
        return None;
    }
    let gw = match gateway.filter(|g| !g.is_empty()) {
        Some(g) => Some(c.take(validate::ip_in("gateway", g, subnet))?),
        None => None,
    };
    Some((s?, e?, gw))
}

/// A create request's provision range and gateway, as [`check_range`] takes them.
trait ProvisionRange {
    fn start_end_gateway(&self) -> (&str, &str, Option<&str>);
}

impl ProvisionRange for proto::CreateNetworkRequest {
    fn start_end_gateway(&self) -> (&str, &str, Option<&str>) {
        (
            &self.provision_start_ip,
            &self.provision_end_ip,
            self.gateway.as_deref(),
        )
    }
}

impl ProvisionRange for proto::CreateFabricNetworkRequest {
    fn start_end_gateway(&self) -> (&str, &str, Option<&str>) {
        (
            &self.provision_start_ip,
            &self.provision_end_ip,
            self.gateway.as_deref(),
        )
    }
}

/// [`check_range`] of a create request, once its `subnet` is valid.
fn check_requested_range(
    c: &mut Checks,
    subnet: Option<&Subnet>,
    req: &impl ProvisionRange,
) -> Option<(u32, u32, Option<u32>)> {
    let (start, end, gateway) = req.start_end_gateway();
    check_range(c, subnet?, start, end, gateway)
}

impl Napi {
    pub fn new(store: Store, oui: u64, admin_uuid: String) -> Self {
        Napi {
            store,
            oui,
            admin_uuid,
            cursors: Arc::default(),
        }
    }

    fn cursor(&self, network_uuid: &str) -> Arc<tokio::sync::Mutex<allocation::Cursor>> {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(network_uuid.to_string())
            .or_default()
            .clone()
    }

    /// The network's IP records changed here other than by a provision (an address
    /// freed or reserved): the next allocation scans again, lowest first.
    async fn ips_changed(&self, network_uuid: &str) {
        self.cursor(network_uuid).lock().await.invalidate(None);
    }

    /// A free address of `network` for a new NIC, from the network's cursor (scanning
    /// when it has none left or its scan is old). `SubnetFull` when there is none.
    async fn next_free(&self, network: &Network) -> Result<u32> {
        let (start, end) = network.range()?;
        let shape = (start, end, network.excluded()?);
        let cursor = self.cursor(&network.uuid);
        let mut c = cursor.lock().await;
        if let Some(ip) = c.next(Instant::now(), &shape) {
            return Ok(ip);
        }
        // Scanning with the cursor held: concurrent allocators wait for this scan
        // instead of making their own.
        let n = c.begin_scan();
        let free = self.free_candidates(network, c.scan_size()).await?;
        c.end_scan(n, free, shape.clone(), Instant::now());
        c.next(Instant::now(), &shape)
            .ok_or_else(|| Error::SubnetFull {
                what: format!("network {}", network.uuid),
            })
    }

    /// One page of a list of networks or pools: from `offset`, at most `limit` (default
    /// [`validate::MAX_LIMIT`]), of those `provisionable_by` may provision on (all
    /// without it).
    fn page<T: Provisionable>(
        &self,
        found: Vec<Stored<T>>,
        provisionable_by: Option<String>,
        offset: u32,
        limit: Option<u32>,
    ) -> Vec<T> {
        found
            .into_iter()
            .map(|s| s.value)
            .filter(|v| {
                let owner = provisionable_by.as_deref();
                owner.is_none_or(|p| v.provisionable_by(p, &self.admin_uuid))
            })
            .skip(offset as usize)
            .take(limit.unwrap_or(validate::MAX_LIMIT) as usize)
            .collect()
    }

    pub async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }
}

/// One field error as the request's error.
fn one(e: FieldError) -> Error {
    Error::InvalidParameters(vec![e])
}
