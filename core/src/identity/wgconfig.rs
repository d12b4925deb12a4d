//! The wg-quick configuration format, the subset overlay reads and writes.
//!
//! `overlay-relay peer add --wireguard-config` prints it for stock WireGuard clients, and
//! `overlay daemon --config FILE` reads the same file, so one format serves both.

use crate::identity::key;
use crate::net::prefix::Ipv4Prefix;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Largest config file accepted.
pub const MAX_LEN: usize = 64 * 1024;

/// A parsed wg-quick file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgConfig {
    /// The `[Interface]` section.
    pub interface: Interface,
    /// The `[Peer]` sections.
    pub peers: Vec<Peer>,
}

/// The local side.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Interface {
    /// `PrivateKey`.
    pub private_key: [u8; 32],
    /// `Address`: addresses with their prefix length.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// `MTU`.
    pub mtu: Option<u16>,
    /// `ListenPort`.
    pub listen_port: Option<u16>,
    /// `DNS`, kept as text.
    pub dns: Vec<String>,
}

/// One remote peer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Peer {
    /// `PublicKey`.
    pub public_key: [u8; 32],
    /// `PresharedKey`.
    pub preshared_key: Option<[u8; 32]>,
    /// `Endpoint` as `host:port`.
    pub endpoint: Option<String>,
    /// `AllowedIPs`.
    pub allowed_ips: Vec<Ipv4Prefix>,
    /// `PersistentKeepalive` in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// A config file problem, with its line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WgConfigError {
    /// Something wrong on a line.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Something missing overall.
    #[error("{0}")]
    Missing(&'static str),
    /// The file is too large to be a config.
    #[error("the file is larger than {MAX_LEN} bytes; it is not a WireGuard config")]
    TooLarge,
}

enum Section {
    None,
    Interface,
    Peer,
}

impl WgConfig {
    /// Parses wg-quick text.
    pub fn parse(text: &str) -> Result<WgConfig, WgConfigError> {
        if text.len() > MAX_LEN {
            return Err(WgConfigError::TooLarge);
        }
        let mut section = Section::None;
        let mut iface: Option<Interface> = None;
        let mut have_private = false;
        let mut peers: Vec<(Peer, bool)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |reason: String| WgConfigError::Line {
                line: line_no,
                reason,
            };
            let line = raw.split(['#', ';']).next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                section = match line.to_ascii_lowercase().as_str() {
                    "[interface]" => {
                        if iface.is_some() {
                            return Err(err("a second [Interface] section".into()));
                        }
                        iface = Some(Interface::default());
                        Section::Interface
                    }
                    "[peer]" => {
                        peers.push((Peer::default(), false));
                        Section::Peer
                    }
                    _ => return Err(err(format!("unknown section {line}"))),
                };
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err(format!("expected 'Key = value', found '{line}'")))?;
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            let bad = |what: &str| err(format!("{what} '{v}' is not valid"));
            match (&section, iface.as_mut(), peers.last_mut()) {
                (Section::Interface, Some(ifc), _) => match k.as_str() {
                    "privatekey" => {
                        ifc.private_key = key::decode(v).map_err(|e| err(e.to_string()))?;
                        have_private = true;
                    }
                    "address" => {
                        for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                            ifc.addresses
                                .push(parse_addr(a).ok_or_else(|| bad("Address"))?);
                        }
                    }
                    "mtu" => ifc.mtu = Some(v.parse().map_err(|_| bad("MTU"))?),
                    "listenport" => {
                        ifc.listen_port = Some(v.parse().map_err(|_| bad("ListenPort"))?)
                    }
                    // Empty entries are dropped, so rendering never grows the file.
                    "dns" => ifc.dns.extend(
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from),
                    ),
                    "table" | "preup" | "postup" | "predown" | "postdown" | "saveconfig"
                    | "fwmark" => {}
                    _ => return Err(err(format!("unknown key '{k}' in [Interface]"))),
                },
                (Section::Peer, _, Some((peer, have_key))) => match k.as_str() {
                    "publickey" => {
                        peer.public_key = key::decode(v).map_err(|e| err(e.to_string()))?;
                        *have_key = true;
                    }
                    "presharedkey" => {
                        peer.preshared_key = Some(key::decode(v).map_err(|e| err(e.to_string()))?)
                    }
                    "endpoint" => {
                        if !v.contains(':') {
                            return Err(bad("Endpoint (host:port)"));
                        }
                        peer.endpoint = Some(v.to_string());
                    }
                    "allowedips" => {
                        for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                            let (ip, len) = parse_addr(a).ok_or_else(|| bad("AllowedIPs"))?;
                            let p = Ipv4Prefix::new(ip, len).map_err(|e| err(e.to_string()))?;
                            peer.allowed_ips.push(p);
                        }
                    }
                    "persistentkeepalive" => {
                        peer.persistent_keepalive = match v {
                            "off" => None,
                            _ => Some(v.parse().map_err(|_| bad("PersistentKeepalive"))?),
                        }
                    }
                    _ => return Err(err(format!("unknown key '{k}' in [Peer]"))),
                },
                _ => return Err(err("a setting outside of [Interface] or [Peer]".into())),
            }
        }
        let interface = iface.ok_or(WgConfigError::Missing(
            "the file has no [Interface] section",
        ))?;
        if !have_private {
            return Err(WgConfigError::Missing("[Interface] has no PrivateKey"));
        }
        if peers.iter().any(|(_, have)| !have) {
            return Err(WgConfigError::Missing("a [Peer] section has no PublicKey"));
        }
        Ok(WgConfig {
            interface,
            peers: peers.into_iter().map(|(p, _)| p).collect(),
        })
    }

    /// Renders the config as wg-quick text. `private_key` of `None` writes a placeholder comment.
    pub fn render(&self, include_private: bool) -> String {
        let mut s = String::from("[Interface]\n");
        if include_private {
            let _ = writeln!(
                s,
                "PrivateKey = {}",
                key::encode(&self.interface.private_key)
            );
        } else {
            s.push_str(
                "# PrivateKey = <the private key that belongs to the public key you gave>\n",
            );
        }
        if !self.interface.addresses.is_empty() {
            let a: Vec<String> = self
                .interface
                .addresses
                .iter()
                .map(|(ip, len)| format!("{ip}/{len}"))
                .collect();
            let _ = writeln!(s, "Address = {}", a.join(", "));
        }
        if let Some(m) = self.interface.mtu {
            let _ = writeln!(s, "MTU = {m}");
        }
        if let Some(p) = self.interface.listen_port {
            let _ = writeln!(s, "ListenPort = {p}");
        }
        if !self.interface.dns.is_empty() {
            let _ = writeln!(s, "DNS = {}", self.interface.dns.join(", "));
        }
        for p in &self.peers {
            s.push_str("\n[Peer]\n");
            let _ = writeln!(s, "PublicKey = {}", key::encode(&p.public_key));
            if let Some(k) = &p.preshared_key {
                let _ = writeln!(s, "PresharedKey = {}", key::encode(k));
            }
            if let Some(e) = &p.endpoint {
                let _ = writeln!(s, "Endpoint = {e}");
            }
            if !p.allowed_ips.is_empty() {
                let a: Vec<String> = p.allowed_ips.iter().map(|p| p.to_string()).collect();
                let _ = writeln!(s, "AllowedIPs = {}", a.join(", "));
            }
            if let Some(k) = p.persistent_keepalive {
                let _ = writeln!(s, "PersistentKeepalive = {k}");
            }
        }
        s
    }
}

