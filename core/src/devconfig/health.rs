//! The HTTP/1.1 health check's bytes: the request it sends, and the status it reads back. The
//! driver sends `Connection: close`, reads the status line and headers (and what follows, up to
//! a limit) and closes after the server did, so no service sees a reset.

/// The most of a response the check reads (head and body); the rest is not waited for.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// The request of a health check of `path` on `127.0.0.1:port`.
pub fn request(path: &str, port: u16) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: overlay-dev\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// Whether `data` holds a complete response head (status line and headers).
pub fn head_complete(data: &[u8]) -> bool {
    data.windows(4).any(|w| w == b"\r\n\r\n") || data.windows(2).any(|w| w == b"\n\n")
}

/// The status code of a response beginning with `data`'s status line (`HTTP/1.x NNN ...`).
pub fn status(data: &[u8]) -> Option<u16> {
    let line_end = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(data.get(..line_end)?).ok()?;
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

/// Whether a status passes the check: below 500 (a 404 still shows the service is up).
pub fn passes(code: u16) -> bool {
    (100..500).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_emit_request() {
        let r = request("/healthz", 8080);
        assert!(r.starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn test_parse_status() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(status(ok), Some(200));
        assert!(head_complete(ok));
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"HTTP/1.1 204\r\n\r\n"), Some(204));
        assert!(!head_complete(b"HTTP/1.1 200 OK\r\nServer: x\r\n"));
        assert_eq!(status(b"HTTP/1.1 200 OK"), None, "line not complete");
        assert_eq!(status(b"SSH-2.0-OpenSSH_9\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 20x OK\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(status(&[0xff, 0xfe, b'\n']), None);
        assert!(passes(200) && passes(404) && !passes(500) && !passes(99));
    }
}
