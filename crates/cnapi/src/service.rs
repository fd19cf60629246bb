//! The gRPC service `triton.cnapi.v1.Cnapi`: request handlers over a [`Store`], plus the
//! heartbeat reconciler that [`crate::app::start`] runs in the background.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use moray_client::typed::RetryPolicy;
use serde_json::{Map, Value};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use triton_common::{copy_fields, set_given};
use triton_proto::cnagent::v1 as agent_pb;
use triton_proto::cnagent::v1::cn_agent_client::CnAgentClient;
use triton_proto::cnapi::v1 as pb;
use triton_proto::cnapi::v1::cnapi_server::Cnapi;
use uuid::Uuid;

use crate::allocation::{
    self, AffinityOp, AffinityRule, AllocConfig, AllocationRequest, ImageRequest, Locality,
    PackageRequest, VmRequest,
};
use crate::boot::{self, BootParamsRecord};
use crate::error::{Error, Result};
use crate::fleet::FleetView;
use crate::model::{OverprovisionRatios, ServerRecord, ServerVm};
use crate::status::{self, apply_heartbeat, apply_sysinfo, materially_changed, unix_ms};
use crate::store::{Cond, Reservation, ReservationDoc, Store, Versioned};
use crate::underlay::{UnderlaySettings, sysinfo_underlay_ip};
use triton_common::status::ToStatus;

/// ListServers' default and maximum page (Triton: 1000).
const MAX_LIMIT: u32 = 1000;
/// Deadline of a call to a cn-agent (WaitTask adds its own wait).
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest WaitTask CNAPI forwards.
const MAX_WAIT_MS: u32 = 60_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub datacenter: String,
    pub heartbeat_lifetime: Duration,
    pub reconcile_period: Duration,
    pub reservation_ttl: Duration,
    /// Mark newly registered servers set up at once (CoaL convenience), except those
    /// that booted from the network.
    pub auto_setup: bool,
    /// Mark newly registered network-booted servers set up at once too.
    pub auto_setup_network_booted: bool,
    /// The booter's `os/` directory: the platforms boot parameters may name (none: any
    /// well-formed name).
    pub platforms_dir: Option<std::path::PathBuf>,
    pub alloc: AllocConfig,
    /// Who may connect to the gRPC server, and reflection (the config's `[grpc]`).
    pub grpc: triton_common::grpc::ServerConfig,
    /// Register nodes' underlay addresses in this NAPI (none: not done).
    pub underlay: Option<UnderlaySettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            datacenter: "coal".into(),
            heartbeat_lifetime: status::HEARTBEAT_LIFETIME,
            reconcile_period: status::RECONCILE_PERIOD,
            reservation_ttl: Duration::from_secs(600),
            auto_setup: false,
            auto_setup_network_booted: false,
            platforms_dir: None,
            alloc: AllocConfig::default(),
            grpc: triton_common::grpc::ServerConfig::default(),
            underlay: None,
        }
    }
}

pub struct CnapiService<S> {
    store: Arc<S>,
    settings: Settings,
    agents: Mutex<HashMap<String, Channel>>,
    /// Servers and reservations in memory, for allocations (see [`crate::fleet`]).
    fleet: FleetView<S>,
}

fn parse_uuid(field: &str, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::invalid(field, format!("{text:?} is not a UUID")))
}

/// An optional UUID: none when `text` is empty.
fn parse_optional_uuid(field: &str, text: &str) -> Result<Option<Uuid>> {
    (!text.is_empty())
        .then(|| parse_uuid(field, text))
        .transpose()
}

fn parse_json_object(field: &str, text: &str) -> Result<Option<Map<String, Value>>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(Error::invalid(field, "must be a JSON object")),
    }
}

