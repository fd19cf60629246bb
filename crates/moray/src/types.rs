//! Moray's index types (spec A2.3): their PostgreSQL types and index methods, the
//! extensible operators each supports, and the coercion of JSON values into column values
//! (on write) and of filter values into query parameters.
//!
//! Values reach PostgreSQL as text and are cast in SQL (`$3::text::inet`), after they have
//! been validated and normalized here, so a bad value is reported with the field's name
//! instead of as a PostgreSQL parse error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    String,
    Number,
    Boolean,
    Date,
    Uuid,
    Ip,
    Mac,
    Subnet,
    NumRange,
    DateRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexType {
    pub scalar: Scalar,
    pub array: bool,
}

/// An extensible operator of a type: the type of its argument and the SQL operator, with
/// the column on the right (`$1::numrange @> col`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeOp {
    pub arg: Scalar,
    pub sql: &'static str,
}

impl Scalar {
    pub fn name(self) -> &'static str {
        match self {
            Scalar::String => "string",
            Scalar::Number => "number",
            Scalar::Boolean => "boolean",
            Scalar::Date => "date",
            Scalar::Uuid => "uuid",
            Scalar::Ip => "ip",
            Scalar::Mac => "mac",
            Scalar::Subnet => "subnet",
            Scalar::NumRange => "numrange",
            Scalar::DateRange => "daterange",
        }
    }

    /// The PostgreSQL type (lower case, as used in casts).
    pub fn pg(self) -> &'static str {
        match self {
            Scalar::String => "text",
            Scalar::Number => "numeric",
            Scalar::Boolean => "boolean",
            Scalar::Date => "timestamptz",
            Scalar::Uuid => "uuid",
            Scalar::Ip => "inet",
            Scalar::Mac => "macaddr",
            Scalar::Subnet => "cidr",
            Scalar::NumRange => "numrange",
            Scalar::DateRange => "tstzrange",
        }
    }

    fn from_name(s: &str) -> Option<Scalar> {
        Some(match s {
            "string" => Scalar::String,
            "number" => Scalar::Number,
            "boolean" => Scalar::Boolean,
            "date" => Scalar::Date,
            "uuid" => Scalar::Uuid,
            "ip" => Scalar::Ip,
            "mac" => Scalar::Mac,
            "subnet" => Scalar::Subnet,
            "numrange" => Scalar::NumRange,
            "daterange" => Scalar::DateRange,
            _ => return None,
        })
    }
}

impl IndexType {
    /// `"string"`, `"[ip]"`, ... Array forms exist for string, number, boolean, date, ip,
    /// mac and subnet, as in Triton.
    pub fn parse(s: &str) -> Option<IndexType> {
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let scalar = Scalar::from_name(inner)?;
            match scalar {
                Scalar::Uuid | Scalar::NumRange | Scalar::DateRange => None,
                _ => Some(IndexType {
                    scalar,
                    array: true,
                }),
            }
        } else {
            Some(IndexType {
                scalar: Scalar::from_name(s)?,
                array: false,
            })
        }
    }

    /// The column type for `CREATE TABLE`.
    pub fn pg_column(self) -> String {
        if self.array {
            format!("{}[]", self.scalar.pg())
        } else {
            self.scalar.pg().to_string()
        }
    }

    /// The cast applied to the text parameter that fills the column.
    pub fn param_cast(self) -> String {
        if self.array {
            format!("::text[]::{}[]", self.scalar.pg())
        } else if self.scalar == Scalar::String {
            "::text".to_string()
        } else {
            format!("::text::{}", self.scalar.pg())
        }
    }

    pub fn index_method(self) -> &'static str {
        if self.array {
            "GIN"
        } else {
            match self.scalar {
                Scalar::NumRange | Scalar::DateRange => "GIST",
                _ => "BTREE",
            }
        }
    }

    /// The range a value of this type can be tested to be in (`$1::numrange @> col`).
    pub fn within(self) -> Option<RangeOp> {
        RANGES
            .iter()
            .find(|(value, ..)| *value == self.scalar)
            .map(|&(_, range, holds, _)| RangeOp {
                arg: range,
                sql: holds,
            })
    }

    /// The value a range of this type can be tested to hold (`$1::numeric <@ col`).
    pub fn contains(self) -> Option<RangeOp> {
        RANGES
            .iter()
            .find(|(_, range, ..)| *range == self.scalar)
            .map(|&(value, _, _, is_in)| RangeOp {
                arg: value,
                sql: is_in,
            })
    }

    /// A range of this type can be tested to overlap another of its type.
    pub fn overlaps(self) -> Option<RangeOp> {
        let range = matches!(self.scalar, Scalar::NumRange | Scalar::DateRange);
        (range && !self.array).then_some(RangeOp {
            arg: self.scalar,
            sql: "&&",
        })
    }
}

