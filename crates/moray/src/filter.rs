//! Moray's LDAP-style search filters (spec A7; the grammar of `moray-filter`).
//!
//! `(a=v)` equality, `(a=*)` presence, `(a>=v)`, `(a<=v)`, substrings `(a=pre*mid*suf)`,
//! `(&...)`, `(|...)`, `(!...)` (also `!(...)` unwrapped inside lists), and extensible matches
//! `(a:rule:=v)` for `caseIgnoreMatch` (OID 2.5.13.2), `caseIgnoreSubstringsMatch`
//! (2.5.13.4), `overlaps`, `contains` and `within`. A backslash escapes the next special
//! character (`\(`, `\)`, `\*`, `\\`, `\=`); two hex digits after a backslash (`\28`) give
//! that byte, as `moray-filter` also accepts. Approximate match `~=` is refused, as Triton
//! refuses it. A filter without outer parentheses is wrapped in them.
//!
//! The parser never panics: every input either parses or yields a [`ParseError`].

use std::fmt;

use triton_common::filter::write_combined;

/// Nesting beyond this is refused (the parser recurses once per level).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Leaf(Leaf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub attribute: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equal(String),
    GreaterOrEqual(String),
    LessOrEqual(String),
    Present,
    Substring(Substrings),
    /// `caseIgnoreMatch`: equality ignoring case.
    CaseIgnore(String),
    /// `caseIgnoreSubstringsMatch`: substrings ignoring case.
    CaseIgnoreSubstrings(Substrings),
    Overlaps(String),
    Contains(String),
    Within(String),
}

/// `initial*any1*any2*last`; empty strings for absent parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Substrings {
    pub initial: String,
    pub any: Vec<String>,
    pub last: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Parses a filter string.
pub fn parse(input: &str) -> Result<Filter, ParseError> {
    if input.is_empty() {
        return err("the filter is empty");
    }
    let wrapped;
    let s = if input.starts_with('(') {
        input.as_bytes()
    } else {
        wrapped = format!("({input})");
        wrapped.as_bytes()
    };
    let (filter, end) = parse_filter(s, 0, 0)?;
    if end + 1 < s.len() {
        return err(format!(
            "unbalanced parentheses: unexpected text after position {end}"
        ));
    }
    Ok(filter)
}

/// Parses the filter starting at `cur`; returns it and the index of its closing `)`.
fn parse_filter(s: &[u8], start: usize, depth: usize) -> Result<(Filter, usize), ParseError> {
    if depth > MAX_DEPTH {
        return err(format!("the filter nests deeper than {MAX_DEPTH} levels"));
    }
    let mut cur = start;
    let unwrapped_bang = match s.get(cur) {
        Some(b'(') => {
            cur += 1;
            false
        }
        Some(b'!') => true,
        Some(&c) => {
            return err(format!(
                "expected '(' at position {cur}, found '{}'",
                c as char
            ));
        }
        None => return err("unbalanced parentheses: the filter ends early"),
    };
    let filter = match s.get(cur) {
        Some(b'&') | Some(b'|') => {
            let is_and = s[cur] == b'&';
            cur += 1;
            let mut children = Vec::new();
            loop {
                let (child, end) = parse_filter(s, cur, depth + 1)?;
                children.push(child);
                cur = end + 1;
                if cur >= s.len() || s[cur] == b')' {
                    break;
                }
            }
            if is_and {
                Filter::And(children)
            } else {
                Filter::Or(children)
            }
        }
        Some(b'!') => {
            let (child, end) = parse_filter(s, cur + 1, depth + 1)?;
            if unwrapped_bang {
                cur = end;
            } else {
                cur = end + 1;
                if s.get(cur) != Some(&b')') {
                    return err("unbalanced parentheses after a '!' filter");
                }
            }
            Filter::Not(Box::new(child))
        }
        _ => {
            let Some(end) = index_of_unescaped(s, cur, b')') else {
                return err("unbalanced parentheses: a ')' is missing");
            };
            let leaf = parse_expr(&s[cur..end])?;
            cur = end;
            Filter::Leaf(leaf)
        }
    };
    if cur >= s.len() {
        return err("unbalanced parentheses: a ')' is missing");
    }
    Ok((filter, cur))
}

