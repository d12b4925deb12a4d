//! The relay's catalog of remote services (TOML), as in DESIGN.md:
//!
//! ```toml
//! [services.orders]
//! address = "orders.staging.svc.cluster.local:8080"   # host:port as seen from the relay
//! port = 8080                                          # port on the overlay name (default: same)
//! front = "0.0.0.0:18080"                              # optional: the relay listens here for the
//!                                                      # remote environment's callers (intercepts)
//! ```

use crate::names::registry::{valid_label, valid_target, RemoteEntry, RESERVED_NAMES};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Largest catalog file accepted.
pub const MAX_LEN: usize = 1 << 20;

/// A catalog problem, with the line it is on where known.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct CatalogError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    services: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: String,
    port: Option<u16>,
    front: Option<String>,
}

/// A service's front: where the relay listens for the remote environment's callers of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Front {
    /// The service (its catalog entry).
    pub service: String,
    /// The address the relay listens on.
    pub listen: SocketAddr,
    /// Where callers go without an intercept: the entry's `address`.
    pub address: String,
}

/// Everything a catalog says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The remote services.
    pub entries: Vec<RemoteEntry>,
    /// The fronts of those that have one.
    pub fronts: Vec<Front>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Parses a catalog's remote services; every entry is checked, the first problem is reported.
pub fn parse(text: &str) -> Result<Vec<RemoteEntry>, CatalogError> {
    parse_catalog(text).map(|c| c.entries)
}

/// Parses a catalog with its fronts; every entry is checked, the first problem is reported.
pub fn parse_catalog(text: &str) -> Result<Catalog, CatalogError> {
    if text.len() > MAX_LEN {
        return Err(CatalogError {
            line: 0,
            reason: format!("the catalog is larger than {MAX_LEN} bytes"),
        });
    }
    let file: File = toml::from_str(text).map_err(|e| CatalogError {
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
        // The toml crate leaves some syntax errors without a message.
        reason: match e.message() {
            "" => "invalid TOML syntax".to_string(),
            m => m.to_string(),
        },
    })?;
    let header_line = |name: &str| {
        text.find(&format!("[services.{name}]"))
            .map(|o| line_of(text, o))
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    let mut fronts: Vec<Front> = Vec::new();
    for (name, e) in file.services {
        let line = header_line(&name);
        if !valid_label(&name) {
            return Err(CatalogError {
                line,
                reason: format!(
                    "'{name}' is not a valid service name (lower-case letters, digits, '-')"
                ),
            });
        }
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(CatalogError {
                line,
                reason: format!(
                    "'{name}' is reserved by the overlay's DNS ({name}.<domain> names other things); rename the entry"
                ),
            });
        }
        if !valid_target(&e.address) {
            return Err(CatalogError {
                line,
                reason: format!("address '{}' of {name} is not host:port", e.address),
            });
        }
        let target_port = e
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok());
        let port = match e.port.or(target_port) {
            Some(p) if p > 0 => p,
            _ => {
                return Err(CatalogError {
                    line,
                    reason: format!("{name} needs a port (in address or as port = N)"),
                })
            }
        };
        if let Some(f) = &e.front {
            let listen = parse_front(f).ok_or_else(|| CatalogError {
                line,
                reason: format!(
                    "front '{f}' of {name} is not IP:PORT (the address the relay listens on, e.g. 0.0.0.0:18080)"
                ),
            })?;
            if let Some(other) = fronts.iter().find(|o| o.listen == listen) {
                return Err(CatalogError {
                    line,
                    reason: format!(
                        "front {listen} of {name} is already the front of {}",
                        other.service
                    ),
                });
            }
            fronts.push(Front {
                service: name.clone(),
                listen,
                address: e.address.clone(),
            });
        }
        out.push(RemoteEntry {
            name,
            port,
            target: e.address,
        });
    }
    Ok(Catalog {
        entries: out,
        fronts,
    })
}

/// A front's listen address: `IP:PORT` with a port other than 0.
fn parse_front(s: &str) -> Option<SocketAddr> {
    s.trim()
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        let c = parse(
            "[services.orders]\naddress = \"orders.svc:8080\"\n\n[services.inventory]\naddress = \"10.1.2.3:9000\"\nport = 80\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        let inv = c.iter().find(|e| e.name == "inventory").unwrap();
        assert_eq!((inv.port, inv.target.as_str()), (80, "10.1.2.3:9000"));
        let orders = c.iter().find(|e| e.name == "orders").unwrap();
        assert_eq!(orders.port, 8080);
    }

    #[test]
    fn reports_lines() {
        let e = parse("[services.orders]\naddress = \"x:1\"\ncolour = 1\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse("[services.orders]\naddress = 5\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("\n[services.Bad_Name]\naddress = \"x:1\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[services.a]\naddress = \"nohostport\"\n").unwrap_err();
        assert!(e.reason.contains("host:port"), "{e}");
        let e = parse("[services.remote]\naddress = \"x:1\"\n").unwrap_err();
        assert!(e.reason.contains("reserved"), "{e}");
        assert!(parse("[services.a\n").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn fronts() {
        let c = parse_catalog(
            "[services.orders]\naddress = \"orders-backend:8080\"\nfront = \"0.0.0.0:18080\"\n\n[services.billing]\naddress = \"b:1\"\n",
        )
        .unwrap();
        assert_eq!(c.entries.len(), 2);
        assert_eq!(
            c.fronts,
            vec![Front {
                service: "orders".into(),
                listen: "0.0.0.0:18080".parse().unwrap(),
                address: "orders-backend:8080".into(),
            }]
        );
        for bad in ["orders:80", "0.0.0.0:0", "10.0.0.1", ""] {
            let text = format!("[services.a]\naddress = \"x:1\"\nfront = \"{bad}\"\n");
            let e = parse_catalog(&text).unwrap_err();
            assert!(e.reason.contains("not IP:PORT"), "{bad}: {e}");
            assert_eq!(e.line, 1);
        }
        let e = parse_catalog(
            "[services.a]\naddress = \"x:1\"\nfront = \"[::]:80\"\n[services.b]\naddress = \"x:1\"\nfront = \"[::]:80\"\n",
        )
        .unwrap_err();
        assert!(e.reason.contains("already the front of a"), "{e}");
    }
}