/// The value types that have a range type: the value's, the range's, the operator for
/// "the range holds the value" and the one for "the value is in the range".
const RANGES: [(Scalar, Scalar, &str, &str); 3] = [
    (Scalar::Number, Scalar::NumRange, "@>", "<@"),
    (Scalar::Date, Scalar::DateRange, "@>", "<@"),
    (Scalar::Ip, Scalar::Subnet, ">>", "<<"),
];

impl fmt::Display for IndexType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.array {
            write!(f, "[{}]", self.scalar.name())
        } else {
            f.write_str(self.scalar.name())
        }
    }
}

/// A column value to write: NULL, a scalar (as text) or an array of scalars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    Scalar(Option<String>),
    Array(Option<Vec<Option<String>>>),
}

/// Coerces the value of indexed field `field` for a column of type `ty` (Triton's
/// `indexObject`): a missing field or `null` gives NULL; an array type takes an array or a
/// single value; a bad value is `Err(reason)`.
pub fn coerce(ty: IndexType, value: Option<&Value>) -> Result<ColumnValue, String> {
    let value = match value {
        None | Some(Value::Null) => {
            return Ok(if ty.array {
                ColumnValue::Array(None)
            } else {
                ColumnValue::Scalar(None)
            });
        }
        Some(v) => v,
    };
    if ty.array {
        let items: Vec<Option<String>> = match value {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    v => coerce_scalar(ty.scalar, v),
                })
                .collect::<Result<_, _>>()?,
            v => vec![coerce_scalar(ty.scalar, v)?],
        };
        Ok(ColumnValue::Array(Some(items)))
    } else {
        Ok(ColumnValue::Scalar(coerce_scalar(ty.scalar, value)?))
    }
}

fn coerce_scalar(scalar: Scalar, value: &Value) -> Result<Option<String>, String> {
    let text = js_string(value);
    match scalar {
        Scalar::String => Ok(Some(text)),
        // Triton's quirk, kept: what parseFloat cannot read becomes NULL, not an error.
        Scalar::Number => Ok(match value {
            Value::Number(n) => Some(n.to_string()),
            _ => parse_float_prefix(&text),
        }),
        Scalar::Boolean => boolean(&text).map(|b| Some(b.to_string())),
        Scalar::Date => iso8601(&text).map(Some),
        Scalar::Uuid => uuid(&text).map(Some),
        Scalar::Ip => ip(&text).map(Some),
        Scalar::Mac => match value {
            Value::Number(n) => n
                .as_u64()
                .filter(|n| *n < (1 << 48))
                .map(|n| Some(format_mac(n)))
                .ok_or_else(|| format!("invalid MAC address: {n}")),
            _ => mac(&text).map(Some),
        },
        Scalar::Subnet => subnet(&text).map(Some),
        Scalar::NumRange => numrange(&text).map(Some),
        Scalar::DateRange => daterange(&text).map(Some),
    }
}

/// Parses a filter's right-hand side for a column of scalar type `scalar`, giving the
/// normalized text parameter; `Err(reason)` becomes `InvalidQueryError`.
pub fn filter_value(scalar: Scalar, text: &str) -> Result<String, String> {
    match scalar {
        Scalar::String => Ok(text.to_string()),
        Scalar::Number => {
            parse_float_prefix(text).ok_or_else(|| format!("{text:?} is not a number"))
        }
        Scalar::Boolean => boolean(text).map(str::to_string),
        Scalar::Date => iso8601(text),
        Scalar::Uuid => uuid(text),
        Scalar::Ip => ip(text),
        Scalar::Mac => mac(text),
        Scalar::Subnet => subnet(text),
        Scalar::NumRange => numrange(text),
        Scalar::DateRange => daterange(text),
    }
}

/// JavaScript's `String(value)`, which Triton applies before coercing (so an array under a
/// scalar string index is stored as `"a,b"`, which UFDS relies on).
pub fn js_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                v => js_string(v),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_string(),
    }
}

/// JavaScript's `parseFloat`: the longest leading decimal number, or None.
pub fn parse_float_prefix(text: &str) -> Option<String> {
    let s = text.trim_start();
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        let frac_start = i + 1;
        let mut j = frac_start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        digits += j - frac_start;
        if j > frac_start || digits > 0 {
            i = j;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    let num = &s[..i];
    // Normalize forms PostgreSQL's numeric input refuses ("5." and ".5" are fine; "+5" too).
    let v: f64 = num.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    Some(num.trim_end_matches('.').to_string()).filter(|n| !n.is_empty() && n != "-" && n != "+")
}

fn boolean(text: &str) -> Result<&'static str, String> {
    if text.eq_ignore_ascii_case("true") {
        Ok("true")
    } else if text.eq_ignore_ascii_case("false") {
        Ok("false")
    } else {
        Err(format!(
            "invalid boolean: {text:?} (expected true or false)"
        ))
    }
}

