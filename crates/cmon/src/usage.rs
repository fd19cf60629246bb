//! Reading usage from the compute nodes: cn-agent's `GetUsage` at the agent URL CNAPI
//! records for the node (one channel per agent, kept), each instance's answer served
//! again for `usage_cache_ms` (1 s by default), so Prometheus servers scraping one
//! instance together cost its node one call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use triton_common::channel::ChannelBuilder;
use triton_common::status::found;
use triton_proto::cnagent::v1 as agent;
use triton_proto::cnagent::v1::cn_agent_client::CnAgentClient;
use uuid::Uuid;

use crate::error::ApiError;

/// Cached answers at once; past it the cache starts again empty.
const MAX_ENTRIES: usize = 65_536;

pub struct Usage {
    ttl: Duration,
    timeout: Duration,
    channels: Mutex<HashMap<String, CnAgentClient<Channel>>>,
    cache: Mutex<HashMap<Uuid, (Instant, Arc<agent::InstanceUsage>)>>,
}

impl Usage {
    pub fn new(ttl: Duration, timeout: Duration) -> Self {
        Usage {
            ttl,
            timeout,
            channels: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, url: &str) -> Result<CnAgentClient<Channel>, ApiError> {
        let mut channels = self.channels.lock().map_err(|_| ApiError::internal())?;
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let channel = ChannelBuilder::new(url)
            .request_timeout(Some(self.timeout))
            .lazy()
            .map_err(|e| {
                tracing::error!(url, error = %e, "bad agent URL");
                ApiError::internal()
            })?;
        let client = CnAgentClient::new(channel);
        channels.insert(url.to_string(), client.clone());
        Ok(client)
    }

    async fn call(
        &self,
        agent_url: &str,
        uuid: String,
        node: bool,
    ) -> Result<agent::GetUsageResponse, ApiError> {
        let mut client = self.client(agent_url)?;
        let call = client.get_usage(agent::GetUsageRequest { uuid, node });
        let Ok(answer) = tokio::time::timeout(self.timeout, call).await else {
            tracing::warn!(agent_url, "usage call timed out");
            return Err(ApiError::internal());
        };
        found(answer)
            .map_err(|s| {
                tracing::warn!(agent_url, error = %s, "usage call failed");
                ApiError::internal()
            })?
            .ok_or_else(ApiError::not_found)
    }

    /// `vm`'s usage from the agent at `agent_url`, or from the cache (then `true`).
    pub async fn instance(
        &self,
        agent_url: &str,
        vm: Uuid,
    ) -> Result<(Arc<agent::InstanceUsage>, bool), ApiError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, u)) = cache.get(&vm)
            && at.elapsed() < self.ttl
        {
            return Ok((u.clone(), true));
        }
        let usage = self
            .call(agent_url, vm.to_string(), false)
            .await?
            .usage
            .into_iter()
            .find(|u| u.uuid == vm.to_string())
            .map(Arc::new)
            .ok_or_else(ApiError::not_found)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(vm, (Instant::now(), usage.clone()));
        }
        Ok((usage, false))
    }

    /// The node's own usage and every instance's on it, from the agent at `agent_url`
    /// (not cached: operators only).
    pub async fn node(&self, agent_url: &str) -> Result<agent::GetUsageResponse, ApiError> {
        self.call(agent_url, String::new(), true).await
    }
}
