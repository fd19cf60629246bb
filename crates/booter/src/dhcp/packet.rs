//! DHCP packets without I/O: a request's bytes to a [`Request`] (or the reason it is
//! dropped), and a [`Lease`] to the reply's bytes (docs/booter.md, "Replies").
//!
//! Decoding and encoding are dhcproto's; before it decodes, the options are walked once
//! here so that a truncated option is a named reason (dhcproto stops at it quietly), and
//! the relay agent information (option 82) is kept as the bytes the relay sent, joined
//! across repeated options (RFC 3396), to be echoed unchanged.

use std::net::Ipv4Addr;

use dhcproto::v4::{
    self, Architecture, DhcpOption, DhcpOptions, Flags, Message, MessageType, Opcode, OptionCode,
    UnknownOption,
};
use dhcproto::{Decodable, Encodable};

/// The fixed BOOTP header (236 bytes) and the magic cookie.
const OPTIONS_START: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// A request bigger than this is not a DHCP packet we answer (RFC 2131's minimum is 576;
/// 1500 is an Ethernet frame; a client's "maximum message size" is at most 65535).
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Relay agent information longer than this is dropped rather than echoed: it would not
/// fit a reply of an Ethernet frame with the other options.
pub const MAX_RELAY_INFO_BYTES: usize = 1024;

/// A MAC address, from `chaddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Mac {
    /// Twelve lower-case hex digits, no separators: the form in boot file names (a ':'
    /// in a TFTP filename reads as host:file to tftp-hpa and others).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// "aa:bb:cc:dd:ee:ff", "AA-BB-...", or twelve hex digits.
    pub fn parse(text: &str) -> Option<Mac> {
        let hex: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut m = [0u8; 6];
        for (i, b) in m.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Mac(m))
    }
}

/// What kind of request, of the ones RFC 2131 has a client send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

/// Which firmware asks, for the boot file (reference 4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// A PXE ROM on BIOS (option 93 absent or 0): `undionly.kpxe`.
    Bios,
    /// UEFI x86-64 (option 93 = 7 or 9): `snponly.efi`.
    Uefi,
    /// iPXE itself (option 77 holds `iPXE`): the node's iPXE script.
    Ipxe,
}

/// A request worth answering, as decoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub mac: Mac,
    pub giaddr: Ipv4Addr,
    pub ciaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server the client chose.
    pub server_id: Option<Ipv4Addr>,
    pub firmware: Firmware,
    /// Option 82 as the relay sent it (all its occurrences joined), echoed in the reply.
    pub relay_info: Option<Vec<u8>>,
    msg: Message,
}

/// Why a packet gets no answer; logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("a BOOTREPLY, not a request")]
    NotRequest,
    #[error("hardware type {htype} / length {hlen} is not Ethernet's (1 / 6)")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no message type (option 53): a BOOTP request, which dhcpd does not answer")]
    NoType,
    #[error("message type {0} is not one a client sends")]
    UnknownType(u8),
    #[error("relay agent information (option 82) of {0} bytes is over {MAX_RELAY_INFO_BYTES}")]
    RelayInfoTooLong(usize),
}

