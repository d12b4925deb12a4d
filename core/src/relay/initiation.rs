//! Opening a WireGuard handshake initiation far enough to read its TAI64N timestamp.
//!
//! WireGuard's replay protection: a responder accepts an initiation only if its timestamp is
//! greater than the greatest it accepted from that peer. boringtun keeps that greatest value in
//! memory only, so a recorded initiation is accepted again after a relay restart. The hub keeps
//! its own copy, persisted per peer, and needs the timestamp of each initiation for it; boringtun
//! does not expose it, so this module repeats the responder's first Noise IK steps (the same
//! operations as boringtun's `parse_handshake_anon` and `receive_handshake_initialization`).
//!
//! Cost: [`open_static`] does the one Diffie-Hellman an initiation needs to reveal the sender's
//! static key; it replaces boringtun's `parse_handshake_anon`, so the hub does no more public-key
//! work per initiation than before. [`OpenedStatic::timestamp`] uses the static-static secret the
//! hub computed once per peer, when the peer was loaded, and is symmetric cryptography only.
//!
//! Layout (148 bytes): type 0..4, sender index 4..8, ephemeral 8..40, encrypted static 40..88,
//! encrypted timestamp 88..116, mac1 116..132, mac2 132..148. Once the length is checked, nothing
//! here panics.

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Digest};
use boringtun::x25519::{PublicKey, StaticSecret};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Size of a handshake initiation.
pub const INIT_LEN: usize = crate::relay::datagram::HANDSHAKE_INIT_LEN;

mod field {
    use std::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const EPHEMERAL: Range<usize> = 8..40;
    pub const STATIC: Range<usize> = 40..88;
    pub const TIMESTAMP: Range<usize> = 88..116;
}

/// Noise protocol name hash: HASH("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s").
const INITIAL_CHAIN_KEY: [u8; 32] = [
    96, 226, 109, 174, 243, 39, 239, 192, 46, 195, 53, 226, 160, 37, 210, 208, 22, 235, 66, 6, 248,
    114, 119, 245, 45, 56, 209, 152, 139, 120, 205, 54,
];
/// HASH(INITIAL_CHAIN_KEY || "WireGuard v1 zx2c4 Jason@zx2c4.com").
const INITIAL_CHAIN_HASH: [u8; 32] = [
    34, 17, 179, 97, 8, 26, 197, 102, 105, 18, 67, 219, 69, 138, 213, 50, 45, 156, 108, 102, 34,
    147, 232, 183, 14, 225, 156, 101, 186, 7, 158, 243,
];

/// A TAI64N timestamp as sent: 8 bytes of seconds and 4 of nanoseconds, big-endian, so the
/// byte order is the time order. Persisted as 24 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64n(pub [u8; 12]);

impl Tai64n {
    /// The unix seconds it stands for, if it lies after 1970 (for logs only: WireGuard
    /// implementations differ in the TAI offset, and the comparison uses the raw bytes).
    pub fn unix_secs(&self) -> Option<u64> {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(s).checked_sub((1 << 62) + 10)
    }

    /// The timestamp as 24 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        super::state::hex(&self.0)
    }

    /// Parses 24 hex digits.
    pub fn from_hex(s: &str) -> Option<Tai64n> {
        if s.len() != 24 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 12];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Tai64n(out))
    }
}

impl Serialize for Tai64n {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Tai64n {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tai64n::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("a handshake timestamp is 24 hex digits"))
    }
}

/// An initiation opened up to the sender's static key, with the handshake state the
/// timestamp's decryption continues from.
pub struct OpenedStatic {
    /// The initiator's static public key (not yet authenticated: anyone can encrypt any key).
    pub peer_static: [u8; 32],
    chaining_key: [u8; 32],
    hash: [u8; 32],
    encrypted_timestamp: [u8; 28],
}

