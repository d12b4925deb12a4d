//! Which peer a datagram on the relay's one UDP port belongs to, before any cryptography.
//!
//! WireGuard messages start with a little-endian message type (1 to 4) and three zero bytes.
//! Responses, cookie replies and data carry the receiver's index, which is the relay's own
//! `Tunn` index shifted left by 8: that names the peer. Handshake initiations name nobody in
//! the clear; the relay decrypts the initiator's static key (boringtun `parse_handshake_anon`).
//! Join messages (see `join`) start with the magic `OVJ`.

use crate::relay::peers::PeerId;

/// Size of a handshake initiation.
pub const HANDSHAKE_INIT_LEN: usize = 148;
/// Size of a handshake response.
pub const HANDSHAKE_RESP_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Smallest data message (header plus tag, a keepalive).
pub const DATA_MIN_LEN: usize = 32;
/// Largest datagram the relay accepts.
pub const MAX_DATAGRAM_LEN: usize = 65535;

/// What a datagram is, as far as routing it to a peer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// A handshake initiation: find the peer by its decrypted static key.
    HandshakeInit,
    /// A response, cookie reply or data message for the peer with this id.
    ForPeer(PeerId),
    /// An overlay join message.
    Join,
    /// Not something we accept.
    Invalid,
}

/// Classifies a datagram by its header and length only.
pub fn classify(d: &[u8]) -> Datagram {
    if d.len() > MAX_DATAGRAM_LEN || d.len() < 4 {
        return Datagram::Invalid;
    }
    if d.starts_with(b"OVJ") {
        return Datagram::Join;
    }
    if d[1..4] != [0, 0, 0] {
        return Datagram::Invalid;
    }
    let receiver_at = |off: usize| -> Datagram {
        let idx = u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]);
        Datagram::ForPeer(idx >> 8)
    };
    match (d[0], d.len()) {
        (1, HANDSHAKE_INIT_LEN) => Datagram::HandshakeInit,
        (2, HANDSHAKE_RESP_LEN) => receiver_at(8),
        (3, COOKIE_REPLY_LEN) => receiver_at(4),
        (4, n) if n >= DATA_MIN_LEN => receiver_at(4),
        _ => Datagram::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, len: usize, receiver_off: usize, idx: u32) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[0] = kind;
        d[receiver_off..receiver_off + 4].copy_from_slice(&idx.to_le_bytes());
        d
    }

    #[test]
    fn classifies_each_kind() {
        assert_eq!(classify(&msg(1, 148, 4, 0)), Datagram::HandshakeInit);
        assert_eq!(classify(&msg(2, 92, 8, 42 << 8 | 3)), Datagram::ForPeer(42));
        assert_eq!(classify(&msg(3, 64, 4, 7 << 8)), Datagram::ForPeer(7));
        assert_eq!(classify(&msg(4, 32, 4, 9 << 8 | 255)), Datagram::ForPeer(9));
        assert_eq!(classify(&msg(4, 1452, 4, 9 << 8)), Datagram::ForPeer(9));
        assert_eq!(classify(b"OVJ\x01rest"), Datagram::Join);
    }

    #[test]
    fn refuses_bad_lengths_and_types() {
        assert_eq!(classify(&msg(1, 147, 4, 0)), Datagram::Invalid);
        assert_eq!(classify(&msg(2, 93, 8, 0)), Datagram::Invalid);
        assert_eq!(classify(&msg(3, 63, 4, 0)), Datagram::Invalid);
        assert_eq!(classify(&msg(4, 31, 4, 0)), Datagram::Invalid);
        // boringtun does not pad data messages to 16 bytes, so any length from 32 is data.
        assert_eq!(classify(&msg(4, 33, 4, 0)), Datagram::ForPeer(0));
        assert_eq!(classify(&msg(5, 148, 4, 0)), Datagram::Invalid);
        let mut nonzero = msg(1, 148, 4, 0);
        nonzero[2] = 1;
        assert_eq!(classify(&nonzero), Datagram::Invalid);
        assert_eq!(classify(&[]), Datagram::Invalid);
        assert_eq!(classify(&[4, 0, 0]), Datagram::Invalid);
        assert_eq!(classify(&vec![4u8; 70000]), Datagram::Invalid);
    }

    #[test]
    fn never_panics_on_any_prefix() {
        let d = msg(4, 64, 4, 1 << 8);
        for n in 0..d.len() {
            let _ = classify(&d[..n]);
        }
    }
}
