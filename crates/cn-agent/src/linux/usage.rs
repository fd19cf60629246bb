//! What an instance uses beyond CPU time and memory, for CMon: the counters of its
//! cgroup (parsed here, read by [`crate::linux::cgroup::Cgroups::counters`]) and those
//! of its network namespace.
//!
//! The network namespace is read from inside: a short-lived thread joins it (setns)
//! and reads `/proc/thread-self/net/dev` (per interface, as the instance sees it, so rx
//! is what the instance received) and `/proc/thread-self/net/snmp` (the `Tcp:` line).
//! The namespace outlives the instance's processes, so a stopped instance still reports
//! what its NICs counted.
//!
//! Load: Linux keeps no load average per cgroup. The instance's load is the number of
//! its threads running or waiting for a CPU (state R) or in uninterruptible sleep (D) at
//! the moment of the call: what the kernel's load average averages, not averaged.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use triton_proto::cnagent::v1 as pb;

use crate::backend::{CollectorTime, IoUsage, NicSpec, NicUsage, TcpUsage};

/// Runs `read` (which says whether the host had a source for what it read) and notes how
/// long it took under `name` in `out`.
pub fn timed<T>(out: &mut Vec<CollectorTime>, name: &str, read: impl FnOnce() -> (T, bool)) -> T {
    let start = Instant::now();
    let (value, available) = read();
    out.push(CollectorTime {
        name: name.to_string(),
        available,
        seconds: start.elapsed().as_secs_f64(),
    });
    value
}

/// cpu.stat's throttling counters: `nr_periods`, `nr_throttled` and the throttled time
/// in ns (v2 `throttled_usec`, v1 `throttled_time` in ns).
pub fn parse_throttling(text: &str) -> (u64, u64, u64) {
    let (mut periods, mut throttled, mut ns) = (0, 0, 0);
    for (key, value) in pairs(text) {
        match key {
            "nr_periods" => periods = value,
            "nr_throttled" => throttled = value,
            "throttled_usec" => ns = value.saturating_mul(1000),
            "throttled_time" => ns = value,
            _ => {}
        }
    }
    (periods, throttled, ns)
}

/// A cap in percent of one CPU from a quota and a period (us); a quota that is not a
/// number (v2 "max") or negative (v1 -1) is no cap.
pub fn cap_percent(quota: &str, period_us: u64) -> Option<u32> {
    let quota = quota.trim().parse::<u64>().ok()?;
    u32::try_from(quota.saturating_mul(100) / period_us.max(1)).ok()
}

/// The "some" line's `total=` of a PSI file (`cpu.pressure`, `io.pressure`), in ns.
pub fn parse_pressure_some(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    total.parse::<u64>().ok().map(|us| us.saturating_mul(1000))
}

