//! Server status from heartbeats, as pure functions over the record: registration
//! (sysinfo), heartbeats (instances, memory, disk, boot time) and the reconciler's
//! staleness rule: a server whose last heartbeat is more than 11 s old is `unknown`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use triton_common::copy_fields;
use triton_common::time::rfc3339;
use triton_proto::cnapi::v1 as pb;
use uuid::Uuid;

use crate::capacity;
use crate::error::{Error, Result};
use crate::model::{ServerRecord, ServerVm, sysinfo_nic_tags, sysinfo_u64};

/// Triton's HEARTBEAT_LIFETIME_SECONDS.
pub const HEARTBEAT_LIFETIME: Duration = Duration::from_secs(11);
/// Triton's HEARTBEAT_RECONCILIATION_PERIOD_SECONDS.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(5);

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a heartbeat at `last_ms` is too old at `now_ms`.
pub fn is_stale(now_ms: u64, last_ms: u64, lifetime: Duration) -> bool {
    now_ms.saturating_sub(last_ms) > lifetime.as_millis() as u64
}

/// The running servers the reconciler must mark `unknown`.
pub fn stale_servers<'a>(
    now_ms: u64,
    servers: impl IntoIterator<Item = &'a ServerRecord>,
    lifetime: Duration,
) -> Vec<Uuid> {
    servers
        .into_iter()
        .filter(|s| s.status == "running" && is_stale(now_ms, s.last_heartbeat_ms, lifetime))
        .map(|s| s.uuid)
        .collect()
}

/// The server UUID a sysinfo names.
pub fn sysinfo_uuid(sysinfo: &Value) -> Result<Uuid> {
    let text = sysinfo
        .get("UUID")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("sysinfo.UUID", "is required"))?;
    Uuid::parse_str(text)
        .map_err(|_| Error::invalid("sysinfo.UUID", format!("{text:?} is not a UUID")))
}

/// A registration: creates the record (not set up) or refreshes its sysinfo.
pub fn apply_sysinfo(
    existing: Option<ServerRecord>,
    sysinfo: Value,
    agent_url: &str,
    datacenter: &str,
    now: SystemTime,
) -> Result<ServerRecord> {
    let uuid = sysinfo_uuid(&sysinfo)?;
    let mut s = existing.unwrap_or_else(|| ServerRecord {
        uuid,
        created: rfc3339(now),
        ..Default::default()
    });
    let hostname = sysinfo
        .get("Hostname")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // The hostname is fixed once the server is set up.
    if !s.setup || s.hostname.is_empty() {
        s.hostname = hostname.to_string();
    }
    if !datacenter.is_empty() {
        s.datacenter = datacenter.to_string();
    } else if let Some(dc) = sysinfo.get("Datacenter Name").and_then(Value::as_str) {
        s.datacenter = dc.to_string();
    }
    if let Some(mib) = sysinfo_u64(&sysinfo, "MiB of Memory") {
        s.memory_total_bytes = mib << 20;
    }
    if let Some(platform) = sysinfo.get("Live Image").and_then(Value::as_str) {
        s.current_platform = platform.to_string();
        if s.boot_platform.is_empty() {
            s.boot_platform = platform.to_string();
        }
    }
    if let Some(boot) = sysinfo_u64(&sysinfo, "Boot Time") {
        s.boot_time = boot;
        s.last_boot = Some(rfc3339(UNIX_EPOCH + Duration::from_secs(boot)));
    }
    s.nic_tags = sysinfo_nic_tags(&sysinfo);
    s.agent_url = agent_url.to_string();
    s.sysinfo = sysinfo;
    // The agent talking to us is a heartbeat of sorts.
    s.status = "running".into();
    s.last_heartbeat = Some(rfc3339(now));
    s.last_heartbeat_ms = unix_ms(now);
    capacity::refresh(&mut s);
    Ok(s)
}

