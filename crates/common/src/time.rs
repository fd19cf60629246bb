//! RFC 3339 UTC timestamps with milliseconds (`2024-04-24T12:34:56.789Z`), the form
//! Triton's APIs print `created`, `updated`, `last_modified` and friends in, and their
//! parsing back. Kept here rather than pulling in a date crate for a few functions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, now (0 if the clock is before 1970).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_rfc3339() -> String {
    rfc3339_millis(now_millis())
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (sub-millisecond digits truncated; instants before
/// the epoch print as the epoch).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339_millis(d.as_millis() as i64)
}

/// Epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (or `+00:00`; a space may stand for the `T`) to
/// epoch milliseconds. Digits beyond milliseconds are ignored.
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{:0<3}", &digits[..digits.len().min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &frac[digits.len()..];
    }
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400) + h * 3600 + mi * 60 + s) * 1000 + millis)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` like [`parse_rfc3339_millis`], to a
/// [`SystemTime`]; `None` also for instants before the epoch.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let ms = u64::try_from(parse_rfc3339_millis(text)?).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_485_539_314_987),
            "2017-01-27T17:48:34.987Z"
        );
        assert_eq!(
            rfc3339_millis(1_767_225_599_999),
            "2025-12-31T23:59:59.999Z"
        );
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_system_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_713_962_096_789);
        assert_eq!(rfc3339(t), "2024-04-24T12:34:56.789Z");
        // Sub-millisecond digits are truncated, not rounded.
        let t = UNIX_EPOCH + Duration::from_nanos(1_713_962_096_789_999_999);
        assert_eq!(rfc3339(t), "2024-04-24T12:34:56.789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_and_round_trips() {
        for ms in [0, 951_782_400_123, 1_485_539_314_987, 4_102_444_800_000] {
            let text = rfc3339_millis(ms);
            assert_eq!(parse_rfc3339_millis(&text), Some(ms), "{text}");
        }
        assert_eq!(
            parse_rfc3339_millis("2017-01-27T17:48:34Z"),
            Some(1_485_539_314_000)
        );
        assert_eq!(
            parse_rfc3339_millis("2017-01-27T17:48:34.9+00:00"),
            Some(1_485_539_314_900)
        );
        assert_eq!(
            parse_rfc3339_millis("2015-03-18T18:40:11.095123Z"),
            Some(1_426_704_011_095)
        );
        assert_eq!(parse_rfc3339_millis("yesterday"), None);
        assert_eq!(parse_rfc3339_millis("2017-13-27T17:48:34Z"), None);
        assert_eq!(parse_rfc3339_millis("2017-01-27T17:48:34.Z"), None);
        assert_eq!(parse_rfc3339_millis("2017-01-27T17:48:34+02:00"), None);
    }

    #[test]
    fn parses_to_system_times() {
        let t = parse_rfc3339("2015-03-18T18:40:11.095Z").unwrap();
        assert_eq!(rfc3339(t), "2015-03-18T18:40:11.095Z");
        let leap = parse_rfc3339("2024-02-29T23:59:59Z").unwrap();
        assert_eq!(rfc3339(leap), "2024-02-29T23:59:59.000Z");
        assert!(parse_rfc3339("1969-12-31T23:59:59Z").is_none());
        assert!(parse_rfc3339("2015-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn now_is_after_2024() {
        assert!(now_millis() > 1_704_067_200_000);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