/// The run delay (ns waiting on a run queue) of a `/proc/<tid>/schedstat` line
/// ("<on cpu ns> <run delay ns> <timeslices>").
pub fn parse_schedstat_wait(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The run delay of `threads`, summed: how long they waited for a CPU.
pub fn run_queue_wait(threads: &[u32]) -> u64 {
    threads
        .iter()
        .filter_map(|tid| {
            std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
                .ok()
                .and_then(|s| parse_schedstat_wait(&s))
        })
        .fold(0, u64::saturating_add)
}

/// `user_usec` and `system_usec` of a v2 `cpu.stat`, in ns.
pub fn parse_cpu_stat(text: &str) -> (u64, u64) {
    let mut user = 0;
    let mut sys = 0;
    for (key, value) in pairs(text) {
        match key {
            "user_usec" => user = value.saturating_mul(1000),
            "system_usec" => sys = value.saturating_mul(1000),
            _ => {}
        }
    }
    (user, sys)
}

/// v1: the exact CPU time `usage_ns` (`cpuacct.usage`) split into user and system
/// time in the ratio of `cpuacct.stat`'s `user` and `system` ticks, which are sampled at
/// each timer tick, so user + system is the exact total (as v2's `cpu.stat` and the
/// kernel's own per-process times keep it). No ticks yet: all of it is user time.
pub fn split_cpu(usage_ns: u64, stat: &str) -> (u64, u64) {
    let mut user = 0u64;
    let mut sys = 0u64;
    for (key, value) in pairs(stat) {
        match key {
            "user" => user = value,
            "system" => sys = value,
            _ => {}
        }
    }
    let ticks = u128::from(user) + u128::from(sys);
    if ticks == 0 {
        return (usage_ns, 0);
    }
    let user_ns = (u128::from(usage_ns) * u128::from(user) / ticks) as u64;
    (user_ns, usage_ns - user_ns)
}

/// `max` + `oom` of a v2 `memory.events`: times the cgroup hit its memory limit.
pub fn parse_memory_events(text: &str) -> u64 {
    pairs(text)
        .filter(|(k, _)| *k == "max" || *k == "oom")
        .map(|(_, v)| v)
        .fold(0, u64::saturating_add)
}

/// `oom_kill` of a v1 `memory.oom_control`.
pub fn parse_oom_kills(text: &str) -> u64 {
    pairs(text)
        .find(|(k, _)| *k == "oom_kill")
        .map(|(_, v)| v)
        .unwrap_or(0)
}

/// A v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per device),
/// summed over devices.
pub fn parse_io_stat(text: &str) -> IoUsage {
    let mut io = IoUsage::default();
    for (key, value) in keyed(text.split_whitespace(), '=') {
        let slot = match key {
            "rbytes" => &mut io.read_bytes,
            "wbytes" => &mut io.write_bytes,
            "rios" => &mut io.read_ops,
            "wios" => &mut io.write_ops,
            _ => continue,
        };
        *slot = slot.saturating_add(value);
    }
    io
}

/// The Read and Write lines (`8:0 Read 4096`) of a v1 blkio file, summed over devices.
pub fn parse_blkio(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut write = 0u64;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => write = write.saturating_add(value),
            _ => {}
        }
    }
    (read, write)
}

/// Counters of one interface from `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// `/proc/net/dev`: two header lines, then `  eth0: <8 receive> <8 transmit>` fields.
pub fn parse_net_dev(text: &str) -> Vec<(String, DevCounters)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse::<u64>())
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            if fields.len() < 10 {
                return None;
            }
            Some((
                name.trim().to_string(),
                DevCounters {
                    rx_bytes: fields[0],
                    rx_packets: fields[1],
                    tx_bytes: fields[8],
                    tx_packets: fields[9],
                },
            ))
        })
        .collect()
}

/// The counters of a `/proc/net/snmp` or `/proc/net/netstat` section (`Tcp:`,
/// `TcpExt:`): its line of names paired with its line of values, values that are not
/// counters (MaxConn is -1) left out.
fn mib<'a>(text: &'a str, section: &str) -> Vec<(&'a str, u64)> {
    let mut lines = text
        .lines()
        .filter(|l| l.split(' ').next() == Some(section));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Vec::new();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(name, value)| Some((name, value.parse::<u64>().ok()?)))
        .collect()
}

/// The `Tcp:` counters of `/proc/net/snmp` (CurrEstab is a gauge; the others count up).
pub fn parse_snmp_tcp(text: &str) -> TcpUsage {
    let mut tcp = TcpUsage::default();
    for (name, value) in mib(text, "Tcp:") {
        match name {
            "ActiveOpens" => tcp.active_opens = value,
            "PassiveOpens" => tcp.passive_opens = value,
            "CurrEstab" => tcp.current_established = value,
            "RetransSegs" => tcp.retransmitted_segments = value,
            "AttemptFails" => tcp.failed_connection_attempts = value,
            _ => {}
        }
    }
    tcp
}

