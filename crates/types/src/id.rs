//! Ids as newtypes over [`Uuid`], so a server's id cannot be passed where a VM's is
//! wanted. Each is written lower-case and hyphenated, serializes as that string and
//! parses from the 36-character hyphenated form (either case); a parse error names the
//! field (`vm_uuid`, or the caller's with `parse_field`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// True for a lower-case hyphenated UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex
/// digits `0-9a-f`), the only form Triton's APIs write.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// A value that is not a UUID, and the field it was given for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not a UUID")]
pub struct IdError {
    /// The field it was given for.
    pub field: String,
    /// What was given.
    pub value: String,
}

/// `text` as a UUID: 36 characters, hyphenated, hex digits of either case.
fn parse_uuid(field: &str, text: &str) -> Result<Uuid, IdError> {
    match Uuid::try_parse(text) {
        Ok(u) if text.len() == 36 => Ok(u),
        _ => Err(IdError {
            field: field.to_string(),
            value: text.to_string(),
        }),
    }
}

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The field name a parse error gives.
            pub const FIELD: &'static str = $field;

            /// A new random (v4) id.
            pub fn new_v4() -> Self {
                $name(Uuid::new_v4())
            }

            /// `text` as this id; an error names `field`.
            pub fn parse_field(field: &str, text: &str) -> Result<Self, IdError> {
                parse_uuid(field, text).map($name)
            }

            /// The UUID itself.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, IdError> {
                $name::parse_field($field, text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                $name(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

id!(
    /// A VM (instance).
    VmUuid,
    "vm_uuid"
);
id!(
    /// A compute node.
    ServerUuid,
    "server_uuid"
);
id!(
    /// A NAPI network.
    NetworkUuid,
    "network_uuid"
);
id!(
    /// A NAPI NIC tag.
    NicTagUuid,
    "nic_tag_uuid"
);
id!(
    /// An IMGAPI image.
    ImageUuid,
    "image_uuid"
);
id!(
    /// The account owning a resource (UFDS).
    OwnerUuid,
    "owner_uuid"
);
id!(
    /// A PAPI package (a VM's `billing_id`).
    PackageUuid,
    "package_uuid"
);
id!(
    /// A VMAPI job.
    JobUuid,
    "job_uuid"
);

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "930896af-bf8c-48d4-885c-6573a94b1853";

    #[test]
    fn is_uuid_takes_only_the_lower_case_hyphenated_form() {
        assert!(is_uuid(U));
        assert!(!is_uuid(&U.to_uppercase()));
        assert!(!is_uuid(&U.replace('-', "")));
        assert!(!is_uuid(&format!("{{{U}}}")));
        assert!(!is_uuid("930896af-bf8c-48d4-885c-6573a94b185g"));
        assert!(!is_uuid(""));
    }

    #[test]
    fn ids_round_trip_as_strings() {
        let vm: VmUuid = U.parse().unwrap();
        assert_eq!(vm.to_string(), U);
        assert_eq!(serde_json::to_value(vm).unwrap(), serde_json::json!(U));
        let back: VmUuid = serde_json::from_value(serde_json::json!(U)).unwrap();
        assert_eq!(back, vm);
        // Upper case is read, lower case written.
        let server: ServerUuid = U.to_uppercase().parse().unwrap();
        assert_eq!(server.to_string(), U);
    }

    #[test]
    fn a_bad_id_names_its_field() {
        let e = "abc".parse::<ServerUuid>().unwrap_err();
        assert_eq!(e.to_string(), "server_uuid: \"abc\" is not a UUID");
        let e = NetworkUuid::parse_field("nics[0].network_uuid", &U.replace('-', "")).unwrap_err();
        assert_eq!(e.field, "nics[0].network_uuid");
        assert!(serde_json::from_value::<ImageUuid>(serde_json::json!("x")).is_err());
    }
}
