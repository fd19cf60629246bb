//! Types that serialize as their text: `Display` out, `FromStr` in.

/// Implements `Serialize` (the `Display` text) and `Deserialize` (a string parsed with
/// `FromStr`, its error the message) for a type, so it is a plain string in JSON and TOML
/// (the calling crate depends on `serde`):
/// `triton_common::serde_as_text!(Lsn);`.
#[macro_export]
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
