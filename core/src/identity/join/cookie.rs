//! The cheap checks in front of a join request, after WireGuard's mac1/mac2 and cookie scheme.
//!
//! Every request ends with two 16-byte MACs. `mac1` is keyed with a hash of the relay's public
//! key, which the token carries: the relay checks it with one BLAKE2s before any public-key work,
//! so a datagram from someone without a token for this relay costs one hash. `mac2` is keyed with
//! a cookie the relay handed to the sender's address; a request with a valid `mac2` proves that
//! the sender receives at the address it sends from. Under load, or when an address has had
//! failures it did not prove, the relay answers a request without a valid `mac2` with a
//! [cookie reply](CookieReply) instead of opening it.
//!
//! Both replies the relay sends without public-key work (cookie replies and [`Notice`]s) are
//! smaller than the smallest request, so the relay cannot be used to amplify a flood.
//! Layouts and key derivation are in `docs/protocol.md`, section "Join: MACs and cookies".
//!
//! Sans-IO: time (`now`, unix seconds) and randomness come from the caller.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand_core::RngCore;
use std::net::SocketAddr;

/// Length of each MAC at the end of a request.
pub const MAC_LEN: usize = 16;
/// Both MACs: the tail of every request.
pub const MACS_LEN: usize = 2 * MAC_LEN;
/// First four bytes of a cookie reply.
pub const COOKIE_MAGIC: [u8; 4] = *b"OVJ\x03";
/// First four bytes of a notice.
pub const NOTICE_MAGIC: [u8; 4] = *b"OVJ\x04";
/// Length of a cookie reply: magic, the request's ephemeral key, nonce, sealed cookie.
pub const COOKIE_REPLY_LEN: usize = 4 + 32 + NONCE_LEN + MAC_LEN + TAG_LEN;
/// Length of a notice: magic, the request's ephemeral key, the code.
pub const NOTICE_LEN: usize = 4 + 32 + 1;
/// How long a cookie secret is used before the next one replaces it (the previous one is still
/// accepted for as long again, so a cookie handed out just before a rotation stays good).
pub const COOKIE_SECRET_SECS: u64 = 120;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const LABEL_MAC1: &[u8] = b"overlay join mac1";
const LABEL_COOKIE: &[u8] = b"overlay join cookie";

/// A cookie handed to one source address.
pub type Cookie = [u8; MAC_LEN];

/// Keyed BLAKE2s with a 16-byte output over the concatenation of `parts`.
fn mac16(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // Keys are 16 or 32 bytes here, within BLAKE2s's 32-byte limit, so this cannot fail;
    // an all-zero MAC (never valid by chance) stands in if it ever did.
    let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else {
        return [0; MAC_LEN];
    };
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

/// BLAKE2s-256 of a label and the relay's public key.
fn derive(label: &[u8], relay_public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::default();
    Update::update(&mut h, label);
    Update::update(&mut h, relay_public);
    h.finalize_fixed().into()
}

/// The key of `mac1`, derived from the relay's public key.
pub fn mac1_key(relay_public: &[u8; 32]) -> [u8; 32] {
    derive(LABEL_MAC1, relay_public)
}

/// The key that seals cookie replies, derived from the relay's public key.
pub fn cookie_reply_key(relay_public: &[u8; 32]) -> [u8; 32] {
    derive(LABEL_COOKIE, relay_public)
}

/// `mac1` of a request: over everything before the two MACs.
pub fn mac1(key: &[u8; 32], request: &[u8]) -> Option<[u8; MAC_LEN]> {
    let body = request.get(..request.len().checked_sub(MACS_LEN)?)?;
    Some(mac16(key, &[body]))
}

/// `mac2` of a request: over everything before `mac2` (so `mac1` included), keyed with a cookie.
pub fn mac2(cookie: &Cookie, request: &[u8]) -> Option<[u8; MAC_LEN]> {
    let body = request.get(..request.len().checked_sub(MAC_LEN)?)?;
    Some(mac16(cookie, &[body]))
}

/// Writes both MACs into the last [`MACS_LEN`] bytes of `request`; `mac2` stays zero without a
/// cookie.
pub fn stamp(mac1_key: &[u8; 32], cookie: Option<&Cookie>, request: &mut [u8]) {
    let len = request.len();
    if len < MACS_LEN {
        return;
    }
    if let Some(m) = mac1(mac1_key, request) {
        request[len - MACS_LEN..len - MAC_LEN].copy_from_slice(&m);
    }
    let m2 = match cookie {
        Some(c) => mac2(c, request).unwrap_or([0; MAC_LEN]),
        None => [0; MAC_LEN],
    };
    request[len - MAC_LEN..].copy_from_slice(&m2);
}

/// Why the relay answers with a notice instead of a join response. Notices are not
/// authenticated: the node only reports one when no authenticated answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `mac1` does not match this relay's key: the token was made for another relay.
    WrongKey,
    /// This address failed too often with a proven source; joins from it wait.
    LockedOut,
    /// The relay is at its budget of join computations; try again shortly.
    Busy,
}

