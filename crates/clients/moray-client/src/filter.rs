//! Moray's LDAP filters, built rather than written: the one escaper for values and a small
//! builder that renders a filter with every value escaped, so no caller puts a value into
//! filter text by hand.
//!
//! ```
//! use moray_client::filter::Filter;
//!
//! let f = Filter::and_else(
//!     [
//!         Filter::eq("owner_uuid", "930896af-bf8c-48d4-885c-6573a94b1853"),
//!         Filter::eq("alias", "a)(owner_uuid=*"),
//!         Filter::negate(Filter::eq("state", "destroyed")),
//!     ],
//!     Filter::present("uuid"),
//! );
//! assert_eq!(
//!     f.to_string(),
//!     "(&(owner_uuid=930896af-bf8c-48d4-885c-6573a94b1853)\
//!      (alias=a\\29\\28owner_uuid=\\2a)(!(state=destroyed)))"
//! );
//! ```
//!
//! The escapes are RFC 4515's: `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`
//! and `\00`; every other character stands for itself. Moray's parser
//! (`moray::filter::parse`) reads `(a=<escape(s)>)` back as an equality on exactly `s`, for
//! every string `s` (tested here and fuzzed by the `escape` target of `crates/moray/fuzz`).

use std::fmt;

use triton_common::filter::write_combined;

/// Escapes a value for a Moray filter (RFC 4515): `*`, `(`, `)`, `\` and NUL as `\2a`,
/// `\28`, `\29`, `\5c` and `\00`.
pub use triton_common::filter::escape;

/// A Moray filter. Build it with the constructors and render it with `to_string()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `(&...)`. Moray refuses an empty list; see [`Filter::and_else`].
    And(Vec<Filter>),
    /// `(|...)`. Moray refuses an empty list; see [`Filter::or_else`].
    Or(Vec<Filter>),
    /// `(!...)`.
    Not(Box<Filter>),
    /// `(attr=value)`.
    Eq(String, String),
    /// `(attr>=value)`.
    Ge(String, String),
    /// `(attr<=value)`.
    Le(String, String),
    /// `(attr=*)`: the attribute has a value.
    Present(String),
    /// `(attr=initial*any1*any2*final)`; an empty part is left out.
    Substring {
        /// The attribute.
        attribute: String,
        /// What the value starts with.
        initial: String,
        /// What it contains, in order, between.
        any: Vec<String>,
        /// What it ends with.
        last: String,
    },
    /// `(attr:caseIgnoreMatch:=value)`.
    CaseIgnore(String, String),
    /// Filter text given by an operator (e.g. VMAPI's `query`), inserted unchanged. Never
    /// for values: those go into the other variants, which escape them.
    Verbatim(String),
}

impl Filter {
    /// `(attr=value)`.
    pub fn eq(attribute: &str, value: impl fmt::Display) -> Filter {
        Filter::Eq(attribute.to_string(), value.to_string())
    }

    /// `(attr>=value)`.
    pub fn ge(attribute: &str, value: impl fmt::Display) -> Filter {
        Filter::Ge(attribute.to_string(), value.to_string())
    }

    /// `(attr<=value)`.
    pub fn le(attribute: &str, value: impl fmt::Display) -> Filter {
        Filter::Le(attribute.to_string(), value.to_string())
    }

    /// Strictly greater: `(&(attr>=value)(!(attr=value)))` (Moray has no `>`), e.g. the
    /// page after a marker.
    pub fn gt(attribute: &str, value: impl fmt::Display) -> Filter {
        let value = value.to_string();
        Filter::And(vec![
            Filter::Ge(attribute.to_string(), value.clone()),
            Filter::negate(Filter::Eq(attribute.to_string(), value)),
        ])
    }

    /// `(attr=*)`.
    pub fn present(attribute: &str) -> Filter {
        Filter::Present(attribute.to_string())
    }

    /// `(attr=*part*)`: the value contains `part`.
    pub fn contains(attribute: &str, part: &str) -> Filter {
        Filter::Substring {
            attribute: attribute.to_string(),
            initial: String::new(),
            any: vec![part.to_string()],
            last: String::new(),
        }
    }

