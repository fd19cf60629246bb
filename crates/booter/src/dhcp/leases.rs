//! Addresses from NAPI: there is no lease table (reference 4.4). A MAC's address is the
//! static IP of its admin NIC in NAPI; a MAC NAPI has not seen gets an admin NIC
//! (`belongs_to_type` server, owned by the admin account) on the admin network, or on the
//! relay's network when the request came through one. The hostname, when CNAPI knows the
//! MAC's server, comes from CNAPI's boot parameters.
//!
//! NAPI's NICs are kept in memory, followed from its `WatchNics` feed (snapshot, then
//! changes; [`run`](Leases::run)), so a MAC NAPI knows is answered without a NAPI call.
//! A MAC it does not know gets its NIC made in NAPI, one creation per MAC (a
//! retransmit while its NIC is being made waits for that one and is answered from
//! memory). New MACs are gathered: those that arrive within [`BATCH_WINDOW`] of the
//! first (at most [`BATCH_MAX`]) go to NAPI in one `CreateNics` call, one transaction
//! for all of them, at most [`MAX_BATCHES`] calls at once, and each is answered as soon
//! as its call returns. At most [`MAX_WAITING`] new MACs wait for a call; one more is
//! dropped with a logged reason (its client retransmits). A call NAPI refuses as a whole
//! (a MAC made meanwhile by someone else, a full network, a NAPI without `CreateNics`)
//! is made again one `CreateNic` per MAC, so each MAC gets its own answer. The admin
//! networks are re-read every [`NETWORKS_TTL`]; CNAPI's boot parameters are kept per MAC
//! as last read.
//!
//! All of it is also kept in a cache file (`<data_dir>/cache/booter.json`, Triton's
//! on-disk booter cache), written within a second of a change and read at start, so
//! that while NAPI or CNAPI cannot be reached a known MAC still gets its address and its
//! iPXE script.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use triton_common::status::found;
use triton_proto::cnapi::v1 as cnapi_pb;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;
use triton_proto::napi::v1 as napi_pb;
use triton_proto::napi::v1::napi_client::NapiClient;

use super::packet::{Lease, Mac};

/// How often the list of admin networks is read again from NAPI.
pub const NETWORKS_TTL: Duration = Duration::from_secs(10);
/// CNAPI's hostname is a nicety: a DISCOVER does not wait longer for it.
const HOSTNAME_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the first new MAC of a `CreateNics` call waits for others to join it.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// New MACs in one `CreateNics` call at most.
pub const BATCH_MAX: usize = 128;
/// `CreateNics` calls in flight at once; while all are, new MACs gather for the next.
pub const MAX_BATCHES: usize = 4;
/// New MACs waiting for a `CreateNics` call at most (their requests also hold one of
/// `max_in_flight`'s places).
pub const MAX_WAITING: usize = 1024;
/// How often a changed state is written to the cache file.
const SAVE_EVERY: Duration = Duration::from_secs(1);

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

/// An IPv4 network of NAPI's.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl AdminNets {
    /// The admin networks among NAPI's `networks`.
    fn of(networks: &[AdminNet], admin_network: &str) -> Result<AdminNets, LeaseError> {
        let admin = networks
            .iter()
            .find(|n| n.name == admin_network)
            .cloned()
            .ok_or_else(|| LeaseError::NoAdminNetwork(admin_network.to_string()))?;
        let all = networks
            .iter()
            .filter(|n| {
                n.nic_tag == admin.nic_tag
                    || n.nic_tag.to_ascii_lowercase().starts_with("admin_rack_")
            })
            .cloned()
            .collect();
        Ok(AdminNets { admin, all })
    }
}

/// What dhcpd keeps of a NAPI NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NicRec {
    ip: String,
    netmask: String,
    gateway: String,
    resolvers: Vec<String>,
    network_uuid: String,
    nic_tag: String,
    belongs_to_type: String,
    belongs_to_uuid: String,
}

impl From<&napi_pb::Nic> for NicRec {
    fn from(n: &napi_pb::Nic) -> NicRec {
        NicRec {
            ip: n.ip.clone(),
            netmask: n.netmask.clone(),
            gateway: n.gateway.clone(),
            resolvers: n.resolvers.clone(),
            network_uuid: n.network_uuid.clone(),
            nic_tag: n.nic_tag.clone(),
            belongs_to_type: n.belongs_to_type.clone(),
            belongs_to_uuid: n.belongs_to_uuid.clone(),
        }
    }
}

