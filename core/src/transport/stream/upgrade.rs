//! The HTTP/1.1 side of the stream: the WebSocket upgrade (RFC 6455, section 4) between node
//! and relay, and the CONNECT request through an HTTP proxy.
//!
//! The relay answers nothing but the upgrade: a request for another path is a 404, anything
//! else that is not a valid upgrade a 400, and a head over [`MAX_HEAD`] bytes is never read
//! to its end. Parsing never panics (fuzz target `stream_frame` feeds these too).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The longest request or response head read (proxies and ingresses add headers).
pub const MAX_HEAD: usize = 8192;
/// The subprotocol name the node asks for; the relay echoes it.
pub const PROTOCOL: &str = "overlay-wireguard";
/// RFC 6455's constant for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Where a head ends: the index after its blank line, if it is complete.
pub fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Why the relay refuses a request: the status and one sentence for the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// A request for another path (status 404).
    #[error("not found")]
    NotFound,
    /// Not a WebSocket upgrade of the overlay (status 400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl UpgradeError {
    /// The whole HTTP response for this refusal; the connection closes after it.
    pub fn response(&self) -> String {
        let (status, body) = match self {
            UpgradeError::NotFound => ("404 Not Found", "not found\n".to_string()),
            UpgradeError::BadRequest(why) => ("400 Bad Request", format!("{why}\n")),
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// A head's start line and headers, borrowed from the bytes.
struct Head<'a> {
    start: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

fn parse_head(b: &[u8]) -> Option<Head<'_>> {
    let text = std::str::from_utf8(b).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return None;
        }
        headers.push((name, value.trim()));
    }
    Some(Head { start, headers })
}

impl Head<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// An accepted upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The whole `101 Switching Protocols` response to send.
    pub response: String,
}

/// Checks a complete request head (through its blank line) against the upgrade served at
/// `path`, and gives the response that switches protocols.
pub fn accept(head: &[u8], path: &str) -> Result<Accepted, UpgradeError> {
    let h = parse_head(head).ok_or(UpgradeError::BadRequest("not an HTTP/1.1 request"))?;
    let mut parts = h.start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(UpgradeError::BadRequest("not an HTTP/1.1 request"));
    };
    if version != "HTTP/1.1" {
        return Err(UpgradeError::BadRequest("not an HTTP/1.1 request"));
    }
    let target_path = target.split('?').next().unwrap_or(target);
    if target_path != path {
        return Err(UpgradeError::NotFound);
    }
    if method != "GET" {
        return Err(UpgradeError::BadRequest(
            "only a GET upgrade is served here",
        ));
    }
    if !h.has_token("upgrade", "websocket") || !h.has_token("connection", "upgrade") {
        return Err(UpgradeError::BadRequest(
            "this is the overlay's WebSocket endpoint; it serves only upgrades",
        ));
    }
    if h.get("sec-websocket-version") != Some("13") {
        return Err(UpgradeError::BadRequest("WebSocket version 13 is required"));
    }
    let key = h
        .get("sec-websocket-key")
        .filter(|k| STANDARD.decode(k).is_ok_and(|b| b.len() == 16))
        .ok_or(UpgradeError::BadRequest(
            "a valid Sec-WebSocket-Key is required",
        ))?;
    let protocol = if h.has_token("sec-websocket-protocol", PROTOCOL) {
        format!("Sec-WebSocket-Protocol: {PROTOCOL}\r\n")
    } else {
        String::new()
    };
    Ok(Accepted {
        response: format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{protocol}\r\n",
            accept_key(key)
        ),
    })
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    STANDARD.encode(d.as_ref())
}

/// The node's upgrade request for `path` on `host` (as the URL names it, with a port if not
/// the default); `nonce` is 16 random bytes.
pub fn request(host: &str, path: &str, nonce: [u8; 16]) -> (String, String) {
    let key = STANDARD.encode(nonce);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\nUser-Agent: overlay/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    (req, key)
}

/// Why the relay's (or a proxy's) answer is not the one expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not an HTTP response.
    #[error("the answer is not HTTP")]
    NotHttp,
    /// Another status than the one expected.
    #[error("the answer was HTTP {0}")]
    Status(String),
    /// A 101 without the right accept key: not our relay's upgrade.
    #[error("the upgrade answer has a wrong Sec-WebSocket-Accept")]
    BadAccept,
}

fn status_of<'a>(h: &Head<'a>) -> Result<&'a str, ResponseError> {
    let rest = h
        .start
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| h.start.strip_prefix("HTTP/1.0 "))
        .ok_or(ResponseError::NotHttp)?;
    Ok(rest)
}

