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

    /// A metric with a sample per item of `items`, labelled by `labels`; nothing at all
    /// when there are none.
    fn series<T, V: std::fmt::Display>(
        &mut self,
        (name, kind, help): (&str, Kind, &str),
        items: &[T],
        labels: impl Fn(&T) -> String,
        value: impl Fn(&T) -> V,
    ) {
        if items.is_empty() {
            return;
        }
        self.head(name, kind, help);
        for item in items {
            self.labelled(name, &labels(item), value(item));
        }
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

/// The meta-metrics Triton's cmon-agent writes before each collector's block:
/// whether its numbers were available, whether they came from a cache, and how long
/// gathering them took.
fn meta(o: &mut Out, collector: &str, available: bool, cached: bool, seconds: f64) {
    use Kind::Gauge;
    o.one(
        &format!("{collector}_metrics_available_boolean"),
        Gauge,
        &format!("Whether {collector} metrics were available, 0 = false, 1 = true"),
        u8::from(available),
    );
    o.one(
        &format!("{collector}_metrics_cached_boolean"),
        Gauge,
        &format!("Whether {collector} metrics came from cache, 0 = false, 1 = true"),
        u8::from(cached),
    );
    o.one(
        &format!("{collector}_metrics_timer_seconds"),
        Gauge,
        &format!("How long it took to gather the {collector} metrics"),
        seconds,
    );
}

/// The agent's note on `name` (available, seconds); an agent that sends none (a
/// simulated node) had the numbers at once.
fn noted(collectors: &[agent::CollectorTime], name: &str) -> (bool, f64) {
    collectors
        .iter()
        .find(|c| c.name == name)
        .map(|c| (c.available, c.seconds))
        .unwrap_or((true, 0.0))
}

/// An instance's metrics, in Triton's collector blocks each led by its meta-metrics;
/// `cached`: the agent's answer was served from CMon's cache. `now_ms` is `time_of_day`
/// (milliseconds, as Triton's code sends, though its help says seconds).
pub fn instance(u: &agent::InstanceUsage, cached: bool, now_ms: u64) -> String {
    use Kind::{Counter, Gauge};
    let mut o = Out(String::with_capacity(8192));
    let block = |o: &mut Out, name: &str| {
        let (available, seconds) = noted(&u.collectors, name);
        meta(o, name, available, cached, seconds);
        available
    };

    block(&mut o, "zone_misc");
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
    o.one(
        "cpu_wait_time",
        Counter,
        "CPU wait time in nanoseconds",
        u.cpu_wait_ns,
    );
    o.one("load_average", Gauge, "Load average", u.load_average);

    block(&mut o, "memcap");
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

    // As Triton's: an instance without a cap has no cpucap numbers (available 0).
    let (_, seconds) = noted(&u.collectors, "cpucap");
    meta(
        &mut o,
        "cpucap",
        u.cpu_cap_percent.is_some(),
        cached,
        seconds,
    );
    if let Some(cap) = u.cpu_cap_percent {
        let period_s = u.cpu_period_us as f64 / 1e6;
        let above = u.cpu_throttled_periods as f64 * period_s;
        let below = u.cpu_periods.saturating_sub(u.cpu_throttled_periods) as f64 * period_s;
        o.one(
            "cpucap_above_seconds_total",
            Counter,
            "Time (in seconds) a zone has spent over its cpu_cap",
            above,
        );
        o.one(
            "cpucap_below_seconds_total",
            Counter,
            "Time (in seconds) a zone has spent under its cpu_cap",
            below,
        );
        o.one(
            "cpucap_effective_percentage",
            Gauge,
            "Shows which cap is being used, the baseline value or the burst value",
            cap,
        );
        o.one(
            "cpucap_limit_percentage",
            Gauge,
            "The cpu_cap limit (percentage of a single CPU)",
            cap,
        );
        o.one(
            "cpucap_throttled_seconds_total",
            Counter,
            "Time (in seconds) the zone's threads were held back by its cpu_cap",
            u.cpu_throttled_ns as f64 / 1e9,
        );
    }

    block(&mut o, "link");
    let nic_labels = |nic: &agent::NicUsage| {
        format!(
            "interface=\"{}\",nic_tag=\"{}\",network_uuid=\"{}\"",
            escape(&nic.interface),
            escape(&nic.nic_tag),
            escape(&nic.network_uuid)
        )
    };
    nic_series(&mut o, &u.nics, nic_labels, |n| {
        [n.rx_packets, n.tx_packets, n.rx_bytes, n.tx_bytes]
    });

    block(&mut o, "tcp");
    for (name, kind, help, value) in [
        (
            "tcp_failed_connection_attempt_count",
            Counter,
            "Failed TCP connection attempts",
            u.tcp_failed_connection_attempts,
        ),
        (
            "tcp_retransmitted_segment_count",
            Counter,
            "Retransmitted TCP segments",
            u.tcp_retransmitted_segments,
        ),
        (
            "tcp_listen_drop_count",
            Counter,
            "TCP listen drops. Connection refused because backlog full",
            u.tcp_listen_overflows,
        ),
        (
            "tcp_listen_drop_Qzero_count",
            Counter,
            "Total # of connections refused due to half-open queue (q0) full",
            u.tcp_request_queue_full_drops,
        ),
        (
            "tcp_retransmit_timeout_drop_count",
            Counter,
            "TCP connection dropped due to retransmit timeout",
            u.tcp_timeout_aborts,
        ),
        (
            "tcp_active_open_count",
            Counter,
            "TCP active open connections",
            u.tcp_active_opens,
        ),
        (
            "tcp_passive_open_count",
            Counter,
            "TCP passive open connections",
            u.tcp_passive_opens,
        ),
        (
            "tcp_current_established_connections_total",
            Gauge,
            "TCP total established connections",
            u.tcp_current_established,
        ),
    ] {
        o.one(name, kind, help, value);
    }

    block(&mut o, "zone_vfs");
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
    if let Some(wait) = u.io_wait_ns {
        o.one(
            "vfs_wait_time_count",
            Counter,
            "VFS cumulative wait (pre-service) time",
            wait,
        );
    }

    block(&mut o, "zfs");
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

    time(&mut o, now_ms);
    o.0
}

/// The four `net_agg_*` counters of `nics`, whose `counters` are packets in and out,
/// bytes in and out.
fn nic_series<T>(
    o: &mut Out,
    nics: &[T],
    labels: impl Fn(&T) -> String,
    counters: impl Fn(&T) -> [u64; 4],
) {
    for (i, (name, help)) in [
        ("net_agg_packets_in", "Aggregate inbound packets"),
        ("net_agg_packets_out", "Aggregate outbound packets"),
        ("net_agg_bytes_in", "Aggregate inbound bytes"),
        ("net_agg_bytes_out", "Aggregate outbound bytes"),
    ]
    .into_iter()
    .enumerate()
    {
        o.series((name, Kind::Counter, help), nics, &labels, |n| {
            counters(n)[i]
        });
    }
}

/// The `time` collector: CMon's clock, never cached.
fn time(o: &mut Out, now_ms: u64) {
    meta(o, "time", true, false, 0.0);
    o.one(
        "time_of_day",
        Kind::Counter,
        "System time in seconds since epoch",
        now_ms,
    );
}

/// A compute node's metrics, for operators: the node's own numbers as Triton's
/// global-zone collectors name them (read by its agent from the host's /proc and
/// sysfs), then its instances' usage summed.
pub fn node(r: &agent::GetUsageResponse, now_ms: u64) -> String {
    use Kind::{Counter, Gauge};
    let mut o = Out(String::with_capacity(4096));
    if let Some(n) = &r.node {
        let block = |o: &mut Out, name: &str| {
            let (available, seconds) = noted(&n.collectors, name);
            meta(o, name, available, false, seconds);
        };
        block(&mut o, "cpu_util");
        for (name, help, value) in [
            (
                "cpu_idle_seconds_total",
                "CPU idle time in seconds",
                (|c: &agent::CpuTimes| c.idle_ns) as fn(&agent::CpuTimes) -> u64,
            ),
            (
                "cpu_kernel_seconds_total",
                "CPU kernel time in seconds",
                |c| c.kernel_ns,
            ),
            ("cpu_user_seconds_total", "CPU user time in seconds", |c| {
                c.user_ns
            }),
        ] {
            o.series(
                (name, Counter, help),
                &n.cpus,
                |c| format!("cpu_id=\"{}\"", c.cpu),
                |c| value(c) as f64 / 1e9,
            );
        }
        block(&mut o, "memory");
        o.one(
            "mem_agg_usage",
            Gauge,
            "Memory in use in bytes (total less available)",
            n.memory_total_bytes
                .saturating_sub(n.memory_available_bytes),
        );
        o.one("mem_limit", Gauge, "Memory in bytes", n.memory_total_bytes);
        o.one(
            "mem_swap",
            Gauge,
            "Swap in use in bytes",
            n.swap_total_bytes.saturating_sub(n.swap_free_bytes),
        );
        if n.swap_total_bytes != 0 {
            o.one("mem_swap_limit", Gauge, "Swap in bytes", n.swap_total_bytes);
        }
        block(&mut o, "loadavg");
        o.one("load_average", Gauge, "Load average", n.load_1m);
        block(&mut o, "net");
        let nic_labels = |nic: &agent::NodeNic| format!("interface=\"{}\"", escape(&nic.interface));
        nic_series(&mut o, &n.nics, nic_labels, |n| {
            [n.rx_packets, n.tx_packets, n.rx_bytes, n.tx_bytes]
        });
        o.series(
            (
                "net_rxsdrops_total",
                Counter,
                "Per software lane rx drops total",
            ),
            &n.nics,
            nic_labels,
            |n| n.rx_dropped,
        );
        block(&mut o, "zpool");
        for (name, help, value) in [
            (
                "zpool_allocated_bytes",
                "zpool list stat: pool allocated bytes",
                (|d: &agent::NodeDisk| d.used_bytes) as fn(&agent::NodeDisk) -> u64,
            ),
            (
                "zpool_size_bytes",
                "zpool list stat: pool size bytes",
                |d| d.size_bytes,
            ),
        ] {
            o.series(
                (name, Gauge, help),
                &n.disks,
                |d| format!("pool=\"{}\"", escape(&d.mount_point)),
                value,
            );
        }
    }
    let all = &r.usage;
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
    time(&mut o, now_ms);
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
        let text = instance(&u, false, 1234);
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