/// CNAPI's boot parameters for a MAC, as last read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ParamsRec {
    platform: String,
    kernel_args: BTreeMap<String, String>,
    kernel_flags: Vec<String>,
    server_uuid: String,
    hostname: String,
}

impl From<&cnapi_pb::BootParams> for ParamsRec {
    fn from(p: &cnapi_pb::BootParams) -> ParamsRec {
        ParamsRec {
            platform: p.platform.clone(),
            kernel_args: p
                .kernel_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            kernel_flags: p.kernel_flags.clone(),
            server_uuid: p.server_uuid.clone(),
            hostname: p.hostname.clone(),
        }
    }
}

impl From<ParamsRec> for cnapi_pb::BootParams {
    fn from(p: ParamsRec) -> cnapi_pb::BootParams {
        // Every field named: one added to the record is not forgotten here.
        let ParamsRec {
            platform,
            kernel_args,
            kernel_flags,
            server_uuid,
            hostname,
        } = p;
        let kernel_args = kernel_args.into_iter().collect();
        cnapi_pb::BootParams {
            platform,
            kernel_args,
            kernel_flags,
            server_uuid,
            hostname,
        }
    }
}

/// The cache file's content. MACs are written as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    networks: Vec<AdminNet>,
    nics: BTreeMap<String, NicRec>,
    boot_params: BTreeMap<String, ParamsRec>,
}

/// What dhcpd knows, in memory.
#[derive(Debug, Default)]
struct State {
    /// NAPI's networks (not fabrics), as last read.
    networks: Option<(Vec<AdminNet>, Arc<AdminNets>)>,
    nics: HashMap<Mac, NicRec>,
    params: HashMap<Mac, ParamsRec>,
    /// The feed's snapshot has been applied: a MAC not in `nics` is not in NAPI (but for
    /// the feed's lag).
    followed: bool,
}

/// NAPI's `WatchNics` into the state, through [`triton_common::follow`]: the snapshot
/// replaces what was known, changes follow.
struct FollowNics(Arc<Leases>);

impl triton_common::follow::Apply<napi_pb::Nic> for FollowNics {
    type Error = std::convert::Infallible;

    async fn reset(&mut self, nics: Vec<napi_pb::Nic>) -> Result<(), Self::Error> {
        let nics: HashMap<Mac, NicRec> = nics
            .iter()
            .filter_map(|n| Some((Mac::parse(&n.mac)?, NicRec::from(n))))
            .collect();
        let mut state = self.0.write();
        state.nics = nics;
        state.followed = true;
        drop(state);
        self.0.changed();
        Ok(())
    }

    async fn change(&mut self, key: &str, nic: Option<&napi_pb::Nic>) -> Result<(), Self::Error> {
        let Some(mac) = Mac::parse(key) else {
            return Ok(());
        };
        let mut state = self.0.write();
        match nic {
            Some(nic) => state.nics.insert(mac, NicRec::from(nic)),
            None => state.nics.remove(&mac),
        };
        drop(state);
        self.0.changed();
        Ok(())
    }
}

/// NAPI's and CNAPI's answers about MACs.
pub struct Leases {
    napi: NapiClient<Channel>,
    cnapi: CnapiClient<Channel>,
    admin_network: String,
    admin_uuid: String,
    state: RwLock<State>,
    /// MACs whose NIC is being looked up or made: a second request waits on the first.
    in_flight: Mutex<HashMap<Mac, Arc<tokio::sync::Mutex<()>>>>,
    /// New MACs for the next `CreateNics` call, taken by [`Leases::run`].
    new_macs: mpsc::Sender<NewMac>,
    new_macs_rx: Mutex<Option<mpsc::Receiver<NewMac>>>,
    cache_file: Option<PathBuf>,
    dirty: AtomicBool,
}

