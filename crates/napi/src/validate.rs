//! Field checks. Each returns the normalized value or a [`FieldError`] naming the field;
//! [`Checks`] gathers every failure of a request so all are reported at once.

use crate::error::{Error, FieldError};
use crate::ip::{self, Subnet};
use crate::model::{MTU_MAX, NETWORK_MTU_MIN, NIC_TAG_MTU_MIN};

/// Nic tag names become interface names: at most 31 chars (NAPI `MAX_INTERFACE_LEN`).
pub const MAX_NIC_TAG_NAME: usize = 31;
/// Network and VLAN names.
pub const MAX_NAME: usize = 64;
pub const MAX_DESCRIPTION: usize = 1024;
/// List pages (Triton's internal APIs: 1..1000, default 1000).
pub const MAX_LIMIT: u32 = 1000;
pub const BELONGS_TO_TYPES: &[&str] = &["zone", "server", "other"];
pub const NIC_STATES: &[&str] = &["provisioning", "running", "stopped"];

/// Collects field errors.
#[derive(Debug, Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value, or records the error and gives `None`.
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// The checked value of an optional field when the request gave one; a bad one is
    /// recorded and gives `None`.
    pub fn given<V, T>(
        &mut self,
        value: Option<V>,
        check: impl FnOnce(V) -> Result<T, FieldError>,
    ) -> Option<T> {
        value.and_then(|v| self.take(check(v)))
    }

    /// For an update: when the request gave a `value`, checks it and sets `target` to the
    /// checked value, or records the error and leaves `target` as it is.
    pub fn set<V, T>(
        &mut self,
        target: &mut T,
        value: Option<V>,
        check: impl FnOnce(V) -> Result<T, FieldError>,
    ) {
        if let Some(v) = self.given(value, check) {
            *target = v;
        }
    }

    /// For a create: the request's `name` and `description`, checked; `None` where one
    /// is bad (the error is recorded).
    pub fn name_and_description(
        &mut self,
        name_given: &str,
        description_given: &str,
    ) -> Option<(String, String)> {
        let name = self.take(name("name", name_given));
        let description = self.take(description("description", description_given));
        name.zip(description)
    }

    /// For an update: the `name` and `description` a request gave, each checked and set
    /// as [`Checks::set`] does.
    pub fn set_name_and_description(
        &mut self,
        target: (&mut String, &mut String),
        name_given: Option<&str>,
        description_given: Option<&str>,
    ) {
        self.set(target.0, name_given, |n| name("name", n));
        self.set(target.1, description_given, |d| {
            description("description", d)
        });
    }

    pub fn push(&mut self, e: FieldError) {
        self.errors.push(e);
    }

    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// What failed, each error's field named `<prefix><field>` (`nics[3].` for an entry
    /// of a batch).
    pub fn into_errors(self, prefix: &str) -> Vec<FieldError> {
        self.errors
            .into_iter()
            .map(|e| FieldError {
                field: format!("{prefix}{}", e.field),
                ..e
            })
            .collect()
    }

    /// `Ok` when nothing failed.
    pub fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidParameters(self.errors))
        }
    }
}

/// A uuid in canonical lower-case hyphenated form (upper case is accepted and lowered).
pub fn uuid(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    let lower = value.to_ascii_lowercase();
    let ok = lower.len() == 36
        && lower.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(lower)
    } else {
        Err(FieldError::invalid(
            field,
            format!("{value:?} is not a UUID"),
        ))
    }
}

pub fn uuids(field: &str, values: &[String]) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let u = uuid(field, v)?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

pub fn nic_tag_name(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    if value.len() > MAX_NIC_TAG_NAME
        || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(FieldError::invalid(
            field,
            format!("must be 1 to {MAX_NIC_TAG_NAME} letters, digits or underscores"),
        ));
    }
    Ok(value.to_string())
}

/// Network and VLAN names: 1..64 letters, digits, `-`, `_`, `.`, spaces inside.
pub fn name(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    let ok = value.len() <= MAX_NAME
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if ok {
        Ok(value.to_string())
    } else {
        Err(FieldError::invalid(
            field,
            format!("must be 1 to {MAX_NAME} letters, digits, '-', '_', '.' or inner spaces"),
        ))
    }
}

