//! Provisionable memory, computed as Triton's CNAPI computes it (lib/models/server.js),
//! and the figures the Operations Portal derives from it, so the numbers match what an
//! operator sees in AdminUI:
//!
//! ```text
//! total = sysinfo["MiB of Memory"] * 2^20        (else memory_total_bytes)
//! memory_provisionable_bytes = floor(total * (1 - reservation_ratio)
//!                                    - 2^20 * Σ vm.max_physical_memory)
//! ```
//! Every VM in `vms` counts, whatever its state; the result may be negative.

use crate::model::{ServerRecord, sysinfo_u64};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The server's DRAM in bytes.
pub fn total_memory_bytes(server: &ServerRecord) -> u64 {
    sysinfo_u64(&server.sysinfo, "MiB of Memory")
        .map(|mib| mib << 20)
        .unwrap_or(server.memory_total_bytes)
}

/// `memory_provisionable_bytes` of the reference.
pub fn provisionable_memory_bytes(server: &ServerRecord) -> i64 {
    let total = total_memory_bytes(server) as f64;
    let provisioned: u64 = server.vms.values().map(|vm| vm.max_physical_memory).sum();
    (total * (1.0 - server.reservation_ratio) - MIB * provisioned as f64).floor() as i64
}

/// Recomputes the stored figure after a change of sysinfo, vms or reservation ratio.
pub fn refresh(server: &mut ServerRecord) {
    if let Some(mib) = sysinfo_u64(&server.sysinfo, "MiB of Memory") {
        server.ram = mib;
    }
    server.memory_provisionable_bytes = provisionable_memory_bytes(server);
}

/// What AdminUI shows for a server's memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortalMemory {
    /// Server list card: "Provisionable X GB" (0 when over-committed).
    pub provisionable_gb: f64,
    /// "Total Y GB".
    pub total_gb: f64,
    /// "UTILIZATION n%".
    pub utilization_percent: i64,
    /// Server page: reserved = ratio × total.
    pub reserved_bytes: f64,
    /// unreserved = (1 − ratio) × total.
    pub unreserved_bytes: f64,
    /// provisioned = unreserved − provisionable.
    pub provisioned_bytes: f64,
}

pub fn portal(server: &ServerRecord) -> PortalMemory {
    let provisionable = server.memory_provisionable_bytes as f64;
    let total = server.memory_total_bytes as f64;
    let shown = provisionable.max(0.0);
    let utilization = if total > 0.0 {
        100 - ((shown / MIB) / (total / MIB) * 100.0).round() as i64
    } else {
        0
    };
    let unreserved = (1.0 - server.reservation_ratio) * total;
    PortalMemory {
        provisionable_gb: shown / GIB,
        total_gb: total / GIB,
        utilization_percent: utilization,
        reserved_bytes: server.reservation_ratio * total,
        unreserved_bytes: unreserved,
        provisioned_bytes: unreserved - provisionable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServerVm;
    use serde_json::json;

    fn server(mib: u64, vms: &[u64]) -> ServerRecord {
        let mut s = ServerRecord {
            sysinfo: json!({"MiB of Memory": mib.to_string()}),
            memory_total_bytes: mib << 20,
            ..Default::default()
        };
        for (i, ram) in vms.iter().enumerate() {
            s.vms.insert(
                i.to_string(),
                ServerVm {
                    uuid: i.to_string(),
                    // Stopped VMs count too.
                    state: if i == 0 { "stopped" } else { "running" }.into(),
                    max_physical_memory: *ram,
                    ..Default::default()
                },
            );
        }
        refresh(&mut s);
        s
    }

    #[test]
    fn worked_example_matches_the_reference_formula() {
        // 64 GiB-class server (65514 MiB), default ratio 0.15, VMs of 4 + 4 + 1 GiB:
        // total = 65514 × 2^20 = 68 696 408 064
        // 0.85 × total = 58 391 946 854.4; minus 9216 MiB (9 663 676 416) = 48 728 270 438.4
        let s = server(65514, &[4096, 4096, 1024]);
        assert_eq!(total_memory_bytes(&s), 68_696_408_064);
        assert_eq!(s.memory_provisionable_bytes, 48_728_270_438);
        assert_eq!(s.ram, 65514);
        let p = portal(&s);
        // Ops portal: "Provisionable 45.38 GB / Total 63.98 GB", utilisation 29 %.
        assert!((p.provisionable_gb - 45.3817).abs() < 1e-3, "{p:?}");
        assert!((p.total_gb - 63.9785).abs() < 1e-3, "{p:?}");
        assert_eq!(p.utilization_percent, 29);
        assert!((p.reserved_bytes - 10_304_461_209.6).abs() < 1.0);
        assert!((p.unreserved_bytes - 58_391_946_854.4).abs() < 1.0);
        // Provisioned is what the VMs hold (9 GiB), up to the floor().
        assert!((p.provisioned_bytes - 9_663_676_416.4).abs() < 1.0);
    }

    #[test]
    fn overcommitted_server_goes_negative_and_shows_zero() {
        // 8 GiB server with an 8 GiB VM: 0.85 × 8 GiB − 8 GiB = −1.2 GiB.
        let s = server(8192, &[8192]);
        assert_eq!(s.memory_provisionable_bytes, -1_288_490_189);
        let p = portal(&s);
        assert_eq!(p.provisionable_gb, 0.0);
        assert_eq!(p.utilization_percent, 100);
    }

    #[test]
    fn ratio_and_fallback_to_memory_total_bytes() {
        let mut s = ServerRecord {
            memory_total_bytes: 16 << 30,
            reservation_ratio: 0.25,
            ..Default::default()
        };
        refresh(&mut s);
        // No sysinfo: memory_total_bytes. 0.75 × 16 GiB = 12 GiB.
        assert_eq!(s.memory_provisionable_bytes, 12 << 30);
        s.reservation_ratio = 0.0;
        refresh(&mut s);
        assert_eq!(s.memory_provisionable_bytes, 16 << 30);
    }
}