pub fn vm_from_pb(vm: &pb::ServerVm) -> ServerVm {
    copy_fields!(vm => ServerVm [
        uuid, owner_uuid, alias, brand, state, max_physical_memory, quota, last_modified,
    ] collect [tags] {
        cpu_cap: (vm.cpu_cap > 0).then_some(vm.cpu_cap),
    })
}

pub fn vm_to_pb(vm: &ServerVm) -> pb::ServerVm {
    copy_fields!(vm => pb::ServerVm [
        uuid, owner_uuid, alias, brand, state, max_physical_memory, quota, last_modified,
    ] collect [tags] {
        cpu_cap: vm.cpu_cap.unwrap_or(0),
    })
}

/// A heartbeat: the server runs, with these instances and figures.
pub fn apply_heartbeat(s: &mut ServerRecord, hb: &pb::HeartbeatRequest, now: SystemTime) {
    s.status = "running".into();
    s.last_heartbeat = Some(rfc3339(now));
    s.last_heartbeat_ms = unix_ms(now);
    s.vms = hb
        .vms
        .iter()
        .map(|vm| (vm.uuid.clone(), vm_from_pb(vm)))
        .collect();
    if let Some(m) = &hb.meminfo {
        s.memory_total_bytes = m.total_bytes;
        s.memory_available_bytes = m.available_bytes;
        s.memory_arc_bytes = m.arc_bytes;
    }
    if let Some(d) = &hb.diskinfo {
        s.disk_pool_size_bytes = d.pool_size_bytes;
        s.disk_pool_alloc_bytes = d.pool_alloc_bytes;
        s.disk_installed_images_used_bytes = d.installed_images_used_bytes;
        s.disk_zone_quota_bytes = d.zone_quota_bytes;
        s.disk_zone_quota_used_bytes = d.zone_quota_used_bytes;
        s.disk_system_used_bytes = d.system_used_bytes;
    }
    if hb.boot_time != 0 && hb.boot_time != s.boot_time {
        // A new boot: a pending reboot is done.
        if s.boot_time != 0 && s.transitional_status == "rebooting" {
            s.transitional_status.clear();
        }
        s.boot_time = hb.boot_time;
        s.last_boot = Some(rfc3339(UNIX_EPOCH + Duration::from_secs(hb.boot_time)));
    }
    capacity::refresh(s);
}

