//! The relay's public URL (`--public-url`, in tokens): `http://` or `https://`, a host, an
//! optional port and a path.

use std::fmt;

/// A parsed relay URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// `https://`: TLS to the host.
    pub tls: bool,
    /// The host as written (brackets of an IPv6 address removed).
    pub host: String,
    /// The port (80 or 443 unless given).
    pub port: u16,
    /// The path, from its `/`, with any query.
    pub path: String,
}

/// Why a text is not a relay URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Another scheme.
    #[error("the relay URL {0:?} must start with http:// or https://")]
    Scheme(String),
    /// No host, a bad port, credentials or a fragment.
    #[error("the relay URL {0:?} is not of the form http(s)://host[:port]/path")]
    Form(String),
}

impl RelayUrl {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<RelayUrl, UrlError> {
        let shown = || text.chars().take(100).collect::<String>();
        let (tls, rest) = if let Some(r) = strip_prefix_ci(text, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(text, "http://") {
            (false, r)
        } else {
            return Err(UrlError::Scheme(shown()));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad_char = |c: char| c.is_control() || c == ' ' || c == '#' || c == '@';
        if authority.contains(bad_char) || path.contains(bad_char) || path.len() > 1024 {
            return Err(UrlError::Form(shown()));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| UrlError::Form(shown()))?;
        let port = match port {
            Some(p) => p,
            None if tls => 443,
            None => 80,
        };
        Ok(RelayUrl {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port` for connecting and CONNECT (IPv6 in brackets).
    pub fn authority(&self) -> String {
        format!("{}:{}", bracket(&self.host), self.port)
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            bracket(&self.host)
        } else {
            self.authority()
        }
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Splits `host[:port]` or `[v6][:port]`; `None` for an empty host or a bad port.
pub(crate) fn split_host_port(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() || host.contains(['[', ']', '/']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse() {
        let u = RelayUrl::parse("https://relay.example.com/overlay").expect("valid");
        assert_eq!(
            u,
            RelayUrl {
                tls: true,
                host: "relay.example.com".into(),
                port: 443,
                path: "/overlay".into()
            }
        );
        assert_eq!(u.authority(), "relay.example.com:443");
        assert_eq!(u.host_header(), "relay.example.com");
        let v = RelayUrl::parse("HTTP://[fd00::1]:8080").expect("valid");
        assert_eq!(
            (v.tls, v.host.as_str(), v.port, v.path.as_str()),
            (false, "fd00::1", 8080, "/")
        );
        assert_eq!(v.authority(), "[fd00::1]:8080");
        assert_eq!(v.to_string(), "http://[fd00::1]:8080/");
    }

    #[test]
    fn errors() {
        for bad in [
            "ftp://x/",
            "relay:80",
            "http://",
            "http://:80/",
            "http://a:0/",
            "http://a:99999/",
            "http://u@a/",
            "http://a/#x",
            "http://a b/",
        ] {
            assert!(RelayUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