impl Leases {
    /// `cache_file`: where the state is kept across restarts (`None`: nowhere); what it
    /// holds is loaded here.
    pub fn new(
        napi: Channel,
        cnapi: Channel,
        admin_network: &str,
        admin_uuid: &str,
        cache_file: Option<PathBuf>,
    ) -> Leases {
        let (new_macs, new_macs_rx) = mpsc::channel(MAX_WAITING);
        let leases = Leases {
            napi: NapiClient::new(napi),
            cnapi: CnapiClient::new(cnapi),
            admin_network: admin_network.to_string(),
            admin_uuid: admin_uuid.to_string(),
            state: RwLock::new(State::default()),
            in_flight: Mutex::new(HashMap::new()),
            new_macs,
            new_macs_rx: Mutex::new(Some(new_macs_rx)),
            cache_file,
            dirty: AtomicBool::new(false),
        };
        if let Some(path) = &leases.cache_file {
            leases.load(path);
        }
        leases
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the cache file; a missing one is an empty cache, a bad one is logged and
    /// ignored (NAPI's feed fills the state again).
    fn load(&self, path: &Path) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "booter cache not read");
                return;
            }
        };
        let file: CacheFile = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "booter cache ignored: not its JSON");
                return;
            }
        };
        let mut state = self.write();
        let mac = |text: &str| {
            let m = Mac::parse(text);
            if m.is_none() {
                tracing::warn!(path = %path.display(), key = text, "booter cache: an entry that is not a MAC skipped");
            }
            m
        };
        state.nics = file
            .nics
            .iter()
            .filter_map(|(k, v)| Some((mac(k)?, v.clone())))
            .collect();
        state.params = file
            .boot_params
            .iter()
            .filter_map(|(k, v)| Some((mac(k)?, v.clone())))
            .collect();
        if let Ok(nets) = AdminNets::of(&file.networks, &self.admin_network) {
            state.networks = Some((file.networks, Arc::new(nets)));
        }
        tracing::info!(path = %path.display(), nics = state.nics.len(), boot_params = state.params.len(), "booter cache loaded");
    }

    /// Writes the cache file (a new file renamed over the old one): the networks, the
    /// NICs on admin networks, the boot parameters.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        let file = {
            let state = self.read();
            let admin: Option<Vec<&str>> = state
                .networks
                .as_ref()
                .map(|(_, n)| n.all.iter().map(|n| n.uuid.as_str()).collect());
            CacheFile {
                networks: state
                    .networks
                    .as_ref()
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default(),
                nics: state
                    .nics
                    .iter()
                    .filter(|(_, n)| {
                        admin
                            .as_ref()
                            .is_none_or(|a| a.contains(&n.network_uuid.as_str()))
                    })
                    .map(|(m, n)| (m.to_string(), n.clone()))
                    .collect(),
                boot_params: state
                    .params
                    .iter()
                    .map(|(m, p)| (m.to_string(), p.clone()))
                    .collect(),
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.new");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&file).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Follows NAPI's NICs, re-reads its networks every [`NETWORKS_TTL`] and writes the
    /// cache file when something changed, until `shutdown` (then writes it a last time).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let networks = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            async move {
                loop {
                    if let Err(e) = this.refresh_networks().await {
                        tracing::warn!(error = %e, "admin networks not read again; keeping the last known");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(NETWORKS_TTL) => {}
                    }
                }
            }
        };
        let saver = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            async move {
                let Some(path) = this.cache_file.clone() else {
                    return;
                };
                loop {
                    let stop = tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(SAVE_EVERY) => false,
                    };
                    if this.dirty.swap(false, Ordering::AcqRel) {
                        let (this, file) = (this.clone(), path.clone());
                        let saved = tokio::task::spawn_blocking(move || this.save(&file)).await;
                        match saved {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(path = %path.display(), error = %e, "booter cache not written")
                            }
                            Err(e) => tracing::warn!(error = %e, "booter cache writer failed"),
                        }
                    }
                    if stop {
                        return;
                    }
                }
            }
        };
        tokio::join!(
            triton_common::follow::follow::<napi_pb::WatchNicsRequest, _>(
                "napi WatchNics",
                self.napi.clone(),
                FollowNics(self.clone()),
                shutdown.clone(),
            ),
            self.clone().create_new_macs(shutdown.clone()),
            networks,
            saver
        );
    }

    /// Gathers new MACs into `CreateNics` calls until `shutdown` (a MAC still waiting
    /// then is answered "dhcpd is stopping").
    async fn create_new_macs(self: Arc<Self>, shutdown: CancellationToken) {
        let taken = self
            .new_macs_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut waiting) = taken else {
            return;
        };
        let turns = Arc::new(Semaphore::new(MAX_BATCHES));
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = waiting.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < BATCH_MAX {
                match tokio::time::timeout_at(until, waiting.recv()).await {
                    Ok(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
            let turn = tokio::select! {
                _ = shutdown.cancelled() => return,
                t = turns.clone().acquire_owned() => match t {
                    Ok(t) => t,
                    Err(_) => return,
                },
            };
            // Those that came while every call was in flight join this one.
            while batch.len() < BATCH_MAX {
                match waiting.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.create_batch(batch).await;
                drop(turn);
            });
        }
    }

    /// One `CreateNics` call for `batch`, each MAC answered from it; when NAPI refuses
    /// the call as a whole, one `CreateNic` per MAC instead.
    async fn create_batch(&self, batch: Vec<NewMac>) {
        if let [one] = batch.as_slice() {
            let made = self.create_one(one.mac, &one.net).await;
            if let Some(one) = batch.into_iter().next() {
                let _ = one.reply.send(made);
            }
            return;
        }
        tracing::info!(
            macs = batch.len(),
            "creating admin NICs in NAPI for new MACs (one CreateNics)"
        );
        let nics = batch
            .iter()
            .map(|m| self.create_request(m.mac, &m.net))
            .collect();
        let made = self
            .napi
            .clone()
            .create_nics(napi_pb::CreateNicsRequest { nics })
            .await;
        let why = match made {
            Ok(made) => {
                let made = made.into_inner().nics;
                if made.len() == batch.len() {
                    for (m, nic) in batch.into_iter().zip(made) {
                        let _ = m.reply.send(Ok(nic));
                    }
                    return;
                }
                format!("{} NICs for {} MACs", made.len(), batch.len())
            }
            Err(s) if napi_unreachable(&s) => {
                for m in batch {
                    let _ = m.reply.send(Err(LeaseError::Napi(s.clone())));
                }
                return;
            }
            Err(s) => s.message().to_string(),
        };
        tracing::info!(macs = batch.len(), reason = %why, "CreateNics not taken; one CreateNic per MAC");
        let made =
            futures::future::join_all(batch.iter().map(|m| self.create_one(m.mac, &m.net))).await;
        for (m, made) in batch.into_iter().zip(made) {
            let _ = m.reply.send(made);
        }
    }

    async fn refresh_networks(&self) -> Result<Arc<AdminNets>, LeaseError> {
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
        let nets = Arc::new(AdminNets::of(&parsed, &self.admin_network)?);
        self.write().networks = Some((parsed, nets.clone()));
        self.changed();
        Ok(nets)
    }

    /// The admin networks as last read; NAPI is asked only when they never were.
    async fn admin_nets(&self) -> Result<Arc<AdminNets>, LeaseError> {
        if let Some((_, nets)) = &self.read().networks {
            return Ok(nets.clone());
        }
        self.refresh_networks().await
    }

    /// Whether `ip` is on one of the admin networks (a relay's `giaddr`, a client's
    /// `ciaddr`).
    pub async fn on_admin_network(&self, ip: Ipv4Addr) -> Result<bool, LeaseError> {
        Ok(self.admin_nets().await?.all.iter().any(|n| n.contains(ip)))
    }

    /// The lease of a MAC whose NIC is in memory (`None`: not there), with the hostname
    /// CNAPI last gave.
    fn known(&self, mac: Mac, nets: &AdminNets) -> Option<Result<Lease, LeaseError>> {
        let state = self.read();
        let nic = state.nics.get(&mac)?;
        let hostname = state
            .params
            .get(&mac)
            .map(|p| p.hostname.clone())
            .filter(|h| !h.is_empty());
        Some(lease_of(mac, nic, nets, hostname))
    }

    /// What memory holds for `mac` (the answer to a REQUEST after its DISCOVER, and to
    /// the iPXE script's request).
    pub fn cached(&self, mac: Mac) -> Option<Lease> {
        let nets = self.read().networks.as_ref()?.1.clone();
        self.known(mac, &nets)?.ok()
    }

    /// The address for `mac`: its admin NIC's, from memory when NAPI's feed (or the
    /// cache file) has it; else from NAPI, made on the admin network (or `giaddr`'s, for
    /// a relayed request) when NAPI has none and `create` is set.
    pub async fn lease(
        self: &Arc<Self>,
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
        if let Some(known) = self.known(mac, &nets) {
            if !self.read().params.contains_key(&mac) {
                // The hostname comes with the next answer; this one does not wait.
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = this.hostname(mac).await;
                });
            }
            return known;
        }
        // One lookup (and creation) per MAC at once; a retransmit waits for it.
        let gate = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.entry(mac).or_default().clone()
        };
        let held = gate.lock().await;
        let result = async {
            if let Some(known) = self.known(mac, &nets) {
                return known;
            }
            // No CNAPI call here: a MAC NAPI has no NIC for is a node CNAPI does not
            // know yet, and a burst of them would wait on CNAPI. Its hostname comes from
            // the boot parameters its iPXE script reads.
            let nic = async {
                // With the feed followed, a MAC not in memory is new (a NIC made since is
                // found when the create says it exists).
                let found = if create && self.read().followed {
                    None
                } else {
                    self.get_nic(mac).await?
                };
                match found {
                    Some(nic) => Ok(nic),
                    None if create => {
                        let net = relay_net.unwrap_or(&nets.admin);
                        self.create_nic(mac, net).await
                    }
                    None => Err(LeaseError::Unknown),
                }
            };
            let nic = NicRec::from(&nic.await?);
            let hostname = self
                .read()
                .params
                .get(&mac)
                .map(|p| p.hostname.clone())
                .filter(|h| !h.is_empty());
            self.write().nics.insert(mac, nic.clone());
            self.changed();
            lease_of(mac, &nic, &nets, hostname)
        }
        .await;
        drop(held);
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight
            .get(&mac)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            in_flight.remove(&mac);
        }
        drop(in_flight);
        result
    }

    async fn get_nic(&self, mac: Mac) -> Result<Option<napi_pb::Nic>, LeaseError> {
        let get = napi_pb::GetNicRequest {
            mac: mac.to_string(),
        };
        found(self.napi.clone().get_nic(get).await).map_err(LeaseError::Napi)
    }

    /// The admin NIC for a new `mac` on `net`, made with the next `CreateNics` call.
    async fn create_nic(&self, mac: Mac, net: &AdminNet) -> Result<napi_pb::Nic, LeaseError> {
        if self.admin_uuid.is_empty() {
            return Err(LeaseError::Refused(
                "a new MAC needs an admin NIC, and admin_uuid (its owner) is not configured".into(),
            ));
        }
        let (reply, made) = oneshot::channel();
        let waiting = NewMac {
            mac,
            net: net.clone(),
            reply,
        };
        match self.new_macs.try_send(waiting) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(LeaseError::Refused(format!(
                    "{MAX_WAITING} new MACs already wait for NAPI to make their NICs"
                )));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopping()),
        }
        made.await.unwrap_or_else(|_| Err(stopping()))
    }

    fn create_request(&self, mac: Mac, net: &AdminNet) -> napi_pb::CreateNicRequest {
        napi_pb::CreateNicRequest {
            mac: Some(mac.to_string()),
            owner_uuid: self.admin_uuid.clone(),
            belongs_to_uuid: self.admin_uuid.clone(),
            belongs_to_type: "server".into(),
            network_uuid: Some(net.uuid.clone()),
            nic_tags_provided: vec![net.nic_tag.clone()],
            ..Default::default()
        }
    }

    /// One `CreateNic` for `mac`; a NIC made meanwhile by someone else is read.
    async fn create_one(&self, mac: Mac, net: &AdminNet) -> Result<napi_pb::Nic, LeaseError> {
        tracing::info!(%mac, network = %net.name, "creating an admin NIC in NAPI for a new MAC");
        let made = self
            .napi
            .clone()
            .create_nic(self.create_request(mac, net))
            .await;
        match made {
            Ok(nic) => Ok(nic.into_inner()),
            // Another request (or NAPI's client) made it first.
            Err(s) if s.code() == Code::AlreadyExists => {
                self.get_nic(mac).await?.ok_or(LeaseError::Napi(s))
            }
            Err(s) => Err(LeaseError::Napi(s)),
        }
    }

    /// CNAPI's boot parameters for `mac`, kept for when CNAPI cannot be reached: then
    /// the last ones read are the answer (logged), or CNAPI's error when there are none.
    pub async fn boot_params(&self, mac: Mac) -> Result<cnapi_pb::BootParams, tonic::Status> {
        let asked = self
            .cnapi
            .clone()
            .get_boot_params(cnapi_pb::GetBootParamsRequest {
                mac: mac.to_string(),
            })
            .await;
        match asked {
            Ok(p) => {
                let p = p.into_inner();
                let rec = ParamsRec::from(&p);
                let mut state = self.write();
                if state.params.get(&mac) != Some(&rec) {
                    state.params.insert(mac, rec);
                    drop(state);
                    self.changed();
                }
                Ok(p)
            }
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
                ) =>
            {
                match self.read().params.get(&mac) {
                    Some(p) => {
                        tracing::warn!(%mac, error = %s.message(), "CNAPI unreachable: the boot parameters last read");
                        Ok(p.clone().into())
                    }
                    None => Err(s),
                }
            }
            Err(s) => Err(s),
        }
    }

    async fn hostname(&self, mac: Mac) -> Option<String> {
        match tokio::time::timeout(HOSTNAME_TIMEOUT, self.boot_params(mac)).await {
            Ok(Ok(p)) => Some(p.hostname).filter(|h| !h.is_empty()),
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

/// A new MAC waiting for a `CreateNics` call.
struct NewMac {
    mac: Mac,
    net: AdminNet,
    reply: oneshot::Sender<Result<napi_pb::Nic, LeaseError>>,
}

fn stopping() -> LeaseError {
    LeaseError::Refused("dhcpd is stopping".into())
}

/// NAPI could not be asked (a call per MAC would not fare better).
fn napi_unreachable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// The lease a NIC gives, or why it gives none.
fn lease_of(
    mac: Mac,
    nic: &NicRec,
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

    fn leases(cache: &Path) -> Leases {
        let nowhere = || Channel::from_static("http://127.0.0.1:9").connect_lazy();
        Leases::new(nowhere(), nowhere(), "admin", "", Some(cache.to_path_buf()))
    }

    /// What is saved is what a restart answers from; a cache file that is not ours is
    /// ignored, not fatal.
    #[tokio::test]
    async fn the_cache_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/booter.json");
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let admin = AdminNet {
            uuid: "n1".into(),
            name: "admin".into(),
            base: Ipv4Addr::new(10, 99, 99, 0),
            prefix: 24,
            nic_tag: "admin".into(),
        };
        let nic = |network: &str| NicRec {
            ip: "10.99.99.100".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.99.99.1".into(),
            resolvers: vec!["10.99.99.53".into()],
            network_uuid: network.into(),
            nic_tag: "admin".into(),
            belongs_to_type: "server".into(),
            belongs_to_uuid: "s1".into(),
        };
        let first = leases(&path);
        {
            let mut state = first.write();
            let nets = AdminNets::of(std::slice::from_ref(&admin), "admin").unwrap();
            state.networks = Some((vec![admin.clone()], Arc::new(nets)));
            state.nics.insert(mac, nic("n1"));
            // Not on an admin network: not kept.
            state.nics.insert(Mac([2, 0, 0, 0, 0, 2]), nic("elsewhere"));
            state.params.insert(
                mac,
                ParamsRec {
                    platform: "p1".into(),
                    hostname: "cn1".into(),
                    ..Default::default()
                },
            );
        }
        first.save(&path).unwrap();

        let again = leases(&path);
        let lease = again.cached(mac).expect("the MAC from the cache file");
        assert_eq!(lease.ip, Ipv4Addr::new(10, 99, 99, 100));
        assert_eq!(lease.gateway, Some(Ipv4Addr::new(10, 99, 99, 1)));
        assert_eq!(lease.hostname.as_deref(), Some("cn1"));
        assert_eq!(again.read().nics.len(), 1);
        assert_eq!(again.read().params[&mac].platform, "p1");

        std::fs::write(&path, b"{\"nics\": 7").unwrap();
        let bad = leases(&path);
        assert!(bad.cached(mac).is_none());
        assert!(bad.read().nics.is_empty());
    }
}
