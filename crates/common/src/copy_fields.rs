//! [`copy_fields!`](crate::copy_fields): a struct built from another whose fields mostly
//! carry the same names (a record and its protobuf message, one direction or the other),
//! so each conversion names only what differs.

/// Builds `$ty` from `$src`: each field in the first brackets is the field of the same
/// name of `$src`, cloned (a copy for `Copy` fields); each in `collect [...]` is that
/// field cloned and collected into the target's collection type (a `HashMap` into a
/// `BTreeMap`, ...); the fields in the braces are as written there. `$src` is named
/// once per field, so give a place (a variable or a field), not a call.
///
/// ```
/// use std::collections::{BTreeMap, HashMap};
///
/// struct Wire { name: String, size: u64, tags: HashMap<String, String>, cap: u32 }
/// struct Record { name: String, size: u64, tags: BTreeMap<String, String>, cap: Option<u32> }
///
/// let wire = Wire { name: "web0".into(), size: 3, tags: HashMap::new(), cap: 0 };
/// let record = triton_common::copy_fields!(wire => Record [name, size] collect [tags] {
///     cap: (wire.cap > 0).then_some(wire.cap),
/// });
/// assert_eq!((record.name.as_str(), record.size, record.cap), ("web0", 3, None));
/// ```
#[macro_export]
macro_rules! copy_fields {
    ($src:expr => $($ty:ident)::+ [$($field:ident),* $(,)?]
        $(collect [$($coll:ident),* $(,)?])? { $($rest:tt)* }) => {
        $($ty)::+ {
            $($field: ::core::clone::Clone::clone(&$src.$field),)*
            $($($coll: ::core::iter::IntoIterator::into_iter(
                ::core::clone::Clone::clone(&$src.$coll),
            )
            .collect(),)*)?
            $($rest)*
        }
    };
}
