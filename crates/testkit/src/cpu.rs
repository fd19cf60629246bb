//! CPU accounting for benchmarks: the CPU time of this process and everything below it
//! (PostgreSQL and its backends started by the test kit), and how busy the whole
//! machine was, from /proc. On a small machine shared by the client, the services and
//! PostgreSQL, throughput follows total CPU per operation, so benches print both.

use std::collections::HashMap;
use std::time::Duration;

/// CPU time of this process and its descendants, and of the whole machine.
#[derive(Clone, Copy)]
pub struct Cpu {
    ours: Duration,
    machine: (u64, u64),
}

impl Cpu {
    /// The CPU time used so far, by this process and by the whole machine.
    pub fn now() -> Cpu {
        Cpu {
            ours: tree_cpu(),
            machine: machine_jiffies(),
        }
    }

    /// CPU time used by this process tree since, and the machine's busy fraction.
    pub fn since(self) -> (Duration, f64) {
        let (busy, total) = machine_jiffies();
        let (b0, t0) = self.machine;
        let frac = (busy - b0) as f64 / (total - t0).max(1) as f64;
        (tree_cpu().saturating_sub(self.ours), frac)
    }
}

/// User + system time of this process and every process below it (PostgreSQL and its
/// backends, exited ones through their parent's counts), from /proc.
fn tree_cpu() -> Duration {
    let me = std::process::id();
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        parent.insert(pid, num(1) as u32);
        // utime, stime, cutime, cstime (fields 14-17).
        ticks.insert(pid, num(11) + num(12) + num(13) + num(14));
    }
    let mine = |mut pid: u32| {
        while pid > 1 {
            if pid == me {
                return true;
            }
            pid = parent.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    let total: u64 = ticks
        .iter()
        .filter(|(p, _)| mine(**p))
        .map(|(_, t)| t)
        .sum();
    Duration::from_secs_f64(total as f64 / 100.0)
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
