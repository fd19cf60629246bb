//! Accounts (UFDS `sdcperson`): the stored form and the rules a new or changed account
//! must follow. Login rules are sdc-ufds's (`schema/sdcperson.js`): 3 to 32 characters,
//! a letter first, then letters, digits, `_`, `.` or `@`; `local` is reserved.

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, invalid_value};

pub const MIN_LOGIN_LEN: usize = 3;
pub const MAX_LOGIN_LEN: usize = 32;
/// Logins no account may take (sdc-ufds: `local` names images without an origin).
pub const RESERVED_LOGINS: &[&str] = &["local"];
/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest profile field (name, company, address, ...): far past any real one, short
/// enough that an account stays a small Moray object.
pub const MAX_FIELD_LEN: usize = 1024;
/// Longest group name.
pub const MAX_GROUP_LEN: usize = 64;
/// Most groups one account may be a member of.
pub const MAX_GROUPS_PER_ACCOUNT: usize = 64;
/// The group whose members are the datacenter's operators (Triton's
/// `cn=operators, ou=groups, o=smartdc`).
pub const OPERATORS_GROUP: &str = "operators";

/// An account as stored in `ufds_accounts` (key: uuid). Empty profile fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub uuid: String,
    pub login: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub givenname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub company: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub city: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub postalcode: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phone: String,
    #[serde(default)]
    pub approved_for_provisioning: bool,
    #[serde(default)]
    pub triton_cns_enabled: bool,
    /// The account's default network (a NAPI network uuid), empty when none is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_network: String,
    /// The groups the account is a member of (Triton's `memberof`), sorted, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Account {
    /// Every rule the account breaks, each naming its field.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(e) = check_uuid("uuid", &self.uuid) {
            errors.push(e);
        }
        if let Some(e) = check_login(&self.login) {
            errors.push(e);
        }
        if let Some(e) = check_email(&self.email) {
            errors.push(e);
        }
        if !self.default_network.is_empty()
            && let Some(e) = check_uuid("default_network", &self.default_network)
        {
            errors.push(e);
        }
        if self.groups.len() > MAX_GROUPS_PER_ACCOUNT {
            errors.push(FieldError::invalid(
                "groups",
                format!("an account may be a member of at most {MAX_GROUPS_PER_ACCOUNT} groups"),
            ));
        }
        if let Some(e) = self.groups.iter().find_map(|g| check_group("groups", g)) {
            errors.push(e);
        }
        for (field, value) in self.profile_fields() {
            if let Some(e) = check_text(field, value) {
                errors.push(e);
            }
        }
        errors
    }

    fn profile_fields(&self) -> [(&'static str, &str); 10] {
        [
            ("cn", &self.cn),
            ("givenname", &self.givenname),
            ("sn", &self.sn),
            ("company", &self.company),
            ("address", &self.address),
            ("city", &self.city),
            ("state", &self.state),
            ("postalcode", &self.postalcode),
            ("country", &self.country),
            ("phone", &self.phone),
        ]
    }
}

pub use triton_types::is_uuid;

pub fn check_uuid(field: &str, value: &str) -> Option<FieldError> {
    if value.is_empty() {
        return Some(FieldError::missing(field));
    }
    (!is_uuid(value)).then(|| {
        FieldError::invalid(
            field,
            format!("{value:?} is not a UUID (lower-case, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
        )
    })
}

pub fn check_login(login: &str) -> Option<FieldError> {
    if login.is_empty() {
        return Some(FieldError::missing("login"));
    }
    let len = login.chars().count();
    let reason = if !(MIN_LOGIN_LEN..=MAX_LOGIN_LEN).contains(&len) {
        Some(format!(
            "must be {MIN_LOGIN_LEN} to {MAX_LOGIN_LEN} characters long"
        ))
    } else if !login.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("must start with a letter".into())
    } else if !login
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@'))
    {
        Some("may only contain letters, digits, '_', '.' and '@'".into())
    } else if RESERVED_LOGINS.contains(&login) {
        Some("is reserved".into())
    } else {
        None
    };
    invalid_value("login", login, reason)
}