/// The options' walk: where each option is, that each fits, and option 82's bytes.
fn walk_options(bytes: &[u8]) -> Result<Option<Vec<u8>>, Dropped> {
    let mut relay: Option<Vec<u8>> = None;
    // Fixed-size options seen: dhcproto joins repeats of an option (RFC 3396) before it
    // reads one, so a second occurrence would change its size too.
    let mut fixed_seen: Vec<u8> = Vec::new();
    let mut at = OPTIONS_START;
    while at < bytes.len() {
        let code = bytes[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => return Ok(relay),
            _ => {}
        }
        let Some(&len) = bytes.get(at + 1) else {
            return Err(Dropped::Malformed(format!(
                "option {code} at byte {at} has no length byte"
            )));
        };
        let end = at + 2 + usize::from(len);
        let Some(data) = bytes.get(at + 2..end) else {
            return Err(Dropped::Malformed(format!(
                "option {code} at byte {at}: its {len} bytes run past the end of the {}-byte \
                 packet",
                bytes.len()
            )));
        };
        if code == 82 {
            relay.get_or_insert_with(Vec::new).extend_from_slice(data);
        }
        // Options of a fixed size that dhcproto only checks with debug assertions: whether
        // this one has its size (None: not one of them).
        let fixed_fits = match code {
            80 => Some(len == 0),
            81 => Some(len >= 3),
            94 => Some(len == 3),
            152..=155 => Some(len == 4),
            _ => None,
        };
        if fixed_fits == Some(false) {
            return Err(Dropped::Malformed(format!(
                "option {code} at byte {at} has length {len}, not its fixed size"
            )));
        }
        if fixed_fits.is_some() {
            if fixed_seen.contains(&code) {
                return Err(Dropped::Malformed(format!(
                    "option {code} at byte {at} repeats an option of a fixed size"
                )));
            }
            fixed_seen.push(code);
        }
        // Options carried in the sname and file fields are not walked here, so they are
        // not taken (no PXE client sends them).
        if code == 52 {
            return Err(Dropped::Malformed(format!(
                "option overload (52) at byte {at}: options in the sname and file fields are \
                 not read"
            )));
        }
        at = end;
    }
    // RFC 2131 wants an end option; a packet without one is read up to its last option.
    Ok(relay)
}

/// Decodes a request; any reason not to answer it is a [`Dropped`].
pub fn parse(bytes: &[u8]) -> Result<Request, Dropped> {
    if bytes.len() < OPTIONS_START {
        return Err(Dropped::Malformed(format!(
            "{} bytes, shorter than the {OPTIONS_START} of a header and magic cookie",
            bytes.len()
        )));
    }
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(Dropped::Malformed(format!(
            "{} bytes, over the {MAX_REQUEST_BYTES} dhcpd reads",
            bytes.len()
        )));
    }
    if bytes[0] != 1 {
        return Err(Dropped::NotRequest);
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(Dropped::NotEthernet {
            htype: bytes[1],
            hlen: bytes[2],
        });
    }
    if bytes[236..240] != MAGIC_COOKIE {
        return Err(Dropped::Malformed(
            "no DHCP magic cookie (99.130.83.99) after the header".into(),
        ));
    }
    let relay_info = walk_options(bytes)?;
    if let Some(r) = &relay_info
        && r.len() > MAX_RELAY_INFO_BYTES
    {
        return Err(Dropped::RelayInfoTooLong(r.len()));
    }
    let msg = Message::from_bytes(bytes).map_err(|e| Dropped::Malformed(e.to_string()))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Dropped::NotRequest);
    }
    let kind = match msg.opts().msg_type() {
        None => return Err(Dropped::NoType),
        Some(MessageType::Discover) => Kind::Discover,
        Some(MessageType::Request) => Kind::Request,
        Some(MessageType::Decline) => Kind::Decline,
        Some(MessageType::Release) => Kind::Release,
        Some(MessageType::Inform) => Kind::Inform,
        Some(other) => return Err(Dropped::UnknownType(u8::from(other))),
    };
    let chaddr = msg.chaddr();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(chaddr.get(..6).unwrap_or(&[0; 6]));
    let opts = msg.opts();
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(bytes)) => bytes.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    let uefi = matches!(
        opts.get(OptionCode::ClientSystemArchitecture),
        Some(DhcpOption::ClientSystemArchitecture(
            Architecture::BC | Architecture::X86_64
        ))
    );
    let firmware = if ipxe {
        Firmware::Ipxe
    } else if uefi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    Ok(Request {
        kind,
        mac: Mac(mac),
        giaddr: msg.giaddr(),
        ciaddr: msg.ciaddr(),
        requested_ip,
        server_id,
        firmware,
        relay_info,
        msg,
    })
}

/// What NAPI (and CNAPI, for the hostname) say about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    /// The NIC's resolvers (its network's).
    pub resolvers: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
}

/// The booter's side of every reply.
#[derive(Debug, Clone)]
pub struct Facts {
    pub server_ip: Ipv4Addr,
    pub lease_secs: u32,
    /// Appended to the NIC's in option 6.
    pub resolvers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// `http://host:port` for iPXE's script URL; `None`: the script over TFTP.
    pub http_base: Option<String>,
}