fn parse_addr(a: &str) -> Option<(Ipv4Addr, u8)> {
    match a.split_once('/') {
        Some((ip, len)) => {
            let len: u8 = len.parse().ok()?;
            (len <= 32).then_some(())?;
            Some((ip.parse().ok()?, len))
        }
        None => Some((a.parse().ok()?, 32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# made by overlay-relay
[Interface]
PrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
Address = 100.64.4.1/32
MTU = 1420

[Peer]
PublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=
Endpoint = 10.77.0.1:51820
AllowedIPs = 100.64.0.0/10
PersistentKeepalive = 25
";

    #[test]
    fn parses_and_renders() {
        let c = WgConfig::parse(SAMPLE).unwrap();
        assert_eq!(
            c.interface.addresses,
            vec![(Ipv4Addr::new(100, 64, 4, 1), 32)]
        );
        assert_eq!(c.interface.mtu, Some(1420));
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].public_key, [1; 32]);
        assert_eq!(c.peers[0].endpoint.as_deref(), Some("10.77.0.1:51820"));
        assert_eq!(c.peers[0].persistent_keepalive, Some(25));
        let again = WgConfig::parse(&c.render(true)).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn reports_line_numbers() {
        let bad = SAMPLE.replace("MTU = 1420", "MTU = lots");
        assert_eq!(
            WgConfig::parse(&bad).unwrap_err(),
            WgConfigError::Line {
                line: 5,
                reason: "MTU 'lots' is not valid".into()
            }
        );
        let unknown = SAMPLE.replace("MTU = 1420", "Colour = blue");
        assert!(matches!(
            WgConfig::parse(&unknown),
            Err(WgConfigError::Line { line: 5, .. })
        ));
        assert!(matches!(
            WgConfig::parse("[Interface]\nAddress = 1.2.3.4\n"),
            Err(WgConfigError::Missing(_))
        ));
        assert!(matches!(
            WgConfig::parse("Key = v\n"),
            Err(WgConfigError::Line { line: 1, .. })
        ));
        assert!(WgConfig::parse(&"#".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn empty_dns_entries_do_not_grow_on_render() {
        // Found by the wgconfig fuzz target: `DNS = ,,,,` rendered to twice its size.
        let text = format!(
            "[Interface]\nPrivateKey = {}\nDNS = {}\n",
            key::encode(&[0; 32]),
            ",".repeat(30000)
        );
        let c = WgConfig::parse(&text).unwrap();
        assert!(c.interface.dns.is_empty());
        assert_eq!(WgConfig::parse(&c.render(true)).unwrap(), c);
    }

    #[test]
    fn never_panics_on_prefixes() {
        for n in 0..SAMPLE.len() {
            if SAMPLE.is_char_boundary(n) {
                let _ = WgConfig::parse(&SAMPLE[..n]);
            }
        }
    }
}