    /// A pattern in which each `*` matches any text and every other character stands for
    /// itself: an equality without a `*`, `(attr=*)` for `*` alone, else a substring match.
    /// Only for fields documented to take globs.
    pub fn glob(attribute: &str, pattern: &str) -> Filter {
        if !pattern.contains('*') {
            return Filter::eq(attribute, pattern);
        }
        let mut parts: Vec<String> = pattern.split('*').map(str::to_string).collect();
        let last = parts.pop().unwrap_or_default();
        let initial = if parts.is_empty() {
            String::new()
        } else {
            parts.remove(0)
        };
        let any: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        if initial.is_empty() && any.is_empty() && last.is_empty() {
            return Filter::present(attribute);
        }
        Filter::Substring {
            attribute: attribute.to_string(),
            initial,
            any,
            last,
        }
    }

    /// `(attr:caseIgnoreMatch:=value)`.
    pub fn case_ignore(attribute: &str, value: impl fmt::Display) -> Filter {
        Filter::CaseIgnore(attribute.to_string(), value.to_string())
    }

    /// `(!filter)`.
    pub fn negate(filter: Filter) -> Filter {
        Filter::Not(Box::new(filter))
    }

    /// `(&...)` of the parts; one part is returned as it is.
    pub fn and(parts: impl IntoIterator<Item = Filter>) -> Filter {
        let mut parts: Vec<Filter> = parts.into_iter().collect();
        if parts.len() == 1 {
            return parts.remove(0);
        }
        Filter::And(parts)
    }

    /// `(|...)` of the parts; one part is returned as it is.
    pub fn or(parts: impl IntoIterator<Item = Filter>) -> Filter {
        let mut parts: Vec<Filter> = parts.into_iter().collect();
        if parts.len() == 1 {
            return parts.remove(0);
        }
        Filter::Or(parts)
    }

    /// Like [`Filter::and`], but `when_empty` when there are no parts.
    pub fn and_else(parts: impl IntoIterator<Item = Filter>, when_empty: Filter) -> Filter {
        match Filter::and(parts) {
            Filter::And(p) if p.is_empty() => when_empty,
            f => f,
        }
    }