/// What is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Offer,
    Ack,
    /// An ACK to an INFORM: options only, no address or lease time (RFC 2131 4.3.5).
    InformAck,
    Nak,
}

/// The boot file for a client (reference 4.6): iPXE's script, else the iPXE binary its
/// firmware runs. The script's path is `boot/<mac>.ipxe`, the MAC as twelve hex digits.
pub fn boot_file(req: &Request, facts: &Facts) -> String {
    match req.firmware {
        Firmware::Ipxe => match &facts.http_base {
            Some(base) => format!("{base}/boot/{}.ipxe", req.mac.hex()),
            None => format!("boot/{}.ipxe", req.mac.hex()),
        },
        Firmware::Uefi => "snponly.efi".into(),
        Firmware::Bios => "undionly.kpxe".into(),
    }
}

/// The reply's bytes: the request's header fields kept (xid, flags, chaddr, giaddr),
/// `op` = BOOTREPLY, the options of reference 4.5, option 82 echoed.
pub fn reply(
    req: &Request,
    answer: Answer,
    lease: Option<&Lease>,
    facts: &Facts,
) -> Result<Vec<u8>, String> {
    let r = &req.msg;
    let mut msg = Message::new_with_id(
        r.xid(),
        if answer == Answer::InformAck {
            req.ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        r.giaddr(),
        &req.mac.0,
    );
    msg.set_opcode(Opcode::BootReply)
        .set_htype(r.htype())
        .set_flags(if answer == Answer::Nak && !r.giaddr().is_unspecified() {
            // A NAK through a relay is broadcast on the client's link (RFC 2131 4.3.2).
            Flags::default().set_broadcast()
        } else {
            r.flags()
        })
        .set_hops(r.hops());
    let mut opts = DhcpOptions::new();
    opts.insert(DhcpOption::MessageType(match answer {
        Answer::Offer => MessageType::Offer,
        Answer::Ack | Answer::InformAck => MessageType::Ack,
        Answer::Nak => MessageType::Nak,
    }));
    opts.insert(DhcpOption::ServerIdentifier(facts.server_ip));
    if answer != Answer::Nak {
        let lease = lease.ok_or("an OFFER or ACK needs the NIC's address")?;
        if answer != Answer::InformAck {
            msg.set_yiaddr(lease.ip);
            opts.insert(DhcpOption::AddressLeaseTime(facts.lease_secs));
        }
        msg.set_siaddr(facts.server_ip);
        msg.set_fname_str(boot_file(req, facts));
        opts.insert(DhcpOption::SubnetMask(lease.netmask));
        if let Some(gw) = lease.gateway {
            opts.insert(DhcpOption::Router(vec![gw]));
        }
        let mut dns = lease.resolvers.clone();
        for r in &facts.resolvers {
            if !dns.contains(r) {
                dns.push(*r);
            }
        }
        if !dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(dns));
        }
        if let Some(domain) = &facts.domain {
            opts.insert(DhcpOption::DomainName(domain.clone()));
        }
        if let Some(name) = &lease.hostname {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
    }
    if let Some(info) = &req.relay_info {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::RelayAgentInformation,
            info.clone(),
        )));
    }
    msg.set_opts(opts);
    msg.to_vec().map_err(|e| e.to_string())
}

/// A request's decoded message (for tests that check what was kept).
pub fn message(req: &Request) -> &Message {
    &req.msg
}

/// Decodes a reply (tests and the fuzz target check what was sent).
pub fn decode_reply(bytes: &[u8]) -> Result<v4::Message, String> {
    Message::from_bytes(bytes).map_err(|e| e.to_string())
}

