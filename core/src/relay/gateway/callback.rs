//! Callback addresses: a stable TCP port on the relay per node service, and HTTP routing by
//! `Host` (`<service>.<node>.<domain>`, `<tag>.<service>.<node>.<domain>`).

use crate::names::registry::{valid_label, ServiceKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest HTTP request head the `Host` router reads before giving up.
pub const MAX_HEAD: usize = 16 * 1024;

/// An inclusive range of TCP ports, `A-B` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a port range: write FIRST-LAST, e.g. 30000-30999");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

/// A persisted callback port of a node service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackPortRecord {
    /// The service.
    pub key: ServiceKey,
    /// Its port on the relay.
    pub port: u16,
}

/// How the relay offers callbacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackPlan {
    /// Ports handed to services, if port callbacks are on.
    pub ports: Option<PortRange>,
    /// The name or address the remote environment knows the relay by.
    pub host: String,
    /// The port of the `Host`-routing HTTP listener, if it is on.
    pub http_port: Option<u16>,
}

impl CallbackPlan {
    /// Whether any kind of callback is offered.
    pub fn enabled(&self) -> bool {
        self.ports.is_some() || self.http_port.is_some()
    }

    /// The callback port of `key`: the one it had if still inside the range, else the lowest
    /// free one. When the range is full, the port of a service that is not live (per `live`)
    /// is taken over. Returns the port and the updated records, or `None` if every port of the
    /// range belongs to a live service (or ports are off).
    pub fn assign_port(
        &self,
        records: &[CallbackPortRecord],
        key: &ServiceKey,
        live: impl Fn(&ServiceKey) -> bool,
    ) -> Option<(u16, Vec<CallbackPortRecord>)> {
        let range = self.ports?;
        if let Some(r) = records
            .iter()
            .find(|r| &r.key == key && range.contains(r.port))
        {
            return Some((r.port, records.to_vec()));
        }
        let mut next: Vec<CallbackPortRecord> = records
            .iter()
            .filter(|r| &r.key != key && range.contains(r.port))
            .cloned()
            .collect();
        let used: std::collections::HashSet<u16> = next.iter().map(|r| r.port).collect();
        let port = match (range.first..=range.last).find(|p| !used.contains(p)) {
            Some(p) => p,
            None => {
                let i = next.iter().position(|r| !live(&r.key))?;
                next.remove(i).port
            }
        };
        next.push(CallbackPortRecord {
            key: key.clone(),
            port,
        });
        Some((port, next))
    }

    /// The callback URL of a node service: `http://<host>:<its port>` if it has a port, else
    /// the `Host`-routed name on the HTTP listener (which the remote environment's DNS must
    /// send to the relay).
    pub fn url(&self, key: &ServiceKey, port: Option<u16>, domain: &str) -> Option<String> {
        if let Some(p) = port {
            return Some(format!("http://{}:{p}", bracket(&self.host)));
        }
        let http = self.http_port?;
        let node = key.node.as_deref()?;
        let mut name = String::new();
        if let Some(t) = &key.tag {
            name.push_str(t);
            name.push('.');
        }
        name.push_str(&key.name);
        name.push('.');
        name.push_str(node);
        name.push('.');
        name.push_str(domain.trim_end_matches('.'));
        Some(format!("http://{name}:{http}"))
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The node service a `Host` value names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    /// The node.
    pub node: String,
    /// The service.
    pub name: String,
    /// The tag, if any.
    pub tag: Option<String>,
}

impl HostRoute {
    /// Parses `[tag.]service.node.domain[:port]` (case-insensitive, trailing dot allowed).
    pub fn parse(host: &str, domain: &str) -> Option<HostRoute> {
        let host = host.trim();
        let host = match host.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let rest = host.strip_suffix(&domain)?.strip_suffix('.')?;
        let labels: Vec<&str> = rest.split('.').collect();
        if !labels.iter().all(|l| valid_label(l)) {
            return None;
        }
        match labels.as_slice() {
            [name, node] => Some(HostRoute {
                node: node.to_string(),
                name: name.to_string(),
                tag: None,
            }),
            [tag, name, node] => Some(HostRoute {
                node: node.to_string(),
                name: name.to_string(),
                tag: Some(tag.to_string()),
            }),
            _ => None,
        }
    }

    /// The registry key of the service.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::node(&self.node, &self.name, self.tag.as_deref())
    }
}

/// What the start of an HTTP request says about its `Host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadScan {
    /// The head is not complete yet: read more.
    Incomplete,
    /// The head is complete; its `Host` value, if any.
    Host(Option<String>),
    /// Not an HTTP/1 request head, or longer than [`MAX_HEAD`].
    Invalid,
}

