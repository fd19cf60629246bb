//! Prometheus text format (version 0.0.4) with Triton's metric names (triton-cmon-agent's
//! collectors; the reference's catalogue, edge-services.md 2.7), from what a compute
//! node's agent reports of an instance (`InstanceUsage`) or of itself. The Linux source
//! of each value is in docs/cmon.md.

use std::fmt::Write as _;

use triton_proto::cnagent::v1 as agent;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: Kind, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn labelled(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// An instance's metrics; `now_ms` is `time_of_day` (milliseconds, as Triton's code
/// sends, though its help says seconds).
pub fn instance(u: &agent::InstanceUsage, now_ms: u64) -> String {
    use Kind::{Counter, Gauge};
    let mut o = Out(String::with_capacity(4096));
    o.one(
        "cpu_user_usage",
        Counter,
        "User CPU utilization in nanoseconds",
        u.cpu_user_ns,
    );
    o.one(
        "cpu_sys_usage",
        Counter,
        "System CPU usage in nanoseconds",
        u.cpu_sys_ns,
    );
    o.one("load_average", Gauge, "Load average", u.load_average);
    o.one(
        "mem_agg_usage",
        Gauge,
        "Aggregate memory usage in bytes",
        u.memory_bytes,
    );
    if u.memory_limit_bytes != 0 && u.memory_limit_bytes != u64::MAX {
        o.one(
            "mem_limit",
            Gauge,
            "Memory limit in bytes",
            u.memory_limit_bytes,
        );
    }
    o.one("mem_swap", Gauge, "Swap in bytes", u.swap_bytes);
    if u.swap_limit_bytes != 0 && u.swap_limit_bytes != u64::MAX {
        o.one(
            "mem_swap_limit",
            Gauge,
            "Swap limit in bytes",
            u.swap_limit_bytes,
        );
    }
    o.one(
        "mem_anon_alloc_fail",
        Counter,
        "Anonymous allocation failure count",
        u.mem_anon_alloc_fail,
    );
    let nics = |o: &mut Out, name: &str, help: &str, value: fn(&agent::NicUsage) -> u64| {
        if u.nics.is_empty() {
            return;
        }
        o.head(name, Counter, help);
        for nic in &u.nics {
            let labels = format!(
                "interface=\"{}\",nic_tag=\"{}\",network_uuid=\"{}\"",
                escape(&nic.interface),
                escape(&nic.nic_tag),
                escape(&nic.network_uuid)
            );
            o.labelled(name, &labels, value(nic));
        }
    };
    nics(
        &mut o,
        "net_agg_packets_in",
        "Aggregate inbound packets",
        |n| n.rx_packets,
    );
    nics(
        &mut o,
        "net_agg_packets_out",
        "Aggregate outbound packets",
        |n| n.tx_packets,
    );
    nics(&mut o, "net_agg_bytes_in", "Aggregate inbound bytes", |n| {
        n.rx_bytes
    });
    nics(
        &mut o,
        "net_agg_bytes_out",
        "Aggregate outbound bytes",
        |n| n.tx_bytes,
    );
    o.one(
        "tcp_failed_connection_attempt_count",
        Counter,
        "Failed TCP connection attempts",
        u.tcp_failed_connection_attempts,
    );
    o.one(
        "tcp_retransmitted_segment_count",
        Counter,
        "Retransmitted TCP segments",
        u.tcp_retransmitted_segments,
    );
    o.one(
        "tcp_active_open_count",
        Counter,
        "TCP active open connections",
        u.tcp_active_opens,
    );
    o.one(
        "tcp_passive_open_count",
        Counter,
        "TCP passive open connections",
        u.tcp_passive_opens,
    );
    o.one(
        "tcp_current_established_connections_total",
        Gauge,
        "TCP total established connections",
        u.tcp_current_established,
    );
    o.one(
        "vfs_bytes_read_count",
        Counter,
        "VFS number of bytes read",
        u.io_read_bytes,
    );
    o.one(
        "vfs_bytes_written_count",
        Counter,
        "VFS number of bytes written",
        u.io_write_bytes,
    );
    o.one(
        "vfs_read_operation_count",
        Counter,
        "VFS number of read operations",
        u.io_read_ops,
    );
    o.one(
        "vfs_write_operation_count",
        Counter,
        "VFS number of write operations",
        u.io_write_ops,
    );
    o.one(
        "zfs_used",
        Gauge,
        "zfs space used in bytes",
        u.disk_used_bytes,
    );
    if u.disk_limit_bytes != 0 {
        o.one(
            "zfs_available",
            Gauge,
            "zfs space available in bytes",
            u.disk_limit_bytes.saturating_sub(u.disk_used_bytes),
        );
        o.one("zfs_quota", Gauge, "zfs quota in bytes", u.disk_limit_bytes);
    }
    o.one(
        "time_of_day",
        Counter,
        "System time in seconds since epoch",
        now_ms,
    );
    o.0
}

/// A compute node's metrics, for operators: its instances' usage summed (what its agent
/// reports; the node's own kernel counters are not read yet).
pub fn node(all: &[agent::InstanceUsage], now_ms: u64) -> String {
    use Kind::{Counter, Gauge};
    let mut o = Out(String::with_capacity(1024));
    let sum = |f: fn(&agent::InstanceUsage) -> u64| all.iter().map(f).sum::<u64>();
    o.one(
        "instances_running",
        Gauge,
        "Instances the node's agent reports",
        all.len(),
    );
    o.one(
        "instances_cpu_user_usage",
        Counter,
        "User CPU of all instances in nanoseconds",
        sum(|u| u.cpu_user_ns),
    );
    o.one(
        "instances_cpu_sys_usage",
        Counter,
        "System CPU of all instances in nanoseconds",
        sum(|u| u.cpu_sys_ns),
    );
    o.one(
        "instances_mem_agg_usage",
        Gauge,
        "Memory of all instances in bytes",
        sum(|u| u.memory_bytes),
    );
    o.one(
        "instances_net_agg_bytes_in",
        Counter,
        "Inbound bytes of all instances",
        sum(|u| u.net_rx_bytes),
    );
    o.one(
        "instances_net_agg_bytes_out",
        Counter,
        "Outbound bytes of all instances",
        sum(|u| u.net_tx_bytes),
    );
    o.one(
        "instances_zfs_used",
        Gauge,
        "Disk of all instances in bytes",
        sum(|u| u.disk_used_bytes),
    );
    o.one(
        "time_of_day",
        Counter,
        "System time in seconds since epoch",
        now_ms,
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let u = agent::InstanceUsage {
            memory_bytes: 5,
            memory_limit_bytes: 10,
            nics: vec![agent::NicUsage {
                interface: "net0".into(),
                nic_tag: "ad\"min".into(),
                network_uuid: "n".into(),
                rx_bytes: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = instance(&u, 1234);
        assert!(text.contains("mem_agg_usage 5\n"));
        assert!(text.contains("mem_limit 10\n"));
        assert!(!text.contains("mem_swap_limit"));
        assert!(
            text.contains(
                "net_agg_bytes_in{interface=\"net0\",nic_tag=\"ad\\\"min\",network_uuid=\"n\"} 7\n"
            ),
            "{text}"
        );
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{name} has no TYPE before it");
            }
        }
    }
}
