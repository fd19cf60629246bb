//! MAC addresses as Triton keeps them: six lower-case hex pairs joined by colons
//! (`aa:bb:cc:dd:ee:ff`).

/// `mac` in the colon form when, its colons left out, it is twelve hex digits (either
/// case): `aa:bb:cc:dd:ee:ff` from `AABBCCDDEEFF` or `aa:BB:cc:dd:ee:ff`; `None`
/// otherwise. Where colons may stand is the caller's rule.
///
/// ```
/// use triton_types::mac::colon_form;
///
/// assert_eq!(colon_form("90B8D0C0FFEE").as_deref(), Some("90:b8:d0:c0:ff:ee"));
/// assert_eq!(colon_form("90:b8:d0:c0:ff:ee").as_deref(), Some("90:b8:d0:c0:ff:ee"));
/// assert_eq!(colon_form("90:b8:d0:c0:ff"), None);
/// assert_eq!(colon_form("zz:b8:d0:c0:ff:ee"), None);
/// ```
pub fn colon_form(mac: &str) -> Option<String> {
    let hex: String = mac.chars().filter(|c| *c != ':').collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":"),
    )
}