fn uuid(text: &str) -> Result<String, String> {
    let b = text.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        });
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid uuid: {text:?} (expected lower-case hex, 8-4-4-4-12)"
        ))
    }
}

/// Triton's strict ISO 8601 form `YYYY-MM-DDTHH:MM:SS[.fff]Z`, normalized to milliseconds
/// as JavaScript's `toISOString` gives it.
pub fn iso8601(text: &str) -> Result<String, String> {
    parse_iso8601(text).ok_or_else(|| {
        format!("invalid ISO 8601 timestamp: {text:?} (expected YYYY-MM-DDTHH:MM:SS.sssZ)")
    })
}

fn parse_iso8601(text: &str) -> Option<String> {
    let t = text.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let date = date
        .strip_prefix("+00")
        .or_else(|| date.strip_prefix("-00").filter(|_| false))
        .unwrap_or(date);
    let [year, month, day] = three_numbers(date, '-', 6)?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time, None),
    };
    let [hour, minute, second] = three_numbers(hms, ':', 2)?;
    let millis = match frac {
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut ms = String::from(&f[..f.len().min(3)]);
            while ms.len() < 3 {
                ms.push('0');
            }
            ms.parse::<u32>().ok()?
        }
        None => 0,
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 || year > 9999 {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z"
    ))
}

/// Exactly three `sep`-separated numbers (`2012-01-02`, `03:04:05`): the first of 1 to
/// `first_max` digits, the others of 1 or 2.
fn three_numbers(text: &str, sep: char, first_max: usize) -> Option<[u32; 3]> {
    let mut parts = text.split(sep);
    let mut numbers = [0; 3];
    for (i, n) in numbers.iter_mut().enumerate() {
        *n = digits(parts.next()?, 1, if i == 0 { first_max } else { 2 })?;
    }
    parts.next().is_none().then_some(numbers)
}

fn digits(s: &str, min: usize, max: usize) -> Option<u32> {
    if s.len() < min || s.len() > max || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) {
                29
            } else {
                28
            }
        }
    }
}

/// A range's text split into its opening bracket, bounds and closing bracket:
/// `[lo,hi)` is `("[", "lo", "hi", ")")`; either bound may be empty.
fn range_parts(text: &str) -> Option<(&str, &str, &str, &str)> {
    let (open, rest) = text.split_at_checked(1)?;
    let (body, close) = rest.split_at_checked(rest.len().saturating_sub(1))?;
    if !matches!(open, "[" | "(") || !matches!(close, "]" | ")") {
        return None;
    }
    let (lo, hi) = body.split_once(',')?;
    Some((open, lo, hi, close))
}

fn numrange(text: &str) -> Result<String, String> {
    let bad = || format!("invalid numeric range: {text:?} (expected e.g. [1,5) or (,10])");
    let (_, lo, hi, _) = range_parts(text).ok_or_else(bad)?;
    let number = |s: &str| {
        let s2 = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = match s2.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s2, None),
        };
        !int.is_empty()
            && int.bytes().all(|c| c.is_ascii_digit())
            && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
    };
    if (!lo.is_empty() && !number(lo)) || (!hi.is_empty() && !number(hi)) {
        return Err(bad());
    }
    Ok(text.to_string())
}

fn daterange(text: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "invalid date range: {text:?} (expected e.g. [2012-01-01T00:00:00Z,2013-01-01T00:00:00Z))"
        )
    };
    let (open, lo, hi, close) = range_parts(text).ok_or_else(bad)?;
    let bound = |s: &str| -> Result<String, String> {
        if s.is_empty() {
            Ok(String::new())
        } else {
            parse_iso8601(s).ok_or_else(bad)
        }
    };
    Ok(format!("{open}{},{}{close}", bound(lo)?, bound(hi)?))
}

/// An IP address, normalized (an IPv4-mapped IPv6 address is written as IPv4, as
/// `ip6addr` does).
pub fn ip(text: &str) -> Result<String, String> {
    let addr: IpAddr = text
        .parse()
        .map_err(|_| format!("invalid IP address: {text:?}"))?;
    Ok(match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    })
}

