//! How the relay's hub names a peer that reaches it over a stream: a socket address in a
//! range no UDP datagram can come from, so the hub and all its checks treat it as any
//! endpoint (roaming included), and the driver sends what is addressed there to the stream.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// The first 64 bits of every stream address: a unique local range (fd00::/8) the relay never
/// binds or receives UDP from.
const PREFIX: u64 = 0xfd6f_766c_7463_0000;
/// The port of every stream address (not 0: the UDP sender refuses port 0).
const PORT: u16 = 1;

/// The address the hub sees for stream number `id`.
pub fn stream_addr(id: u64) -> SocketAddr {
    let bits = (u128::from(PREFIX) << 64) | u128::from(id);
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(bits), PORT, 0, 0))
}

/// The stream number behind `addr`, or `None` for a UDP address.
pub fn stream_id(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V6(a) = addr else {
        return None;
    };
    let bits = u128::from(*a.ip());
    ((bits >> 64) as u64 == PREFIX && a.port() == PORT).then_some(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_addresses_roundtrip_and_udp_ones_are_not_streams() {
        for id in [0, 1, 77, u64::MAX] {
            assert_eq!(stream_id(stream_addr(id)), Some(id));
        }
        assert_eq!(
            stream_addr(5).to_string(),
            "[fd6f:766c:7463:0:0:0:0:5]:1".replace(":0:0:0:0:", "::")
        );
        for udp in [
            "192.0.2.1:1",
            "[fd6f:766c:7463::5]:51820",
            "[2001:db8::1]:1",
        ] {
            assert_eq!(stream_id(udp.parse().expect("addr")), None, "{udp}");
        }
    }
}