/// A group name in `field`: 1 to [`MAX_GROUP_LEN`] characters, a lower-case letter
/// first, then lower-case letters, digits, `-` and `_` (names such as Triton's
/// `operators` and `readers`, safe as an LDAP `cn` and in a URL).
pub fn check_group(field: &str, name: &str) -> Option<FieldError> {
    if name.is_empty() {
        return Some(FieldError::missing(field));
    }
    let reason = if name.chars().count() > MAX_GROUP_LEN {
        Some(format!("must be 1 to {MAX_GROUP_LEN} characters long"))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lower-case letter".into())
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        Some("may only contain lower-case letters, digits, '-' and '_'".into())
    } else {
        None
    };
    invalid_value(field, name, reason)
}

/// Email: `local@domain.tld`, no spaces, the domain with a dot and a TLD of two or more
/// letters (sdc-ufds's former `EMAIL_RE`, without its four-letter TLD cap).
pub fn check_email(email: &str) -> Option<FieldError> {
    if email.is_empty() {
        return Some(FieldError::missing("email"));
    }
    let valid = email.len() <= MAX_EMAIL_LEN
        && email.split_once('@').is_some_and(|(local, domain)| {
            let local_ok = !local.is_empty()
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
            let domain_ok = domain.rsplit_once('.').is_some_and(|(host, tld)| {
                !host.is_empty()
                    && !host.starts_with('.')
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                    && tld.len() >= 2
                    && tld.chars().all(|c| c.is_ascii_alphabetic())
            });
            local_ok && domain_ok
        });
    (!valid)
        .then(|| FieldError::invalid("email", format!("{email:?} is not a valid email address")))
}

/// A free-text profile field: bounded, no control characters.
pub fn check_text(field: &str, value: &str) -> Option<FieldError> {
    if value.chars().count() > MAX_FIELD_LEN {
        return Some(FieldError::invalid(
            field,
            format!("is longer than {MAX_FIELD_LEN} characters"),
        ));
    }
    value
        .chars()
        .any(char::is_control)
        .then(|| FieldError::invalid(field, "must not contain control characters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_follow_sdcperson() {
        for ok in ["bob", "Bob_1", "a.b@c", "abc", &"a".repeat(32)] {
            assert_eq!(check_login(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("ab", "3 to 32"),
            (&"a".repeat(33) as &str, "3 to 32"),
            ("1bob", "start with a letter"),
            ("_bob", "start with a letter"),
            ("bob-smith", "may only contain"),
            ("bob smith", "may only contain"),
            ("local", "reserved"),
        ] {
            let e = check_login(bad).expect(bad);
            assert_eq!(e.field, "login");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        assert_eq!(check_login(""), Some(FieldError::missing("login")));
    }

    #[test]
    fn a_login_never_looks_like_a_uuid() {
        assert!(check_login("a0b1c2d3-0000-4000-8000-000000000000").is_some());
        assert!(is_uuid("a0b1c2d3-0000-4000-8000-000000000000"));
        assert!(!is_uuid("A0B1C2D3-0000-4000-8000-000000000000"));
        assert!(!is_uuid("a0b1c2d3000040008000000000000000"));
    }

    #[test]
    fn group_names() {
        for ok in ["operators", "readers", "a", "web-ops_2", &"g".repeat(64)] {
            assert_eq!(check_group("group", ok), None, "{ok}");
        }
        for (bad, why) in [
            (&"g".repeat(65) as &str, "1 to 64"),
            ("Operators", "start with a lower-case letter"),
            ("1ops", "start with a lower-case letter"),
            ("-ops", "start with a lower-case letter"),
            ("ops team", "may only contain"),
            ("cn=operators", "may only contain"),
            ("opérateurs", "may only contain"),
        ] {
            let e = check_group("group", bad).expect(bad);
            assert_eq!(e.field, "group");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        assert_eq!(check_group("group", ""), Some(FieldError::missing("group")));
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "first.last+tag@mail.example.museum",
            "x_y%z@a-b.org",
        ] {
            assert_eq!(check_email(ok), None, "{ok}");
        }
        for bad in [
            "a",
            "a@b",
            "@b.com",
            "a b@c.com",
            "a@b.c",
            "a@.com",
            "a@b.c0m",
        ] {
            assert!(check_email(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn validate_reports_every_field() {
        let account = Account {
            uuid: "nope".into(),
            login: "1x".into(),
            email: "bad".into(),
            phone: "1\n2".into(),
            default_network: "external".into(),
            groups: vec!["Ops".into()],
            ..Default::default()
        };
        let fields: Vec<String> = account.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "uuid",
                "login",
                "email",
                "default_network",
                "groups",
                "phone"
            ]
        );
    }
}
