//! Who may use the inspector: the decision for one HTTP request.
//!
//! The inspector listens on loopback, which every local user can reach, so the listener proves
//! nothing. Every request must carry the inspector's [`Secret`] (256 random bits the daemon
//! makes at start and hands out only through its control socket, which is limited to root and
//! the user the node belongs to): in a cookie (the browser, after its first visit), the
//! `X-Overlay-Token` header (scripts), or `?token=` (the URL `overlay inspect` prints). Before
//! that, the Host header must name the listener (DNS rebinding) and a state-changing request
//! must not come from a foreign Origin (CSRF).

use crate::traffic::capture::filter::query_pairs;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// The header scripts send the token in.
pub const HEADER: &str = "x-overlay-token";
/// The query parameter the printed URL carries the token in.
pub const PARAM: &str = "token";

/// The inspector's secret: 256 random bits, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from random bytes (the caller supplies the randomness).
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    /// The 64 lower-case hex digits that go into URLs, cookies and headers.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `presented` is this secret in hex; the comparison of the bytes takes the same
    /// time wherever they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let Some(bytes) = decode_hex(presented.trim()) else {
            return false;
        };
        bool::from(bytes.ct_eq(&self.0))
    }
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = digit(*pair.first()?)?;
        let lo = digit(*pair.get(1)?)?;
        *o = hi << 4 | lo;
    }
    Some(out)
}

/// The cookie's name; the port is in it, so inspectors of several nodes on one machine do not
/// overwrite each other's cookies (cookies ignore ports).
pub fn cookie_name(port: u16) -> String {
    format!("overlay_inspect_{port}")
}

/// The `Set-Cookie` value a first visit gets: the browser sends it back only to this host, on
/// same-site requests, and scripts cannot read it.
pub fn set_cookie(secret: &Secret, port: u16) -> String {
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        cookie_name(port),
        secret.hex()
    )
}

/// What the inspector needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query (after `?`), maybe empty.
    pub query: &'a str,
    /// The Host header.
    pub host: Option<&'a str>,
    /// The Origin header.
    pub origin: Option<&'a str>,
    /// The Cookie header.
    pub cookie: Option<&'a str>,
    /// The `X-Overlay-Token` header.
    pub token_header: Option<&'a str>,
    /// The address the inspector listens on.
    pub listener: SocketAddr,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Allow,
    /// A page visit with the token in its URL: set the cookie and redirect to this target (the
    /// same URL without the token, so it stays out of history, bookmarks and screenshots).
    SetCookie {
        /// Where to redirect.
        location: String,
    },
    /// The Host header names some other host (DNS rebinding): 403.
    BadHost,
    /// A state-changing request from another web site: 403.
    ForeignOrigin,
    /// No valid token: 401, and nothing else.
    Unauthorized,
}

/// Decides whether `req` may be served.
pub fn decide(req: &Request<'_>, secret: &Secret) -> Decision {
    if !req.host.is_some_and(|h| host_allowed(h, req.listener)) {
        return Decision::BadHost;
    }
    let safe = matches!(req.method, "GET" | "HEAD");
    if !safe {
        if let Some(origin) = req.origin {
            if !origin_allowed(origin, req.listener) {
                return Decision::ForeignOrigin;
            }
        }
    }
    let from_query = query_pairs(req.query)
        .into_iter()
        .any(|(k, v)| k == PARAM && secret.matches(&v));
    if from_query && safe && matches!(req.path, "/" | "/index.html") {
        return Decision::SetCookie {
            location: without_token(req.path, req.query),
        };
    }
    let name = cookie_name(req.listener.port());
    let from_cookie = req.cookie.is_some_and(|c| {
        c.split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| k == name && secret.matches(v))
    });
    let from_header = req.token_header.is_some_and(|t| secret.matches(t));
    if from_query || from_cookie || from_header {
        Decision::Allow
    } else {
        Decision::Unauthorized
    }
}

/// `path?query` with every `token=` parameter taken out.
pub fn without_token(path: &str, query: &str) -> String {
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(k, _)| k) != PARAM)
        .collect();
    if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// Whether a Host header (`name[:port]`) names the listener: `localhost`, `127.0.0.1` or the
/// listener's own address.
pub fn host_allowed(host: &str, listener: SocketAddr) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() && !h.is_empty() => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name == "127.0.0.1"
        || name == listener.ip().to_string()
}

