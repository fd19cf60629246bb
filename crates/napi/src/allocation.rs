//! Choosing a free IP in a network's provision range: the pure part of allocation.
//!
//! Correctness does not rest here: every IP in use is one Moray object keyed by
//! `<network_uuid>/<ip>` and written with "must not exist", so of two allocators that
//! pick the same address only one wins, and the loser picks again. This module only
//! decides which addresses to try: the lowest free one first (NAPI's "lowest never used"
//! choice, so a quiet network hands out addresses in order), then, after a conflict, a
//! random one among the lowest free ones, so many concurrent allocators spread out
//! instead of all colliding on the same next address round after round.

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

/// Which candidate to try on attempt `attempt` (0-based): the lowest first, then a
/// random one. `random` is any random number.
pub fn pick(candidates: &[u32], attempt: u32, random: u64) -> Option<u32> {
    if candidates.is_empty() {
        return None;
    }
    if attempt == 0 {
        return Some(candidates[0]);
    }
    let i = usize::try_from(random % candidates.len() as u64).unwrap_or(0);
    Some(candidates[i])
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pick_lowest_first_then_spread() {
        assert_eq!(pick(&[], 0, 7), None);
        assert_eq!(pick(&[4, 5, 6], 0, 7), Some(4));
        assert_eq!(pick(&[4, 5, 6], 1, 7), Some(5));
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