/// Decrypts the initiator's static key of the initiation `d`, with one Diffie-Hellman.
/// `None` if `d` is not an initiation or was not made for this relay key.
pub fn open_static(secret: &StaticSecret, public: &PublicKey, d: &[u8]) -> Option<OpenedStatic> {
    if d.len() != INIT_LEN || d[field::TYPE] != [1, 0, 0, 0] {
        return None;
    }
    let ephemeral: [u8; 32] = d[field::EPHEMERAL].try_into().ok()?;
    let mut hash = hash2(&INITIAL_CHAIN_HASH, public.as_bytes());
    hash = hash2(&hash, &ephemeral);
    let mut chaining_key = hmac(&hmac(&INITIAL_CHAIN_KEY, &[&ephemeral]), &[&[1]]);
    let shared = secret.diffie_hellman(&PublicKey::from(ephemeral));
    let temp = hmac(&chaining_key, &[shared.as_bytes()]);
    chaining_key = hmac(&temp, &[&[1]]);
    let key = hmac(&temp, &[&chaining_key, &[2]]);
    let encrypted_static = &d[field::STATIC];
    let plain = open(&key, &hash, encrypted_static)?;
    let peer_static: [u8; 32] = plain.as_slice().try_into().ok()?;
    hash = hash2(&hash, encrypted_static);
    Some(OpenedStatic {
        peer_static,
        chaining_key,
        hash,
        encrypted_timestamp: d[field::TIMESTAMP].try_into().ok()?,
    })
}

impl OpenedStatic {
    /// Decrypts the timestamp with `static_shared` = DH(relay static, peer static). Success
    /// authenticates the initiation as the peer's (only the peer and the relay know that
    /// secret); `None` means it is not.
    pub fn timestamp(&self, static_shared: &[u8; 32]) -> Option<Tai64n> {
        let temp = hmac(&self.chaining_key, &[static_shared]);
        let chaining_key = hmac(&temp, &[&[1]]);
        let key = hmac(&temp, &[&chaining_key, &[2]]);
        let plain = open(&key, &self.hash, &self.encrypted_timestamp)?;
        Some(Tai64n(plain.as_slice().try_into().ok()?))
    }
}

fn hash2(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, a);
    Digest::update(&mut h, b);
    h.finalize().into()
}

/// HMAC-BLAKE2s (RFC 2104, as WireGuard uses it) over the concatenated `parts`.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac::SimpleHmac::<Blake2s256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize_fixed().into()
}

/// ChaCha20-Poly1305 with a zero nonce (each key is used once), `aad` the handshake hash.
fn open(key: &[u8; 32], aad: &[u8; 32], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::{Tunn, TunnResult};

    fn keys(n: u8) -> (StaticSecret, PublicKey) {
        let s = StaticSecret::from([n; 32]);
        let p = PublicKey::from(&s);
        (s, p)
    }

    fn initiation(node: u8, relay: &PublicKey) -> Vec<u8> {
        let mut t = Tunn::new(keys(node).0, *relay, None, None, 1, None);
        let mut buf = vec![0u8; 256];
        match t.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("no initiation"),
        }
    }

    #[test]
    fn reads_what_boringtun_wrote() {
        let (rs, rp) = keys(9);
        let (ns, np) = keys(1);
        let d = initiation(1, &rp);
        let o = open_static(&rs, &rp, &d).expect("opens");
        assert_eq!(o.peer_static, *np.as_bytes());
        let shared = rs.diffie_hellman(&np);
        let ts = o.timestamp(shared.as_bytes()).expect("timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // boringtun's TAI offset is 37 s, ours for display 10 s.
        let secs = ts.unix_secs().unwrap();
        assert!(secs.abs_diff(now) < 120, "{secs} vs {now}");
        // A later initiation is greater.
        let later = open_static(&rs, &rp, &initiation(1, &rp))
            .unwrap()
            .timestamp(shared.as_bytes())
            .unwrap();
        assert!(later > ts);
        // The wrong static-static secret (another peer's) does not open it.
        let other = rs.diffie_hellman(&keys(2).1);
        assert!(o.timestamp(other.as_bytes()).is_none());
        drop(ns);
    }

    #[test]
    fn refuses_what_is_not_for_us() {
        let (rs, rp) = keys(9);
        let d = initiation(1, &keys(8).1);
        assert!(open_static(&rs, &rp, &d).is_none());
        let mut d = initiation(1, &rp);
        d[50] ^= 1;
        assert!(open_static(&rs, &rp, &d).is_none());
        assert!(open_static(&rs, &rp, &d[..147]).is_none());
        let mut d = initiation(1, &rp);
        d[0] = 2;
        assert!(open_static(&rs, &rp, &d).is_none());
    }

    #[test]
    fn hex_roundtrip_and_order() {
        let a = Tai64n([0x40, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5]);
        let b = Tai64n([0x40, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert!(b > a);
        assert_eq!(Tai64n::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Tai64n::from_hex("zz"), None);
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, "\"400000000000000100000005\"");
        assert_eq!(serde_json::from_str::<Tai64n>(&j).unwrap(), a);
        assert!(serde_json::from_str::<Tai64n>("\"40\"").is_err());
    }
}
