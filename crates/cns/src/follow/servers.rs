//! CNAPI's `WatchServers`: whether each compute node is up (reference 1.3's "CN down"
//! rule, `build::Server::up`). Heartbeats change the record every few seconds; only a
//! change of what the rule reads wakes the builder.

use triton_proto::cnapi::v1 as pb;

use crate::build::Server;

pub struct Servers;

feed!(Servers: pb::WatchServersRequest => Server, FEEDS[3], inputs.servers, keep: |s| Server {
    uuid: s.uuid.to_ascii_lowercase(),
    hostname: s.hostname.clone(),
    setup: s.setup,
    status: s.status.clone(),
    heartbeat: !s.last_heartbeat.is_empty(),
    last_boot_ms: triton_common::time::parse_rfc3339_millis(&s.last_boot)
        .and_then(|ms| u64::try_from(ms).ok()),
});
