//! MAC addresses: parsing (with or without separators), formatting, and generation
//! under NAPI's OUI.

/// Parses `aa:bb:cc:dd:ee:ff`, `aa-bb-...` or `aabbccddeeff` (any case).
pub fn parse(text: &str) -> Result<u64, String> {
    let hex: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a valid MAC address"));
    }
    u64::from_str_radix(&hex, 16).map_err(|_| format!("{text:?} is not a valid MAC address"))
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn format(mac: u64) -> String {
    let b = mac.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

/// Parses an OUI of 6 hex digits (`90b8d0`, or `90:b8:d0`).
pub fn parse_oui(text: &str) -> Result<u64, String> {
    let hex: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "mac_oui {text:?} must be 6 hex digits, e.g. 90b8d0"
        ));
    }
    u64::from_str_radix(&hex, 16).map_err(|_| format!("mac_oui {text:?} is not hex"))
}

/// A random MAC under `oui` (NAPI's `randomNum`): the low 24 bits come from a v4 uuid's
/// random bytes.
pub fn random(oui: u64) -> u64 {
    let r = uuid::Uuid::new_v4();
    let b = r.as_bytes();
    (oui << 24) | (u64::from(b[0]) << 16) | (u64::from(b[1]) << 8) | u64::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_spelling() {
        let n = parse("90:B8:D0:01:02:0a").unwrap();
        assert_eq!(format(n), "90:b8:d0:01:02:0a");
        assert_eq!(parse("90b8d001020a").unwrap(), n);
        assert_eq!(parse("90-b8-d0-01-02-0a").unwrap(), n);
        assert!(parse("90:b8:d0:01:02").is_err());
        assert!(parse("zz:b8:d0:01:02:03").is_err());
    }

    #[test]
    fn generated_macs_carry_the_oui() {
        let oui = parse_oui("90b8d0").unwrap();
        for _ in 0..100 {
            assert!(format(random(oui)).starts_with("90:b8:d0:"));
        }
        assert!(parse_oui("90b8").is_err());
    }
}