/// The `TcpExt:` drop counters of `/proc/net/netstat` into `tcp`: ListenOverflows,
/// TCPReqQFullDrop, TCPAbortOnTimeout.
pub fn parse_netstat_tcpext(text: &str, tcp: &mut TcpUsage) {
    for (name, value) in mib(text, "TcpExt:") {
        match name {
            "ListenOverflows" => tcp.listen_overflows = value,
            "TCPReqQFullDrop" => tcp.request_queue_full_drops = value,
            "TCPAbortOnTimeout" => tcp.timeout_aborts = value,
            _ => {}
        }
    }
}

/// The state letter of a `/proc/<pid>/stat` line (after the command's closing paren).
pub fn parse_stat_state(text: &str) -> Option<char> {
    let (_, rest) = text.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// How many of `threads` run, wait for a CPU or sleep uninterruptibly right now.
pub fn runnable(threads: &[u32]) -> u64 {
    threads
        .iter()
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{tid}/stat"))
                .ok()
                .and_then(|s| parse_stat_state(&s))
                .is_some_and(|c| c == 'R' || c == 'D')
        })
        .count() as u64
}

/// What an instance's network namespace counted: its NICs (named from `nics`, in
/// their order; an interface the spec does not name is left out) and TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsCounters {
    pub nics: Vec<NicUsage>,
    pub tcp: TcpUsage,
}

/// Reads the namespace named by `netns` (`/run/netns/<name>`) from a thread that joins
/// it. `None` if there is no such namespace (the instance is gone) or it cannot be
/// joined.
pub fn read_netns(netns: &Path, nics: &[NicSpec]) -> Option<NetnsCounters> {
    let file = std::fs::File::open(netns).ok()?;
    let (dev, snmp) = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on an open namespace file; it changes only this thread,
            // which ends right after the reads.
            let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            if !joined {
                return None;
            }
            let dev = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
            let mut snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").ok()?;
            // netstat's TcpExt lines follow snmp's Tcp lines; each parser finds its own.
            snmp.push_str(
                &std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default(),
            );
            Some((dev, snmp))
        })
        .join()
        .ok()
        .flatten()
    })?;
    let counted = parse_net_dev(&dev);
    let nics = nics
        .iter()
        .enumerate()
        .filter_map(|(i, nic)| {
            let name = nic.interface_name(i);
            let (_, c) = counted.iter().find(|(n, _)| *n == name)?;
            Some(NicUsage {
                interface: name,
                mac: nic.mac.clone(),
                network_uuid: nic.network_uuid.clone(),
                nic_tag: nic.nic_tag.clone(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
            })
        })
        .collect();
    let mut tcp = parse_snmp_tcp(&snmp);
    parse_netstat_tcpext(&snmp, &mut tcp);
    Some(NetnsCounters { nics, tcp })
}

/// The node's own usage from the host's /proc and sysfs (what Triton's cmon-agent
/// reads for the global zone), each part timed as a collector.
pub fn read_node() -> pb::NodeUsage {
    let mut collectors = Vec::new();
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let cpus = timed(&mut collectors, "cpu_util", || {
        let stat = text("/proc/stat");
        let ok = stat.is_some();
        (parse_proc_stat(&stat.unwrap_or_default(), tick_ns()), ok)
    });
    let mem = timed(&mut collectors, "memory", || {
        let info = text("/proc/meminfo");
        let ok = info.is_some();
        (parse_meminfo(&info.unwrap_or_default()), ok)
    });
    let load = timed(&mut collectors, "loadavg", || match text("/proc/loadavg") {
        Some(t) => (parse_loadavg(&t), true),
        None => ([0.0; 3], false),
    });
    let nics = timed(&mut collectors, "net", || {
        let dev = text("/proc/net/dev");
        let ok = dev.is_some();
        (node_nics(&dev.unwrap_or_default()), ok)
    });
    let disks = timed(&mut collectors, "zpool", || {
        let mounts = text("/proc/self/mountinfo");
        let ok = mounts.is_some();
        (node_disks(&mounts.unwrap_or_default()), ok)
    });
    pb::NodeUsage {
        cpus,
        memory_total_bytes: mem.total,
        memory_available_bytes: mem.available,
        swap_total_bytes: mem.swap_total,
        swap_free_bytes: mem.swap_free,
        load_1m: load[0],
        load_5m: load[1],
        load_15m: load[2],
        nics,
        disks,
        collectors: collectors.into_iter().map(collector_pb).collect(),
    }
}

