//! The gRPC API (`triton.vmapi.v1.Vmapi`). Handlers are thin and fast: they validate,
//! read or write records, and hand state changes to the job engine. They never retry
//! and never wait on a compute node (except WaitJob, which waits on purpose).

use std::sync::Arc;
use std::time::Duration;

use moray_client::filter::Filter;
use moray_client::{EtagCondition, FindOptions, Sort, SortOrder};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use triton_proto::napi::v1::napi_client::NapiClient;
use triton_proto::napi::v1::{ListNetworksRequest, Network};
use triton_proto::vmapi::v1 as pb;
use triton_proto::vmapi::v1::vmapi_server::Vmapi;
use triton_types::value::fields_to_json;
use uuid::Uuid;

use crate::clients::{Clients, request};
use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::jobs::record::{Execution, JobRecord};
use crate::jobs::steps::not_destroyed;
use crate::jobs::{Engine, JobKind};
use crate::model::{VmRecord, VmSnapshot, snapshot_state, state};
use crate::params::{
    ActionParams, AddNicsParams, Affinity, Locality, NetworkParam, ProvisionParams,
    RemoveNicsParams, SnapshotParams, UpdateParams, VolumeParam,
};
use crate::references::{
    SYSTEM_ROLE_KEY, looked_up, networks_where, not_usable, refused, unusable, upstream,
};
use crate::store::Store;
use crate::validate::{self, Checker};
use crate::volumes::VOLUMES_KEY;
use triton_common::status::found;
use triton_common::time::now_millis;

/// Page size of ListVms and ListJobs: Triton's default and maximum.
pub const MAX_LIMIT: u32 = 1000;
/// WaitJob without a timeout waits this long; no call waits longer than the maximum.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
const MAX_WAIT: Duration = Duration::from_secs(600);

type Reply<T> = std::result::Result<Response<T>, Status>;

/// CreateVm calls resolving their references at once; more wait their turn, so a burst
/// of provisions does not flood UFDS, IMGAPI, PAPI and NAPI (and their Moray).
pub const MAX_CONCURRENT_CREATES: usize = 64;

pub struct VmapiService {
    pub create_permits: tokio::sync::Semaphore,
    pub store: Store,
    pub clients: Clients,
    pub engine: Arc<Engine>,
    pub timeouts: Timeouts,
    pub watch: crate::watch::Watch,
}

