//! Choosing a free IP in a network's provision range: the pure part of allocation.
//!
//! Correctness does not rest here: every IP in use is one Moray object keyed by
//! `<network_uuid>/<ip>` and written with "must not exist", so of two allocators that
//! pick the same address only one wins, and the loser picks again. This module only
//! decides which addresses to try: the lowest free ones first (NAPI's "lowest never used"
//! choice, so a quiet network hands out addresses in order). A [`Cursor`] per network
//! keeps the free addresses of the last scan and hands each to one of this NAPI's
//! concurrent allocators, so a burst of provisions reads the network's used addresses
//! once per [`CANDIDATES`] NICs (or [`CURSOR_TTL`]) rather than once per NIC and attempt,
//! and its allocators do not collide with each other.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How many free candidates one scan collects.
pub const CANDIDATES: usize = 256;

/// Appends to `out` the addresses in `from..=to` that are neither in `used` (sorted
/// ascending; entries outside the window are ignored) nor in `excluded`, until `out`
/// holds `want`. Returns true when `out` is full.
pub fn collect_free(
    from: u32,
    to: u32,
    used: &[u32],
    excluded: &[u32],
    want: usize,
    out: &mut Vec<u32>,
) -> bool {
    if from > to {
        return out.len() >= want;
    }
    let mut used = used.iter().copied().filter(|u| *u >= from).peekable();
    let mut ip = from;
    loop {
        if out.len() >= want {
            return true;
        }
        while used.next_if(|u| *u < ip).is_some() {}
        let taken = used.peek() == Some(&ip) || excluded.contains(&ip);
        if !taken {
            out.push(ip);
        }
        if ip == to {
            return out.len() >= want;
        }
        ip += 1;
    }
}

/// How long the free addresses of one scan are handed out before a new scan (so that
/// an address freed by another NAPI comes back into use soon).
pub const CURSOR_TTL: Duration = Duration::from_secs(1);
/// An address handed out whose write never reported back (its caller went away) is
/// forgotten after this long; the next scan then says whether it is in use.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(120);

/// The free addresses of one network as this NAPI last scanned them, handed out one by
/// one to its concurrent allocators, so that they neither re-read the network's used
/// addresses for every NIC nor all try the same lowest address. Correctness still rests
/// on the "must not exist" write of the IP record; a hint that turns out taken (another
/// NAPI took it) makes the caller [`Cursor::invalidate`] and scan again.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Free at the last scan and not handed out yet, lowest first.
    free: VecDeque<u32>,
    /// Handed out, and when: `None` while its write is in flight; `Some(n)` once
    /// written, `n` being the number of scans begun by then. A scan begun later reads
    /// it as used.
    out: HashMap<u32, (Instant, Option<u64>)>,
    scans_begun: u64,
    /// When the last scan ended; `None`: none yet, or invalidated.
    scanned_at: Option<Instant>,
    /// The range and exclusions the scan was for (a network update changes them).
    shape: (u32, u32, Vec<u32>),
}

impl Cursor {
    /// The next address to try, or `None` when a scan is due first.
    pub fn next(&mut self, now: Instant, shape: &(u32, u32, Vec<u32>)) -> Option<u32> {
        let fresh = self
            .scanned_at
            .is_some_and(|at| now.saturating_duration_since(at) < CURSOR_TTL);
        if !fresh || self.shape != *shape {
            return None;
        }
        while let Some(ip) = self.free.pop_front() {
            if let std::collections::hash_map::Entry::Vacant(e) = self.out.entry(ip) {
                e.insert((now, None));
                return Some(ip);
            }
        }
        None
    }

    /// How many free addresses a scan should collect: [`CANDIDATES`] more than are
    /// handed out. The scan reads those in flight as free (their writes are not
    /// committed), and [`Cursor::next`] skips them: with only [`CANDIDATES`], more than
    /// that many in flight (concurrent `CreateNics` calls) left none to hand out, and a
    /// network with thousands of free addresses answered `SubnetFull`.
    pub fn scan_size(&self) -> usize {
        CANDIDATES + self.out.len()
    }

    /// A scan begins; pass the number to [`Cursor::end_scan`].
    pub fn begin_scan(&mut self) -> u64 {
        self.scans_begun += 1;
        self.scans_begun
    }

    /// `free`: the free addresses the scan numbered `n` read, lowest first.
    pub fn end_scan(&mut self, n: u64, free: Vec<u32>, shape: (u32, u32, Vec<u32>), now: Instant) {
        // Written before this scan began: it read them.
        self.out.retain(|_, (at, written)| match written {
            Some(w) => *w >= n,
            None => now.saturating_duration_since(*at) < IN_FLIGHT_FOR,
        });
        self.free = free.into_iter().collect();
        self.scanned_at = Some(now);
        self.shape = shape;
    }

    /// The address's IP record is written.
    pub fn written(&mut self, ip: u32) {
        if let Some((_, w)) = self.out.get_mut(&ip) {
            *w = Some(self.scans_begun);
        }
    }

    /// The address was not used after all: it goes back, lowest first.
    pub fn give_back(&mut self, ip: u32) {
        if self.out.remove(&ip).is_some() {
            self.free.push_front(ip);
        }
    }

