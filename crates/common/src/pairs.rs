//! [`owned`]: `(key, value)` pairs written as string literals, as the owned map or list a
//! function under test takes (arguments, metadata, an environment).

/// `pairs` as an owned collection of `(String, String)`: a `HashMap`, a `BTreeMap`, a
/// `Vec`, whichever the caller names.
///
/// ```
/// use std::collections::BTreeMap;
///
/// let m: BTreeMap<String, String> = triton_common::pairs::owned(&[("a", "1"), ("b", "2")]);
/// assert_eq!(m["b"], "2");
/// ```
pub fn owned<C>(pairs: &[(&str, &str)]) -> C
where
    C: FromIterator<(String, String)>,
{
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