impl Notice {
    fn code(self) -> u8 {
        match self {
            Notice::WrongKey => 1,
            Notice::LockedOut => 2,
            Notice::Busy => 3,
        }
    }

    fn from_code(c: u8) -> Option<Notice> {
        match c {
            1 => Some(Notice::WrongKey),
            2 => Some(Notice::LockedOut),
            3 => Some(Notice::Busy),
            _ => None,
        }
    }

    /// The notice datagram answering a request with ephemeral key `ephemeral`.
    pub fn encode(self, ephemeral: &[u8; 32]) -> [u8; NOTICE_LEN] {
        let mut out = [0u8; NOTICE_LEN];
        out[..4].copy_from_slice(&NOTICE_MAGIC);
        out[4..36].copy_from_slice(ephemeral);
        out[36] = self.code();
        out
    }

    /// Parses a notice answering the request with ephemeral key `ephemeral`.
    pub fn parse(datagram: &[u8], ephemeral: &[u8; 32]) -> Option<Notice> {
        if datagram.len() != NOTICE_LEN
            || datagram.get(..4)? != NOTICE_MAGIC
            || datagram.get(4..36)? != ephemeral
        {
            return None;
        }
        Notice::from_code(*datagram.get(36)?)
    }
}

/// Seals and opens cookie replies (both sides derive the key from the relay's public key).
pub struct CookieReply;

impl CookieReply {
    /// The reply carrying `cookie` for the request with ephemeral key `ephemeral` and `mac1`.
    pub fn seal(
        relay_public: &[u8; 32],
        ephemeral: &[u8; 32],
        request_mac1: &[u8; MAC_LEN],
        cookie: &Cookie,
        rng: &mut impl RngCore,
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aead = XChaCha20Poly1305::new((&cookie_reply_key(relay_public)).into());
        let sealed = aead
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: cookie,
                    aad: request_mac1,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(COOKIE_REPLY_LEN);
        out.extend_from_slice(&COOKIE_MAGIC);
        out.extend_from_slice(ephemeral);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a cookie reply to the request with ephemeral key `ephemeral` and `mac1`.
    pub fn open(
        relay_public: &[u8; 32],
        ephemeral: &[u8; 32],
        request_mac1: &[u8; MAC_LEN],
        datagram: &[u8],
    ) -> Option<Cookie> {
        if datagram.len() != COOKIE_REPLY_LEN
            || datagram.get(..4)? != COOKIE_MAGIC
            || datagram.get(4..36)? != ephemeral
        {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = datagram.get(36..36 + NONCE_LEN)?.try_into().ok()?;
        let aead = XChaCha20Poly1305::new((&cookie_reply_key(relay_public)).into());
        let plain = aead
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: datagram.get(36 + NONCE_LEN..)?,
                    aad: request_mac1,
                },
            )
            .ok()?;
        plain.try_into().ok()
    }
}