/// Looks for the `Host` header in the bytes read so far from a connection.
pub fn scan_head(buf: &[u8]) -> HeadScan {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let Some(end) = end else {
        return if buf.len() >= MAX_HEAD {
            HeadScan::Invalid
        } else {
            HeadScan::Incomplete
        };
    };
    if end > MAX_HEAD {
        return HeadScan::Invalid;
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return HeadScan::Invalid;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    if !request_line.contains(" HTTP/1.") {
        return HeadScan::Invalid;
    }
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("host") {
                return HeadScan::Host(Some(v.trim().to_string()));
            }
        }
    }
    HeadScan::Host(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CallbackPlan {
        CallbackPlan {
            ports: Some("30000-30002".parse().unwrap()),
            host: "relay.staging".into(),
            http_port: Some(8000),
        }
    }

    #[test]
    fn port_range_parses() {
        assert_eq!(
            "1-2".parse::<PortRange>(),
            Ok(PortRange { first: 1, last: 2 })
        );
        for bad in ["", "5", "0-3", "9-3", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_are_stable_and_reused_only_when_full() {
        let p = plan();
        let a = ServiceKey::node("n", "a", None);
        let b = ServiceKey::node("n", "b", None);
        let c = ServiceKey::node("n", "c", Some("v2"));
        let d = ServiceKey::node("m", "a", None);
        let (pa, r) = p.assign_port(&[], &a, |_| true).unwrap();
        let (pb, r) = p.assign_port(&r, &b, |_| true).unwrap();
        let (pc, r) = p.assign_port(&r, &c, |_| true).unwrap();
        assert_eq!((pa, pb, pc), (30000, 30001, 30002));
        // The same key gets the same port again.
        assert_eq!(p.assign_port(&r, &b, |_| true).unwrap().0, 30001);
        // Full, all live: none.
        assert!(p.assign_port(&r, &d, |_| true).is_none());
        // Full, b gone: d takes b's port, and a keeps its own.
        let (pd, r2) = p.assign_port(&r, &d, |k| k != &b).unwrap();
        assert_eq!(pd, 30001);
        assert_eq!(p.assign_port(&r2, &a, |_| true).unwrap().0, 30000);
        assert_eq!(r2.len(), 3);
        // A narrower range reassigns ports that fell outside it.
        let narrow = CallbackPlan {
            ports: Some("30001-30001".parse().unwrap()),
            ..plan()
        };
        assert_eq!(narrow.assign_port(&r, &c, |_| false).unwrap().0, 30001);
        assert!(CallbackPlan::default()
            .assign_port(&[], &a, |_| true)
            .is_none());
    }

    #[test]
    fn urls() {
        let p = plan();
        let k = ServiceKey::node("alpha", "api", Some("v2"));
        assert_eq!(
            p.url(&k, Some(30000), "ovl.internal").as_deref(),
            Some("http://relay.staging:30000")
        );
        assert_eq!(
            p.url(&k, None, "ovl.internal.").as_deref(),
            Some("http://v2.api.alpha.ovl.internal:8000")
        );
        let v6 = CallbackPlan {
            host: "fd00::1".into(),
            ..plan()
        };
        assert_eq!(
            v6.url(&k, Some(1), "d").as_deref(),
            Some("http://[fd00::1]:1")
        );
        assert_eq!(CallbackPlan::default().url(&k, None, "d"), None);
    }

    #[test]
    fn host_routes() {
        let r = HostRoute::parse("API.alpha.ovl.internal:8000", "ovl.internal").unwrap();
        assert_eq!(r.key(), ServiceKey::node("alpha", "api", None));
        let r = HostRoute::parse("v2.api.alpha.ovl.internal.", "ovl.internal").unwrap();
        assert_eq!(r.key(), ServiceKey::node("alpha", "api", Some("v2")));
        for bad in [
            "api.ovl.internal",
            "a.b.c.d.ovl.internal",
            "api.alpha.example.com",
            "ovl.internal",
            "x_y.alpha.ovl.internal",
            "api.alphaovl.internal",
        ] {
            assert_eq!(HostRoute::parse(bad, "ovl.internal"), None, "{bad}");
        }
    }

    #[test]
    fn head_scan() {
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nHo"), HeadScan::Incomplete);
        assert_eq!(
            scan_head(b"GET / HTTP/1.1\r\nAccept: */*\r\nhOsT:  api.n.d:80 \r\n\r\nbody"),
            HeadScan::Host(Some("api.n.d:80".into()))
        );
        assert_eq!(scan_head(b"GET / HTTP/1.0\r\n\r\n"), HeadScan::Host(None));
        assert_eq!(scan_head(b"\x16\x03\x01 tls\r\n\r\n"), HeadScan::Invalid);
        assert_eq!(scan_head(&vec![b'a'; MAX_HEAD]), HeadScan::Invalid);
        assert_eq!(
            scan_head(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']),
            HeadScan::Invalid
        );
    }
}
