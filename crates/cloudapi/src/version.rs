//! API version negotiation: the client sends an npm-semver *range* in `Accept-Version`
//! (or the legacy `Api-Version`), e.g. `~9||~8`, `~7`, `7.2.0`, `>=8`, `*`; we serve the
//! highest supported version it admits, or answer `InvalidVersion`.
//!
//! The grammar is the part of node-semver's ranges that clients send: `||` between
//! alternatives, space-separated comparators within one (all must hold), each one of
//! `*`/`x`/empty, `~V`, `^V`, `>=V`, `>V`, `<=V`, `<V`, `=V` or `V`, where `V` may be
//! partial (`9`, `9.1`, `9.x`). A `v` prefix is ignored.

/// Versions this CloudAPI speaks, oldest first. Only majors change the API (8.0.0 covers
/// all of 8.x), but the 7.x minors are listed as Triton lists them.
pub const SUPPORTED: &[&str] = &["7.0.0", "7.1.0", "7.2.0", "7.3.0", "8.0.0", "9.0.0"];

type Version = (u64, u64, u64);

/// The highest supported version within `range`, or `None`.
pub fn negotiate(range: &str) -> Option<&'static str> {
    let range = Range::parse(range)?;
    SUPPORTED
        .iter()
        .rev()
        .find(|v| parse_full(v).is_some_and(|v| range.contains(v)))
        .copied()
}

/// The newest version, served when the client asks for none.
pub fn latest() -> &'static str {
    SUPPORTED[SUPPORTED.len() - 1]
}

fn parse_full(v: &str) -> Option<Version> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// A range: alternatives of conjunctions of bounds.
struct Range(Vec<Vec<Bound>>);

#[derive(Debug, Clone, Copy)]
enum Bound {
    Ge(Version),
    Gt(Version),
    Lt(Version),
    Le(Version),
}

impl Bound {
    fn holds(self, v: Version) -> bool {
        match self {
            Bound::Ge(b) => v >= b,
            Bound::Gt(b) => v > b,
            Bound::Lt(b) => v < b,
            Bound::Le(b) => v <= b,
        }
    }
}

/// A partial version: the parts given (`9` -> [9], `9.1` -> [9, 1]); `x`/`*` ends it.
fn parse_partial(s: &str) -> Option<Vec<u64>> {
    let s = s.trim_start_matches(['v', '=']);
    let mut parts = Vec::new();
    if s.is_empty() {
        return Some(parts);
    }
    for p in s.split('.') {
        if p == "x" || p == "X" || p == "*" {
            break;
        }
        // Drop prerelease/build tails ("9.0.0-beta").
        let p = p.split(['-', '+']).next().unwrap_or(p);
        parts.push(p.parse().ok()?);
        if parts.len() == 3 {
            break;
        }
    }
    Some(parts)
}

fn lower(parts: &[u64]) -> Version {
    (
        parts.first().copied().unwrap_or(0),
        parts.get(1).copied().unwrap_or(0),
        parts.get(2).copied().unwrap_or(0),
    )
}

/// The first version above every version matching the partial `parts`.
fn next_after(parts: &[u64]) -> Version {
    match parts.len() {
        0 => (u64::MAX, 0, 0),
        1 => (parts[0] + 1, 0, 0),
        2 => (parts[0], parts[1] + 1, 0),
        _ => (parts[0], parts[1], parts[2] + 1),
    }
}

impl Range {
    fn parse(text: &str) -> Option<Range> {
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let mut bounds = Vec::new();
            let alt = alt.trim();
            // Allow ">= 8" with a space after the operator.
            let mut tokens: Vec<String> = Vec::new();
            for t in alt.split_whitespace() {
                match tokens.last_mut() {
                    Some(last)
                        if matches!(last.as_str(), ">=" | "<=" | ">" | "<" | "=" | "~" | "^") =>
                    {
                        last.push_str(t)
                    }
                    _ => tokens.push(t.to_string()),
                }
            }
            for t in &tokens {
                bounds.extend(comparator(t)?);
            }
            alternatives.push(bounds);
        }
        Some(Range(alternatives))
    }

    fn contains(&self, v: Version) -> bool {
        self.0
            .iter()
            .any(|bounds| bounds.iter().all(|b| b.holds(v)))
    }
}

/// `<=` or `>` of `p`: `full` of a full version, `partial` of the first version past a
/// partial one (`<=1.2` is `<1.3.0`, `>1.2` is `>=1.3.0`).
fn partial_bound(
    p: &[u64],
    full: fn(Version) -> Bound,
    partial: fn(Version) -> Bound,
) -> Vec<Bound> {
    vec![if p.len() == 3 {
        full(lower(p))
    } else {
        partial(next_after(p))
    }]
}

fn comparator(t: &str) -> Option<Vec<Bound>> {
    if let Some(rest) = t.strip_prefix(">=") {
        return Some(vec![Bound::Ge(lower(&parse_partial(rest)?))]);
    }
    if let Some(rest) = t.strip_prefix("<=") {
        return Some(partial_bound(&parse_partial(rest)?, Bound::Le, Bound::Lt));
    }
    if let Some(rest) = t.strip_prefix('>') {
        return Some(partial_bound(&parse_partial(rest)?, Bound::Gt, Bound::Ge));
    }
    if let Some(rest) = t.strip_prefix('<') {
        return Some(vec![Bound::Lt(lower(&parse_partial(rest)?))]);
    }
    if let Some(rest) = t.strip_prefix('~') {
        let p = parse_partial(rest.trim_start_matches('>'))?;
        let upper = match p.len() {
            0 => (u64::MAX, 0, 0),
            1 => (p[0] + 1, 0, 0),
            _ => (p[0], p[1] + 1, 0),
        };
        return Some(vec![Bound::Ge(lower(&p)), Bound::Lt(upper)]);
    }
    if let Some(rest) = t.strip_prefix('^') {
        let p = parse_partial(rest)?;
        let upper = match (p.first(), p.get(1), p.get(2)) {
            (None, _, _) => (u64::MAX, 0, 0),
            (Some(&m), _, _) if m > 0 => (m + 1, 0, 0),
            (Some(&m), Some(&n), _) if n > 0 || p.len() == 2 => (m, n + 1, 0),
            (Some(&m), Some(&n), Some(&q)) => (m, n, q + 1),
            (Some(&m), _, _) => (m + 1, 0, 0),
        };
        return Some(vec![Bound::Ge(lower(&p)), Bound::Lt(upper)]);
    }
    let p = parse_partial(t)?;
    Some(vec![Bound::Ge(lower(&p)), Bound::Lt(next_after(&p))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_admitted_version() {
        for (range, want) in [
            ("*", "9.0.0"),
            ("", "9.0.0"),
            ("~9||~8", "9.0.0"),
            ("~8||~7", "8.0.0"),
            ("~7", "7.3.0"),
            ("7.0.0", "7.0.0"),
            ("~7.1", "7.1.0"),
            (">=8", "9.0.0"),
            ("<8", "7.3.0"),
            ("^8.0.0", "8.0.0"),
            (">= 7.2.0 < 9", "8.0.0"),
            ("9.x", "9.0.0"),
        ] {
            assert_eq!(negotiate(range), Some(want), "{range:?}");
        }
    }

    #[test]
    fn refuses_what_no_version_satisfies() {
        for range in ["~6", "10.0.0", "banana"] {
            assert_eq!(negotiate(range), None, "{range:?}");
        }
    }
}