fn index_of_unescaped(s: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut i = start;
    while i < s.len() {
        if s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == c {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn is_attr_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn parse_expr(s: &[u8]) -> Result<Leaf, ParseError> {
    let attr_len = s.iter().take_while(|b| is_attr_byte(**b)).count();
    if attr_len == 0 {
        if s.first() == Some(&b':') {
            return err("an extensible match needs an attribute name");
        }
        return err(format!(
            "invalid attribute name in {:?}",
            String::from_utf8_lossy(s)
        ));
    }
    // Attribute bytes are ASCII, so this slice is valid UTF-8.
    let attribute = String::from_utf8_lossy(&s[..attr_len]).into_owned();
    let remain = &s[attr_len..];
    let op = if remain == b"=*" {
        Op::Present
    } else if let Some(value) = remain.strip_prefix(b"=") {
        if index_of_unescaped(value, 0, b'*').is_some() {
            Op::Substring(substrings(value)?)
        } else {
            Op::Equal(unescape(value)?)
        }
    } else if let Some(value) = remain.strip_prefix(b">=") {
        Op::GreaterOrEqual(unescape(value)?)
    } else if let Some(value) = remain.strip_prefix(b"<=") {
        Op::LessOrEqual(unescape(value)?)
    } else if remain.starts_with(b"~=") {
        return err(format!(
            "approximate match (~=) on {attribute} is not supported"
        ));
    } else if remain.first() == Some(&b':') {
        parse_ext(&attribute, remain)?
    } else {
        return err(format!(
            "invalid expression {:?}: expected =, >=, <= or an extensible match",
            String::from_utf8_lossy(s)
        ));
    };
    Ok(Leaf { attribute, op })
}

/// `:rule:=value` or `:dn:rule:=value`.
fn parse_ext(attribute: &str, remain: &[u8]) -> Result<Op, ParseError> {
    let Some(assign) = find_subslice(remain, b":=") else {
        return err(format!("missing := in the extensible match on {attribute}"));
    };
    let spec = String::from_utf8_lossy(&remain[1..assign.max(1)]).into_owned();
    let value_bytes = &remain[assign + 2..];
    let mut parts: Vec<&str> = if assign == 0 {
        Vec::new()
    } else {
        spec.split(':').collect()
    };
    if parts.first().is_some_and(|p| p.eq_ignore_ascii_case("dn")) {
        parts.remove(0);
    }
    let rule = match parts.as_slice() {
        [rule] => *rule,
        [] => return err(format!("the extensible match on {attribute} names no rule")),
        _ => {
            return err(format!(
                "invalid extensible match rule {spec:?} on {attribute}"
            ));
        }
    };
    let has_star = index_of_unescaped(value_bytes, 0, b'*').is_some();
    Ok(match rule {
        "caseIgnoreMatch" | "2.5.13.2" => Op::CaseIgnore(unescape(value_bytes)?),
        "caseIgnoreSubstringsMatch" | "2.5.13.4" => {
            if has_star {
                Op::CaseIgnoreSubstrings(substrings(value_bytes)?)
            } else {
                Op::CaseIgnore(unescape(value_bytes)?)
            }
        }
        "overlaps" => Op::Overlaps(unescape(value_bytes)?),
        "contains" => Op::Contains(unescape(value_bytes)?),
        "within" => Op::Within(unescape(value_bytes)?),
        other => {
            return err(format!(
                "unsupported extensible match rule {other:?} on {attribute}"
            ));
        }
    })
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn substrings(value: &[u8]) -> Result<Substrings, ParseError> {
    let mut fields = Vec::new();
    let mut rest = value;
    while let Some(i) = index_of_unescaped(rest, 0, b'*') {
        fields.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    fields.push(rest);
    let last = fields.pop().map(unescape).transpose()?.unwrap_or_default();
    let mut iter = fields.into_iter();
    let initial = iter.next().map(unescape).transpose()?.unwrap_or_default();
    let any = iter
        .map(unescape)
        .filter(|r| !matches!(r, Ok(s) if s.is_empty()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Substrings { initial, any, last })
}

const SPECIAL: &[u8] = b"()*\\=";

/// Resolves escapes. An unescaped `*` is kept as is (extensible values may hold one).
fn unescape(value: &[u8]) -> Result<String, ParseError> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'(' => return err("unescaped '(' in a value; write \\("),
            b'\\' => {
                let a = value.get(i + 1).copied();
                let b = value.get(i + 2).copied();
                match (a, b) {
                    (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
                        out.push(hex(a) * 16 + hex(b));
                        i += 3;
                    }
                    (Some(a), _) if SPECIAL.contains(&a) => {
                        out.push(a);
                        i += 2;
                    }
                    _ => {
                        return err(format!(
                            "invalid escape sequence {:?}: a backslash escapes one of ( ) * \\ = or two hex digits",
                            String::from_utf8_lossy(&value[i..(i + 3).min(value.len())])
                        ));
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ParseError("an escaped value is not valid UTF-8".into()))
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Escapes a value for use in a filter string (RFC 4515): `*`, `(`, `)`, `\` and NUL as
/// `\2a`, `\28`, `\29`, `\5c` and `\00`: the services' escaper too
/// (`moray_client::filter::escape`), whose tests check that this parser reads every
/// escaped value back exactly.
pub use triton_common::filter::escape;

impl Filter {
    /// Every leaf, depth first.
    pub fn leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Leaf>) {
        match self {
            Filter::And(children) | Filter::Or(children) => {
                children.iter().for_each(|c| c.collect_leaves(out))
            }
            Filter::Not(child) => child.collect_leaves(out),
            Filter::Leaf(leaf) => out.push(leaf),
        }
    }
}

impl fmt::Display for Substrings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.initial.is_empty() && self.any.is_empty() && self.last.is_empty() {
            // `(a=*)` would read back as presence.
            return f.write_str("**");
        }
        write!(f, "{}*", escape(&self.initial))?;
        for a in &self.any {
            write!(f, "{}*", escape(a))?;
        }
        write!(f, "{}", escape(&self.last))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(children) => write_combined(f, '&', children),
            Filter::Or(children) => write_combined(f, '|', children),
            Filter::Not(child) => write!(f, "(!{child})"),
            Filter::Leaf(leaf) => write!(f, "{leaf}"),
        }
    }
}

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.attribute;
        match &self.op {
            Op::Equal(v) => write!(f, "({a}={})", escape(v)),
            Op::GreaterOrEqual(v) => write!(f, "({a}>={})", escape(v)),
            Op::LessOrEqual(v) => write!(f, "({a}<={})", escape(v)),
            Op::Present => write!(f, "({a}=*)"),
            Op::Substring(s) => write!(f, "({a}={s})"),
            Op::CaseIgnore(v) => write!(f, "({a}:caseIgnoreMatch:={})", escape(v)),
            Op::CaseIgnoreSubstrings(s) => write!(f, "({a}:caseIgnoreSubstringsMatch:={s})"),
            Op::Overlaps(v) => write!(f, "({a}:overlaps:={})", escape(v)),
            Op::Contains(v) => write!(f, "({a}:contains:={})", escape(v)),
            Op::Within(v) => write!(f, "({a}:within:={})", escape(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(attribute: &str, op: Op) -> Filter {
        Filter::Leaf(Leaf {
            attribute: attribute.into(),
            op,
        })
    }

    fn substrings(initial: &str, any: &[&str], last: &str) -> Substrings {
        Substrings {
            initial: initial.into(),
            any: any.iter().map(|s| s.to_string()).collect(),
            last: last.into(),
        }
    }

    /// Each text parses to the one leaf beside it.
    fn assert_leaves(cases: Vec<(&str, &str, Op)>) {
        for (text, attribute, op) in cases {
            assert_eq!(parse(text), Ok(leaf(attribute, op)), "{text:?}");
        }
    }

    /// Each text is refused.
    fn assert_refused(texts: &[&str]) {
        for text in texts {
            assert!(parse(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn simple_operators() {
        assert_leaves(vec![
            ("(a=1)", "a", Op::Equal("1".into())),
            ("a=1", "a", Op::Equal("1".into())),
            ("(a=)", "a", Op::Equal("".into())),
            ("(a=*)", "a", Op::Present),
            ("(a>=5)", "a", Op::GreaterOrEqual("5".into())),
            ("(a<=5)", "a", Op::LessOrEqual("5".into())),
            ("(x-y_z=v)", "x-y_z", Op::Equal("v".into())),
        ]);
    }

    #[test]
    fn substrings_split_on_unescaped_stars() {
        assert_leaves(vec![
            (
                "(a=pre*mid*suf)",
                "a",
                Op::Substring(substrings("pre", &["mid"], "suf")),
            ),
            (
                "(a=*foo*)",
                "a",
                Op::Substring(substrings("", &["foo"], "")),
            ),
            ("(a=x\\*y)", "a", Op::Equal("x*y".into())),
        ]);
    }

    #[test]
    fn escapes() {
        assert_leaves(vec![
            ("(a=\\(x\\))", "a", Op::Equal("(x)".into())),
            ("(a=C:\\\\dir)", "a", Op::Equal("C:\\dir".into())),
            ("(a=\\28\\29)", "a", Op::Equal("()".into())),
            ("(a=\\c3\\a9)", "a", Op::Equal("é".into())),
            ("(a=b\\=c)", "a", Op::Equal("b=c".into())),
        ]);
        assert_refused(&["(a=\\q)", "(a=x\\)", "(a=(x)"]);
    }

    #[test]
    fn compound() {
        let f = parse("(&(a=1)(|(b=2)(c=3))(!(d=4)))").unwrap();
        assert_eq!(
            f,
            Filter::And(vec![
                leaf("a", Op::Equal("1".into())),
                Filter::Or(vec![
                    leaf("b", Op::Equal("2".into())),
                    leaf("c", Op::Equal("3".into()))
                ]),
                Filter::Not(Box::new(leaf("d", Op::Equal("4".into())))),
            ])
        );
        // Unwrapped bang inside a list, and at the top.
        let f = parse("(&!(a=1)(b=2))").unwrap();
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::Not(Box::new(leaf("a", Op::Equal("1".into())))),
                leaf("b", Op::Equal("2".into())),
            ])
        );
        assert_eq!(
            parse("!(a=1)").unwrap(),
            Filter::Not(Box::new(leaf("a", Op::Equal("1".into()))))
        );
    }

    #[test]
    fn extensible_matches() {
        assert_leaves(vec![
            (
                "(a:caseIgnoreMatch:=Foo)",
                "a",
                Op::CaseIgnore("Foo".into()),
            ),
            ("(a:2.5.13.2:=Foo)", "a", Op::CaseIgnore("Foo".into())),
            (
                "(a:dn:caseIgnoreMatch:=Foo)",
                "a",
                Op::CaseIgnore("Foo".into()),
            ),
            (
                "(a:caseIgnoreSubstringsMatch:=F*o)",
                "a",
                Op::CaseIgnoreSubstrings(substrings("F", &[], "o")),
            ),
            ("(a:overlaps:=[1,5\\))", "a", Op::Overlaps("[1,5)".into())),
            ("(a:contains:=5)", "a", Op::Contains("5".into())),
            (
                "(a:within:=10.0.0.0/8)",
                "a",
                Op::Within("10.0.0.0/8".into()),
            ),
            (
                "(a:within:=[2012-01-01T00:00:00Z,2013-01-01T00:00:00Z\\))",
                "a",
                Op::Within("[2012-01-01T00:00:00Z,2013-01-01T00:00:00Z)".into()),
            ),
        ]);
        assert_refused(&[
            "(a:bogus:=1)",
            "(a:caseIgnoreMatch=1)",
            "(:caseIgnoreMatch:=1)",
        ]);
    }

    #[test]
    fn approximate_match_is_refused() {
        let e = parse("(a~=x)").unwrap_err();
        assert!(e.0.contains("~="), "{e}");
    }

    #[test]
    fn malformed() {
        assert_refused(&[
            "",
            "(",
            ")",
            "()",
            "(&)",
            "(|)",
            "(!)",
            "(a=1",
            "(a=1))",
            "((a=1)",
            "(=1)",
            "(a)",
            "(a>1)",
            "(&(a=1)",
            "(a=1)(b=2)",
            "(!(a=1)",
            "(&(a=1)x)",
        ]);
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!(
            "{}(a=1){}",
            "(!".repeat(MAX_DEPTH + 5),
            ")".repeat(MAX_DEPTH + 5)
        );
        assert!(parse(&deep).unwrap_err().0.contains("nests deeper"));
        let ok = format!("{}(a=1){}", "(!".repeat(10), ")".repeat(10));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "(&(a=1)(|(b=2)(c=3))(!(d=4)))",
            "(a=x\\(y\\)\\*)",
            "(a=pre*mid*suf)",
            "(a:caseIgnoreMatch:=Foo)",
            "(a:within:=[1,5\\))",
        ] {
            let f = parse(s).unwrap();
            assert_eq!(parse(&f.to_string()).unwrap(), f, "{s}");
        }
    }

    /// A tiny deterministic generator (xorshift) of filter-ish garbage: the parser must
    /// return, never panic, on all of it.
    #[test]
    fn never_panics_on_garbage() {
        let alphabet: Vec<char> = "()&|!=*<>~:\\abcAZ09_-.,[] \u{e9}\u{1F600}"
            .chars()
            .collect();
        let fragments = [
            "(&",
            "(|",
            "(!",
            "(a=",
            ")",
            "\\",
            "\\2",
            "\\28",
            ":caseIgnoreMatch:=",
            ":dn:",
            ":=",
            "*",
            ">=",
            "<=",
            "~=",
            "(a=*)",
            "!(",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut s = String::new();
            for _ in 0..len {
                if next() % 3 == 0 {
                    s.push_str(fragments[(next() % fragments.len() as u64) as usize]);
                } else {
                    s.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                }
            }
            if let Ok(f) = parse(&s) {
                parsed += 1;
                // Whatever parses prints back to something that parses to the same filter.
                assert_eq!(parse(&f.to_string()).as_ref(), Ok(&f), "{s:?} -> {f}");
            }
        }
        assert!(
            parsed > 0,
            "the generator should produce some valid filters too"
        );
    }
}
