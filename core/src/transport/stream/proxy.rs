//! Which HTTP proxy leads to the relay: `HTTPS_PROXY`/`https_proxy` (also for an `http://`
//! relay URL, after `HTTP_PROXY`/`http_proxy`: the overlay always tunnels with CONNECT), except
//! for hosts that `NO_PROXY`/`no_proxy` lists. The environment is passed in.

use super::url::split_host_port;

/// A proxy to CONNECT through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` of the proxy.
    pub authority: String,
    /// `user:password` for Basic authentication, when the proxy URL had them.
    pub credentials: Option<String>,
}

/// Why a proxy variable cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the proxy setting {0:?} is not of the form http://[user:password@]host:port")]
pub struct ProxyError(pub String);

/// The proxy for a relay at `host` with a URL of scheme `https` (or not), given a lookup of
/// environment variables; `Ok(None)` for a direct connection.
pub fn for_relay(
    host: &str,
    https: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, ProxyError> {
    let first = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| env(n))
            .find(|v| !v.trim().is_empty())
    };
    let no_proxy = first(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    if excluded(host, &no_proxy) {
        return Ok(None);
    }
    let value = if https {
        first(&["HTTPS_PROXY", "https_proxy"])
    } else {
        first(&["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"])
    };
    value.map(|v| parse(&v)).transpose()
}

/// Parses a proxy variable: `http://[user:password@]host[:port][/]` (scheme optional, port
/// 3128 by default as curl's is 1080 only for SOCKS).
pub fn parse(value: &str) -> Result<Proxy, ProxyError> {
    let v = value.trim();
    let err = || ProxyError(v.chars().take(100).collect());
    let rest = match v.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(err()),
        None => v,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (credentials, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(percent_decode(c).ok_or_else(err)?), h),
        None => (None, rest),
    };
    if hostport.contains(['/', ' ']) {
        return Err(err());
    }
    let (host, port) = split_host_port(hostport).ok_or_else(err)?;
    let port = port.unwrap_or(3128);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Proxy {
        authority,
        credentials,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `NO_PROXY` (comma-separated: `*`, host names matching themselves and their
/// subdomains, with or without a leading dot, IP addresses; ports ignored) excludes `host`.
pub fn excluded(host: &str, no_proxy: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = match split_host_port(entry) {
            Some((h, _)) => h,
            None => entry,
        };
        let entry = entry.trim_start_matches('.').to_ascii_lowercase();
        !entry.is_empty()
            && (host == entry
                || host
                    .strip_suffix(&entry)
                    .is_some_and(|prefix| prefix.ends_with('.')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn chooses_the_proxy_and_honours_no_proxy() {
        let vars = [
            ("HTTPS_PROXY", "http://10.9.0.1:8888"),
            ("NO_PROXY", "localhost, .internal,192.0.2.7"),
        ];
        let p = for_relay("relay.example.com", true, env(&vars)).expect("valid");
        assert_eq!(
            p,
            Some(Proxy {
                authority: "10.9.0.1:8888".into(),
                credentials: None
            })
        );
        assert_eq!(
            for_relay("relay.example.com", false, env(&vars))
                .expect("valid")
                .map(|p| p.authority),
            Some("10.9.0.1:8888".into())
        );
        assert_eq!(for_relay("relay.internal", true, env(&vars)), Ok(None));
        assert_eq!(for_relay("a.b.internal", true, env(&vars)), Ok(None));
        assert_eq!(for_relay("192.0.2.7", true, env(&vars)), Ok(None));
        assert_eq!(for_relay("relay.example.com", true, env(&[])), Ok(None));
        assert_eq!(
            for_relay("x", true, env(&[("https_proxy", "p"), ("no_proxy", "*")])),
            Ok(None)
        );
        assert!(!excluded("notinternal", ".internal"));
    }

    #[test]
    fn test_parse() {
        assert_eq!(
            parse("http://us%40r:p%3Ass@proxy.corp:3129/").expect("valid"),
            Proxy {
                authority: "proxy.corp:3129".into(),
                credentials: Some("us@r:p:ss".into())
            }
        );
        assert_eq!(parse("proxy").expect("valid").authority, "proxy:3128");
        assert_eq!(parse("[::1]:8080").expect("valid").authority, "[::1]:8080");
        for bad in ["socks5://p:1080", "http://", "http://p:x", "http://%zz@p:1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
