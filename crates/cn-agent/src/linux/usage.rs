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

use crate::backend::{IoUsage, NicSpec, NicUsage, TcpUsage};

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
    for field in text.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
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

/// The `Tcp:` counters of `/proc/net/snmp`: a line of names, then one of values.
pub fn parse_snmp_tcp(text: &str) -> TcpUsage {
    let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return TcpUsage::default();
    };
    let mut tcp = TcpUsage::default();
    for (name, value) in names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
    {
        // CurrEstab is a gauge; the others count up. MaxConn is -1, so not u64.
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
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
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").ok()?;
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
    Some(NetnsCounters {
        nics,
        tcp: parse_snmp_tcp(&snmp),
    })
}

/// `key value` lines, values that are not numbers skipped.
fn pairs(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(' ')?;
        Some((k, v.trim().parse::<u64>().ok()?))
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
            }
        );
        assert_eq!(parse_snmp_tcp("Tcp: A\n"), TcpUsage::default());
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
