//! Moray addresses as Triton writes them: `MORAY_URL=tcp://10.99.99.17:2020`. Also
//! accepted: `http://host:port`, `host:port` and a bare `host` (port 2020).

use crate::error::MorayError;

/// Moray's port when an address names none (Triton's default).
pub const DEFAULT_PORT: u16 = 2020;

/// A Moray server's host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MorayAddr {
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl MorayAddr {
    /// Parses `tcp://host[:port]`, `http://host[:port]`, `host[:port]` or `[v6][:port]`.
    pub fn parse(url: &str) -> Result<MorayAddr, MorayError> {
        let bad = |reason| MorayError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url.trim();
        let rest = match rest.split_once("://") {
            None => rest,
            Some(("tcp" | "http", rest)) => rest,
            Some(_) => return Err(bad("the scheme must be tcp:// or http://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("a Moray URL has no path"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed '[' in the host"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or(bad("expected ':' after ']'"))?,
                    ),
                ),
            }
        } else {
            match rest.split_once(':') {
                None => (rest, None),
                Some((_, port)) if port.contains(':') => {
                    return Err(bad("write an IPv6 address in brackets: [::1]:2020"));
                }
                Some((host, port)) => (host, Some(port)),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(MorayAddr {
            host: host.to_string(),
            port,
        })
    }

    /// The URI the gRPC channel connects to.
    pub fn endpoint_uri(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for MorayAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(url: &str) -> (String, u16) {
        let a = MorayAddr::parse(url).expect(url);
        (a.host, a.port)
    }

    #[test]
    fn triton_forms_parse() {
        assert_eq!(addr("tcp://10.99.99.17:2020"), ("10.99.99.17".into(), 2020));
        assert_eq!(
            addr("tcp://moray.coal.joyent.us"),
            ("moray.coal.joyent.us".into(), 2020)
        );
        assert_eq!(addr("http://127.0.0.1:4000/"), ("127.0.0.1".into(), 4000));
        assert_eq!(addr("localhost:2222"), ("localhost".into(), 2222));
        assert_eq!(addr("localhost"), ("localhost".into(), 2020));
        assert_eq!(addr("tcp://[::1]:2021"), ("::1".into(), 2021));
        assert_eq!(addr("[::1]"), ("::1".into(), 2020));
    }

    #[test]
    fn endpoint_uri_brackets_v6() {
        assert_eq!(
            MorayAddr::parse("[::1]:9").unwrap().endpoint_uri(),
            "http://[::1]:9"
        );
        assert_eq!(
            MorayAddr::parse("tcp://a:9").unwrap().endpoint_uri(),
            "http://a:9"
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for url in [
            "",
            "https://a:1",
            "tcp://:2020",
            "a:0",
            "a:x",
            "a:70000",
            "::1",
            "tcp://a:1/path",
            "[::1",
        ] {
            let err = MorayAddr::parse(url).expect_err(url);
            assert_eq!(err.name(), "InvalidUrlError", "{url}");
        }
    }
}