    /// The address was taken by someone else, or addresses were freed or reserved:
    /// scan again before the next one.
    pub fn invalidate(&mut self, taken: Option<u32>) {
        if let Some(ip) = taken {
            self.out.remove(&ip);
        }
        self.scanned_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_hands_out_each_free_address_once() {
        let shape = (1, 10, vec![]);
        let t0 = Instant::now();
        let mut c = Cursor::default();
        assert_eq!(c.next(t0, &shape), None, "no scan yet");
        let n = c.begin_scan();
        c.end_scan(n, vec![2, 3, 4], shape.clone(), t0);
        assert_eq!(c.next(t0, &shape), Some(2));
        assert_eq!(c.next(t0, &shape), Some(3));
        c.written(2);
        c.give_back(3);
        assert_eq!(c.next(t0, &shape), Some(3), "given back, lowest first");
        // A scan begun before 3 was written may still list it (and 2 is listed by a
        // scan that raced with its write): neither is handed out twice.
        let n = c.begin_scan();
        c.written(3);
        c.end_scan(n, vec![3, 4, 5], shape.clone(), t0);
        assert_eq!(c.next(t0, &shape), Some(4));
        // A scan begun after both writes frees their entries.
        let n = c.begin_scan();
        c.end_scan(n, vec![6], shape.clone(), t0);
        assert!(c.out.keys().all(|ip| *ip == 4));
        assert_eq!(c.next(t0, &shape), Some(6));
        assert_eq!(c.next(t0, &shape), None, "used up: scan again");
        // Stale, or another shape, or invalidated: scan again.
        let n = c.begin_scan();
        c.end_scan(n, vec![7, 8], shape.clone(), t0);
        assert_eq!(c.next(t0 + CURSOR_TTL, &shape), None);
        assert_eq!(c.next(t0, &(1, 20, vec![])), None);
        c.invalidate(None);
        assert_eq!(c.next(t0, &shape), None);
    }

    /// More addresses in flight than [`CANDIDATES`] (e.g. four `CreateNics` calls of
    /// 128 at once): a scan still finds free ones beyond them, not `SubnetFull`.
    #[test]
    fn a_scan_looks_past_the_addresses_in_flight() {
        let shape = (1, 10_000, vec![]);
        let t0 = Instant::now();
        let mut c = Cursor::default();
        // Nothing written yet: every scan reads the whole range as free.
        let scan = |c: &mut Cursor| {
            let mut free = Vec::new();
            collect_free(1, 10_000, &[], &[], c.scan_size(), &mut free);
            let n = c.begin_scan();
            c.end_scan(n, free, shape.clone(), t0);
        };
        let mut handed = std::collections::HashSet::new();
        for _ in 0..3 * CANDIDATES {
            let ip = match c.next(t0, &shape) {
                Some(ip) => ip,
                None => {
                    scan(&mut c);
                    c.next(t0, &shape)
                        .expect("free addresses beyond those in flight")
                }
            };
            assert!(handed.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(c.scan_size(), 4 * CANDIDATES);
    }

    #[test]
    fn skips_used_and_excluded() {
        let mut out = Vec::new();
        let full = collect_free(1, 10, &[2, 3, 7], &[1, 5], 100, &mut out);
        assert!(!full);
        assert_eq!(out, vec![4, 6, 8, 9, 10]);
    }

    #[test]
    fn stops_at_want_and_handles_the_top_of_the_space() {
        let mut out = Vec::new();
        assert!(collect_free(
            u32::MAX - 3,
            u32::MAX,
            &[u32::MAX - 2],
            &[],
            2,
            &mut out
        ));
        assert_eq!(out, vec![u32::MAX - 3, u32::MAX - 1]);
        let mut out = Vec::new();
        assert!(!collect_free(u32::MAX - 1, u32::MAX, &[], &[], 5, &mut out));
        assert_eq!(out, vec![u32::MAX - 1, u32::MAX]);
    }

    #[test]
    fn empty_range_and_full_range() {
        let mut out = Vec::new();
        assert!(!collect_free(5, 4, &[], &[], 1, &mut out));
        assert!(!collect_free(1, 3, &[1, 2, 3], &[], 1, &mut out));
        assert!(out.is_empty());
    }

    /// Randomized: whatever the used set, candidates are exactly the free addresses in
    /// ascending order.
    #[test]
    fn matches_a_naive_scan() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let from = (next() % 50) as u32;
            let to = from + (next() % 60) as u32;
            let mut used: Vec<u32> = (0..next() % 40).map(|_| (next() % 120) as u32).collect();
            used.sort_unstable();
            used.dedup();
            let excluded: Vec<u32> = (0..3).map(|_| (next() % 120) as u32).collect();
            let want = 1 + (next() % 30) as usize;
            let mut out = Vec::new();
            collect_free(from, to, &used, &excluded, want, &mut out);
            let naive: Vec<u32> = (from..=to)
                .filter(|ip| !used.contains(ip) && !excluded.contains(ip))
                .take(want)
                .collect();
            assert_eq!(out, naive);
        }
    }
}
