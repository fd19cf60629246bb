//! [`set_given!`](crate::set_given): a partial update (a request or update whose
//! optional fields carry the names of the record's fields) applied to a record, so each
//! update names its fields once instead of an `if let Some` per field.

/// Sets each field in the brackets of `$target` to the field of the same name of
/// `$update` where that one is `Some` (cloned); a `None` leaves the target's field as it
/// was. `$update` is named once per field, so give a place (a variable or a field), not
/// a call.
///
/// ```
/// struct Vm { ram: u64, alias: String, quota: u64 }
/// struct Update { ram: Option<u64>, alias: Option<String>, quota: Option<u64> }
///
/// let mut vm = Vm { ram: 256, alias: "web0".into(), quota: 10 };
/// let update = Update { ram: Some(512), alias: None, quota: Some(20) };
/// triton_common::set_given!(update => vm [ram, alias, quota]);
/// assert_eq!((vm.ram, vm.alias.as_str(), vm.quota), (512, "web0", 20));
/// ```
#[macro_export]
macro_rules! set_given {
    ($update:expr => $target:ident [$($field:ident),* $(,)?]) => {
        $(
            if let ::core::option::Option::Some(value) = &$update.$field {
                $target.$field = ::core::clone::Clone::clone(value);
            }
        )*
    };
}