/// Parses `bytes` and, when they are a request, builds each reply to it from a fixed
/// lease: the fuzz target's body. Never panics on any input.
pub fn fuzz_one(bytes: &[u8]) {
    let Ok(req) = parse(bytes) else {
        return;
    };
    let facts = Facts {
        server_ip: Ipv4Addr::new(10, 99, 99, 7),
        lease_secs: 3600,
        resolvers: vec![Ipv4Addr::new(10, 99, 99, 11)],
        domain: Some("coal.example.com".into()),
        http_base: Some("http://10.99.99.7:8082".into()),
    };
    let lease = Lease {
        ip: Ipv4Addr::new(10, 99, 99, 40),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Some(Ipv4Addr::new(10, 99, 99, 1)),
        resolvers: vec![],
        hostname: Some("cn1".into()),
    };
    for answer in [Answer::Offer, Answer::Ack, Answer::InformAck, Answer::Nak] {
        if let Ok(out) = reply(&req, answer, Some(&lease), &facts) {
            // What was sent decodes, and says what it should.
            if let Ok(m) = decode_reply(&out) {
                assert_eq!(m.xid(), req.msg.xid());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: MessageType, extra: &[DhcpOption]) -> Vec<u8> {
        let mut m = Message::new_with_id(
            0x1234_5678,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x02, 0, 0, 0, 0, 0x01],
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in extra {
            m.opts_mut().insert(o.clone());
        }
        m.to_vec().unwrap()
    }

    fn facts() -> Facts {
        Facts {
            server_ip: Ipv4Addr::new(10, 0, 0, 2),
            lease_secs: 600,
            resolvers: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 1)],
            domain: Some("dc.example".into()),
            http_base: Some("http://10.0.0.2:8082".into()),
        }
    }

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, 30),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            resolvers: vec![Ipv4Addr::new(10, 0, 0, 1)],
            hostname: Some("cn7".into()),
        }
    }

    #[test]
    fn offer_carries_the_reference_options() {
        let req = parse(&request(MessageType::Discover, &[])).unwrap();
        assert_eq!(req.kind, Kind::Discover);
        assert_eq!(req.mac.to_string(), "02:00:00:00:00:01");
        let out = reply(&req, Answer::Offer, Some(&lease()), &facts()).unwrap();
        let m = decode_reply(&out).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 30));
        assert_eq!(m.siaddr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
            "undionly.kpxe"
        );
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]))
        );
        // The NIC's resolvers first, then the config's, each once.
        assert_eq!(
            o.get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 53)
            ]))
        );
        assert_eq!(
            o.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(600))
        );
        assert_eq!(
            o.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(
            o.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("cn7".into()))
        );
        assert_eq!(
            o.get(OptionCode::DomainName),
            Some(&DhcpOption::DomainName("dc.example".into()))
        );
    }

    #[test]
    fn boot_file_follows_the_firmware() {
        let ipxe = parse(&request(
            MessageType::Discover,
            &[DhcpOption::UserClass(b"iPXE".to_vec())],
        ))
        .unwrap();
        assert_eq!(
            boot_file(&ipxe, &facts()),
            "http://10.0.0.2:8082/boot/020000000001.ipxe"
        );
        let tftp = Facts {
            http_base: None,
            ..facts()
        };
        assert_eq!(boot_file(&ipxe, &tftp), "boot/020000000001.ipxe");
        for (arch, file) in [(7, "snponly.efi"), (9, "snponly.efi"), (0, "undionly.kpxe")] {
            let req = parse(&request(
                MessageType::Discover,
                &[DhcpOption::ClientSystemArchitecture(Architecture::from(
                    arch,
                ))],
            ))
            .unwrap();
            assert_eq!(boot_file(&req, &facts()), file, "arch {arch}");
        }
    }

    #[test]
    fn nak_and_inform_leave_out_the_lease() {
        let req = parse(&request(MessageType::Request, &[])).unwrap();
        let m = decode_reply(&reply(&req, Answer::Nak, None, &facts()).unwrap()).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        let inform = parse(&request(MessageType::Inform, &[])).unwrap();
        let m = decode_reply(&reply(&inform, Answer::InformAck, Some(&lease()), &facts()).unwrap())
            .unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert!(m.opts().get(OptionCode::SubnetMask).is_some());
    }

    #[test]
    fn relay_information_is_echoed_byte_for_byte() {
        let mut bytes = request(MessageType::Discover, &[]);
        // Replace the end option with two option 82s (RFC 3396: one value), then end.
        bytes.pop();
        let sub: Vec<u8> = [1u8, 4, b'r', b'a', b'c', b'k'].to_vec();
        bytes.extend([82, sub.len() as u8]);
        bytes.extend(&sub);
        bytes.extend([82, 3, 2, 1, 9, 255]);
        let req = parse(&bytes).unwrap();
        let mut want = sub.clone();
        want.extend([2, 1, 9]);
        assert_eq!(req.relay_info.as_deref(), Some(&want[..]));
        let out = reply(&req, Answer::Offer, Some(&lease()), &facts()).unwrap();
        let m = decode_reply(&out).unwrap();
        let DhcpOption::RelayAgentInformation(info) =
            m.opts().get(OptionCode::RelayAgentInformation).unwrap()
        else {
            panic!("no option 82 in the reply");
        };
        assert_eq!(info.iter().count(), 2);
    }

    #[test]
    fn malformed_packets_are_dropped_with_a_reason() {
        let good = request(MessageType::Discover, &[]);
        assert!(
            matches!(parse(&good[..100]), Err(Dropped::Malformed(m)) if m.contains("100 bytes"))
        );
        let mut bad_cookie = good.clone();
        bad_cookie[237] = 0;
        assert!(matches!(parse(&bad_cookie), Err(Dropped::Malformed(m)) if m.contains("cookie")));
        let mut overflow = good.clone();
        overflow.pop();
        overflow.extend([60, 200, 1, 2, 3]);
        assert!(
            matches!(parse(&overflow), Err(Dropped::Malformed(m)) if m.contains("option 60") && m.contains("run past"))
        );
        let mut reply_op = good.clone();
        reply_op[0] = 2;
        assert_eq!(parse(&reply_op).unwrap_err(), Dropped::NotRequest);
        let mut token_ring = good.clone();
        token_ring[1] = 6;
        assert!(matches!(
            parse(&token_ring),
            Err(Dropped::NotEthernet { htype: 6, .. })
        ));
        let mut rapid = good.clone();
        rapid.pop();
        rapid.extend([80, 2, 0, 0, 255]);
        assert!(matches!(parse(&rapid), Err(Dropped::Malformed(m)) if m.contains("option 80")));
        // Found by the packet fuzz target: dhcproto joins a repeated option, so two option
        // 154s of 4 bytes each were read as one of 8.
        let mut twice = good.clone();
        twice.pop();
        twice.extend([154, 4, 0, 0, 0, 1, 154, 4, 0, 0, 0, 2, 255]);
        assert!(
            matches!(parse(&twice), Err(Dropped::Malformed(m)) if m.contains("option 154") && m.contains("repeats"))
        );
        let mut overload = good.clone();
        overload.pop();
        overload.extend([52, 1, 3, 255]);
        assert!(
            matches!(parse(&overload), Err(Dropped::Malformed(m)) if m.contains("option overload"))
        );
        let unknown = request(MessageType::Unknown(42), &[]);
        assert_eq!(parse(&unknown).unwrap_err(), Dropped::UnknownType(42));
        let offer = request(MessageType::Offer, &[]);
        assert_eq!(parse(&offer).unwrap_err(), Dropped::UnknownType(2));
        let mut bootp = good.clone();
        bootp.truncate(OPTIONS_START);
        bootp.push(255);
        assert_eq!(parse(&bootp).unwrap_err(), Dropped::NoType);
        // A giant option 82: five full options joined.
        let mut giant = good.clone();
        giant.pop();
        for _ in 0..5 {
            giant.extend([82, 255]);
            giant.extend([1, 253]);
            giant.extend([b'x'; 253]);
        }
        giant.push(255);
        assert_eq!(parse(&giant).unwrap_err(), Dropped::RelayInfoTooLong(1275));
        for n in 0..good.len() {
            fuzz_one(&good[..n]);
        }
    }

    #[test]
    fn macs_parse_in_every_spelling() {
        let want = Mac([0xaa, 0xbb, 0xcc, 0, 1, 0xff]);
        for t in ["aa:bb:cc:00:01:ff", "AA-BB-CC-00-01-FF", "aabbcc0001ff"] {
            assert_eq!(Mac::parse(t), Some(want), "{t}");
        }
        for t in [
            "aa:bb:cc:00:01",
            "zz:bb:cc:00:01:ff",
            "",
            "aa:bb:cc:00:01:ff:00",
        ] {
            assert_eq!(Mac::parse(t), None, "{t}");
        }
    }
}
