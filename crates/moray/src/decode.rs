//! Column values read from PostgreSQL (binary wire format) as JSON, the form Moray merges
//! back into objects (spec A3) and the `Sql` RPC returns.
//!
//! Index columns: `number` → JSON number, `boolean` → bool, `date` → ISO 8601 string with
//! milliseconds and `Z` (JavaScript's `toISOString`), `ip`/`subnet`/`mac`/`uuid` → their
//! normalized text, `numrange` → PostgreSQL's text form (`[1,5)`), `daterange` → the same
//! with ISO 8601 bounds (as Triton's `fixupDateRange`), arrays → JSON arrays.

use std::error::Error;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Number, Value};
use tokio_postgres::types::{FromSql, Kind, Type};
use triton_common::time::civil_from_days;

type BoxError = Box<dyn Error + Sync + Send>;

/// Any supported column, decoded to JSON. NULL decodes (as `Option<Json>`) to `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Json(pub Value);

impl<'a> FromSql<'a> for Json {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Json, BoxError> {
        decode(ty, raw).map(Json)
    }

    fn accepts(ty: &Type) -> bool {
        match ty.kind() {
            Kind::Array(member) => scalar_supported(member),
            _ => scalar_supported(ty),
        }
    }
}

fn scalar_supported(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::CHAR
            | Type::NUMERIC
            | Type::BOOL
            | Type::TIMESTAMPTZ
            | Type::TIMESTAMP
            | Type::DATE
            | Type::UUID
            | Type::INET
            | Type::CIDR
            | Type::MACADDR
            | Type::NUM_RANGE
            | Type::TSTZ_RANGE
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::JSON
            | Type::JSONB
    )
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    if let Kind::Array(member) = ty.kind() {
        return decode_array(member, raw);
    }
    Ok(match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => {
            let s = std::str::from_utf8(raw)?;
            if *ty == Type::JSON {
                serde_json::from_str(s)?
            } else {
                Value::String(s.to_string())
            }
        }
        Type::JSONB => {
            let (&version, rest) = raw.split_first().ok_or("empty jsonb")?;
            if version != 1 {
                return Err(format!("unsupported jsonb version {version}").into());
            }
            serde_json::from_slice(rest)?
        }
        Type::CHAR => Value::String(char::from(*raw.first().ok_or("empty char")?).to_string()),
        Type::BOOL => Value::Bool(*raw.first().ok_or("empty bool")? != 0),
        Type::INT2 => Value::from(i16::from_be_bytes(raw.try_into()?)),
        Type::INT4 => Value::from(i32::from_be_bytes(raw.try_into()?)),
        Type::OID => Value::from(u32::from_be_bytes(raw.try_into()?)),
        Type::INT8 => Value::from(i64::from_be_bytes(raw.try_into()?)),
        Type::FLOAT4 => float(f64::from(f32::from_be_bytes(raw.try_into()?))),
        Type::FLOAT8 => float(f64::from_be_bytes(raw.try_into()?)),
        Type::NUMERIC => numeric_json(&numeric_text(raw)?),
        Type::TIMESTAMPTZ => Value::String(timestamp_text(raw, true)?),
        Type::TIMESTAMP => Value::String(timestamp_text(raw, false)?),
        Type::DATE => Value::String(date_text(i32::from_be_bytes(raw.try_into()?))),
        Type::UUID => {
            let b: [u8; 16] = raw.try_into()?;
            Value::String(uuid::Uuid::from_bytes(b).hyphenated().to_string())
        }
        Type::INET | Type::CIDR => Value::String(inet_text(raw, *ty == Type::CIDR)?),
        Type::MACADDR => {
            let b: [u8; 6] = raw.try_into()?;
            Value::String(format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[0], b[1], b[2], b[3], b[4], b[5]
            ))
        }
        Type::NUM_RANGE => Value::String(range_text(raw, numeric_text)?),
        Type::TSTZ_RANGE => Value::String(range_text(raw, |b| timestamp_text(b, true))?),
        _ => return Err(format!("cannot decode type {ty}").into()),
    })
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoxError> {
        if self.buf.len() < n {
            return Err("truncated value".into());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn i32(&mut self) -> Result<i32, BoxError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn i16(&mut self) -> Result<i16, BoxError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn u16(&mut self) -> Result<u16, BoxError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn u8(&mut self) -> Result<u8, BoxError> {
        Ok(self.take(1)?[0])
    }
}

fn decode_array(member: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    let mut r = Reader { buf: raw };
    let ndim = r.i32()?;
    let _has_null = r.i32()?;
    let _elem_oid = r.i32()?;
    let mut count: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim.max(0) {
        let len = r.i32()?;
        let _lbound = r.i32()?;
        count = count.saturating_mul(usize::try_from(len.max(0))?);
    }
    let mut out = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let len = r.i32()?;
        if len < 0 {
            out.push(Value::Null);
        } else {
            out.push(decode(member, r.take(usize::try_from(len)?)?)?);
        }
    }
    Ok(Value::Array(out))
}

/// PostgreSQL's text form of a binary NUMERIC.
pub fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let mut r = Reader { buf: raw };
    let ndigits = usize::try_from(r.i16()?.max(0))?;
    let weight = i32::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::from(r.u16()?);
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        digits.push(r.i16()?);
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digit = |i: i32| -> i16 {
        if i >= 0 && (i as usize) < digits.len() {
            digits[i as usize]
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                s.push_str(&digit(i).to_string());
            } else {
                s.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut k = 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(weight + k)));
            k += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Ok(s)
}

