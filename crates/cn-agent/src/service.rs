//! The gRPC task API (`triton.cnagent.v1.CnAgent`) that CNAPI calls.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use triton_proto::cnagent::v1 as pb;
use triton_proto::cnagent::v1::cn_agent_server::CnAgent;
use uuid::Uuid;

use crate::backend::ZoneBackend;
use crate::convert::{instance_to_pb, parse_uuid, task_from_pb, task_to_pb};
use crate::sysinfo::NodeFacts;
use crate::tasks::TaskQueue;
use triton_common::status::ToStatus;

/// Longest WaitTask: a client wanting longer waits again.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most tasks ListTasks returns.
const MAX_LIST: usize = 500;

pub struct AgentService<B> {
    queue: TaskQueue<B>,
    facts: Arc<NodeFacts>,
}

impl<B: ZoneBackend> AgentService<B> {
    pub fn new(queue: TaskQueue<B>, facts: Arc<NodeFacts>) -> Self {
        AgentService { queue, facts }
    }
}

#[tonic::async_trait]
impl<B: ZoneBackend> CnAgent for AgentService<B> {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let req = request.into_inner();
        let kind = task_from_pb(&req)?;
        let req_id = if req.req_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            req.req_id
        };
        let task = self.queue.submit(&req_id, kind)?;
        Ok(Response::new(task_to_pb(&task, self.facts.uuid())))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let task = self.queue.get(&request.into_inner().id)?;
        Ok(Response::new(task_to_pb(&task, self.facts.uuid())))
    }

    async fn wait_task(
        &self,
        request: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let req = request.into_inner();
        let timeout = match req.timeout_ms {
            0 => MAX_WAIT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_WAIT),
        };
        let task = self.queue.wait(&req.id, timeout).await?;
        Ok(Response::new(task_to_pb(&task, self.facts.uuid())))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => MAX_LIST,
            n => (n as usize).min(MAX_LIST),
        };
        let server = self.facts.uuid();
        let tasks = self
            .queue
            .list(limit)
            .iter()
            .map(|t| task_to_pb(t, server))
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn get_sysinfo(
        &self,
        _: Request<pb::GetSysinfoRequest>,
    ) -> Result<Response<pb::Sysinfo>, Status> {
        let facts = self.facts.clone();
        let sysinfo = tokio::task::spawn_blocking(move || facts.sysinfo())
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::Sysinfo {
            server_uuid: self.facts.uuid().to_string(),
            sysinfo_json: sysinfo.to_string(),
        }))
    }

    async fn list_instances(
        &self,
        _: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let instances = self.queue.backend().list().await?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: instances.iter().map(instance_to_pb).collect(),
        }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let req = request.into_inner();
        let backend = self.queue.backend();
        let uuids: Vec<Uuid> = if req.uuid.is_empty() {
            backend.list().await?.iter().map(|i| i.spec.uuid).collect()
        } else {
            vec![parse_uuid("uuid", &req.uuid)?]
        };
        let mut usage = Vec::with_capacity(uuids.len());
        for uuid in uuids {
            match backend.usage(uuid).await {
                Ok(u) => usage.push(pb::InstanceUsage {
                    uuid: u.uuid.to_string(),
                    cpu_usage_ns: u.cpu_usage_ns,
                    memory_bytes: u.memory_bytes,
                    memory_limit_bytes: u.memory_limit_bytes,
                    net_rx_bytes: u.net_rx_bytes,
                    net_tx_bytes: u.net_tx_bytes,
                    processes: u.processes,
                    disk_used_bytes: u.disk_used_bytes,
                    disk_limit_bytes: u.disk_limit_bytes,
                    cpu_user_ns: u.cpu_user_ns,
                    cpu_sys_ns: u.cpu_sys_ns,
                    swap_bytes: u.swap_bytes,
                    swap_limit_bytes: u.swap_limit_bytes,
                    mem_anon_alloc_fail: u.mem_anon_alloc_fail,
                    load_average: u.load_average,
                    nics: u
                        .nics
                        .into_iter()
                        .map(|n| pb::NicUsage {
                            interface: n.interface,
                            mac: n.mac,
                            network_uuid: n.network_uuid,
                            nic_tag: n.nic_tag,
                            rx_bytes: n.rx_bytes,
                            tx_bytes: n.tx_bytes,
                            rx_packets: n.rx_packets,
                            tx_packets: n.tx_packets,
                        })
                        .collect(),
                    tcp_active_opens: u.tcp.active_opens,
                    tcp_passive_opens: u.tcp.passive_opens,
                    tcp_current_established: u.tcp.current_established,
                    tcp_retransmitted_segments: u.tcp.retransmitted_segments,
                    tcp_failed_connection_attempts: u.tcp.failed_connection_attempts,
                    io_read_bytes: u.io.read_bytes,
                    io_write_bytes: u.io.write_bytes,
                    io_read_ops: u.io.read_ops,
                    io_write_ops: u.io.write_ops,
                    cpu_wait_ns: u.cpu_wait_ns,
                    cpu_cap_percent: u.cpu_cap.percent,
                    cpu_period_us: u.cpu_cap.period_us,
                    cpu_periods: u.cpu_cap.periods,
                    cpu_throttled_periods: u.cpu_cap.throttled_periods,
                    cpu_throttled_ns: u.cpu_cap.throttled_ns,
                    tcp_listen_overflows: u.tcp.listen_overflows,
                    tcp_request_queue_full_drops: u.tcp.request_queue_full_drops,
                    tcp_timeout_aborts: u.tcp.timeout_aborts,
                    io_wait_ns: u.io_wait_ns,
                    collectors: u
                        .collectors
                        .into_iter()
                        .map(crate::linux::usage::collector_pb)
                        .collect(),
                }),
                // Destroyed between list and usage: it simply has none any more.
                Err(crate::Error::VmNotFound(_)) if req.uuid.is_empty() => {}
                Err(e) => return Err(e.to_status()),
            }
        }
        // The node's own numbers come from the host whatever the backend (a simulated
        // node reports the machine it runs on).
        let node = if req.node {
            tokio::task::spawn_blocking(crate::linux::usage::read_node)
                .await
                .ok()
        } else {
            None
        };
        Ok(Response::new(pb::GetUsageResponse { usage, node }))
    }
}
