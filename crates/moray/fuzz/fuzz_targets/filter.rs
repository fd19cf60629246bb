//! The filter parser on arbitrary UTF-8: it must return (never panic, never overflow the
//! stack), and whatever parses must print back to a string that parses to the same filter.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Ok(filter) = moray::filter::parse(input) {
        let printed = filter.to_string();
        assert_eq!(moray::filter::parse(&printed).as_ref(), Ok(&filter), "{input:?} -> {printed}");
    }
});