/// A subnet `address/prefix`, with the host bits cleared.
pub fn subnet(text: &str) -> Result<String, String> {
    let bad = || format!("invalid subnet: {text:?} (expected address/prefix, e.g. 10.0.0.0/8)");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let len: u32 = digits(len, 1, 3).ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    Ok(match addr {
        IpAddr::V4(v4) => {
            if len > 32 {
                return Err(bad());
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            format!("{}/{len}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            if len > 128 {
                return Err(bad());
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            format!("{}/{len}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    })
}

/// A MAC address as six hex octets separated by `:` or `-`, written lower case with `:`.
pub fn mac(text: &str) -> Result<String, String> {
    let bad = || format!("invalid MAC address: {text:?}");
    let sep = if text.contains(':') { ':' } else { '-' };
    let parts: Vec<&str> = text.split(sep).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for p in parts {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        n = (n << 8) | u64::from(u8::from_str_radix(p, 16).map_err(|_| bad())?);
    }
    Ok(format_mac(n))
}

fn format_mac(n: u64) -> String {
    let b = n.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_names() {
        for name in [
            "string",
            "number",
            "boolean",
            "date",
            "uuid",
            "ip",
            "mac",
            "subnet",
            "numrange",
            "daterange",
            "[string]",
            "[number]",
            "[boolean]",
            "[date]",
            "[ip]",
            "[mac]",
            "[subnet]",
        ] {
            let t = IndexType::parse(name).unwrap();
            assert_eq!(t.to_string(), name);
        }
        for bad in ["[uuid]", "[numrange]", "text", "", "[]", "[string"] {
            assert!(IndexType::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn scalar_coercion() {
        let t = |s: &str| IndexType::parse(s).unwrap();
        let c = |s: &str, v: Value| coerce(t(s), Some(&v));
        let coerced = [
            ("string", json!(["a", "b"]), "a,b"),
            ("string", json!(5), "5"),
            ("number", json!("12abc"), "12"),
            ("number", json!(1.5), "1.5"),
            ("boolean", json!("TRUE"), "true"),
            (
                "date",
                json!("2012-01-02T03:04:05Z"),
                "2012-01-02T03:04:05.000Z",
            ),
            ("ip", json!("::ffff:10.0.0.1"), "10.0.0.1"),
            ("subnet", json!("10.1.2.3/8"), "10.0.0.0/8"),
            ("mac", json!("AA-BB-CC-0-1-2"), "aa:bb:cc:00:01:02"),
            ("numrange", json!("[1,5)"), "[1,5)"),
            (
                "daterange",
                json!("[2012-01-01T00:00:00Z,)"),
                "[2012-01-01T00:00:00.000Z,)",
            ),
        ];
        for (ty, v, want) in coerced {
            let got = c(ty, v.clone());
            assert_eq!(got, Ok(ColumnValue::Scalar(Some(want.into()))), "{ty} {v}");
        }
        assert_eq!(c("number", json!("abc")), Ok(ColumnValue::Scalar(None)));
        let refused = [
            ("boolean", json!("yes")),
            ("date", json!("2012-13-02T03:04:05Z")),
            ("date", json!("yesterday")),
            ("uuid", json!("A0000000-0000-0000-0000-000000000000")),
            ("ip", json!("10.0.0.300")),
            ("subnet", json!("10.0.0.0")),
            ("mac", json!("aa:bb")),
            ("numrange", json!("1-5")),
        ];
        for (ty, v) in refused {
            assert!(c(ty, v.clone()).is_err(), "{ty} {v}");
        }
        assert_eq!(coerce(t("ip"), None), Ok(ColumnValue::Scalar(None)));
        assert_eq!(
            coerce(t("ip"), Some(&Value::Null)),
            Ok(ColumnValue::Scalar(None))
        );
    }

    #[test]
    fn array_coercion() {
        let t = IndexType::parse("[ip]").unwrap();
        assert_eq!(
            coerce(t, Some(&json!(["10.0.0.1", "::1"]))),
            Ok(ColumnValue::Array(Some(vec![
                Some("10.0.0.1".into()),
                Some("::1".into())
            ])))
        );
        assert_eq!(
            coerce(t, Some(&json!("10.0.0.1"))),
            Ok(ColumnValue::Array(Some(vec![Some("10.0.0.1".into())])))
        );
        assert!(coerce(t, Some(&json!(["10.0.0.1", "nope"]))).is_err());
    }

    #[test]
    fn parse_float_like_javascript() {
        assert_eq!(parse_float_prefix("  -1.5e3xyz").as_deref(), Some("-1.5e3"));
        assert_eq!(parse_float_prefix(".5").as_deref(), Some(".5"));
        assert_eq!(parse_float_prefix("5.").as_deref(), Some("5"));
        assert_eq!(parse_float_prefix("e5"), None);
        assert_eq!(parse_float_prefix("-"), None);
        assert_eq!(parse_float_prefix(""), None);
    }
}