/// Whether an Origin header (`http://host[:port]`) is the inspector's own page.
pub fn origin_allowed(origin: &str, listener: SocketAddr) -> bool {
    let Some(authority) = origin.strip_prefix("http://") else {
        return false;
    };
    let port = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => p.parse::<u16>().ok(),
        _ => Some(80),
    };
    port == Some(listener.port()) && host_allowed(authority, listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTENER: &str = "127.0.0.1:4141";

    fn secret() -> Secret {
        Secret::from_bytes([7; 32])
    }

    fn req<'a>(method: &'a str, path: &'a str, query: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            query,
            host: Some("127.0.0.1:4141"),
            origin: None,
            cookie: None,
            token_header: None,
            listener: LISTENER.parse().expect("addr"),
        }
    }

    #[test]
    fn hex_roundtrip_and_wrong_tokens() {
        let s = secret();
        assert_eq!(s.hex().len(), 64);
        assert!(s.matches(&s.hex()));
        assert!(s.matches(&s.hex().to_uppercase()));
        let mut other = s.hex();
        other.replace_range(63.., "8");
        assert!(!s.matches(&other));
        assert!(!s.matches(""));
        assert!(!s.matches(&s.hex()[..62]));
        assert!(!s.matches(&format!("{}00", s.hex())));
        assert!(!s.matches(&"zz".repeat(32)));
        assert!(!s.matches(&"é".repeat(32)));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn nothing_without_the_token() {
        let s = secret();
        for (m, p) in [
            ("GET", "/"),
            ("GET", "/api/exchanges"),
            ("POST", "/api/clear"),
            ("DELETE", "/api/exchanges"),
            ("POST", "/api/exchanges/1/replay"),
            ("GET", "/api/events"),
        ] {
            assert_eq!(
                decide(&req(m, p, ""), &s),
                Decision::Unauthorized,
                "{m} {p}"
            );
            let wrong = format!("token={}", "0".repeat(64));
            assert_eq!(decide(&req(m, p, &wrong), &s), Decision::Unauthorized);
        }
    }

    #[test]
    fn the_printed_url_sets_the_cookie_and_drops_the_token() {
        let s = secret();
        let q = format!("token={}&service=api", s.hex());
        assert_eq!(
            decide(&req("GET", "/", &q), &s),
            Decision::SetCookie {
                location: "/?service=api".into()
            }
        );
        let q = format!("token={}", s.hex());
        assert_eq!(
            decide(&req("GET", "/", &q), &s),
            Decision::SetCookie {
                location: "/".into()
            }
        );
        // The API takes the query token as it is (curl).
        assert_eq!(
            decide(&req("GET", "/api/exchanges", &q), &s),
            Decision::Allow
        );
        assert!(set_cookie(&s, 4141).starts_with(&format!("overlay_inspect_4141={}", s.hex())));
        assert!(set_cookie(&s, 4141).contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn cookie_and_header_are_accepted() {
        let s = secret();
        let cookie = format!("theme=dark; overlay_inspect_4141={}", s.hex());
        let mut r = req("POST", "/api/clear", "");
        r.cookie = Some(&cookie);
        assert_eq!(decide(&r, &s), Decision::Allow);
        // Another port's cookie is not this inspector's.
        let other = format!("overlay_inspect_4142={}", s.hex());
        r.cookie = Some(&other);
        assert_eq!(decide(&r, &s), Decision::Unauthorized);
        let hex = s.hex();
        let mut r = req("GET", "/api/exchanges/3", "");
        r.token_header = Some(&hex);
        assert_eq!(decide(&r, &s), Decision::Allow);
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        let s = secret();
        let hex = s.hex();
        let mut r = req("GET", "/api/exchanges", "");
        r.token_header = Some(&hex);
        for host in [
            "evil.example",
            "evil.example:4141",
            "127.0.0.1.evil:4141",
            "",
        ] {
            r.host = Some(host);
            assert_eq!(decide(&r, &s), Decision::BadHost, "{host}");
        }
        r.host = None;
        assert_eq!(decide(&r, &s), Decision::BadHost);
        for host in ["localhost:4141", "127.0.0.1", "LOCALHOST"] {
            r.host = Some(host);
            assert_eq!(decide(&r, &s), Decision::Allow, "{host}");
        }
        let mut r = req("POST", "/api/clear", "");
        r.token_header = Some(&hex);
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8000",
            "https://127.0.0.1:4141",
        ] {
            r.origin = Some(origin);
            assert_eq!(decide(&r, &s), Decision::ForeignOrigin, "{origin}");
        }
        for origin in ["http://127.0.0.1:4141", "http://localhost:4141"] {
            r.origin = Some(origin);
            assert_eq!(decide(&r, &s), Decision::Allow, "{origin}");
        }
    }

    #[test]
    fn without_token_keeps_the_rest() {
        assert_eq!(without_token("/", "a=1&token=x&b=2"), "/?a=1&b=2");
        assert_eq!(without_token("/", "token"), "/");
        assert_eq!(without_token("/index.html", ""), "/index.html");
    }
}