fn req_id<T>(r: &Request<T>) -> String {
    r.metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// A request that acts on one VM: the VM's uuid and the owner the caller says it has
/// (empty: any owner).
trait OnVm {
    fn uuid(&self) -> &str;
    fn owner_uuid(&self) -> &str;
}

macro_rules! on_vm {
    ($($request:ty),+) => {$(
        impl OnVm for $request {
            fn uuid(&self) -> &str {
                &self.uuid
            }
            fn owner_uuid(&self) -> &str {
                &self.owner_uuid
            }
        }
    )+};
}

on_vm!(
    pb::VmActionRequest,
    pb::UpdateVmRequest,
    pb::DeleteVmRequest,
    pb::AddNicsRequest,
    pb::RemoveNicsRequest,
    pb::SnapshotRequest
);

impl VmapiService {
    fn new_job(
        &self,
        name: JobKind,
        vm: &VmRecord,
        params: &impl serde::Serialize,
    ) -> Result<JobRecord> {
        let params = serde_json::to_value(params)
            .map_err(|e| Error::Internal(format!("job params of {name}: {e}")))?;
        Ok(JobRecord::queued(name, vm, params, &self.timeouts))
    }

    async fn load_vm(&self, uuid: &str, owner_uuid: &str) -> Result<VmRecord> {
        let mut c = Checker::default();
        let uuid = c.uuid("uuid", uuid);
        let owner = c.opt_uuid("owner_uuid", owner_uuid);
        c.finish()?;
        let uuid = uuid.unwrap_or_default();
        let vm = self
            .store
            .get_vm(&uuid)
            .await?
            .map(|v| v.value)
            .ok_or_else(|| Error::NotFound(format!("VM {uuid} does not exist")))?;
        if owner.is_some_and(|o| o != vm.owner_uuid) {
            return Err(Error::NotFound(format!("VM {uuid} does not exist")));
        }
        Ok(vm)
    }

    /// The VM, refusing destroyed VMs and those that never got a server.
    async fn actionable_vm(&self, uuid: &str, owner_uuid: &str) -> Result<VmRecord> {
        let vm = self.load_vm(uuid, owner_uuid).await?;
        not_destroyed(&vm)?;
        Ok(vm)
    }

    /// What a request to act on one VM starts with: its request id, the request, and the
    /// VM, which must exist, be the caller's and not be destroyed.
    async fn on_vm<T: OnVm>(&self, r: Request<T>) -> Result<(String, T, VmRecord)> {
        let rid = req_id(&r);
        let req = r.into_inner();
        let vm = self.actionable_vm(req.uuid(), req.owner_uuid()).await?;
        Ok((rid, req, vm))
    }

    /// A new job of kind `name` for `vm`, stored and queued.
    async fn start_job(
        &self,
        name: JobKind,
        vm: &VmRecord,
        params: &impl serde::Serialize,
    ) -> Result<pb::JobRef> {
        self.submit(self.new_job(name, vm, params)?).await
    }

    async fn submit(&self, job: JobRecord) -> Result<pb::JobRef> {
        self.store
            .put_job(&job, EtagCondition::MustNotExist)
            .await?;
        self.engine.enqueue(&job.vm_uuid, &job.uuid);
        Ok(pb::JobRef {
            vm_uuid: job.vm_uuid,
            job_uuid: job.uuid,
        })
    }

    async fn action(&self, name: JobKind, r: Request<pb::VmActionRequest>) -> Result<pb::JobRef> {
        let (rid, req, vm) = self.on_vm(r).await?;
        let verb = match name {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            _ => "reboot",
        };
        Self::changeable(&vm, verb)?;
        let already = match name {
            JobKind::Start => vm.state == state::RUNNING,
            JobKind::Stop => vm.state == state::STOPPED,
            _ => false,
        };
        if already && !req.idempotent {
            return Err(Error::State(format!(
                "cannot {verb}: VM {} is already {} (set idempotent to accept this)",
                vm.uuid, vm.state
            )));
        }
        if name == JobKind::Reboot && vm.state == state::STOPPED {
            return Err(Error::State(format!(
                "cannot reboot: VM {} is stopped",
                vm.uuid
            )));
        }
        let params = ActionParams {
            idempotent: req.idempotent,
            timeout_seconds: req.timeout_seconds,
            req_id: rid,
        };
        self.start_job(name, &vm, &params).await
    }

    // ------------------------------------------------------------ CreateVm

    async fn create(&self, r: Request<pb::CreateVmRequest>) -> Result<pb::JobRef> {
        let _permit = self
            .create_permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("shutting down".into()))?;
        let rid = req_id(&r);
        let req = r.into_inner();
        let mut c = Checker::default();
        let uuid = if req.uuid.is_empty() {
            Some(Uuid::new_v4().to_string())
        } else {
            c.opt_uuid("uuid", &req.uuid)
        };
        let owner = c.uuid("owner_uuid", &req.owner_uuid);
        validate::alias(&mut c, "alias", &req.alias);
        validate::hostname(&mut c, "hostname", &req.hostname);
        let brand = validate::brand(&mut c, &req.brand);
        let image_uuid = c.uuid("image_uuid", &req.image_uuid);
        let billing_id = c.opt_uuid("billing_id", &req.billing_id);
        if req.billing_id.is_empty() && req.ram.is_none() {
            c.add("ram", "is required without billing_id");
        }
        let ram = c.range("ram", req.ram, validate::RAM_MIN, validate::RAM_MAX, " MiB");
        let quota = c.range(
            "quota",
            req.quota,
            validate::QUOTA_MIN,
            validate::QUOTA_MAX,
            " GiB",
        );
        let cpu_cap = c.range("cpu_cap", req.cpu_cap, 0, validate::CPU_CAP_MAX, "");
        let max_lwps = c.range(
            "max_lwps",
            req.max_lwps,
            validate::MAX_LWPS_MIN,
            validate::MAX_LWPS_MAX,
            "",
        );
        let max_swap = c.range(
            "max_swap",
            req.max_swap,
            validate::MAX_SWAP_MIN,
            validate::RAM_MAX * 4,
            " MiB",
        );
        let server_uuid = c.opt_uuid("server_uuid", &req.server_uuid);
        let tags = fields_to_json(&req.tags);
        validate::tags(&mut c, "tags", &tags);
        validate::metadata(&mut c, "customer_metadata", req.customer_metadata.iter());
        validate::metadata(&mut c, "internal_metadata", req.internal_metadata.iter());
        let wanted_networks = wanted_networks(&mut c, &req.networks);
        let volumes = validate::volumes(&mut c, &brand, &req.volumes);
        if !volumes.is_empty() {
            if req.internal_metadata.contains_key(VOLUMES_KEY) {
                c.add(
                    "internal_metadata",
                    format!("{VOLUMES_KEY} is written from volumes: give one or the other"),
                );
            }
            if self.clients.volapi.is_none() {
                c.add(
                    "volumes",
                    "volumes are not available here (VMAPI has no volapi_url)",
                );
            }
        }
        if let (Some(ram), Some(swap)) = (ram, max_swap)
            && swap < ram
        {
            c.add("max_swap", format!("must be at least ram ({ram} MiB)"));
        }
        c.finish()?;
        let (uuid, owner, image_uuid) = (
            uuid.unwrap_or_default(),
            owner.unwrap_or_default(),
            image_uuid.unwrap_or_default(),
        );

        // A volume that does not exist is refused now, nothing written (the job checks
        // again that each is ready, and reserves it).
        self.check_volumes(&owner, &volumes, &rid).await?;

        // References, all looked up at once; every unusable one is named.
        let (account, image, package, networks, server) = tokio::join!(
            self.clients.check_owner(&owner, &rid),
            self.clients.resolve_image(
                &image_uuid,
                &owner,
                req.internal_metadata.contains_key(SYSTEM_ROLE_KEY),
                &rid
            ),
            self.clients
                .resolve_package(billing_id.as_deref(), &owner, &rid),
            self.resolve_networks(&wanted_networks, &owner, &rid),
            self.check_server(server_uuid.as_deref(), &rid),
        );
        let mut problems = Vec::new();
        let mut take = |r: Result<(), Vec<String>>| {
            if let Err(p) = r {
                problems.extend(p)
            }
        };
        take(account);
        take(server);
        let image = image.map_err(|p| problems.extend(p)).ok();
        let package = package.map_err(|p| problems.extend(p)).ok().flatten();
        let networks = networks.map_err(|p| problems.extend(p)).ok();
        let (Some(image), Some(networks)) = (image, networks) else {
            return Err(unusable(problems));
        };
        if !problems.is_empty() {
            return Err(unusable(problems));
        }

        let ram = ram
            .or(package.as_ref().map(|p| p.0.max_physical_memory))
            .unwrap_or(validate::RAM_MIN);
        let hostname = if !req.hostname.is_empty() {
            req.hostname.clone()
        } else if validate::is_hostname(&req.alias) {
            req.alias.clone()
        } else {
            uuid.clone()
        };
        let now = now_millis();
        let vm = VmRecord {
            uuid: uuid.clone(),
            owner_uuid: owner.clone(),
            alias: req.alias.clone(),
            brand,
            state: state::PROVISIONING.into(),
            image_uuid: image_uuid.clone(),
            billing_id: billing_id.clone().unwrap_or_default(),
            server_uuid: String::new(),
            ram,
            max_physical_memory: ram,
            max_swap: max_swap
                .or(package.as_ref().map(|p| p.1.max_swap))
                .unwrap_or((2 * ram).max(validate::MAX_SWAP_MIN)),
            quota: quota
                .or(package.as_ref().map(|p| p.0.quota / 1024))
                .unwrap_or(validate::DEFAULT_QUOTA),
            cpu_cap: cpu_cap
                .or(package.as_ref().map(|p| p.0.cpu_cap))
                .unwrap_or(0),
            max_lwps: max_lwps
                .or(package.as_ref().map(|p| u64::from(p.1.max_lwps)))
                .unwrap_or(validate::DEFAULT_MAX_LWPS),
            zfs_io_priority: package.as_ref().map(|p| p.1.zfs_io_priority).unwrap_or(100),
            nics: Vec::new(),
            resolvers: Vec::new(),
            tags,
            customer_metadata: req.customer_metadata.clone().into_iter().collect(),
            internal_metadata: req.internal_metadata.clone().into_iter().collect(),
            autoboot: req.autoboot.unwrap_or(true),
            firewall_enabled: req.firewall_enabled,
            hostname,
            create_timestamp: now,
            last_modified: now,
            destroyed: None,
            failure_reason: String::new(),
            boot_timestamp: 0,
            snapshots: Vec::new(),
            tag_pairs: Vec::new(),
            tag_keys: Vec::new(),
        };
        let params = ProvisionParams {
            networks,
            image,
            package: package.map(|p| p.0),
            server_uuid,
            locality: req.locality.as_ref().map(|l| Locality {
                near: l.near.clone(),
                far: l.far.clone(),
                strict: l.strict,
            }),
            affinity: req
                .affinity
                .iter()
                .map(|a| Affinity {
                    key: a.key.clone(),
                    operator: a.operator.clone(),
                    value: a.value.clone(),
                    is_soft: a.is_soft,
                })
                .collect(),
            volumes,
            req_id: rid,
        };
        let job = self.new_job(JobKind::Provision, &vm, &params)?;
        self.store.create_vm_with_job(&vm, &job).await?;
        tracing::info!(vm_uuid = %vm.uuid, job_uuid = %job.uuid, owner_uuid = %owner, "provision accepted");
        self.engine.enqueue(&vm.uuid, &job.uuid);
        Ok(pb::JobRef {
            vm_uuid: vm.uuid,
            job_uuid: job.uuid,
        })
    }

    /// Each volume named exists among the owner's live (creating or ready) volumes:
    /// else `VolumeNotFound` naming those that do not.
    async fn check_volumes(&self, owner: &str, volumes: &[VolumeParam], rid: &str) -> Result<()> {
        let Some(volapi) = self.clients.volapi.as_ref() else {
            return Ok(());
        };
        let mut missing: Vec<&str> = Vec::new();
        for v in volumes {
            if missing.contains(&v.name.as_str()) {
                continue;
            }
            if crate::volumes::find_live(volapi, owner, &v.name, rid)
                .await?
                .is_none()
            {
                missing.push(&v.name);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(crate::volumes::not_found(&missing))
    }

    async fn resolve_networks(
        &self,
        wanted: &[WantedNetwork<'_>],
        owner: &str,
        rid: &str,
    ) -> Result<Vec<NetworkParam>, Vec<String>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let Some(napi) = self.clients.napi.clone() else {
            return refused("networks", "networks are not available (no napi_url)");
        };
        let explicit_primary = wanted.iter().any(|w| w.3.primary == Some(true));
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for (i, id, ip, spec) in wanted {
            let field = format!("networks[{i}]");
            let (answer, key, missing) = match id {
                Some(NetRef::Uuid(u)) => {
                    let get = triton_proto::napi::v1::GetNetworkRequest { uuid: u.clone() };
                    let got = napi.clone().get_network(request(get, rid)).await;
                    (found(got), "ipv4_uuid", "network does not exist")
                }
                Some(NetRef::Name(name)) => {
                    let named = ListNetworksRequest {
                        name: Some(name.clone()),
                        ..Default::default()
                    };
                    let first = networks_where(&napi, named, rid)
                        .await
                        .map(|l| l.into_iter().next());
                    (first, "name", "no network has that name")
                }
                None => continue,
            };
            let network = match answer {
                Ok(Some(n)) => n,
                Ok(None) => {
                    problems.push(not_usable(&format!("{field}.{key}"), missing));
                    continue;
                }
                Err(s) => {
                    problems.push(upstream("napi", s));
                    continue;
                }
            };
            if !network.public && !network.owner_uuids.iter().any(|o| o == owner) {
                // NAPI's own rule also lets its operator account use any network.
                let provisionable = ListNetworksRequest {
                    provisionable_by: Some(owner.to_string()),
                    ..Default::default()
                };
                let allowed = networks_where(&napi, provisionable, rid)
                    .await
                    .is_ok_and(|l| l.iter().any(|n| n.uuid == network.uuid));
                if !allowed {
                    problems.push(not_usable(
                        &field,
                        format!("network {} is not available to owner {owner}", network.uuid),
                    ));
                    continue;
                }
            }
            if let Some(ip) = ip
                && let Err(problem) = self.check_ip(&napi, &network, &field, ip, rid).await
            {
                problems.push(problem);
                continue;
            }
            out.push(NetworkParam {
                network_uuid: network.uuid.clone(),
                ip: ip.clone(),
                primary: spec.primary.unwrap_or(!explicit_primary && out.is_empty()),
                nic_tag: network.nic_tag.clone(),
                allow_ip_spoofing: spec.allow_ip_spoofing,
                allow_mac_spoofing: spec.allow_mac_spoofing,
                allow_dhcp_spoofing: spec.allow_dhcp_spoofing,
                allow_restricted_traffic: spec.allow_restricted_traffic,
            });
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// An explicit IP on `network`, before the job: NAPI's rules for the address (inside
    /// the subnet, not its network or broadcast address), not the gateway, and free. Who
    /// holds a taken one is never said: the caller may be another tenant. NAPI checks
    /// again (and the provision range) when the job makes the NIC.
    async fn check_ip(
        &self,
        napi: &NapiClient<Channel>,
        network: &Network,
        field: &str,
        ip: &str,
        rid: &str,
    ) -> Result<(), String> {
        let field = format!("{field}.ipv4_ips[0]");
        let parsed = ip.parse::<std::net::Ipv4Addr>().ok();
        if parsed.is_some() && network.gateway.parse::<std::net::Ipv4Addr>().ok() == parsed {
            return Err(not_usable(
                &field,
                format!("{ip} is the gateway of {}", network.subnet),
            ));
        }
        let found = napi
            .clone()
            .get_ip(request(
                triton_proto::napi::v1::GetIpRequest {
                    network_uuid: network.uuid.clone(),
                    ip: ip.to_string(),
                },
                rid,
            ))
            .await;
        match found {
            Ok(r) if r.get_ref().free => Ok(()),
            Ok(_) => Err(not_usable(&field, format!("ip {ip} is already in use"))),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                let message = triton_common::status::error_message(&s);
                Err(not_usable(
                    &field,
                    message.strip_prefix("ip: ").unwrap_or(message),
                ))
            }
            Err(s) => Err(upstream("napi", s)),
        }
    }

    async fn check_server(&self, server: Option<&str>, rid: &str) -> Result<(), Vec<String>> {
        let Some(server) = server else {
            return Ok(());
        };
        let get = triton_proto::cnapi::v1::GetServerRequest {
            uuid: server.to_string(),
        };
        let found = looked_up(
            self.clients.cnapi.clone().get_server(request(get, rid)),
            "cnapi",
            "server_uuid",
            || format!("server {server} does not exist"),
        )
        .await?;
        if !found.setup {
            return refused("server_uuid", format!("server {server} is not set up"));
        }
        Ok(())
    }

    // ------------------------------------------------------------ UpdateVm / DeleteVm

    async fn update(&self, r: Request<pb::UpdateVmRequest>) -> Result<pb::JobRef> {
        let (rid, req, vm) = self.on_vm(r).await?;
        let mut c = Checker::default();
        if let Some(a) = &req.alias {
            validate::alias(&mut c, "alias", a);
        }
        let billing_id = req
            .billing_id
            .as_deref()
            .and_then(|b| c.uuid("billing_id", b));
        let mut ram = c.range("ram", req.ram, validate::RAM_MIN, validate::RAM_MAX, " MiB");
        let mut quota = c.range(
            "quota",
            req.quota,
            validate::QUOTA_MIN,
            validate::QUOTA_MAX,
            " GiB",
        );
        let mut cpu_cap = c.range("cpu_cap", req.cpu_cap, 0, validate::CPU_CAP_MAX, "");
        let mut max_lwps = c.range(
            "max_lwps",
            req.max_lwps,
            validate::MAX_LWPS_MIN,
            validate::MAX_LWPS_MAX,
            "",
        );
        let mut max_swap = c.range(
            "max_swap",
            req.max_swap,
            validate::MAX_SWAP_MIN,
            validate::RAM_MAX * 4,
            " MiB",
        );
        let set_tags = fields_to_json(&req.set_tags);
        validate::tags(&mut c, "set_tags", &set_tags);
        validate::metadata(
            &mut c,
            "set_customer_metadata",
            req.set_customer_metadata.iter(),
        );
        validate::metadata(
            &mut c,
            "set_internal_metadata",
            req.set_internal_metadata.iter(),
        );
        c.finish()?;
        if matches!(vm.state.as_str(), state::PROVISIONING | state::FAILED) {
            return Err(Error::State(format!(
                "cannot update: VM {} is {}",
                vm.uuid, vm.state
            )));
        }
        if let Some(b) = &billing_id {
            match self
                .clients
                .resolve_package(Some(b), &vm.owner_uuid, &rid)
                .await
            {
                Ok(Some((_, pkg))) => {
                    ram = ram.or(Some(pkg.max_physical_memory));
                    quota = quota.or(Some(pkg.quota / 1024));
                    cpu_cap = cpu_cap.or(pkg.cpu_cap);
                    max_lwps = max_lwps.or(Some(u64::from(pkg.max_lwps)));
                    max_swap = max_swap.or(Some(pkg.max_swap));
                }
                Ok(None) => {}
                Err(p) => return Err(Error::Validation(p)),
            }
        }
        let new_ram = ram.unwrap_or(vm.ram);
        if max_swap.unwrap_or(vm.max_swap) < new_ram {
            // Resizing up drags swap along, as Triton's package resize does.
            max_swap = Some((2 * new_ram).max(validate::MAX_SWAP_MIN));
        }
        let params = UpdateParams {
            alias: req.alias,
            billing_id,
            ram,
            quota,
            cpu_cap,
            max_lwps,
            max_swap,
            set_tags,
            remove_tags: req.remove_tags,
            replace_tags: req.replace_tags,
            set_customer_metadata: req.set_customer_metadata.into_iter().collect(),
            remove_customer_metadata: req.remove_customer_metadata,
            set_internal_metadata: req.set_internal_metadata.into_iter().collect(),
            remove_internal_metadata: req.remove_internal_metadata,
            firewall_enabled: req.firewall_enabled,
            req_id: rid,
        };
        self.start_job(JobKind::Update, &vm, &params).await
    }

    async fn delete(&self, r: Request<pb::DeleteVmRequest>) -> Result<pb::JobRef> {
        let (rid, _, vm) = self.on_vm(r).await?;
        let params = ActionParams {
            req_id: rid,
            ..Default::default()
        };
        self.start_job(JobKind::Destroy, &vm, &params).await
    }

    // ------------------------------------------------------------ AddNics / RemoveNics

    /// A VM an action or a change of NICs may touch: it has a server, and is neither
    /// provisioning nor failed.
    fn changeable(vm: &VmRecord, verb: &str) -> Result<()> {
        match vm.state.as_str() {
            state::PROVISIONING => Err(Error::State(format!(
                "cannot {verb}: VM {} is still provisioning",
                vm.uuid
            ))),
            state::FAILED => Err(Error::State(format!(
                "cannot {verb}: VM {} failed to provision ({})",
                vm.uuid, vm.failure_reason
            ))),
            _ if vm.server_uuid.is_empty() => Err(Error::Unallocated(vm.uuid.clone())),
            _ => Ok(()),
        }
    }

    async fn accept_add_nics(&self, r: Request<pb::AddNicsRequest>) -> Result<pb::JobRef> {
        let (rid, req, vm) = self.on_vm(r).await?;
        let mut c = Checker::default();
        match (req.networks.is_empty(), req.macs.is_empty()) {
            (true, true) => c.add("networks", "is required (or macs)"),
            (false, false) => c.add("macs", "give networks or macs, not both"),
            _ => {}
        }
        let wanted_networks = wanted_networks(&mut c, &req.networks);
        let vm_primary = vm.nics.iter().find(|n| n.primary);
        if let Some(p) = vm_primary {
            for (i, n) in req.networks.iter().enumerate() {
                if n.primary == Some(true) {
                    c.add(
                        &format!("networks[{i}].primary"),
                        format!("VM {} already has a primary NIC ({})", vm.uuid, p.mac),
                    );
                }
            }
        }
        let mut macs = Vec::new();
        for (i, m) in req.macs.iter().enumerate() {
            let field = format!("macs[{i}]");
            if let Some(mac) = validate::mac(&mut c, &field, m) {
                if vm.nics.iter().any(|n| n.mac == mac) {
                    c.add(&field, format!("VM {} already has NIC {mac}", vm.uuid));
                }
                macs.push(mac);
            }
        }
        c.finish()?;
        Self::changeable(&vm, "add NICs")?;

        let mut networks = match self
            .resolve_networks(&wanted_networks, &vm.owner_uuid, &rid)
            .await
        {
            Ok(n) => n,
            Err(problems) => return Err(unusable(problems)),
        };
        if vm_primary.is_some() {
            for n in &mut networks {
                n.primary = false;
            }
        }
        let mut problems = Vec::new();
        let server_tags = self
            .clients
            .cnapi
            .clone()
            .get_server(request(
                triton_proto::cnapi::v1::GetServerRequest {
                    uuid: vm.server_uuid.clone(),
                },
                &rid,
            ))
            .await
            .map_err(Error::upstream("cnapi"))?
            .into_inner()
            .nic_tags;
        for (i, n) in networks.iter().enumerate() {
            let field = format!("networks[{i}]");
            if vm.nics.iter().any(|v| v.network_uuid == n.network_uuid)
                || networks[..i]
                    .iter()
                    .any(|o| o.network_uuid == n.network_uuid)
            {
                problems.push(not_usable(
                    &field,
                    format!(
                        "VM {} already has a NIC on network {}",
                        vm.uuid, n.network_uuid
                    ),
                ));
            }
            // Fabric NICs ride the overlay, which every node carries.
            if !n.nic_tag.starts_with("sdc_overlay") && !server_tags.contains(&n.nic_tag) {
                problems.push(not_usable(
                    &field,
                    format!(
                        "server {} does not provide nic tag {} of network {}",
                        vm.server_uuid, n.nic_tag, n.network_uuid
                    ),
                ));
            }
        }
        if !macs.is_empty() {
            let Some(napi) = self.clients.napi.clone() else {
                return Err(Error::invalid(
                    "macs",
                    "NICs are not available (no napi_url)",
                ));
            };
            for (i, mac) in macs.iter().enumerate() {
                let field = format!("macs[{i}]");
                let get = triton_proto::napi::v1::GetNicRequest { mac: mac.clone() };
                let got = napi.clone().get_nic(request(get, &rid)).await;
                let Some(nic) = found(got).map_err(Error::upstream("napi"))? else {
                    return Err(Error::NotFound(format!(
                        "{field}: NIC {mac} does not exist"
                    )));
                };
                if nic.belongs_to_uuid != vm.uuid || nic.owner_uuid != vm.owner_uuid {
                    problems.push(not_usable(
                        &field,
                        format!("NIC {mac} is not reserved for VM {}", vm.uuid),
                    ));
                } else if let (true, Some(p)) = (nic.primary, vm_primary) {
                    problems.push(not_usable(
                        &field,
                        format!(
                            "NIC {mac} is primary, and VM {} already has a primary NIC ({})",
                            vm.uuid, p.mac
                        ),
                    ));
                } else if !nic.nic_tag.starts_with("sdc_overlay")
                    && !server_tags.contains(&nic.nic_tag)
                {
                    problems.push(not_usable(
                        &field,
                        format!(
                            "server {} does not provide nic tag {} of NIC {mac}",
                            vm.server_uuid, nic.nic_tag
                        ),
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::Validation(problems));
        }
        let params = AddNicsParams {
            networks,
            macs,
            req_id: rid,
        };
        self.start_job(JobKind::AddNics, &vm, &params).await
    }

    async fn accept_remove_nics(&self, r: Request<pb::RemoveNicsRequest>) -> Result<pb::JobRef> {
        let (rid, req, vm) = self.on_vm(r).await?;
        let mut c = Checker::default();
        if req.macs.is_empty() {
            c.add("macs", "is required");
        }
        let mut macs: Vec<String> = Vec::new();
        for (i, m) in req.macs.iter().enumerate() {
            if let Some(mac) = validate::mac(&mut c, &format!("macs[{i}]"), m)
                && !macs.contains(&mac)
            {
                macs.push(mac);
            }
        }
        c.finish()?;
        Self::changeable(&vm, "remove NICs")?;
        for mac in &macs {
            if !vm.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(mac)) {
                return Err(Error::NotFound(format!(
                    "macs: VM {} has no NIC {mac}",
                    vm.uuid
                )));
            }
        }
        let remaining = vm
            .nics
            .iter()
            .filter(|n| !macs.iter().any(|m| m.eq_ignore_ascii_case(&n.mac)))
            .count();
        if let Some(primary) = vm
            .nics
            .iter()
            .find(|n| n.primary && macs.iter().any(|m| m.eq_ignore_ascii_case(&n.mac)))
            && remaining > 0
        {
            return Err(Error::invalid(
                "macs",
                format!(
                    "NIC {} is the primary NIC of VM {}; it can only be removed as the VM's last NIC",
                    primary.mac, vm.uuid
                ),
            ));
        }
        let params = RemoveNicsParams { macs, req_id: rid };
        self.start_job(JobKind::RemoveNics, &vm, &params).await
    }

    // ------------------------------------------------------------ snapshots

    /// CreateSnapshot, RollbackSnapshot and DeleteSnapshot: the jobs `create_snapshot`,
    /// `rollback_snapshot` and `delete_snapshot`.
    async fn accept_snapshot(
        &self,
        job_name: JobKind,
        r: Request<pb::SnapshotRequest>,
    ) -> Result<pb::JobRef> {
        let (rid, req, vm) = self.on_vm(r).await?;
        let mut c = Checker::default();
        validate::snapshot_name(&mut c, "name", &req.name);
        c.finish()?;
        let name = req.name;
        let verb = match job_name {
            JobKind::CreateSnapshot => "snapshot",
            JobKind::RollbackSnapshot => "roll back",
            _ => "delete a snapshot of",
        };
        Self::changeable(&vm, verb)?;
        let mut params = SnapshotParams {
            name: name.clone(),
            start: req.start,
            previous_state: String::new(),
            req_id: rid,
        };
        let no_such = |vm: &VmRecord| {
            Error::NotFound(format!("name: VM {} has no snapshot {name:?}", vm.uuid))
        };
        let busy = |vm: &VmRecord, s: &VmSnapshot| {
            Error::State(format!(
                "cannot {verb}: snapshot {name:?} of VM {} is {}",
                vm.uuid, s.state
            ))
        };
        // The snapshot's state as the job starts; what to put back should the job not
        // be stored.
        let (job, before) = match job_name {
            JobKind::CreateSnapshot => {
                let job = self.new_job(job_name, &vm, &params)?;
                let created = job.created_at;
                // Recorded before the job, so a read right after the answer finds it;
                // checked under the conditional write, so of two requests for one name
                // only one passes.
                self.store
                    .update_vm(&vm.uuid, |vm| {
                        if vm
                            .snapshots
                            .iter()
                            .any(|s| s.name == name && s.state != snapshot_state::FAILED)
                        {
                            return Err(Error::invalid(
                                "name",
                                format!("VM {} already has a snapshot named {name:?}", vm.uuid),
                            ));
                        }
                        vm.snapshots.retain(|s| s.name != name);
                        vm.snapshots.push(VmSnapshot {
                            name: name.clone(),
                            state: snapshot_state::CREATING.into(),
                            created_timestamp: created,
                        });
                        Ok(true)
                    })
                    .await?;
                (job, None)
            }
            JobKind::RollbackSnapshot => {
                let s = vm
                    .snapshots
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| no_such(&vm))?;
                if s.state != snapshot_state::CREATED {
                    return Err(busy(&vm, s));
                }
                return self.start_job(job_name, &vm, &params).await;
            }
            _ => {
                let mut before = String::new();
                self.store
                    .update_vm(&vm.uuid, |vm| {
                        let Some(s) = vm.snapshots.iter().find(|s| s.name == name) else {
                            return Err(no_such(vm));
                        };
                        if s.state == snapshot_state::CREATING
                            || s.state == snapshot_state::DELETING
                        {
                            return Err(busy(vm, s));
                        }
                        before = s.state.clone();
                        if let Some(s) = vm.snapshots.iter_mut().find(|s| s.name == name) {
                            s.state = snapshot_state::DELETING.into();
                        }
                        Ok(true)
                    })
                    .await?;
                params.previous_state = before.clone();
                (self.new_job(job_name, &vm, &params)?, Some(before))
            }
        };
        match self.submit(job).await {
            Ok(job_ref) => Ok(job_ref),
            Err(e) => {
                // No job will finish what the record says is under way: undo it.
                let undone = self
                    .store
                    .update_vm(&vm.uuid, |vm| {
                        match &before {
                            None => vm.snapshots.retain(|s| s.name != name),
                            Some(state) => {
                                if let Some(s) = vm.snapshots.iter_mut().find(|s| s.name == name) {
                                    s.state = state.clone();
                                }
                            }
                        }
                        Ok(true)
                    })
                    .await;
                if let Err(undo) = undone {
                    tracing::error!(vm_uuid = %vm.uuid, snapshot = %name, error = %undo,
                        "a snapshot stays marked as in progress after its job could not be stored");
                }
                Err(e)
            }
        }
    }

    // ------------------------------------------------------------ lists

    async fn list_vms(&self, req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse> {
        let mut c = Checker::default();
        let mut parts = Vec::new();
        for (field, value) in [
            ("owner_uuid", &req.owner_uuid),
            ("server_uuid", &req.server_uuid),
            ("image_uuid", &req.image_uuid),
            ("billing_id", &req.billing_id),
        ] {
            if let Some(u) = c.opt_uuid(field, value) {
                parts.push(Filter::eq(field, u));
            }
        }
        match req.state.as_str() {
            "" => {}
            state::ACTIVE => parts.push(Filter::negate(Filter::or([
                Filter::eq("state", state::DESTROYED),
                Filter::eq("state", state::FAILED),
            ]))),
            s if state::ALL.contains(&s) => parts.push(Filter::eq("state", s)),
            s => c.add("state", format!("{s:?} is not a VM state (or \"active\")")),
        }
        if !req.alias.is_empty() {
            parts.push(Filter::glob("alias", &req.alias));
        }
        if !req.brand.is_empty() {
            parts.push(Filter::eq("brand", &req.brand));
        }
        if !req.uuids.is_empty() {
            let mut any = Vec::new();
            for (i, u) in req.uuids.iter().enumerate() {
                if let Some(u) = c.opt_uuid(&format!("uuids[{i}]"), u) {
                    any.push(Filter::eq("uuid", u));
                }
            }
            parts.push(Filter::Or(any));
        }
        for (k, v) in &req.tags {
            if k.is_empty() {
                c.add("tags", "a tag name is empty");
            } else if v == "*" {
                parts.push(Filter::eq("tag_keys", k));
            } else {
                parts.push(Filter::eq("tag_pairs", format!("{k}={v}")));
            }
        }
        if !req.query.is_empty() {
            let q = req.query.trim();
            if !q.starts_with('(') || !q.ends_with(')') {
                c.add(
                    "query",
                    "must be an LDAP filter in parentheses, e.g. (ram>=1024)",
                );
            } else {
                parts.push(Filter::Verbatim(q.to_string()));
            }
        }
        if let Some(m) = c.opt_uuid("marker", &req.marker) {
            parts.push(Filter::gt("uuid", m));
        }
        let limit = match req.limit {
            0 => MAX_LIMIT,
            l if l <= MAX_LIMIT => l,
            l => {
                c.add("limit", format!("must be 1 to {MAX_LIMIT} (got {l})"));
                MAX_LIMIT
            }
        };
        c.finish()?;
        let filter = Filter::and_else(parts, Filter::present("uuid")).to_string();
        let options = FindOptions::page("uuid", u64::from(limit));
        let vms = self.store.find_vms(&filter, &options).await?;
        Ok(pb::ListVmsResponse {
            vms: vms.iter().map(VmRecord::to_pb).collect(),
        })
    }

    async fn list_jobs(&self, req: pb::ListJobsRequest) -> Result<pb::ListJobsResponse> {
        let mut c = Checker::default();
        let mut parts = Vec::new();
        if let Some(u) = c.opt_uuid("vm_uuid", &req.vm_uuid) {
            parts.push(Filter::eq("vm_uuid", u));
        }
        if !req.execution.is_empty() {
            match Execution::parse(&req.execution) {
                Some(e) => parts.push(Filter::eq("execution", e.as_str())),
                None => c.add(
                    "execution",
                    "must be queued, running, succeeded, failed or canceled",
                ),
            }
        }
        if !req.name.is_empty() {
            if req.name.parse::<JobKind>().is_err() {
                c.add(
                    "name",
                    "must be provision, start, stop, reboot, update, destroy, add_nics, remove_nics or mark_destroyed",
                );
            } else {
                parts.push(Filter::eq("name", &req.name));
            }
        }
        if req.limit > MAX_LIMIT {
            c.add("limit", format!("must be 1 to {MAX_LIMIT}"));
        }
        c.finish()?;
        let filter = Filter::and_else(parts, Filter::present("uuid")).to_string();
        let options = FindOptions {
            limit: Some(u64::from(if req.limit == 0 {
                MAX_LIMIT
            } else {
                req.limit
            })),
            offset: u64::from(req.offset),
            no_count: true,
            sort: vec![Sort {
                attribute: "created_at".into(),
                order: SortOrder::Desc,
            }],
            ..Default::default()
        };
        let jobs = self.store.find_jobs(&filter, &options).await?;
        Ok(pb::ListJobsResponse {
            jobs: jobs.iter().map(JobRecord::to_pb).collect(),
        })
    }
}

enum NetRef {
    Uuid(String),
    Name(String),
}

/// A network a request asks for: its index in the request, the network (by uuid or
/// name; `None` when that is invalid), the address asked for, and the request's entry.
type WantedNetwork<'a> = (usize, Option<NetRef>, Option<String>, &'a pb::NetworkSpec);

/// The networks of a CreateVm or AddNics request, checked (each names a network by uuid
/// or name and asks for at most one address; at most `MAX_NETWORKS` of them, at most one
/// primary), its problems added to `c`.
fn wanted_networks<'a>(c: &mut Checker, networks: &'a [pb::NetworkSpec]) -> Vec<WantedNetwork<'a>> {
    if networks.len() > validate::MAX_NETWORKS {
        c.add(
            "networks",
            format!("at most {} networks", validate::MAX_NETWORKS),
        );
    }
    if networks.iter().filter(|n| n.primary == Some(true)).count() > 1 {
        c.add("networks", "at most one network may be primary");
    }
    let mut wanted = Vec::new();
    for (i, n) in networks.iter().enumerate() {
        let field = format!("networks[{i}]");
        let id = match (n.ipv4_uuid.is_empty(), n.name.is_empty()) {
            (true, true) => {
                c.add(&field, "needs ipv4_uuid or name");
                None
            }
            (false, _) => c
                .opt_uuid(&format!("{field}.ipv4_uuid"), &n.ipv4_uuid)
                .map(NetRef::Uuid),
            (true, false) => Some(NetRef::Name(n.name.clone())),
        };
        if n.ipv4_ips.len() > 1 {
            c.add(&format!("{field}.ipv4_ips"), "at most one address per NIC");
        }
        let ip = n
            .ipv4_ips
            .first()
            .and_then(|ip| validate::ipv4(c, &format!("{field}.ipv4_ips[0]"), ip));
        wanted.push((i, id, ip, n));
    }
    wanted
}

#[tonic::async_trait]
impl Vmapi for VmapiService {
    type WatchVmsStream = crate::watch::WatchVmsStream;

    async fn watch_vms(&self, r: Request<pb::WatchVmsRequest>) -> Reply<Self::WatchVmsStream> {
        Ok(Response::new(self.watch.watch_vms(r.into_inner()).await?))
    }

    async fn ping(&self, _: Request<pb::PingRequest>) -> Reply<pb::PingResponse> {
        self.store.ping().await?;
        Ok(Response::new(pb::PingResponse {
            status: "OK".into(),
            running_jobs: u32::try_from(self.engine.running_jobs()).unwrap_or(u32::MAX),
        }))
    }

    async fn list_vms(&self, r: Request<pb::ListVmsRequest>) -> Reply<pb::ListVmsResponse> {
        Ok(Response::new(self.list_vms(r.into_inner()).await?))
    }

    async fn get_vm(&self, r: Request<pb::GetVmRequest>) -> Reply<pb::Vm> {
        let req = r.into_inner();
        Ok(Response::new(
            self.load_vm(&req.uuid, &req.owner_uuid).await?.to_pb(),
        ))
    }

    async fn create_vm(&self, r: Request<pb::CreateVmRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.create(r).await?))
    }

    async fn start_vm(&self, r: Request<pb::VmActionRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.action(JobKind::Start, r).await?))
    }

    async fn stop_vm(&self, r: Request<pb::VmActionRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.action(JobKind::Stop, r).await?))
    }

    async fn reboot_vm(&self, r: Request<pb::VmActionRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.action(JobKind::Reboot, r).await?))
    }

    async fn update_vm(&self, r: Request<pb::UpdateVmRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.update(r).await?))
    }

    async fn delete_vm(&self, r: Request<pb::DeleteVmRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.delete(r).await?))
    }

    async fn add_nics(&self, r: Request<pb::AddNicsRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.accept_add_nics(r).await?))
    }

    async fn remove_nics(&self, r: Request<pb::RemoveNicsRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(self.accept_remove_nics(r).await?))
    }

    async fn create_snapshot(&self, r: Request<pb::SnapshotRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(
            self.accept_snapshot(JobKind::CreateSnapshot, r).await?,
        ))
    }

    async fn rollback_snapshot(&self, r: Request<pb::SnapshotRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(
            self.accept_snapshot(JobKind::RollbackSnapshot, r).await?,
        ))
    }

    async fn delete_snapshot(&self, r: Request<pb::SnapshotRequest>) -> Reply<pb::JobRef> {
        Ok(Response::new(
            self.accept_snapshot(JobKind::DeleteSnapshot, r).await?,
        ))
    }

    async fn list_jobs(&self, r: Request<pb::ListJobsRequest>) -> Reply<pb::ListJobsResponse> {
        Ok(Response::new(self.list_jobs(r.into_inner()).await?))
    }

    async fn get_job(&self, r: Request<pb::GetJobRequest>) -> Reply<pb::Job> {
        let uuid = validate::uuid("uuid", &r.get_ref().uuid)?;
        let job = self
            .store
            .get_job(&uuid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {uuid} does not exist")))?;
        Ok(Response::new(job.value.to_pb()))
    }

    async fn wait_job(&self, r: Request<pb::WaitJobRequest>) -> Reply<pb::Job> {
        let req = r.into_inner();
        let uuid = validate::uuid("uuid", &req.uuid)?;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_WAIT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_WAIT),
        };
        Ok(Response::new(
            self.engine.wait(&uuid, timeout).await?.to_pb(),
        ))
    }
}