/// What the relay's gate makes of a join request before any public-key work.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Shorter than the smallest request: dropped without an answer.
    Malformed,
    /// `mac1` is wrong: not made with a token for this relay.
    WrongKey,
    /// A cookie is required and `mac2` is missing or wrong: answer with this cookie reply.
    NeedCookie(Vec<u8>),
    /// May be opened; `proven` when `mac2` is valid (the source address is real).
    Pass {
        /// The source proved its address with a cookie.
        proven: bool,
    },
}

/// The relay's side: checks `mac1` and `mac2` and makes cookies from a rotating secret.
pub struct Gate {
    relay_public: [u8; 32],
    mac1_key: [u8; 32],
    secret: [u8; 32],
    previous: Option<[u8; 32]>,
    born: u64,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("born", &self.born)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for the relay with this public key; `rng` picks the first cookie secret.
    pub fn new(relay_public: [u8; 32], now: u64, rng: &mut impl RngCore) -> Gate {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Gate {
            relay_public,
            mac1_key: mac1_key(&relay_public),
            secret,
            previous: None,
            born: now,
        }
    }

    /// Rotates the cookie secret once it is [`COOKIE_SECRET_SECS`] old.
    fn rotate(&mut self, now: u64, rng: &mut impl RngCore) {
        if now.saturating_sub(self.born) < COOKIE_SECRET_SECS {
            return;
        }
        // After two periods without a request, the old secret is of no use either.
        self.previous = if now.saturating_sub(self.born) < 2 * COOKIE_SECRET_SECS {
            Some(self.secret)
        } else {
            None
        };
        rng.fill_bytes(&mut self.secret);
        self.born = now;
    }

    /// The cookie for `from` under `secret`: a MAC of its address and port.
    fn cookie(secret: &[u8; 32], from: SocketAddr) -> Cookie {
        let ip = match from.ip() {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        mac16(secret, &[&ip, &from.port().to_be_bytes()])
    }

    /// Checks a request from `from`. With `need_cookie`, a request without a valid `mac2` gets
    /// a cookie reply; otherwise it may be opened unproven.
    pub fn check(
        &mut self,
        from: SocketAddr,
        request: &[u8],
        now: u64,
        need_cookie: bool,
        rng: &mut impl RngCore,
    ) -> Verdict {
        let len = request.len();
        let (Some(ephemeral), Some(given1), Some(given2)) = (
            request
                .get(4..36)
                .and_then(|e| <[u8; 32]>::try_from(e).ok()),
            len.checked_sub(MACS_LEN)
                .and_then(|s| request.get(s..s + MAC_LEN)),
            len.checked_sub(MAC_LEN).and_then(|s| request.get(s..)),
        ) else {
            return Verdict::Malformed;
        };
        // Shorter than any real request: refused, so that no reply is larger than what it answers.
        if len < super::MIN_REQUEST_LEN {
            return Verdict::Malformed;
        }
        let Some(m1) = mac1(&self.mac1_key, request) else {
            return Verdict::Malformed;
        };
        if !ct_eq(&m1, given1) {
            return Verdict::WrongKey;
        }
        self.rotate(now, rng);
        let proven = [Some(self.secret), self.previous]
            .into_iter()
            .flatten()
            .any(|s| mac2(&Self::cookie(&s, from), request).is_some_and(|m2| ct_eq(&m2, given2)));
        if proven || !need_cookie {
            return Verdict::Pass { proven };
        }
        let cookie = Self::cookie(&self.secret, from);
        Verdict::NeedCookie(CookieReply::seal(
            &self.relay_public,
            &ephemeral,
            &m1,
            &cookie,
            rng,
        ))
    }
}

/// Constant-time comparison of two MACs.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    const RELAY: [u8; 32] = [7; 32];

