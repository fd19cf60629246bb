//! The one escaper of values in Moray's (LDAP, RFC 4515) filters, and the one writer of
//! their `&`, `|` combinations: the services build their filters with them
//! (`moray_client::filter`) and Moray prints its own with them (`moray::filter`).

use std::fmt;

/// Writes the combination `(<op><part><part>...)` of `parts` (`op` is `&` or `|`).
pub fn write_combined<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    op: char,
    parts: &[T],
) -> fmt::Result {
    write!(f, "({op}")?;
    for p in parts {
        write!(f, "{p}")?;
    }
    f.write_str(")")
}

/// Escapes a value for a Moray filter (RFC 4515): `*`, `(`, `)`, `\` and NUL as `\2a`,
/// `\28`, `\29`, `\5c` and `\00`; every other character stands for itself.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}