/// A collector's note as the agent's API sends it.
pub fn collector_pb(c: CollectorTime) -> pb::CollectorTime {
    pb::CollectorTime {
        name: c.name,
        available: c.available,
        seconds: c.seconds,
    }
}

/// Nanoseconds in one clock tick of /proc/stat (USER_HZ).
fn tick_ns() -> u64 {
    // SAFETY: sysconf(3) reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

/// The `cpuN` lines of /proc/stat (ticks of `tick_ns`): user + nice as user, system +
/// irq + softirq as kernel, idle + iowait as idle.
pub fn parse_proc_stat(text: &str, tick_ns: u64) -> Vec<pb::CpuTimes> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse::<u32>().ok()?;
            let t: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
            let at = |i: usize| t.get(i).copied().unwrap_or(0).saturating_mul(tick_ns);
            Some(pb::CpuTimes {
                cpu,
                user_ns: at(0).saturating_add(at(1)),
                kernel_ns: at(2).saturating_add(at(5)).saturating_add(at(6)),
                idle_ns: at(3).saturating_add(at(4)),
            })
        })
        .collect()
}

/// /proc/meminfo's totals, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// MemTotal, MemAvailable, SwapTotal and SwapFree of /proc/meminfo ("kB" lines).
pub fn parse_meminfo(text: &str) -> MemInfo {
    let bytes = |name: &str| {
        keyed(text.lines(), ':')
            .find(|(key, _)| *key == name)
            .map_or(0, |(_, kib)| kib.saturating_mul(1024))
    };
    MemInfo {
        total: bytes("MemTotal"),
        available: bytes("MemAvailable"),
        swap_total: bytes("SwapTotal"),
        swap_free: bytes("SwapFree"),
    }
}

/// The three load averages of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

/// The node's own NICs in /proc/net/dev: physical ones (`/sys/class/net/<if>/device`)
/// and bridges (`.../bridge`), not the instances' veths, tunnels or lo.
fn node_nics(dev: &str) -> Vec<pb::NodeNic> {
    parse_net_dev_drops(dev)
        .into_iter()
        .filter(|(name, _, _)| {
            let sys = Path::new("/sys/class/net").join(name);
            sys.join("device").exists() || sys.join("bridge").exists()
        })
        .map(|(interface, c, rx_dropped)| pb::NodeNic {
            interface,
            rx_bytes: c.rx_bytes,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            tx_packets: c.tx_packets,
            rx_dropped,
        })
        .collect()
}

/// /proc/net/dev's counters with each interface's receive drops (the fourth field).
pub fn parse_net_dev_drops(text: &str) -> Vec<(String, DevCounters, u64)> {
    parse_net_dev(text)
        .into_iter()
        .map(|(name, c)| {
            let drops = text
                .lines()
                .find_map(|l| {
                    let (n, rest) = l.split_once(':')?;
                    (n.trim() == name).then(|| rest.split_whitespace().nth(3))?
                })
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            (name, c, drops)
        })
        .collect()
}

/// Mount points of file systems on block devices (`/dev/...`, not loop devices, which
/// back the instances' own disks), once per device, from /proc/self/mountinfo.
pub fn block_mounts(mountinfo: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let source = fields.get(dash + 2)?;
            let (device, root, mount_point) = (fields.get(2)?, fields.get(3)?, fields.get(4)?);
            (source.starts_with("/dev/")
                && !source.starts_with("/dev/loop")
                && *root == "/"
                && seen.insert(device.to_string()))
            .then(|| super::disk::unescape(mount_point))
        })
        .collect()
}