    /// Like [`Filter::or`], but `when_empty` when there are no parts.
    pub fn or_else(parts: impl IntoIterator<Item = Filter>, when_empty: Filter) -> Filter {
        match Filter::or(parts) {
            Filter::Or(p) if p.is_empty() => when_empty,
            f => f,
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(parts) => write_combined(f, '&', parts),
            Filter::Or(parts) => write_combined(f, '|', parts),
            Filter::Not(inner) => write!(f, "(!{inner})"),
            Filter::Eq(a, v) => write!(f, "({a}={})", escape(v)),
            Filter::Ge(a, v) => write!(f, "({a}>={})", escape(v)),
            Filter::Le(a, v) => write!(f, "({a}<={})", escape(v)),
            Filter::Present(a) => write!(f, "({a}=*)"),
            Filter::Substring {
                attribute,
                initial,
                any,
                last,
            } => {
                write!(f, "({attribute}={}*", escape(initial))?;
                for part in any.iter().filter(|p| !p.is_empty()) {
                    write!(f, "{}*", escape(part))?;
                }
                write!(f, "{})", escape(last))
            }
            Filter::CaseIgnore(a, v) => write!(f, "({a}:caseIgnoreMatch:={})", escape(v)),
            Filter::Verbatim(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moray::filter::{self as mf, Leaf, Op, Substrings};

    fn leaf(attribute: &str, op: Op) -> mf::Filter {
        mf::Filter::Leaf(Leaf {
            attribute: attribute.into(),
            op,
        })
    }

    fn parse(f: &Filter) -> mf::Filter {
        let text = f.to_string();
        mf::parse(&text).unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"))
    }

    const NASTY: &[&str] = &[
        "",
        "*",
        "**",
        "a)(owner_uuid=*",
        "*)(|(uuid=*",
        "\\",
        "\\\\",
        "\\2a",
        "\\28",
        "(",
        ")",
        "()",
        "=",
        "=*",
        ">=",
        "<=",
        "~=",
        ":=",
        ":caseIgnoreMatch:=x",
        "\0",
        "a\0b",
        "k=v",
        "é\u{1F600}",
        "&|!",
        " spaced out ",
        "!(a=b)",
    ];

    #[test]
    fn escaped_values_parse_back_exactly() {
        for s in NASTY {
            assert_eq!(
                parse(&Filter::eq("f", s)),
                leaf("f", Op::Equal(s.to_string())),
                "{s:?}"
            );
            assert_eq!(
                parse(&Filter::ge("f", s)),
                leaf("f", Op::GreaterOrEqual(s.to_string()))
            );
            assert_eq!(
                parse(&Filter::le("f", s)),
                leaf("f", Op::LessOrEqual(s.to_string()))
            );
            assert_eq!(
                parse(&Filter::case_ignore("f", s)),
                leaf("f", Op::CaseIgnore(s.to_string()))
            );
        }
    }

    #[test]
    fn escape_is_rfc_4515() {
        assert_eq!(escape("a*(b)\\\0=c"), "a\\2a\\28b\\29\\5c\\00=c");
        assert_eq!(escape("plain-text_1.2 é"), "plain-text_1.2 é");
    }

    /// Moray prints its own filters with the same escapes.
    #[test]
    fn moray_escapes_the_same_way() {
        for s in NASTY {
            assert_eq!(mf::escape(s), escape(s), "{s:?}");
        }
    }

    /// Every byte string a small generator makes reads back exactly (the fuzz target does
    /// the same on arbitrary input).
    #[test]
    fn generated_values_parse_back_exactly() {
        let alphabet: Vec<char> = "()*\\=&|!<>~:a0 \0\u{e9}\u{1F600}".chars().collect();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(
                parse(&Filter::eq("f", &s)),
                leaf("f", Op::Equal(s.clone())),
                "{s:?}"
            );
        }
    }

    #[test]
    fn compound_filters_keep_their_shape() {
        let f = Filter::and([
            Filter::eq("owner_uuid", "o"),
            Filter::or([Filter::eq("a", "x)(y"), Filter::present("b")]),
            Filter::negate(Filter::eq("state", "destroyed")),
        ]);
        assert_eq!(
            parse(&f),
            mf::Filter::And(vec![
                leaf("owner_uuid", Op::Equal("o".into())),
                mf::Filter::Or(vec![
                    leaf("a", Op::Equal("x)(y".into())),
                    leaf("b", Op::Present),
                ]),
                mf::Filter::Not(Box::new(leaf("state", Op::Equal("destroyed".into())))),
            ])
        );
    }

    #[test]
    fn and_or_of_one_or_none() {
        assert_eq!(Filter::and([Filter::eq("a", 1)]).to_string(), "(a=1)");
        assert_eq!(Filter::or([Filter::eq("a", 1)]).to_string(), "(a=1)");
        assert_eq!(
            Filter::and_else([], Filter::present("uuid")).to_string(),
            "(uuid=*)"
        );
        assert_eq!(
            Filter::or_else([], Filter::present("uuid")).to_string(),
            "(uuid=*)"
        );
        assert_eq!(
            Filter::and_else(
                [Filter::eq("a", 1), Filter::eq("b", true)],
                Filter::present("x")
            )
            .to_string(),
            "(&(a=1)(b=true))"
        );
    }

    #[test]
    fn greater_than_excludes_the_value() {
        assert_eq!(
            Filter::gt("uuid", "m").to_string(),
            "(&(uuid>=m)(!(uuid=m)))"
        );
    }

    #[test]
    fn globs_and_substrings() {
        let sub = |initial: &str, any: &[&str], last: &str| {
            Op::Substring(Substrings {
                initial: initial.into(),
                any: any.iter().map(|s| s.to_string()).collect(),
                last: last.into(),
            })
        };
        assert_eq!(
            parse(&Filter::glob("n", "web*")),
            leaf("n", sub("web", &[], ""))
        );
        assert_eq!(
            parse(&Filter::glob("n", "*a(b*c)*")),
            leaf("n", sub("", &["a(b", "c)"], ""))
        );
        assert_eq!(
            parse(&Filter::glob("n", "x\\y")),
            leaf("n", Op::Equal("x\\y".into()))
        );
        assert_eq!(parse(&Filter::glob("n", "*")), leaf("n", Op::Present));
        assert_eq!(parse(&Filter::glob("n", "**")), leaf("n", Op::Present));
        assert_eq!(
            parse(&Filter::contains("n", "*)(")),
            leaf("n", sub("", &["*)("], ""))
        );
    }

    #[test]
    fn verbatim_is_unchanged() {
        let f = Filter::and([
            Filter::eq("owner_uuid", "o"),
            Filter::Verbatim("(ram>=1024)".into()),
        ]);
        assert_eq!(f.to_string(), "(&(owner_uuid=o)(ram>=1024))");
    }
}
