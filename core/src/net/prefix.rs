//! IPv4 prefixes (`100.64.0.0/10`) as a small value type.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network prefix; the address is always the network address (host bits zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: u32,
    len: u8,
}

/// Why a prefix string did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// The text was not `a.b.c.d/len`.
    #[error("'{0}' is not an IPv4 prefix like 100.64.0.0/10")]
    Syntax(String),
    /// The length was above 32.
    #[error("prefix length {0} is larger than 32")]
    Length(u8),
    /// Host bits were set, e.g. `100.64.0.1/10`.
    #[error("'{0}' has host bits set; did you mean {1}?")]
    HostBits(String, Ipv4Prefix),
}

impl Ipv4Prefix {
    /// A prefix from an address and length; host bits are cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::Length(len));
        }
        Ok(Ipv4Prefix {
            addr: u32::from(addr) & mask(len),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the /0 prefix that covers everything.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The number of addresses covered.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == self.addr
    }

    /// Whether `other` lies completely inside this prefix.
    pub fn covers(&self, other: &Ipv4Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr())
    }

    /// The `n`th address of the prefix, if the prefix is that large.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        (u64::from(n) < self.size()).then(|| Ipv4Addr::from(self.addr.wrapping_add(n)))
    }

    /// The `n`th sub-prefix of length `len` inside this prefix.
    pub fn subnet(&self, len: u8, n: u32) -> Option<Ipv4Prefix> {
        if len < self.len || len > 32 {
            return None;
        }
        let count = 1u64 << (len - self.len);
        if u64::from(n) >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(len));
        let addr = u64::from(self.addr) + u64::from(n) * step;
        Some(Ipv4Prefix {
            addr: addr as u32,
            len,
        })
    }

    /// The prefix of length `len` that contains `ip`.
    pub fn containing(ip: Ipv4Addr, len: u8) -> Ipv4Prefix {
        let len = len.min(32);
        Ipv4Prefix {
            addr: u32::from(ip) & mask(len),
            len,
        }
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_string());
        let (ip, len) = s.trim().split_once('/').ok_or_else(syntax)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        let prefix = Ipv4Prefix::new(ip, len)?;
        if prefix.addr() != ip {
            return Err(PrefixError::HostBits(s.to_string(), prefix));
        }
        Ok(prefix)
    }
}

impl serde::Serialize for Ipv4Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p: Ipv4Prefix = "100.64.0.0/10".parse().unwrap();
        assert_eq!(p.to_string(), "100.64.0.0/10");
        assert_eq!(p.size(), 1 << 22);
        assert!(p.contains(Ipv4Addr::new(100, 127, 255, 255)));
        assert!(!p.contains(Ipv4Addr::new(100, 128, 0, 0)));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            "100.64.0.1/10".parse::<Ipv4Prefix>(),
            Err(PrefixError::HostBits(..))
        ));
        assert!(matches!(
            "100.64.0.0/33".parse::<Ipv4Prefix>(),
            Err(PrefixError::Length(33))
        ));
        assert!(matches!(
            "nope".parse::<Ipv4Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!(matches!(
            "1.2.3.4/".parse::<Ipv4Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
    }

    #[test]
    fn subnets_and_nth() {
        let p: Ipv4Prefix = "100.64.0.0/10".parse().unwrap();
        assert_eq!(p.subnet(26, 16).unwrap().to_string(), "100.64.4.0/26");
        assert_eq!(p.subnet(26, 1 << 16), None);
        assert_eq!(p.subnet(8, 0), None);
        let s = p.subnet(26, 16).unwrap();
        assert_eq!(s.nth(1), Some(Ipv4Addr::new(100, 64, 4, 1)));
        assert_eq!(s.nth(64), None);
        assert!(p.covers(&s));
        assert!(!s.covers(&p));
        assert_eq!(
            Ipv4Prefix::containing(Ipv4Addr::new(100, 64, 4, 77), 26).to_string(),
            "100.64.4.64/26"
        );
        let all: Ipv4Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }
}
