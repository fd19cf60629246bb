//! States as enums whose strings are the ones the services store in Moray and the protos
//! carry (Triton's spellings). Each has `as_str`, `Display`, `FromStr` (an unknown string
//! is a [`StateError`] naming the field and the known states), `ALL` in a fixed order,
//! and serializes as its string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is none of a state enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not one of {}", known.join(", "))]
pub struct StateError {
    /// The field it was given for.
    pub field: &'static str,
    /// What was given.
    pub value: String,
    /// The values there are.
    pub known: Vec<&'static str>,
}

macro_rules! states {
    ($(#[$doc:meta])* $name:ident, $field:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* #[doc = concat!("`", $text, "`")] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every value's string, in the same order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The string as stored and on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StateError;

            fn from_str(text: &str) -> Result<Self, StateError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StateError {
                        field: $field,
                        value: text.to_string(),
                        known: $name::ALL.iter().map(|s| s.as_str()).collect(),
                    }),
                }
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

states!(
    /// A VM's state in VMAPI (and an instance's in cn-agent), as vmadm and Triton's
    /// VMAPI spell them.
    VmState, "state", {
        Provisioning => "provisioning",
        Running => "running",
        Stopped => "stopped",
        Failed => "failed",
        Destroyed => "destroyed",
        Unknown => "unknown",
        Incomplete => "incomplete",
        Stopping => "stopping",
        ShuttingDown => "shutting_down",
        Ready => "ready",
        Configured => "configured",
        Down => "down",
        Receiving => "receiving",
    }
);

impl VmState {
    /// The filter word for "neither destroyed nor failed" (`ListVms` `state=active`).
    pub const ACTIVE_FILTER: &'static str = "active";

    /// Neither destroyed nor failed.
    pub fn is_active(self) -> bool {
        !matches!(self, VmState::Destroyed | VmState::Failed)
    }
}

states!(
    /// A compute node's status in CNAPI: `running` while its heartbeats arrive,
    /// `unknown` after they stop.
    ServerStatus, "status", {
        Running => "running",
        Unknown => "unknown",
    }
);

states!(
    /// A NIC's state in NAPI.
    NicState, "state", {
        Provisioning => "provisioning",
        Running => "running",
        Stopped => "stopped",
    }
);

states!(
    /// An image's state in IMGAPI: `unactivated` (created, no activation yet), `active`,
    /// `disabled`, and `creating`/`failed` for placeholders of an asynchronous creation.
    ImageState, "state", {
        Unactivated => "unactivated",
        Active => "active",
        Disabled => "disabled",
        Creating => "creating",
        Failed => "failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of the comment lines of `proto` that start with `lead` (after `//`),
    /// without the connectives.
    fn listed(proto: &str, lead: &str) -> Vec<String> {
        let lines: Vec<&str> = proto
            .lines()
            .map(|l| l.trim().trim_start_matches("//").trim())
            .filter(|l| l.starts_with(lead))
            .collect();
        assert!(!lines.is_empty(), "no comment starting {lead:?}");
        lines
            .iter()
            .flat_map(|l| {
                l.to_lowercase()
                    .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|w| !w.is_empty())
            .filter(|w| !["or", "and", "s", "triton", "strings"].contains(&w.as_str()))
            .collect()
    }

    fn all_parse<T: FromStr + fmt::Display>(words: &[String]) {
        for w in words {
            match w.parse::<T>() {
                Ok(s) => assert_eq!(&s.to_string(), w),
                Err(_) => panic!("{w:?} from the protos does not parse"),
            }
        }
    }

    #[test]
    fn every_state_the_protos_list_round_trips() {
        let vmapi = include_str!("../../../proto/vmapi.proto");
        let cn_agent = include_str!("../../../proto/cn_agent.proto");
        let cnapi = include_str!("../../../proto/cnapi.proto");
        let napi = include_str!("../../../proto/napi.proto");
        let imgapi = include_str!("../../../proto/imgapi.proto");
        all_parse::<VmState>(&listed(vmapi, "provisioning, running, stopped"));
        all_parse::<VmState>(&listed(cn_agent, "running, stopped, provisioning, failed"));
        let servers = listed(cnapi, "running or unknown");
        assert_eq!(servers.len(), 4, "{servers:?}");
        all_parse::<ServerStatus>(&servers);
        all_parse::<NicState>(&listed(napi, "provisioning | running | stopped"));
        // "Image states: unactivated (created, no activation yet), active, disabled,
        // creating and failed (...)": the states are the words not in parentheses.
        let images: String = imgapi
            .lines()
            .skip_while(|l| !l.contains("Image states:"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
            .replace("Image states:", "");
        let mut words = Vec::new();
        let mut depth = 0;
        for part in images.split_inclusive(['(', ')']) {
            if depth == 0 {
                let text = part.trim_end_matches('(');
                words.extend(
                    text.split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                        .filter(|w| !w.is_empty() && *w != "and")
                        .map(str::to_string),
                );
            }
            if part.ends_with('(') {
                depth += 1;
            } else if part.ends_with(')') {
                depth -= 1;
            }
        }
        assert_eq!(words.len(), ImageState::ALL.len(), "{words:?}");
        all_parse::<ImageState>(&words);
    }

    #[test]
    fn every_state_round_trips_through_its_string_and_json() {
        fn check<T>(all: &[T])
        where
            T: FromStr
                + fmt::Display
                + Serialize
                + for<'de> Deserialize<'de>
                + PartialEq
                + fmt::Debug,
        {
            for s in all {
                assert_eq!(s.to_string().parse::<T>().ok().as_ref(), Some(s));
                let json = serde_json::to_value(s).unwrap();
                assert_eq!(json, serde_json::json!(s.to_string()));
                assert_eq!(&serde_json::from_value::<T>(json).unwrap(), s);
            }
        }
        check(VmState::ALL);
        check(ServerStatus::ALL);
        check(NicState::ALL);
        check(ImageState::ALL);
        let names: Vec<&str> = VmState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, VmState::NAMES);
    }

    #[test]
    fn an_unknown_state_names_the_field_and_the_known_ones() {
        let e = "runing".parse::<NicState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "state: \"runing\" is not one of provisioning, running, stopped"
        );
        assert!(serde_json::from_value::<ServerStatus>(serde_json::json!("up")).is_err());
        assert!(VmState::Running == "running");
        assert!(!VmState::Failed.is_active());
    }
}