/// Checks the relay's answer (a complete head) to [`request`] with `key`.
pub fn check_response(head: &[u8], key: &str) -> Result<(), ResponseError> {
    let h = parse_head(head).ok_or(ResponseError::NotHttp)?;
    let status = status_of(&h)?;
    if !status.starts_with("101") {
        return Err(ResponseError::Status(status.chars().take(60).collect()));
    }
    if h.get("sec-websocket-accept") != Some(accept_key(key).as_str()) {
        return Err(ResponseError::BadAccept);
    }
    Ok(())
}

/// The CONNECT request to a proxy for `authority` (`host:port`), with Basic credentials
/// (`user:password`, already percent-decoded) when the proxy URL had them.
pub fn connect_request(authority: &str, credentials: Option<&str>) -> String {
    let auth = credentials
        .map(|c| format!("Proxy-Authorization: Basic {}\r\n", STANDARD.encode(c)))
        .unwrap_or_default();
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n")
}

/// Checks a proxy's answer to CONNECT: any 2xx opens the tunnel.
pub fn check_connect_response(head: &[u8]) -> Result<(), ResponseError> {
    let h = parse_head(head).ok_or(ResponseError::NotHttp)?;
    let status = status_of(&h)?;
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(ResponseError::Status(status.chars().take(60).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn accept_key_matches_the_rfc() {
        // RFC 6455, section 1.3.
        assert_eq!(accept_key(RFC_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_valid_upgrade_is_accepted_and_the_node_checks_the_answer() {
        let a = accept(upgrade("/overlay", "").as_bytes(), "/overlay").expect("accepted");
        assert!(a.response.starts_with("HTTP/1.1 101 "));
        assert!(a.response.ends_with("\r\n\r\n"));
        assert_eq!(check_response(a.response.as_bytes(), RFC_KEY), Ok(()));
        assert_eq!(
            check_response(a.response.as_bytes(), "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(ResponseError::BadAccept)
        );
        let with_proto = accept(
            upgrade(
                "/overlay?x=1",
                &format!("Sec-WebSocket-Protocol: {PROTOCOL}\r\n"),
            )
            .as_bytes(),
            "/overlay",
        )
        .expect("accepted");
        assert!(with_proto.response.contains(PROTOCOL));
    }

    #[test]
    fn the_request_the_node_sends_is_accepted() {
        let (req, key) = request("relay.example:8080", "/wg", [7; 16]);
        assert_eq!(head_end(req.as_bytes()), Some(req.len()));
        let a = accept(req.as_bytes(), "/wg").expect("accepted");
        assert_eq!(check_response(a.response.as_bytes(), &key), Ok(()));
    }

    #[test]
    fn anything_but_the_upgrade_is_refused() {
        assert_eq!(
            accept(upgrade("/other", "").as_bytes(), "/overlay"),
            Err(UpgradeError::NotFound)
        );
        let plain = b"GET /overlay HTTP/1.1\r\nHost: relay\r\n\r\n";
        assert!(matches!(
            accept(plain, "/overlay"),
            Err(UpgradeError::BadRequest(_))
        ));
        let post = upgrade("/overlay", "").replacen("GET", "POST", 1);
        assert!(matches!(
            accept(post.as_bytes(), "/overlay"),
            Err(UpgradeError::BadRequest(_))
        ));
        let v8 = upgrade("/overlay", "").replace("Version: 13", "Version: 8");
        assert!(matches!(
            accept(v8.as_bytes(), "/overlay"),
            Err(UpgradeError::BadRequest(_))
        ));
        let badkey = upgrade("/overlay", "").replace(RFC_KEY, "short");
        assert!(matches!(
            accept(badkey.as_bytes(), "/overlay"),
            Err(UpgradeError::BadRequest(_))
        ));
        for junk in [
            &b"\xff\xfe\r\n\r\n"[..],
            b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(matches!(
                accept(junk, "/"),
                Err(UpgradeError::BadRequest(_))
            ));
        }
        let r = UpgradeError::NotFound.response();
        assert!(r.starts_with("HTTP/1.1 404 ") && r.ends_with("not found\n"));
    }

    #[test]
    fn proxy_connect() {
        assert_eq!(
            connect_request("relay:443", Some("u:p")),
            "CONNECT relay:443 HTTP/1.1\r\nHost: relay:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        assert_eq!(
            check_connect_response(
                b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11\r\n\r\n"
            ),
            Ok(())
        );
        assert_eq!(
            check_connect_response(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Err(ResponseError::Status("403 Forbidden".into()))
        );
        assert_eq!(
            check_connect_response(b"SSH-2.0\r\n\r\n"),
            Err(ResponseError::NotHttp)
        );
    }
}