/// A NUMERIC's text as a JSON number: integral values as integers, others as floats.
fn numeric_json(text: &str) -> Value {
    let integral = match text.split_once('.') {
        Some((int, frac)) if frac.bytes().all(|c| c == b'0') => int,
        Some(_) => "",
        None => text,
    };
    if !integral.is_empty() {
        if let Ok(i) = integral.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = integral.parse::<u64>() {
            return Value::from(u);
        }
    }
    text.parse::<f64>().map(float).unwrap_or(Value::Null)
}

/// Microseconds since 2000-01-01 as ISO 8601 (`...T...sssZ` for timestamptz).
fn timestamp_text(raw: &[u8], utc: bool) -> Result<String, BoxError> {
    let us = i64::from_be_bytes(raw.try_into()?);
    if us == i64::MAX {
        return Ok("infinity".into());
    }
    if us == i64::MIN {
        return Ok("-infinity".into());
    }
    let days = us.div_euclid(86_400_000_000);
    let rem = us.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days + 10_957);
    let secs = rem / 1_000_000;
    let ms = (rem / 1000) % 1000;
    Ok(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}{}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        if utc { "Z" } else { "" }
    ))
}

fn date_text(days_since_2000: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days_since_2000) + 10_957);
    format!("{y:04}-{m:02}-{d:02}")
}

fn inet_text(raw: &[u8], cidr: bool) -> Result<String, BoxError> {
    let mut r = Reader { buf: raw };
    let family = r.u8()?;
    let bits = r.u8()?;
    let _is_cidr = r.u8()?;
    let nb = usize::from(r.u8()?);
    let addr = r.take(nb)?;
    let (text, max) = match family {
        2 => {
            let b: [u8; 4] = addr.try_into()?;
            (Ipv4Addr::from(b).to_string(), 32)
        }
        3 => {
            let b: [u8; 16] = addr.try_into()?;
            (Ipv6Addr::from(b).to_string(), 128)
        }
        f => return Err(format!("unknown inet family {f}").into()),
    };
    Ok(if cidr || bits != max {
        format!("{text}/{bits}")
    } else {
        text
    })
}

fn range_text(
    raw: &[u8],
    bound: impl Fn(&[u8]) -> Result<String, BoxError>,
) -> Result<String, BoxError> {
    const EMPTY: u8 = 0x01;
    const LB_INC: u8 = 0x02;
    const UB_INC: u8 = 0x04;
    const LB_INF: u8 = 0x08;
    const UB_INF: u8 = 0x10;
    let mut r = Reader { buf: raw };
    let flags = r.u8()?;
    if flags & EMPTY != 0 {
        return Ok("empty".into());
    }
    let mut read_bound = |inf: bool| -> Result<String, BoxError> {
        if inf {
            return Ok(String::new());
        }
        let len = usize::try_from(r.i32()?)?;
        bound(r.take(len)?)
    };
    let lo = read_bound(flags & LB_INF != 0)?;
    let hi = read_bound(flags & UB_INF != 0)?;
    Ok(format!(
        "{}{lo},{hi}{}",
        if flags & LB_INC != 0 { '[' } else { '(' },
        if flags & UB_INC != 0 { ']' } else { ')' }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(ndigits.to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics() {
        // 12345.678: digits [1, 2345, 6780], weight 1, dscale 3
        assert_eq!(
            numeric_text(&numeric(3, 1, 0, 3, &[1, 2345, 6780])).unwrap(),
            "12345.678"
        );
        // -0.0012: digits [12], weight -1, dscale 4
        assert_eq!(
            numeric_text(&numeric(1, -1, 0x4000, 4, &[12])).unwrap(),
            "-0.0012"
        );
        // 0
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        // 1e-9 → 0.000000001: digits [10], weight -3 (10 * 10000^-3 = 1e-11)? use [1000] weight -3
        assert_eq!(
            numeric_text(&numeric(1, -3, 0, 9, &[1000])).unwrap(),
            "0.000000001"
        );
        // 20000: digits [2], weight 1
        assert_eq!(numeric_text(&numeric(1, 1, 0, 0, &[2])).unwrap(), "20000");
        assert_eq!(numeric_json("5.00"), Value::from(5));
        assert_eq!(numeric_json("1.5"), serde_json::json!(1.5));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_text(&0i64.to_be_bytes(), true).unwrap(),
            "2000-01-01T00:00:00.000Z"
        );
        let us: i64 = 378_691_200_000_000 + 3_723_456_789; // 2012-01-01 + 1h2m3.456789s
        assert_eq!(
            timestamp_text(&us.to_be_bytes(), true).unwrap(),
            "2012-01-01T01:02:03.456Z"
        );
        let before: i64 = -1;
        assert_eq!(
            timestamp_text(&before.to_be_bytes(), true).unwrap(),
            "1999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn inets() {
        assert_eq!(
            inet_text(&[2, 32, 0, 4, 10, 0, 0, 1], false).unwrap(),
            "10.0.0.1"
        );
        assert_eq!(
            inet_text(&[2, 8, 1, 4, 10, 0, 0, 0], true).unwrap(),
            "10.0.0.0/8"
        );
        assert!(inet_text(&[2, 8, 1, 4, 10], true).is_err());
    }
}