impl<S: Store> CnapiService<S> {
    /// Must be called inside a tokio runtime (it starts the reservation writer).
    pub fn new(store: Arc<S>, settings: Settings) -> Self {
        CnapiService {
            fleet: FleetView::new(store.clone()),
            store,
            settings,
            agents: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn server(&self, uuid: Uuid) -> Result<Versioned<ServerRecord>> {
        self.store
            .get_server(uuid)
            .await?
            .ok_or(Error::ServerNotFound(uuid))
    }

    /// Read, change, write with the etag read; again on a conflict.
    async fn modify(
        &self,
        uuid: Uuid,
        mut change: impl FnMut(&mut ServerRecord) -> Result<()>,
    ) -> Result<(ServerRecord, String)> {
        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            let Versioned { mut value, etag } = self.server(uuid).await?;
            change(&mut value)?;
            match self.store.put_server(&value, Cond::Is(etag)).await {
                Ok(etag) => {
                    self.fleet.lock().set_server(value.clone(), etag.clone());
                    return Ok((value, etag));
                }
                Err(Error::EtagConflict) if tries.again().await => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One pass of the reconciler: running servers without a heartbeat for the lifetime
    /// become `unknown`. Returns the servers it marked.
    pub async fn reconcile(&self) -> Result<Vec<Uuid>> {
        let since = self.fleet.lock().begin_read();
        let servers = self.store.list_servers().await?;
        let now = unix_ms(SystemTime::now());
        // The same read keeps the allocation view current with other CNAPIs' writes.
        self.fleet.lock().refresh_servers(servers.clone(), since);
        let stale = status::stale_servers(
            now,
            servers.iter().map(|v| &v.value),
            self.settings.heartbeat_lifetime,
        );
        let mut marked = Vec::new();
        for v in servers {
            if !stale.contains(&v.value.uuid) {
                continue;
            }
            let mut record = v.value;
            record.status = "unknown".into();
            // A heartbeat that lands meanwhile wins: its write changes the etag.
            match self.store.put_server(&record, Cond::Is(v.etag)).await {
                Ok(etag) => {
                    self.fleet.lock().set_server(record.clone(), etag);
                    tracing::warn!(server_uuid = %record.uuid, hostname = %record.hostname, "no heartbeat: status unknown");
                    marked.push(record.uuid);
                }
                Err(Error::EtagConflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(marked)
    }

    /// The servers in view whose sysinfo reports an underlay address, with it.
    pub fn underlay_addresses(&self) -> Vec<(Uuid, std::net::Ipv4Addr)> {
        self.fleet
            .lock()
            .servers()
            .iter()
            .filter_map(|s| Some((s.uuid, sysinfo_underlay_ip(&s.sysinfo)?)))
            .collect()
    }

    fn agent(&self, server: &ServerRecord) -> Result<CnAgentClient<Channel>> {
        if server.agent_url.is_empty() {
            return Err(Error::invalid(
                "server_uuid",
                format!("server {} has no cn-agent registered", server.uuid),
            ));
        }
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match agents.get(&server.agent_url) {
            Some(c) => c.clone(),
            None => {
                // No channel bound: WaitTask waits on purpose, up to its own timeout.
                let channel = triton_common::channel::ChannelBuilder::new(&server.agent_url)
                    .request_timeout(None)
                    .lazy()
                    .map_err(|source| Error::AgentUnreachable {
                        server: server.uuid,
                        url: server.agent_url.clone(),
                        source,
                    })?;
                agents.insert(server.agent_url.clone(), channel.clone());
                channel
            }
        };
        Ok(CnAgentClient::new(channel))
    }

    /// The cn-agent client of a server, found through the in-memory view when it has
    /// the server (no read on the path of every task), else through the store.
    async fn agent_of(&self, uuid: Uuid) -> Result<CnAgentClient<Channel>> {
        let cached = self.fleet.lock().agent_url(uuid);
        match cached {
            Some(url) if !url.is_empty() => self.agent(&ServerRecord {
                uuid,
                agent_url: url,
                ..Default::default()
            }),
            _ => self.agent(&self.server(uuid).await?.value),
        }
    }

    fn agent_error(server: Uuid) -> impl Fn(Status) -> Error {
        move |status| Error::Agent { server, status }
    }

    /// The live reservations per server: expired ones and ones already in the server's
    /// heartbeats are dropped.
    fn live_reservations(
        servers: &[ServerRecord],
        docs: &[Versioned<ReservationDoc>],
        now_ms: u64,
    ) -> BTreeMap<Uuid, Vec<ServerVm>> {
        let mut out = BTreeMap::new();
        for doc in docs {
            let seen = servers
                .iter()
                .find(|s| s.uuid == doc.value.server_uuid)
                .map(|s| &s.vms);
            let live: Vec<ServerVm> = doc
                .value
                .reservations
                .iter()
                .filter(|r| r.expires_at_ms > now_ms)
                .filter(|r| seen.is_none_or(|vms| !vms.contains_key(&r.vm.uuid)))
                .map(|r| r.vm.clone())
                .collect();
            if !live.is_empty() {
                out.insert(doc.value.server_uuid, live);
            }
        }
        out
    }

    /// Allocation and the reservation that makes it stick: the chain runs on the
    /// in-memory view under its lock, the chosen server gets the reservation in the view
    /// at once (so concurrent allocations count it), and the answer waits until the
    /// reservation is in the store. A write that lost to another CNAPI runs the
    /// allocation again with that CNAPI's reservations read back; "no server" is only
    /// answered after a fresh read of the store.
    pub async fn allocate(
        &self,
        req: &AllocationRequest,
        ttl: Duration,
    ) -> Result<allocation::Allocation> {
        self.fleet.ensure_loaded().await?;
        let mut confirmed = false;
        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            let seed = Uuid::new_v4().as_u64_pair().0;
            let picked = {
                let mut fleet = self.fleet.lock();
                let now = unix_ms(SystemTime::now());
                let (servers, reservations) = fleet.view(now);
                match allocation::allocate(servers, reservations, req, &self.settings.alloc, seed) {
                    Ok(chosen) => {
                        let reservation = Reservation {
                            vm: req.as_server_vm(),
                            expires_at_ms: now + ttl.as_millis() as u64,
                        };
                        let generation = fleet.add_pending(chosen.server, reservation.clone());
                        Ok((chosen, reservation, generation))
                    }
                    Err(no) => Err(no),
                }
            };
            let (chosen, reservation, generation) = match picked {
                Ok(p) => p,
                Err(_) if !confirmed => {
                    self.fleet.reload().await?;
                    confirmed = true;
                    continue;
                }
                Err(no) => {
                    return Err(Error::NoAllocatableServers {
                        message: no.to_string(),
                        reasons: no.reasons.clone(),
                    });
                }
            };
            match self
                .fleet
                .reserve(chosen.server, reservation, generation)
                .await
            {
                Ok(()) => {
                    tracing::info!(vm_uuid = %req.vm.vm_uuid, server_uuid = %chosen.server, "allocated");
                    return Ok(chosen);
                }
                Err(Error::EtagConflict) if tries.again().await => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn release(&self, vm_uuid: &str, server: Option<Uuid>) -> Result<bool> {
        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            match self.fleet.release(vm_uuid, server).await {
                Err(Error::EtagConflict) if tries.again().await => continue,
                other => return other,
            }
        }
    }

    async fn heartbeat(&self, req: &pb::HeartbeatRequest) -> Result<()> {
        let uuid = parse_uuid("server_uuid", &req.server_uuid)?;
        // A malformed heartbeat is refused whole: nothing of it reaches the record.
        for (i, vm) in req.vms.iter().enumerate() {
            parse_uuid(&format!("vms[{i}].uuid"), &vm.uuid)?;
        }
        let now = SystemTime::now();
        // The view's copy first (no read); after a lost write race, the store's.
        let mut cached = self.fleet.lock().server(uuid);
        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            let Versioned { value, etag } = match cached.take() {
                Some(v) => v,
                None => {
                    let v = self.server(uuid).await?;
                    self.fleet
                        .lock()
                        .set_server(v.value.clone(), v.etag.clone());
                    v
                }
            };
            let mut next = value.clone();
            apply_heartbeat(&mut next, req, now);
            // Keep the stored heartbeat time fresh enough for the staleness rule even
            // when nothing else changed.
            let refresh_ms = self.settings.heartbeat_lifetime.as_millis() as u64 / 3;
            if !materially_changed(&value, &next)
                && next
                    .last_heartbeat_ms
                    .saturating_sub(value.last_heartbeat_ms)
                    < refresh_ms
            {
                return Ok(());
            }
            if value.status != "running" {
                tracing::info!(server_uuid = %uuid, "heartbeat: status running");
            }
            match self.store.put_server(&next, Cond::Is(etag)).await {
                Ok(etag) => {
                    self.fleet.lock().set_server(next, etag);
                    return Ok(());
                }
                Err(Error::EtagConflict) if tries.again().await => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn register(&self, req: &pb::RegisterServerRequest) -> Result<ServerRecord> {
        let sysinfo: Value = serde_json::from_str(&req.sysinfo_json)
            .map_err(|_| Error::invalid("sysinfo_json", "is not JSON"))?;
        let uuid = status::sysinfo_uuid(&sysinfo)?;
        let datacenter = if req.datacenter.is_empty() {
            self.settings.datacenter.clone()
        } else {
            req.datacenter.clone()
        };
        let mut tries = RetryPolicy::DEFAULT.start();
        loop {
            let existing = self.store.get_server(uuid).await?;
            let (old, cond) = match existing {
                Some(v) => (Some(v.value), Cond::Is(v.etag)),
                None => (None, Cond::MustNotExist),
            };
            let created = old.is_none();
            let mut record = apply_sysinfo(
                old,
                sysinfo.clone(),
                &req.agent_url,
                &datacenter,
                SystemTime::now(),
            )?;
            let auto_setup = if crate::boot::network_booted(&record.sysinfo) {
                self.settings.auto_setup_network_booted
            } else {
                self.settings.auto_setup
            };
            if created && auto_setup {
                record.setup = true;
            }
            match self.store.put_server(&record, cond).await {
                Ok(etag) => {
                    self.fleet.lock().set_server(record.clone(), etag);
                    if created {
                        tracing::info!(server_uuid = %uuid, hostname = %record.hostname, "new server registered");
                    }
                    return Ok(record);
                }
                Err(Error::EtagConflict) if tries.again().await => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

// ---------------------------------------------------------------- boot parameters

impl<S: Store> CnapiService<S> {
    /// The stored defaults; without a platform, the newest in the platforms directory.
    async fn boot_defaults(&self) -> Result<BootParamsRecord> {
        let mut defaults = self
            .store
            .get_boot_params(boot::DEFAULT_KEY)
            .await?
            .map(|v| v.value)
            .unwrap_or_default();
        if defaults.platform.is_empty()
            && let Some(dir) = &self.settings.platforms_dir
        {
            defaults.platform = boot::platforms(dir).pop().unwrap_or_default();
        }
        Ok(defaults)
    }

    /// What the node whose admin NIC has `mac` boots: its server's parameters, or the
    /// defaults when no server has that MAC.
    async fn boot_params_of_mac(&self, mac: &str) -> Result<pb::BootParams> {
        let defaults = self.boot_defaults().await?;
        // A fresh read: a node that registered on another CNAPI is found too.
        let server = self
            .store
            .list_servers()
            .await?
            .into_iter()
            .map(|v| v.value)
            .find(|s| boot::has_mac(&s.sysinfo, mac));
        let Some(server) = server else {
            return Ok(boot_params_to_pb(&defaults, "", ""));
        };
        let overrides = self
            .store
            .get_boot_params(&server.uuid.to_string())
            .await?
            .map(|v| v.value);
        let params = boot::effective(&defaults, Some((&server, overrides.as_ref())));
        Ok(boot_params_to_pb(
            &params,
            &server.uuid.to_string(),
            &server.hostname,
        ))
    }

    async fn set_boot_params(&self, req: &pb::SetBootParamsRequest) -> Result<pb::BootParams> {
        let server = if req.server_uuid == boot::DEFAULT_KEY {
            None
        } else {
            let uuid = parse_uuid("server_uuid", &req.server_uuid).map_err(|_| {
                Error::invalid(
                    "server_uuid",
                    format!("{:?} is neither a UUID nor \"default\"", req.server_uuid),
                )
            })?;
            Some(self.server(uuid).await?.value)
        };
        let change = boot::check_change(
            &req.platform,
            &req.kernel_args,
            &req.kernel_flags,
            req.replace,
        )?;
        if !change.platform.is_empty() {
            boot::check_known(self.settings.platforms_dir.as_deref(), &change.platform)?;
        }
        let key = server
            .as_ref()
            .map_or_else(|| boot::DEFAULT_KEY.to_string(), |s| s.uuid.to_string());
        let mut tries = RetryPolicy::DEFAULT.start();
        let record = loop {
            let stored = self.store.get_boot_params(&key).await?;
            let cond = stored
                .as_ref()
                .map_or(Cond::MustNotExist, |v| Cond::Is(v.etag.clone()));
            let record = boot::apply(stored.map(|v| v.value), &change);
            match self.store.put_boot_params(&key, &record, cond).await {
                Ok(_) => break record,
                Err(Error::EtagConflict) if tries.again().await => continue,
                Err(e) => return Err(e),
            }
        };
        tracing::info!(key = %key, platform = %record.platform, replace = req.replace, "boot parameters set");
        Ok(boot_params_to_pb(
            &record,
            &key,
            server.as_ref().map_or("", |s| s.hostname.as_str()),
        ))
    }
}

fn boot_params_to_pb(p: &BootParamsRecord, server_uuid: &str, hostname: &str) -> pb::BootParams {
    pb::BootParams {
        platform: p.platform.clone(),
        kernel_args: p.kernel_args.clone().into_iter().collect(),
        kernel_flags: p.kernel_flags.clone(),
        server_uuid: server_uuid.to_string(),
        hostname: hostname.to_string(),
    }
}

// ---------------------------------------------------------------- wire conversions

pub fn server_to_pb(s: &ServerRecord, etag: &str) -> pb::Server {
    copy_fields!(s => pb::Server [
        hostname, datacenter, status, transitional_status, setup, setting_up, headnode,
        reserved, reservoir, reservation_ratio, ram, memory_total_bytes,
        memory_available_bytes, memory_arc_bytes, memory_provisionable_bytes,
        disk_pool_size_bytes, disk_pool_alloc_bytes, disk_installed_images_used_bytes,
        disk_zone_quota_bytes, disk_zone_quota_used_bytes, disk_system_used_bytes, created,
        current_platform, boot_platform, rack_identifier, comments, next_reboot, agent_url,
        nic_tags,
    ] {
        uuid: s.uuid.to_string(),
        overprovision_ratios: s.overprovision_ratios.map(|r| {
            copy_fields!(r => pb::OverprovisionRatios [cpu, ram, disk] {})
        }),
        traits_json: Value::Object(s.traits.clone()).to_string(),
        sysinfo_json: s.sysinfo.to_string(),
        last_heartbeat: s.last_heartbeat.clone().unwrap_or_default(),
        last_boot: s.last_boot.clone().unwrap_or_default(),
        vms: s
            .vms
            .iter()
            .map(|(k, vm)| (k.clone(), status::vm_to_pb(vm)))
            .collect(),
        etag: etag.to_string(),
    })
}

fn ratio(field: &str, value: f64) -> Result<Option<f64>> {
    if value == 0.0 {
        Ok(None)
    } else if value.is_finite() && value > 0.0 {
        Ok(Some(value))
    } else {
        Err(Error::invalid(field, "must be a positive number"))
    }
}

pub fn allocation_request_from_pb(req: &pb::AllocateRequest) -> Result<AllocationRequest> {
    let vm = req
        .vm
        .as_ref()
        .ok_or_else(|| Error::invalid("vm", "is required"))?;
    if vm.owner_uuid.is_empty() {
        return Err(Error::invalid("vm.owner_uuid", "is required"));
    }
    let package = req
        .package
        .as_ref()
        .map(|p| -> Result<PackageRequest> {
            Ok(PackageRequest {
                uuid: parse_optional_uuid("package.uuid", &p.uuid)?,
                max_physical_memory: p.max_physical_memory,
                quota: p.quota,
                cpu_cap: (p.cpu_cap > 0).then_some(p.cpu_cap),
                traits: parse_json_object("package.traits_json", &p.traits_json)?,
                overprovision_cpu: ratio("package.overprovision_cpu", p.overprovision_cpu)?,
                overprovision_ram: ratio("package.overprovision_ram", p.overprovision_ram)?,
                overprovision_disk: ratio("package.overprovision_disk", p.overprovision_disk)?,
                alloc_server_spread: p.alloc_server_spread.clone(),
            })
        })
        .transpose()?;
    let affinity = vm
        .affinity
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let op = match r.operator.as_str() {
                "==" => AffinityOp::Equal,
                "!=" => AffinityOp::NotEqual,
                other => {
                    return Err(Error::invalid(
                        &format!("vm.affinity[{i}].operator"),
                        format!("{other:?} is not == or !="),
                    ));
                }
            };
            Ok(AffinityRule {
                key: r.key.clone(),
                op,
                value: r.value.clone(),
                is_soft: r.is_soft,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let out = AllocationRequest {
        vm: VmRequest {
            vm_uuid: parse_uuid("vm.vm_uuid", &vm.vm_uuid)?,
            owner_uuid: vm.owner_uuid.clone(),
            ram: vm.ram,
            quota: vm.quota,
            cpu_cap: (vm.cpu_cap > 0).then_some(vm.cpu_cap),
            brand: vm.brand.clone(),
            traits: parse_json_object("vm.traits_json", &vm.traits_json)?,
            locality: vm.locality.as_ref().map(|l| Locality {
                near: l.near.clone(),
                far: l.far.clone(),
                strict: l.strict,
            }),
            affinity,
            internal_metadata: vm.internal_metadata.clone().into_iter().collect(),
        },
        image: req
            .image
            .as_ref()
            .map(|i| -> Result<ImageRequest> {
                Ok(ImageRequest {
                    uuid: parse_optional_uuid("image.uuid", &i.uuid)?,
                    traits: parse_json_object("image.traits_json", &i.traits_json)?,
                    min_platform: i.min_platform.clone(),
                    max_platform: i.max_platform.clone(),
                })
            })
            .transpose()?
            .unwrap_or_default(),
        package,
        nic_tags: req.nic_tags.clone(),
        nic_tag_requirements: req
            .nic_tag_requirements
            .iter()
            .map(|a| a.tags.clone())
            .collect(),
        servers: req
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| parse_uuid(&format!("servers[{i}]"), s))
            .collect::<Result<_>>()?,
    };
    if out.ram() == 0 {
        return Err(Error::invalid(
            "vm.ram",
            "is required (or package.max_physical_memory)",
        ));
    }
    Ok(out)
}

fn keep(s: &ServerRecord, f: &pb::ListServersRequest) -> bool {
    (f.uuids.is_empty() || f.uuids.iter().any(|u| *u == s.uuid.to_string()))
        && f.setup.is_none_or(|v| v == s.setup)
        && f.headnode.is_none_or(|v| v == s.headnode)
        && f.reserved.is_none_or(|v| v == s.reserved)
        && f.reservoir.is_none_or(|v| v == s.reservoir)
        && (f.hostname.is_empty() || f.hostname == s.hostname)
        && (f.status.is_empty() || f.status == s.status)
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn st<T>(r: Result<T>) -> std::result::Result<T, Status> {
    r.map_err(|e| {
        if matches!(e, Error::Store(_) | Error::Json { .. }) {
            tracing::error!(error = %e, "storage failure");
        }
        e.to_status()
    })
}

#[tonic::async_trait]
impl<S: Store> Cnapi for CnapiService<S> {
    type WatchServersStream = crate::watch::WatchServersStream;

    async fn get_boot_params(
        &self,
        request: Request<pb::GetBootParamsRequest>,
    ) -> Reply<pb::BootParams> {
        let mac = st(boot::normalize_mac(&request.into_inner().mac))?;
        Ok(Response::new(st(self.boot_params_of_mac(&mac).await)?))
    }

    async fn set_boot_params(
        &self,
        request: Request<pb::SetBootParamsRequest>,
    ) -> Reply<pb::BootParams> {
        let req = request.into_inner();
        Ok(Response::new(st(self.set_boot_params(&req).await)?))
    }

    async fn watch_servers(
        &self,
        request: Request<pb::WatchServersRequest>,
    ) -> Reply<Self::WatchServersStream> {
        let stream = crate::watch::watch_servers(self.store.as_ref(), request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn list_servers(
        &self,
        request: Request<pb::ListServersRequest>,
    ) -> Reply<pb::ListServersResponse> {
        let f = request.into_inner();
        let limit = match f.limit {
            0 => MAX_LIMIT,
            n => n.min(MAX_LIMIT),
        } as usize;
        let mut servers = st(self.store.list_servers().await)?;
        servers.sort_by(|a, b| {
            a.value
                .hostname
                .cmp(&b.value.hostname)
                .then(a.value.uuid.cmp(&b.value.uuid))
        });
        let servers = servers
            .iter()
            .filter(|v| keep(&v.value, &f))
            .skip(f.offset as usize)
            .take(limit)
            .map(|v| server_to_pb(&v.value, &v.etag))
            .collect();
        Ok(Response::new(pb::ListServersResponse { servers }))
    }

    async fn get_server(&self, request: Request<pb::GetServerRequest>) -> Reply<pb::Server> {
        let uuid = st(parse_uuid("uuid", &request.into_inner().uuid))?;
        let v = st(self.server(uuid).await)?;
        Ok(Response::new(server_to_pb(&v.value, &v.etag)))
    }

    async fn update_server(&self, request: Request<pb::UpdateServerRequest>) -> Reply<pb::Server> {
        let req = request.into_inner();
        let uuid = st(parse_uuid("uuid", &req.uuid))?;
        let traits = st(req
            .traits_json
            .as_deref()
            .map(|t| parse_json_object("traits_json", t).map(|o| o.unwrap_or_default()))
            .transpose())?;
        if let Some(r) = req.reservation_ratio
            && !(0.0..1.0).contains(&r)
        {
            return Err(Error::invalid("reservation_ratio", "must be in [0, 1)").to_status());
        }
        let ratios = match &req.overprovision_ratios {
            Some(r) => {
                for (field, v) in [("cpu", r.cpu), ("ram", r.ram), ("disk", r.disk)] {
                    if !(v.is_finite() && v > 0.0) {
                        return Err(Error::invalid(
                            &format!("overprovision_ratios.{field}"),
                            "must be a positive number",
                        )
                        .to_status());
                    }
                }
                Some(OverprovisionRatios {
                    cpu: r.cpu,
                    ram: r.ram,
                    disk: r.disk,
                })
            }
            None => None,
        };
        let (record, etag) = st(self
            .modify(uuid, |s| {
                set_given!(req => s [
                    reserved, reservoir, reservation_ratio, rack_identifier, comments,
                    next_reboot, headnode,
                ]);
                if let Some(t) = &traits {
                    s.traits = t.clone();
                }
                if let Some(r) = ratios {
                    s.overprovision_ratios = Some(r);
                }
                crate::capacity::refresh(s);
                Ok(())
            })
            .await)?;
        Ok(Response::new(server_to_pb(&record, &etag)))
    }

    async fn server_setup(&self, request: Request<pb::ServerSetupRequest>) -> Reply<pb::Server> {
        let req = request.into_inner();
        let uuid = st(parse_uuid("uuid", &req.uuid))?;
        let (record, etag) = st(self
            .modify(uuid, |s| {
                if !req.hostname.is_empty() {
                    if s.setup && s.hostname != req.hostname {
                        return Err(Error::invalid(
                            "hostname",
                            "cannot change once the server is set up",
                        ));
                    }
                    s.hostname = req.hostname.clone();
                }
                s.setup = true;
                s.setting_up = false;
                Ok(())
            })
            .await)?;
        tracing::info!(server_uuid = %uuid, "server set up");
        Ok(Response::new(server_to_pb(&record, &etag)))
    }

    async fn server_reboot(&self, request: Request<pb::ServerRebootRequest>) -> Reply<pb::Server> {
        let uuid = st(parse_uuid("uuid", &request.into_inner().uuid))?;
        let (record, etag) = st(self
            .modify(uuid, |s| {
                s.transitional_status = "rebooting".into();
                Ok(())
            })
            .await)?;
        Ok(Response::new(server_to_pb(&record, &etag)))
    }

    async fn delete_server(
        &self,
        request: Request<pb::DeleteServerRequest>,
    ) -> Reply<pb::DeleteServerResponse> {
        let uuid = st(parse_uuid("uuid", &request.into_inner().uuid))?;
        if !st(self.store.delete_server(uuid).await)? {
            return Err(Error::ServerNotFound(uuid).to_status());
        }
        st(self.store.delete_reservations(uuid).await)?;
        self.fleet.lock().remove_server(uuid);
        tracing::info!(server_uuid = %uuid, "server deleted");
        Ok(Response::new(pb::DeleteServerResponse {}))
    }

    async fn register_server(
        &self,
        request: Request<pb::RegisterServerRequest>,
    ) -> Reply<pb::Server> {
        let record = st(self.register(&request.into_inner()).await)?;
        let v = st(self.server(record.uuid).await)?;
        Ok(Response::new(server_to_pb(&v.value, &v.etag)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Reply<pb::HeartbeatResponse> {
        st(self.heartbeat(&request.into_inner()).await)?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn allocate(&self, request: Request<pb::AllocateRequest>) -> Reply<pb::AllocateResponse> {
        let req = request.into_inner();
        let parsed = st(allocation_request_from_pb(&req))?;
        let ttl = match req.reservation_ttl_seconds {
            0 => self.settings.reservation_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        let chosen = st(self.allocate(&parsed, ttl).await)?;
        Ok(Response::new(pb::AllocateResponse {
            server_uuid: chosen.server.to_string(),
            steps: chosen
                .steps
                .into_iter()
                .map(|s| pb::AllocationStep {
                    step: s.step,
                    remaining: s.remaining.iter().map(|u| u.to_string()).collect(),
                    reasons: s.reasons.into_iter().collect(),
                })
                .collect(),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Reply<pb::ReleaseReservationResponse> {
        let req = request.into_inner();
        let server = if req.server_uuid.is_empty() {
            None
        } else {
            Some(st(parse_uuid("server_uuid", &req.server_uuid))?)
        };
        let released = st(self.release(&req.vm_uuid, server).await)?;
        Ok(Response::new(pb::ReleaseReservationResponse { released }))
    }

    async fn capacity(&self, request: Request<pb::CapacityRequest>) -> Reply<pb::CapacityResponse> {
        let req = request.into_inner();
        let wanted: Vec<Uuid> = st(req
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| parse_uuid(&format!("servers[{i}]"), s))
            .collect::<Result<_>>())?;
        let servers: Vec<ServerRecord> = st(self.store.list_servers().await)?
            .into_iter()
            .map(|v| v.value)
            .filter(|s| wanted.is_empty() || wanted.contains(&s.uuid))
            .collect();
        let docs = st(self.store.list_reservations().await)?;
        let reservations = Self::live_reservations(&servers, &docs, unix_ms(SystemTime::now()));
        let capacities = servers
            .iter()
            .filter(|s| s.setup && s.status == "running")
            .map(|s| {
                let (cpu, ram, disk) = allocation::unreserved(
                    s,
                    reservations.get(&s.uuid).map(Vec::as_slice).unwrap_or(&[]),
                    &self.settings.alloc,
                );
                pb::ServerCapacity {
                    server_uuid: s.uuid.to_string(),
                    cpu,
                    ram,
                    disk,
                }
            })
            .collect();
        Ok(Response::new(pb::CapacityResponse { capacities }))
    }

    async fn server_task(&self, request: Request<pb::ServerTaskRequest>) -> Reply<agent_pb::Task> {
        let req = request.into_inner();
        let uuid = st(parse_uuid("server_uuid", &req.server_uuid))?;
        let task = req
            .task
            .ok_or_else(|| Error::invalid("task", "is required").to_status())?;
        let mut agent = st(self.agent_of(uuid).await)?;
        let mut call = Request::new(task);
        call.set_timeout(AGENT_TIMEOUT);
        let task = st(agent
            .create_task(call)
            .await
            .map_err(Self::agent_error(uuid)))?;
        Ok(Response::new(task.into_inner()))
    }

    async fn get_task(&self, request: Request<pb::GetServerTaskRequest>) -> Reply<agent_pb::Task> {
        let req = request.into_inner();
        let uuid = st(parse_uuid("server_uuid", &req.server_uuid))?;
        let mut agent = st(self.agent_of(uuid).await)?;
        let mut call = Request::new(agent_pb::GetTaskRequest { id: req.task_id });
        call.set_timeout(AGENT_TIMEOUT);
        let task = st(agent.get_task(call).await.map_err(Self::agent_error(uuid)))?;
        Ok(Response::new(task.into_inner()))
    }

    async fn wait_task(
        &self,
        request: Request<pb::WaitServerTaskRequest>,
    ) -> Reply<agent_pb::Task> {
        let req = request.into_inner();
        let uuid = st(parse_uuid("server_uuid", &req.server_uuid))?;
        let mut agent = st(self.agent_of(uuid).await)?;
        let wait_ms = match req.timeout_ms {
            0 => MAX_WAIT_MS,
            ms => ms.min(MAX_WAIT_MS),
        };
        let mut call = Request::new(agent_pb::WaitTaskRequest {
            id: req.task_id,
            timeout_ms: wait_ms,
        });
        call.set_timeout(AGENT_TIMEOUT + Duration::from_millis(u64::from(wait_ms)));
        let task = st(agent.wait_task(call).await.map_err(Self::agent_error(uuid)))?;
        Ok(Response::new(task.into_inner()))
    }
}