fn node_disks(mountinfo: &str) -> Vec<pb::NodeDisk> {
    block_mounts(mountinfo)
        .into_iter()
        .filter_map(|mount_point| {
            let c = std::ffi::CString::new(mount_point.as_bytes()).ok()?;
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: statvfs(3) on a NUL-terminated path into a zeroed struct.
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
                return None;
            }
            let frsize = st.f_frsize as u64;
            let size = (st.f_blocks as u64).saturating_mul(frsize);
            let free = (st.f_bfree as u64).saturating_mul(frsize);
            Some(pb::NodeDisk {
                mount_point,
                size_bytes: size,
                used_bytes: size.saturating_sub(free),
            })
        })
        .collect()
}

/// `key value` lines, values that are not numbers skipped.
fn pairs(text: &str) -> impl Iterator<Item = (&str, u64)> {
    keyed(text.lines(), ' ')
}

/// `key<sep>value` items, the value the first word after `sep` (`MemTotal: 16 kB` is
/// 16); items without `sep` or whose value is not a number are skipped.
fn keyed<'a>(
    items: impl Iterator<Item = &'a str>,
    sep: char,
) -> impl Iterator<Item = (&'a str, u64)> {
    items.filter_map(move |item| {
        let (key, rest) = item.split_once(sep)?;
        Some((key, rest.split_whitespace().next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_gives_user_and_system_in_ns() {
        let text = "usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat(text), (2_000_000, 1_500_000));
        assert_eq!(parse_cpu_stat(""), (0, 0));
    }

    #[test]
    fn v1_cpu_time_splits_as_the_ticks() {
        assert_eq!(split_cpu(1000, "user 3\nsystem 1\n"), (750, 250));
        assert_eq!(split_cpu(1000, "user 0\nsystem 0\n"), (1000, 0));
        assert_eq!(split_cpu(u64::MAX, "user 1\nsystem 1\n").0, u64::MAX / 2);
    }

    #[test]
    fn memory_events_add_max_and_oom() {
        let text = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_memory_events(text), 9);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kills(v1), 3);
    }

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n\
                    253:1 rbytes=10 wbytes=20 rios=3 wios=4 dbytes=5 dios=6\n";
        assert_eq!(
            parse_io_stat(text),
            IoUsage {
                read_bytes: 110,
                write_bytes: 220,
                read_ops: 4,
                write_ops: 6,
            }
        );
    }

    #[test]
    fn blkio_sums_read_and_write_lines() {
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n\
                    7:3 Read 1\n7:3 Write 2\nTotal 12291\n";
        assert_eq!(parse_blkio(text), (4097, 8194));
    }

    #[test]
    fn net_dev_gives_each_interface() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
            eth0: 10485760  7000    0    0    0     0          0         0     2048      30    0    0    0     0       0          0\n";
        let got = parse_net_dev(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, "eth0");
        assert_eq!(
            got[1].1,
            DevCounters {
                rx_bytes: 10_485_760,
                rx_packets: 7000,
                tx_bytes: 2048,
                tx_packets: 30,
            }
        );
    }

    #[test]
    fn snmp_gives_the_tcp_line() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
            Tcp: 1 200 120000 -1 5 7 2 0 3 100 90 4 0 1 0\n\
            Udp: InDatagrams\nUdp: 0\n";
        assert_eq!(
            parse_snmp_tcp(text),
            TcpUsage {
                active_opens: 5,
                passive_opens: 7,
                current_established: 3,
                retransmitted_segments: 4,
                failed_connection_attempts: 2,
                ..Default::default()
            }
        );
        assert_eq!(parse_snmp_tcp("Tcp: A\n"), TcpUsage::default());
    }

    #[test]
    fn throttling_reads_v1_and_v2() {
        let v2 = "usage_usec 9\nnr_periods 40\nnr_throttled 30\nthrottled_usec 2500\n";
        assert_eq!(parse_throttling(v2), (40, 30, 2_500_000));
        let v1 = "nr_periods 5\nnr_throttled 2\nthrottled_time 777\nnr_bursts 0\n";
        assert_eq!(parse_throttling(v1), (5, 2, 777));
        assert_eq!(cap_percent("50000", 100_000), Some(50));
        assert_eq!(cap_percent("max", 100_000), None);
        assert_eq!(cap_percent("-1\n", 100_000), None);
        assert_eq!(cap_percent("250000\n", 100_000), Some(250));
    }

    #[test]
    fn pressure_and_schedstat() {
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n";
        assert_eq!(parse_pressure_some(psi), Some(1_234_000));
        assert_eq!(parse_pressure_some("full total=3\n"), None);
        assert_eq!(parse_schedstat_wait("103974 81711 2\n"), Some(81711));
        assert_eq!(parse_schedstat_wait("1"), None);
    }

    #[test]
    fn netstat_gives_the_drop_counters() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDrop TCPAbortOnTimeout\n\
                    TcpExt: 1 7 9 3 2\nIpExt: InNoRoutes\nIpExt: 0\n";
        let mut tcp = TcpUsage::default();
        parse_netstat_tcpext(text, &mut tcp);
        assert_eq!(
            (
                tcp.listen_overflows,
                tcp.request_queue_full_drops,
                tcp.timeout_aborts
            ),
            (7, 3, 2)
        );
    }

    #[test]
    fn node_files_parse() {
        let stat = "cpu  10 1 5 100 4 1 1 0 0 0\ncpu0 6 1 3 50 2 1 0 0 0 0\n\
                    cpu1 4 0 2 50 2 0 1 0 0 0\nintr 1 2\n";
        let cpus = parse_proc_stat(stat, 10_000_000);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].cpu, 0);
        assert_eq!(cpus[0].user_ns, 70_000_000);
        assert_eq!(cpus[0].kernel_ns, 40_000_000);
        assert_eq!(cpus[0].idle_ns, 520_000_000);
        let mem = parse_meminfo(
            "MemTotal:       2000 kB\nMemFree: 10 kB\nMemAvailable:   1500 kB\n\
             SwapTotal: 0 kB\nSwapFree: 0 kB\n",
        );
        assert_eq!((mem.total, mem.available), (2_048_000, 1_536_000));
        assert_eq!(parse_loadavg("0.50 1.25 2.00 1/99 42\n"), [0.5, 1.25, 2.0]);
        let mounts = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                      23 22 8:1 /var/x /mnt/bind rw - ext4 /dev/sda1 rw\n\
                      24 22 7:0 / /zones/a rw - xfs /dev/loop0 rw\n\
                      25 22 0:5 / /proc rw - proc proc rw\n\
                      26 22 8:2 / /data\\040x rw - xfs /dev/sda2 rw\n";
        assert_eq!(
            block_mounts(mounts),
            vec!["/".to_string(), "/data x".to_string()]
        );
    }

    #[test]
    fn this_node_reads_as_proc_says() {
        let node = read_node();
        let cpus = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        assert_eq!(node.cpus.len(), cpus);
        let mem = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap());
        assert_eq!(node.memory_total_bytes, mem.total);
        assert!(
            node.disks.iter().any(|d| d.size_bytes > 0),
            "{:?}",
            node.disks
        );
        let names: Vec<_> = node.collectors.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cpu_util", "memory", "loadavg", "net", "zpool"]);
        assert!(node.collectors.iter().all(|c| c.available));
    }

    #[test]
    fn stat_state_follows_the_last_paren() {
        assert_eq!(parse_stat_state("42 (a) b) R 1 2 3"), Some('R'));
        assert_eq!(parse_stat_state("42 (sh) S 1"), Some('S'));
        assert_eq!(parse_stat_state("garbage"), None);
    }

    #[test]
    fn this_process_namespace_reads_lo() {
        // Our own namespace, through the same thread-and-setns path.
        let got = read_netns(Path::new("/proc/self/ns/net"), &[]).expect("own netns");
        assert!(got.nics.is_empty());
    }
}