pub fn description(field: &str, value: &str) -> Result<String, FieldError> {
    if value.len() > MAX_DESCRIPTION {
        return Err(FieldError::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    Ok(value.to_string())
}

/// 0..=4094 and not 1 (NAPI: "VLAN ID must be a number between 0 and 4094, and not 1").
pub fn vlan_id(field: &str, value: u32) -> Result<u32, FieldError> {
    if value > 4094 || value == 1 {
        return Err(FieldError::invalid(
            field,
            "VLAN ID must be a number between 0 and 4094, and not 1",
        ));
    }
    Ok(value)
}

pub fn nic_tag_mtu(field: &str, value: u32) -> Result<u32, FieldError> {
    mtu(field, value, NIC_TAG_MTU_MIN)
}

pub fn network_mtu(field: &str, value: u32) -> Result<u32, FieldError> {
    mtu(field, value, NETWORK_MTU_MIN)
}

fn mtu(field: &str, value: u32, min: u32) -> Result<u32, FieldError> {
    if !(min..=MTU_MAX).contains(&value) {
        return Err(FieldError::invalid(
            field,
            format!("mtu must be a number between {min} and {MTU_MAX}"),
        ));
    }
    Ok(value)
}

pub fn subnet(field: &str, value: &str) -> Result<Subnet, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    Subnet::parse(value).map_err(|m| FieldError::invalid(field, m))
}

pub fn ip(field: &str, value: &str) -> Result<u32, FieldError> {
    if value.is_empty() {
        return Err(FieldError::missing(field));
    }
    ip::parse_ip(value).map_err(|m| FieldError::invalid(field, m))
}

/// An address inside `subnet` that is neither its network nor its broadcast address.
pub fn ip_in(field: &str, value: &str, subnet: &Subnet) -> Result<u32, FieldError> {
    let n = ip(field, value)?;
    if !subnet.contains(n) {
        return Err(FieldError::invalid(
            field,
            format!("{value} is outside subnet {subnet}"),
        ));
    }
    if n == subnet.network {
        return Err(FieldError::invalid(
            field,
            format!("{value} is the network address of {subnet}"),
        ));
    }
    if n == subnet.broadcast() {
        return Err(FieldError::invalid(
            field,
            format!("{value} is the broadcast address of {subnet}"),
        ));
    }
    Ok(n)
}

/// An address a NIC is given explicitly on a network: inside its subnet, not the
/// network, broadcast or gateway address, and inside the provision range `range`
/// (inclusive) unless `whole_subnet` (the operator's own NICs may sit anywhere in the
/// subnet, as Triton's NAPI allows). Each error names `field` and the rule.
pub fn nic_ip(
    field: &str,
    value: &str,
    subnet: &Subnet,
    gateway: Option<u32>,
    range: (u32, u32),
    whole_subnet: bool,
) -> Result<u32, FieldError> {
    let n = ip_in(field, value, subnet)?;
    if gateway == Some(n) {
        return Err(FieldError::invalid(
            field,
            format!("{value} is the gateway of {subnet}"),
        ));
    }
    let (start, end) = range;
    if !whole_subnet && !(start..=end).contains(&n) {
        return Err(FieldError::invalid(
            field,
            format!(
                "{value} is outside the provision range of {subnet} ({} to {})",
                ip::format_ip(start),
                ip::format_ip(end)
            ),
        ));
    }
    Ok(n)
}

/// A routes map: each destination an IP or CIDR, each gateway an IP.
pub fn routes(
    field: &str,
    routes: &std::collections::HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, FieldError> {
    let mut out = std::collections::BTreeMap::new();
    for (dest, gw) in routes {
        let dest_ok = if dest.contains('/') {
            Subnet::parse(dest).is_ok() || dest.ends_with("/0") || dest.ends_with("/32")
        } else {
            ip::parse_ip(dest).is_ok()
        };
        if !dest_ok {
            return Err(FieldError::invalid(
                field,
                format!("route destination {dest:?} is not an IP or subnet"),
            ));
        }
        ip::parse_ip(gw).map_err(|_| {
            FieldError::invalid(field, format!("route gateway {gw:?} is not an IP"))
        })?;
        out.insert(dest.clone(), gw.clone());
    }
    Ok(out)
}

pub fn resolvers(field: &str, values: &[String]) -> Result<Vec<String>, FieldError> {
    values
        .iter()
        .map(|v| {
            ip::parse_ip(v)
                .map(ip::format_ip)
                .map_err(|m| FieldError::invalid(field, m))
        })
        .collect()
}

pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, FieldError> {
    FieldError::one_of(field, value, allowed, |list| {
        format!("must be one of {list}")
    })
}

pub fn limit(field: &str, value: Option<u32>) -> Result<u32, FieldError> {
    match value {
        None => Ok(MAX_LIMIT),
        Some(v) if (1..=MAX_LIMIT).contains(&v) => Ok(v),
        Some(_) => Err(FieldError::invalid(
            field,
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_lowered_and_checked() {
        assert_eq!(
            uuid("owner_uuid", "930896AF-BF8C-48D4-885C-6573A94B1853").unwrap(),
            "930896af-bf8c-48d4-885c-6573a94b1853"
        );
        let e = uuid("owner_uuid", "not-a-uuid").unwrap_err();
        assert_eq!(e.field, "owner_uuid");
        assert_eq!(uuid("owner_uuid", "").unwrap_err().code, "Missing");
    }

    #[test]
    fn vlan_and_mtu_bounds() {
        assert!(vlan_id("vlan_id", 0).is_ok());
        assert!(vlan_id("vlan_id", 1).is_err());
        assert!(vlan_id("vlan_id", 4094).is_ok());
        assert!(vlan_id("vlan_id", 4095).is_err());
        assert!(network_mtu("mtu", 575).is_err());
        assert!(network_mtu("mtu", 9000).is_ok());
        assert!(nic_tag_mtu("mtu", 1499).is_err());
    }

    #[test]
    fn ip_in_subnet() {
        let s = Subnet::parse("10.0.0.0/24").unwrap();
        assert!(ip_in("gateway", "10.0.0.1", &s).is_ok());
        assert!(
            ip_in("gateway", "10.0.1.1", &s)
                .unwrap_err()
                .message
                .contains("outside")
        );
        assert!(
            ip_in("gateway", "10.0.0.255", &s)
                .unwrap_err()
                .message
                .contains("broadcast")
        );
        assert!(ip_in("gateway", "10.0.0.0", &s).is_err());
    }

    #[test]
    fn explicit_nic_ips() {
        let s = Subnet::parse("10.0.0.0/24").unwrap();
        let gw = ip::parse_ip("10.0.0.1").ok();
        let range = (
            ip::parse_ip("10.0.0.10").unwrap(),
            ip::parse_ip("10.0.0.200").unwrap(),
        );
        let refused = |v: &str, whole: bool| {
            let e = nic_ip("ip", v, &s, gw, range, whole).unwrap_err();
            assert_eq!(e.field, "ip");
            e.message
        };
        assert!(nic_ip("ip", "10.0.0.10", &s, gw, range, false).is_ok());
        assert!(nic_ip("ip", "10.0.0.200", &s, gw, range, false).is_ok());
        assert!(refused("10.0.0.1", false).contains("gateway"));
        assert!(refused("10.0.0.1", true).contains("gateway"));
        assert!(refused("10.0.0.0", false).contains("network address"));
        assert!(refused("10.0.0.255", true).contains("broadcast"));
        assert!(refused("10.0.1.5", true).contains("outside subnet"));
        let m = refused("10.0.0.201", false);
        assert!(m.contains("provision range") && m.contains("10.0.0.10 to 10.0.0.200"));
        assert!(refused("10.0.0.9", false).contains("provision range"));
        assert!(nic_ip("ip", "10.0.0.201", &s, gw, range, true).is_ok());
    }

    #[test]
    fn names() {
        assert!(nic_tag_name("name", "external_2").is_ok());
        assert!(nic_tag_name("name", "bad-name").is_err());
        assert!(nic_tag_name("name", &"a".repeat(32)).is_err());
        assert!(name("name", "My net-1.a").is_ok());
        assert!(name("name", "a(b)").is_err());
    }
}
