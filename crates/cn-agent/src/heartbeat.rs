//! Registration and heartbeats to CNAPI: sysinfo once at start (and again when it
//! changes or CNAPI has forgotten the server), then every 5 s the node's memory and disk
//! and the state of each instance on it. CNAPI marks a server `unknown` 11 s after its
//! last heartbeat, so two lost heartbeats in a row are tolerated.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_common::service::chain;
use triton_proto::cnapi::v1 as cnapi;
use triton_proto::cnapi::v1::cnapi_client::CnapiClient;

use crate::backend::ZoneBackend;
use crate::sysinfo::NodeFacts;
use triton_common::time::rfc3339;

/// Triton's cn-agent heartbeat interval.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A heartbeat that takes longer than this is abandoned (the next one is due anyway).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// Sysinfo is compared with what was registered every this many heartbeats.
const SYSINFO_EVERY: u32 = 12;

pub struct Heartbeater<B> {
    pub backend: Arc<B>,
    pub facts: Arc<NodeFacts>,
    pub cnapi_url: String,
    /// How CNAPI reaches this agent's task API.
    pub agent_url: String,
    pub datacenter: String,
    pub interval: Duration,
}

impl<B: ZoneBackend> Heartbeater<B> {
    /// Beats until `shutdown`. Errors are logged and retried at the next beat.
    pub async fn run(self, shutdown: CancellationToken) {
        let channel = match ChannelBuilder::new(&self.cnapi_url)
            .connect_timeout(HEARTBEAT_TIMEOUT)
            .request_timeout(Some(HEARTBEAT_TIMEOUT))
            .lazy()
        {
            Ok(channel) => channel,
            Err(e) => {
                tracing::error!(error = %chain(&e), "bad cnapi_url; no heartbeats will be sent");
                return;
            }
        };
        let mut client = CnapiClient::new(channel);
        let mut registered: Option<String> = None;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u32 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            beats = beats.wrapping_add(1);
            if (registered.is_none() || beats.is_multiple_of(SYSINFO_EVERY))
                && let Err(e) = self.register(&mut client, &mut registered).await
            {
                tracing::warn!(error = %e, "cannot register with CNAPI");
                continue;
            }
            match self.beat(&mut client).await {
                Ok(()) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {
                    tracing::info!("CNAPI does not know this server; registering again");
                    registered = None;
                }
                Err(status) => tracing::warn!(error = %status, "heartbeat failed"),
            }
        }
    }

    async fn register(
        &self,
        client: &mut CnapiClient<Channel>,
        registered: &mut Option<String>,
    ) -> Result<(), String> {
        let facts = self.facts.clone();
        let sysinfo = tokio::task::spawn_blocking(move || facts.sysinfo())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.chain())?
            .to_string();
        if registered.as_deref() == Some(sysinfo.as_str()) {
            return Ok(());
        }
        client
            .register_server(cnapi::RegisterServerRequest {
                sysinfo_json: sysinfo.clone(),
                agent_url: self.agent_url.clone(),
                datacenter: self.datacenter.clone(),
            })
            .await
            .map_err(|s| s.to_string())?;
        tracing::info!(server_uuid = %self.facts.uuid(), "registered with CNAPI");
        *registered = Some(sysinfo);
        Ok(())
    }

    async fn beat(&self, client: &mut CnapiClient<Channel>) -> Result<(), tonic::Status> {
        let instances = self
            .backend
            .list()
            .await
            .map_err(|e| tonic::Status::internal(e.chain()))?;
        let ram: u64 = instances.iter().map(|i| i.spec.ram).sum();
        let vms = instances
            .iter()
            .map(|i| cnapi::ServerVm {
                uuid: i.spec.uuid.to_string(),
                owner_uuid: i.spec.owner_uuid.clone(),
                alias: i.spec.alias.clone(),
                brand: i.spec.brand.clone(),
                state: i.state.as_str().to_string(),
                max_physical_memory: i.spec.ram,
                quota: i.spec.quota,
                cpu_cap: i.spec.cpu_cap,
                last_modified: rfc3339(
                    std::time::UNIX_EPOCH + Duration::from_secs(i.last_modified),
                ),
                tags: i.spec.tags.clone().into_iter().collect(),
            })
            .collect();
        let mem = self.facts.meminfo(ram);
        let disk = self.facts.diskinfo();
        let zone_quota: u64 = instances.iter().map(|i| i.spec.quota << 30).sum();
        let mut zone_quota_used = 0u64;
        for i in &instances {
            // An instance destroyed meanwhile uses nothing.
            if let Ok(usage) = self.backend.usage(i.spec.uuid).await {
                zone_quota_used += usage.disk_used_bytes;
            }
        }
        client
            .heartbeat(cnapi::HeartbeatRequest {
                server_uuid: self.facts.uuid().to_string(),
                vms,
                meminfo: Some(cnapi::MemoryInfo {
                    total_bytes: mem.total_bytes,
                    available_bytes: mem.available_bytes,
                    arc_bytes: 0,
                }),
                diskinfo: Some(cnapi::DiskInfo {
                    pool_size_bytes: disk.pool_size_bytes,
                    pool_alloc_bytes: disk.pool_alloc_bytes,
                    installed_images_used_bytes: 0,
                    zone_quota_bytes: zone_quota,
                    zone_quota_used_bytes: zone_quota_used,
                    system_used_bytes: 0,
                }),
                boot_time: self.facts.boot_time(),
            })
            .await
            .map(|_| ())
    }
}
