//! The services' escaper and filter builder (`moray_client::filter`) against Moray's
//! parser on arbitrary UTF-8: `(f=<escape(s)>)` must parse to an equality on exactly `s`,
//! and a glob must parse to the pieces between its `*`s, each read back exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moray::filter::{Filter as Parsed, Leaf, Op, parse};
use moray_client::filter::{Filter, escape};

fn leaf(op: Op) -> Parsed {
    Parsed::Leaf(Leaf {
        attribute: "f".into(),
        op,
    })
}

fuzz_target!(|s: &str| {
    let text = format!("(f={})", escape(s));
    assert_eq!(parse(&text), Ok(leaf(Op::Equal(s.to_string()))), "{s:?} -> {text}");
    assert_eq!(moray::filter::escape(s), escape(s), "{s:?}");

    let text = Filter::and([Filter::eq("f", s), Filter::ge("f", s)]).to_string();
    assert_eq!(
        parse(&text),
        Ok(Parsed::And(vec![
            leaf(Op::Equal(s.to_string())),
            leaf(Op::GreaterOrEqual(s.to_string())),
        ])),
        "{s:?} -> {text}"
    );

    let text = Filter::glob("f", s).to_string();
    let parsed = parse(&text);
    let mut pieces: Vec<&str> = s.split('*').collect();
    let want = if pieces.len() == 1 {
        leaf(Op::Equal(s.to_string()))
    } else if pieces.iter().all(|p| p.is_empty()) {
        leaf(Op::Present)
    } else {
        let last = pieces.pop().unwrap_or_default().to_string();
        let initial = pieces.remove(0).to_string();
        let any = pieces
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        leaf(Op::Substring(moray::filter::Substrings { initial, any, last }))
    };
    assert_eq!(parsed, Ok(want), "{s:?} -> {text}");
});