/// Whether a heartbeat changes anything besides the heartbeat time and the ever-moving
/// available-memory figure (then the write can wait; see the service).
pub fn materially_changed(before: &ServerRecord, after: &ServerRecord) -> bool {
    before.status != after.status
        || before.vms != after.vms
        || before.memory_total_bytes != after.memory_total_bytes
        || before.boot_time != after.boot_time
        || before.transitional_status != after.transitional_status
        || before.disk_zone_quota_bytes != after.disk_zone_quota_bytes
        || before.disk_pool_size_bytes != after.disk_pool_size_bytes
        // Pool use moves all the time; a change of 1 % of the pool is worth a write.
        || before.disk_pool_alloc_bytes.abs_diff(after.disk_pool_alloc_bytes)
            > after.disk_pool_size_bytes / 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sysinfo(uuid: Uuid) -> Value {
        json!({
            "UUID": uuid.to_string(),
            "Hostname": "cn1",
            "MiB of Memory": "65514",
            "Live Image": "6.1.0-18-amd64",
            "Boot Time": "1713962096",
            "Network Interfaces": {"eth0": {"MAC Address": "02:00:00:00:00:01", "NIC Names": ["admin"]}},
            "Virtual Network Interfaces": {"br-ext": {"NIC Names": ["external", "admin"]}},
        })
    }

    #[test]
    fn staleness_is_eleven_seconds() {
        let s = |status: &str, last: u64| ServerRecord {
            uuid: Uuid::new_v4(),
            status: status.into(),
            last_heartbeat_ms: last,
            ..Default::default()
        };
        let now = 1_000_000;
        let fresh = s("running", now - 11_000);
        let stale = s("running", now - 11_001);
        let already = s("unknown", 0);
        let out = stale_servers(now, [&fresh, &stale, &already], HEARTBEAT_LIFETIME);
        assert_eq!(out, vec![stale.uuid]);
    }

    #[test]
    fn registration_creates_an_unset_up_running_server() {
        let uuid = Uuid::new_v4();
        let now = UNIX_EPOCH + Duration::from_secs(1_713_962_100);
        let s = apply_sysinfo(None, sysinfo(uuid), "http://10.0.0.5:5309", "dc1", now).unwrap();
        assert_eq!(s.uuid, uuid);
        assert!(!s.setup);
        assert_eq!(s.status, "running");
        assert_eq!(s.hostname, "cn1");
        assert_eq!(s.ram, 65514);
        assert_eq!(s.memory_total_bytes, 65514 << 20);
        assert_eq!(s.memory_provisionable_bytes, 58_391_946_854);
        assert_eq!(
            s.nic_tags,
            vec!["admin".to_string(), "external".to_string()]
        );
        assert_eq!(s.last_boot.as_deref(), Some("2024-04-24T12:34:56.000Z"));
        assert_eq!(s.created, "2024-04-24T12:35:00.000Z");
        // A set-up server keeps its hostname.
        let mut set_up = s.clone();
        set_up.setup = true;
        let mut renamed = sysinfo(uuid);
        renamed["Hostname"] = json!("other");
        let again = apply_sysinfo(Some(set_up), renamed, "u", "dc1", now).unwrap();
        assert_eq!(again.hostname, "cn1");
        assert!(apply_sysinfo(None, json!({"UUID": "nope"}), "", "", now).is_err());
    }

    #[test]
    fn heartbeats_fill_vms_memory_and_clear_a_reboot() {
        let uuid = Uuid::new_v4();
        let now = SystemTime::now();
        let mut s = apply_sysinfo(None, sysinfo(uuid), "", "", now).unwrap();
        s.status = "unknown".into();
        s.transitional_status = "rebooting".into();
        let hb = pb::HeartbeatRequest {
            server_uuid: uuid.to_string(),
            vms: vec![pb::ServerVm {
                uuid: "vm1".into(),
                state: "running".into(),
                max_physical_memory: 4096,
                ..Default::default()
            }],
            meminfo: Some(pb::MemoryInfo {
                total_bytes: 65514 << 20,
                available_bytes: 1 << 30,
                arc_bytes: 0,
            }),
            diskinfo: None,
            boot_time: 1_713_962_096,
        };
        let before = s.clone();
        apply_heartbeat(&mut s, &hb, now);
        assert_eq!(s.status, "running");
        assert_eq!(s.vms["vm1"].max_physical_memory, 4096);
        assert_eq!(s.vms["vm1"].cpu_cap, None);
        assert_eq!(s.memory_provisionable_bytes, 58_391_946_854 - (4096 << 20));
        // Same boot: still rebooting.
        assert_eq!(s.transitional_status, "rebooting");
        assert!(materially_changed(&before, &s));
        let mut rebooted = hb.clone();
        rebooted.boot_time += 600;
        apply_heartbeat(&mut s, &rebooted, now);
        assert_eq!(s.transitional_status, "");
        let before_disk = s.clone();
        let mut with_disk = rebooted.clone();
        with_disk.diskinfo = Some(pb::DiskInfo {
            pool_size_bytes: 1 << 40,
            ..Default::default()
        });
        apply_heartbeat(&mut s, &with_disk, now);
        assert!(
            materially_changed(&before_disk, &s),
            "a new disk figure is worth a write"
        );
        let settled = s.clone();
        apply_heartbeat(&mut s, &with_disk, now + Duration::from_secs(5));
        assert!(!materially_changed(&settled, &s));
    }
}
