//! Routes that another VPN (Tailscale uses 100.64.0.0/10 and 100.100.100.100 too) already has
//! for the overlay network or the node's DNS address.
//!
//! [`parse_ip_route`] reads `ip -4 -o route show table all`; [`conflicts`] picks the routes on
//! other interfaces that overlap what the node needs. Default routes are no conflict (the more
//! specific overlay route wins over them), nor are routes on the node's own interface.

use crate::net::prefix::Ipv4Prefix;
use std::fmt;
use std::net::Ipv4Addr;

/// One IPv4 route: destination, interface and table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination.
    pub dst: Ipv4Prefix,
    /// The interface it goes out of.
    pub dev: String,
    /// The routing table (`main`, `local`, `52`...).
    pub table: String,
}

/// Reads the lines of `ip -4 -o route show table all`; lines without a destination prefix and
/// an interface (unreachable, blackhole, throw routes) are left out.
pub fn parse_ip_route(text: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        // A route type first (local, broadcast, unicast...), then the destination.
        if let Some(w) = words.first() {
            if matches!(
                *w,
                "local" | "broadcast" | "unicast" | "anycast" | "multicast"
            ) {
                i = 1;
            } else if matches!(
                *w,
                "unreachable" | "blackhole" | "prohibit" | "throw" | "nat"
            ) {
                continue;
            }
        }
        let Some(dst) = words.get(i) else {
            continue;
        };
        let dst = match *dst {
            "default" => Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0).ok(),
            d if d.contains('/') => d.parse().ok(),
            d => d
                .parse::<Ipv4Addr>()
                .ok()
                .and_then(|a| Ipv4Prefix::new(a, 32).ok()),
        };
        let field = |name: &str| {
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|p| words.get(p + 1))
                .map(|s| s.to_string())
        };
        let (Some(dst), Some(dev)) = (dst, field("dev")) else {
            continue;
        };
        out.push(Route {
            dst,
            dev,
            table: field("table").unwrap_or_else(|| "main".into()),
        });
    }
    out
}

impl Route {
    /// The route's interface is going away: iproute2 prints `if<index>` for an interface index
    /// it can no longer name, which is what a dead daemon's TUN device looks like while the
    /// kernel tears it down (its routes go with it a moment later).
    pub fn is_vanishing(&self) -> bool {
        self.dev
            .strip_prefix("if")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// What a conflicting route overlaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// The overlay network.
    Network(Ipv4Prefix),
    /// The node's DNS address.
    DnsAddress(Ipv4Addr),
}

/// A route of another interface in the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The route.
    pub route: Route,
    /// What it overlaps.
    pub overlaps: Overlap,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.route;
        let table = if r.table == "main" {
            String::new()
        } else {
            format!(" (table {})", r.table)
        };
        match &self.overlaps {
            Overlap::Network(net) => write!(
                f,
                "interface {} already routes {}{table}, which overlaps the overlay network {net} \
                 (another VPN?): stop it, or have the relay use a free range with \
                 `overlay-relay serve --network CIDR` and join again",
                r.dev, r.dst
            ),
            Overlap::DnsAddress(dns) => write!(
                f,
                "interface {} already routes {}{table}, which holds the overlay DNS address {dns} \
                 (another VPN's DNS?): stop it before overlay starts",
                r.dev, r.dst
            ),
        }
    }
}

fn overlap(a: &Ipv4Prefix, b: &Ipv4Prefix) -> bool {
    a.covers(b) || b.covers(a)
}

/// The routes in `routes` that another interface than `ours` has for `network` or `dns`.
pub fn conflicts(
    routes: &[Route],
    network: Ipv4Prefix,
    dns: Ipv4Addr,
    ours: &str,
) -> Vec<Conflict> {
    let (Ok(dns_host), Ok(default)) = (
        Ipv4Prefix::new(dns, 32),
        Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0),
    ) else {
        return Vec::new();
    };
    routes
        .iter()
        .filter(|r| r.dev != ours && r.dst != default)
        .filter_map(|r| {
            let overlaps = if overlap(&r.dst, &network) {
                Overlap::Network(network)
            } else if overlap(&r.dst, &dns_host) {
                Overlap::DnsAddress(dns)
            } else {
                return None;
            };
            Some(Conflict {
                route: r.clone(),
                overlaps,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAILSCALE: &str = "\
default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
100.64.0.0/10 dev tailscale0 table 52
100.100.100.100 dev tailscale0 table 52
throw 127.0.0.0/8 table 52
local 100.101.2.3 dev tailscale0 table local proto kernel scope host src 100.101.2.3
local 100.64.4.65 dev ovl0 table local proto kernel scope host src 100.64.4.65
100.64.0.0/10 dev ovl0 scope link
broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1
";

    #[test]
    fn a_device_being_removed_is_vanishing() {
        let r =
            parse_ip_route("100.64.0.0/10 dev if7 scope link\n100.64.0.0/10 dev if0x scope link\n");
        assert!(r[0].is_vanishing());
        assert!(!r[1].is_vanishing());
        assert!(!parse_ip_route(TAILSCALE)[2].is_vanishing());
    }

    #[test]
    fn parses_ip_route_output() {
        let r = parse_ip_route(TAILSCALE);
        assert_eq!(r.len(), 8, "{r:?}");
        assert_eq!(r[0].dst, "0.0.0.0/0".parse::<Ipv4Prefix>().unwrap());
        assert_eq!(r[2].dev, "tailscale0");
        assert_eq!(r[2].table, "52");
        assert_eq!(
            r[3].dst,
            "100.100.100.100/32".parse::<Ipv4Prefix>().unwrap()
        );
        assert!(parse_ip_route("garbage\n\nlocal\n1.2.3.4/99 dev x\n").is_empty());
    }

    #[test]
    fn another_vpn_on_the_overlay_range_is_a_conflict() {
        let net: Ipv4Prefix = "100.64.0.0/10".parse().unwrap();
        let dns = Ipv4Addr::new(100, 100, 100, 100);
        let c = conflicts(&parse_ip_route(TAILSCALE), net, dns, "ovl0");
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c.iter().all(|c| c.route.dev == "tailscale0"));
        let text = c[0].to_string();
        assert!(
            text.contains("interface tailscale0") && text.contains("--network"),
            "{text}"
        );
        // Another range: only the DNS address is in the way.
        let other: Ipv4Prefix = "10.200.0.0/16".parse().unwrap();
        let c = conflicts(&parse_ip_route(TAILSCALE), other, dns, "ovl0");
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().all(|c| c.overlaps == Overlap::DnsAddress(dns)));
        // A plain laptop: nothing.
        let plain = "default via 192.0.2.1 dev eth0\n192.0.2.0/24 dev eth0\n";
        assert!(conflicts(&parse_ip_route(plain), net, dns, "ovl0").is_empty());
    }
}