    fn request(len: usize, cookie: Option<&Cookie>) -> Vec<u8> {
        let mut r = vec![0x5a; len];
        r[..4].copy_from_slice(b"OVJ\x01");
        stamp(&mac1_key(&RELAY), cookie, &mut r);
        r
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mac1_decides_wrong_key() {
        let mut g = Gate::new(RELAY, 0, &mut OsRng);
        let from = addr("10.0.0.1:4000");
        let r = request(200, None);
        assert_eq!(
            g.check(from, &r, 0, false, &mut OsRng),
            Verdict::Pass { proven: false }
        );
        let mut other = r.clone();
        stamp(&mac1_key(&[8; 32]), None, &mut other);
        assert_eq!(
            g.check(from, &other, 0, false, &mut OsRng),
            Verdict::WrongKey
        );
        let mut flipped = r.clone();
        flipped[50] ^= 1;
        assert_eq!(
            g.check(from, &flipped, 0, false, &mut OsRng),
            Verdict::WrongKey
        );
        for n in 0..super::super::MIN_REQUEST_LEN {
            assert_eq!(
                g.check(from, &r[..n], 0, false, &mut OsRng),
                Verdict::Malformed,
                "{n}"
            );
        }
    }

    #[test]
    fn cookie_round_trip_proves_the_address() {
        let mut g = Gate::new(RELAY, 1000, &mut OsRng);
        let from = addr("10.0.0.1:4000");
        let r = request(200, None);
        let ephemeral: [u8; 32] = r[4..36].try_into().unwrap();
        let m1: [u8; 16] = r[200 - 32..200 - 16].try_into().unwrap();
        let Verdict::NeedCookie(reply) = g.check(from, &r, 1000, true, &mut OsRng) else {
            panic!("no cookie under load");
        };
        assert_eq!(reply.len(), COOKIE_REPLY_LEN);
        assert!(reply.len() < r.len(), "a cookie reply must not amplify");
        let cookie = CookieReply::open(&RELAY, &ephemeral, &m1, &reply).expect("opens");
        assert!(CookieReply::open(&[8; 32], &ephemeral, &m1, &reply).is_none());
        assert!(CookieReply::open(&RELAY, &[1; 32], &m1, &reply).is_none());
        assert!(CookieReply::open(&RELAY, &ephemeral, &[0; 16], &reply).is_none());
        let proven = request(200, Some(&cookie));
        for now in [1000, 1000 + COOKIE_SECRET_SECS - 1] {
            assert_eq!(
                g.check(from, &proven, now, true, &mut OsRng),
                Verdict::Pass { proven: true }
            );
        }
        // The cookie is bound to the address and port it was sent to.
        for other in ["10.0.0.2:4000", "10.0.0.1:4001"] {
            assert!(matches!(
                g.check(addr(other), &proven, 1000, true, &mut OsRng),
                Verdict::NeedCookie(_)
            ));
        }
        // One rotation later it still works, two rotations later it does not.
        let t1 = 1000 + COOKIE_SECRET_SECS;
        assert_eq!(
            g.check(from, &proven, t1, true, &mut OsRng),
            Verdict::Pass { proven: true }
        );
        let t2 = t1 + COOKIE_SECRET_SECS;
        assert!(matches!(
            g.check(from, &proven, t2, true, &mut OsRng),
            Verdict::NeedCookie(_)
        ));
        // Without load, an unproven request passes unproven.
        assert_eq!(
            g.check(from, &proven, t2, false, &mut OsRng),
            Verdict::Pass { proven: false }
        );
    }

    #[test]
    fn notices_roundtrip_and_stay_small() {
        let e = [3u8; 32];
        for n in [Notice::WrongKey, Notice::LockedOut, Notice::Busy] {
            let d = n.encode(&e);
            assert_eq!(Notice::parse(&d, &e), Some(n));
            assert_eq!(Notice::parse(&d, &[4; 32]), None);
            assert_eq!(Notice::parse(&d[..NOTICE_LEN - 1], &e), None);
        }
        let mut bad = Notice::Busy.encode(&e);
        bad[36] = 9;
        assert_eq!(Notice::parse(&bad, &e), None);
        const { assert!(NOTICE_LEN < COOKIE_REPLY_LEN) };
    }
}
