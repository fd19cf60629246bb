//! The `Authorization` header parser on arbitrary UTF-8, both grammars. It must return
//! (never panic), whatever parses must print back to a header that parses to the same
//! thing, and the full request parser (signing string, date) must agree with it.
#![no_main]

use std::time::{Duration, SystemTime};

use cloudapi::http_signature::{RequestView, parse_authorization, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let parsed = parse_authorization(input);
    if let Ok(header) = &parsed {
        let printed = header.to_string();
        assert_eq!(
            parse_authorization(&printed).as_ref(),
            Ok(header),
            "{input:?} -> {printed:?}"
        );
    }

    // The same value as a request's header, beside the headers a client signs.
    let Ok(value) = http::HeaderValue::from_str(input) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::DATE,
        httpdate::fmt_http_date(now)
            .parse()
            .expect("an HTTP date is a header value"),
    );
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("cloudapi.coal"),
    );
    headers.insert(http::header::AUTHORIZATION, value);
    let view = RequestView {
        method: "GET",
        url: "/my/machines?limit=1",
        http_version: "1.1",
        headers: &headers,
    };
    if let Ok(request) = parse_request(&view, Duration::from_secs(300), now) {
        let header = parsed.expect("a request that parses has a header that parses");
        assert_eq!(request.grammar, header.grammar, "{input:?}");
        assert_eq!(
            Some(request.key_id.as_str()),
            header.param("keyId"),
            "{input:?}"
        );
        assert!(!request.headers.is_empty(), "{input:?}");
    }
});
