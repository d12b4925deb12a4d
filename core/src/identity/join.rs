//! The join exchange: one request datagram from a node, one response datagram from the relay.
//!
//! It runs on the relay's WireGuard UDP port. Every message starts with a 4-byte magic that no
//! WireGuard message has (those start with a little-endian `u32` type 1..=4), so the relay tells
//! them apart with [`is_join_message`].
//!
//! The cryptography is a one-shot pattern like Noise `X`: the node proves its static key (its
//! WireGuard identity) and, with an ephemeral key, encrypts the request to the relay's static key
//! taken from the token. The layouts, the key derivation and what each security property rests on
//! are in `docs/protocol.md`, section "Join".
//!
//! Sans-IO: nothing here reads the clock or touches a socket; the relay passes `now` (unix
//! seconds) in. The relay side is, in order: [`open_request`], then
//! [`ReplayGuard::check_and_insert`] with [`OpenedRequest::ephemeral_public`], then the token
//! check (elsewhere), then [`OpenedRequest::seal_response`]. A request that does not open is
//! dropped without an answer.
//!
//! Contract: [`open_request`] and [`JoinInitiator::open_response`] take any bytes, check sizes
//! before any cryptography, return a [`JoinError`] for anything not well-formed and authentic,
//! and never panic.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac256};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

pub mod cookie;

use cookie::{Cookie, CookieReply, Notice, MACS_LEN, MAC_LEN};

/// First four bytes of a join request.
pub const REQUEST_MAGIC: [u8; 4] = *b"OVJ\x01";
/// First four bytes of a join response.
pub const RESPONSE_MAGIC: [u8; 4] = *b"OVJ\x02";
/// Largest request datagram the relay looks at.
pub const MAX_REQUEST_LEN: usize = 1200;
/// Largest response datagram the node looks at.
pub const MAX_RESPONSE_LEN: usize = 1200;
/// Largest difference between a request's timestamp and the relay's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 120;
/// How long [`ReplayGuard`] remembers a request: any replay later than this fails the timestamp check.
pub const REPLAY_WINDOW_SECS: u64 = 2 * MAX_CLOCK_SKEW_SECS;
/// Default number of requests [`ReplayGuard`] remembers.
pub const REPLAY_GUARD_CAPACITY: usize = 4096;

/// Poly1305 tag length.
const TAG_LEN: usize = 16;
/// Protocol name hashed into every key.
const PROTOCOL: &[u8] = b"overlay join v1";
/// Smallest well-formed request: header, an empty ciphertext's tag and the two MACs.
pub const MIN_REQUEST_LEN: usize = field::REQ_CIPHERTEXT.start + TAG_LEN + MACS_LEN;
/// Smallest well-formed response: header and an empty ciphertext's tag.
const MIN_RESPONSE_LEN: usize = field::RESP_CIPHERTEXT.start + TAG_LEN;
/// Largest response JSON body that fits in [`MAX_RESPONSE_LEN`].
const MAX_RESPONSE_BODY: usize = MAX_RESPONSE_LEN - MIN_RESPONSE_LEN;

/// Byte ranges of the two messages.
mod field {
    use std::ops::{Range, RangeFrom};

    /// Magic, both messages.
    pub const MAGIC: Range<usize> = 0..4;
    /// The node's ephemeral public key, both messages.
    pub const EPHEMERAL: Range<usize> = 4..36;
    /// Request: the node's static public key.
    pub const REQ_NODE_STATIC: Range<usize> = 36..68;
    /// Request: AEAD ciphertext of the JSON body, with its tag, then `mac1` and `mac2`
    /// ([`super::cookie`]).
    pub const REQ_CIPHERTEXT: RangeFrom<usize> = 68..;
    /// Response: the AEAD nonce chosen by the relay.
    pub const RESP_NONCE: Range<usize> = 36..48;
    /// Response: AEAD ciphertext of the JSON body, with its tag.
    pub const RESP_CIPHERTEXT: RangeFrom<usize> = 48..;
}

/// Whether a datagram on the WireGuard port is a join message (request or response).
pub fn is_join_message(datagram: &[u8]) -> bool {
    matches!(datagram.get(field::MAGIC), Some(m) if m == REQUEST_MAGIC || m == RESPONSE_MAGIC)
}

/// What the node asks for; encrypted in the request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Id of the token being used.
    pub token_id: String,
    /// Secret of the token being used (base64url in JSON).
    #[serde(with = "secret_base64")]
    pub token_secret: [u8; 32],
    /// Node name wanted, if any; refused if another node has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A name to start from when `name` is absent (the host name); a suffix is added if taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// When the node made the request, unix seconds.
    pub timestamp: u64,
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("name", &self.name)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// The relay's answer; encrypted in the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum JoinResponse {
    /// The node is registered.
    Accepted {
        /// The node's name in the overlay.
        node_name: String,
        /// The node's overlay IPv4 address.
        address: String,
        /// The node's prefix (a /26), e.g. `100.64.1.0/26`.
        prefix: String,
        /// The overlay network, e.g. `100.64.0.0/10`.
        network: String,
        /// The overlay DNS domain.
        domain: String,
        /// The relay's overlay address, e.g. `100.64.0.1`.
        relay_address: String,
        /// WireGuard inner MTU.
        mtu: u16,
    },
    /// The node is not registered; `reason` is one sentence for the person joining.
    Rejected {
        /// Why, for example an expired token.
        reason: String,
    },
}

/// Why a join message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Longer than the cap; refused before any cryptography.
    #[error("the join message is {len} bytes long, more than the {max} allowed")]
    TooLarge {
        /// Datagram length.
        len: usize,
        /// The cap for this message.
        max: usize,
    },
    /// Too short to hold the header and the authentication tag.
    #[error("the join message is {len} bytes long, too short to be complete")]
    Truncated {
        /// Datagram length.
        len: usize,
    },
    /// The datagram does not start with the request magic.
    #[error("the datagram is not a join request")]
    NotARequest,
    /// The datagram does not start with the response magic.
    #[error("the datagram is not a join response")]
    NotAResponse,
    /// A public key is a low-order point, with which no secret key can be agreed.
    #[error("a public key in the join exchange is not a usable X25519 key")]
    WeakKey,
    /// The request was not encrypted to this relay's key, or was altered.
    #[error(
        "the join request could not be decrypted: it was made for another relay key or altered"
    )]
    RequestNotAuthentic,
    /// The response was not made by the relay named in the token, or was altered.
    #[error("the join response could not be authenticated: it does not come from the relay named in the token or it was altered")]
    ResponseNotAuthentic,
    /// The response answers a different join attempt.
    #[error("the join response answers another join attempt")]
    WrongAttempt,
    /// The decrypted body is not the expected JSON.
    #[error("the join message body is invalid: {0}")]
    BadBody(String),
    /// The request's timestamp is too far from the relay's clock.
    #[error("the join request's clock is {skew} s away from the relay's, more than the {MAX_CLOCK_SKEW_SECS} s allowed; check the time on both machines")]
    Stale {
        /// Absolute difference in seconds.
        skew: u64,
    },
}

/// The node's side of one join attempt: makes the request, opens the response.
pub struct JoinInitiator {
    ephemeral_public: [u8; 32],
    response_key: [u8; 32],
    relay_public: [u8; 32],
    mac1: [u8; MAC_LEN],
}

/// What a datagram from the relay means to a joining node ([`JoinInitiator::open_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The authenticated answer.
    Response(JoinResponse),
    /// The relay wants the request again with this cookie (see [`JoinInitiator::with_cookie`]).
    Cookie(Cookie),
    /// An unauthenticated hint why no answer comes (a hint only: anyone on the path can send one).
    Notice(Notice),
}

impl fmt::Debug for JoinInitiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinInitiator")
            .field("ephemeral_public", &self.ephemeral_public)
            .finish_non_exhaustive()
    }
}

impl JoinInitiator {
    /// Starts a join attempt with a fresh ephemeral key; returns it and the request datagram.
    ///
    /// Fails only with [`JoinError::WeakKey`] when `relay_public` is a low-order point. A request
    /// larger than [`MAX_REQUEST_LEN`] (a very long name) is built but refused by the relay.
    pub fn new(
        node_static: &StaticSecret,
        relay_public: [u8; 32],
        request: &JoinRequest,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(JoinInitiator, Vec<u8>), JoinError> {
        Self::with_ephemeral(
            node_static,
            relay_public,
            request,
            StaticSecret::random_from_rng(rng),
        )
    }

    /// As [`JoinInitiator::new`] with a given ephemeral key (test vectors).
    fn with_ephemeral(
        node_static: &StaticSecret,
        relay_public: [u8; 32],
        request: &JoinRequest,
        ephemeral: StaticSecret,
    ) -> Result<(JoinInitiator, Vec<u8>), JoinError> {
        let relay = PublicKey::from(relay_public);
        let dh_ephemeral = ephemeral.diffie_hellman(&relay);
        let dh_static = node_static.diffie_hellman(&relay);
        if !dh_ephemeral.was_contributory() || !dh_static.was_contributory() {
            return Err(JoinError::WeakKey);
        }
        let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
        let node_public = PublicKey::from(node_static).to_bytes();
        let keys = derive_keys(
            &ephemeral_public,
            &node_public,
            &relay_public,
            dh_ephemeral.as_bytes(),
            dh_static.as_bytes(),
        );

        let mut datagram = Vec::with_capacity(MAX_REQUEST_LEN);
        datagram.extend_from_slice(&REQUEST_MAGIC);
        datagram.extend_from_slice(&ephemeral_public);
        datagram.extend_from_slice(&node_public);
        let body = to_json(request);
        let ciphertext = seal(&keys.request, &[0u8; 12], &datagram, &body);
        datagram.extend_from_slice(&ciphertext);
        datagram.extend_from_slice(&[0u8; MACS_LEN]);
        cookie::stamp(&cookie::mac1_key(&relay_public), None, &mut datagram);
        let mac1 = cookie::mac1(&cookie::mac1_key(&relay_public), &datagram).unwrap_or_default();
        let initiator = JoinInitiator {
            ephemeral_public,
            response_key: keys.response,
            relay_public,
            mac1,
        };
        Ok((initiator, datagram))
    }

    /// The ephemeral public key of this attempt (also in the clear in its response).
    pub fn ephemeral_public(&self) -> [u8; 32] {
        self.ephemeral_public
    }

    /// The request `datagram` of this attempt with `mac2` made with the relay's `cookie`.
    pub fn with_cookie(&self, datagram: &[u8], cookie: &Cookie) -> Vec<u8> {
        let mut d = datagram.to_vec();
        cookie::stamp(&cookie::mac1_key(&self.relay_public), Some(cookie), &mut d);
        d
    }

    /// Makes sense of any datagram from the relay: a response, a cookie reply or a notice.
    pub fn open_reply(&self, datagram: &[u8]) -> Result<Reply, JoinError> {
        match datagram.get(field::MAGIC) {
            Some(m) if m == cookie::COOKIE_MAGIC => CookieReply::open(
                &self.relay_public,
                &self.ephemeral_public,
                &self.mac1,
                datagram,
            )
            .map(Reply::Cookie)
            .ok_or(JoinError::ResponseNotAuthentic),
            Some(m) if m == cookie::NOTICE_MAGIC => Notice::parse(datagram, &self.ephemeral_public)
                .map(Reply::Notice)
                .ok_or(JoinError::WrongAttempt),
            _ => self.open_response(datagram).map(Reply::Response),
        }
    }

    /// Authenticates and decodes the relay's response to this attempt.
    pub fn open_response(&self, datagram: &[u8]) -> Result<JoinResponse, JoinError> {
        let len = datagram.len();
        if len > MAX_RESPONSE_LEN {
            return Err(JoinError::TooLarge {
                len,
                max: MAX_RESPONSE_LEN,
            });
        }
        match datagram.get(field::MAGIC) {
            None => return Err(JoinError::Truncated { len }),
            Some(m) if m != RESPONSE_MAGIC => return Err(JoinError::NotAResponse),
            Some(_) => {}
        }
        let (Some(header), Some(ephemeral), Some(nonce), Some(ciphertext)) = (
            datagram.get(..field::RESP_NONCE.start),
            datagram.get(field::EPHEMERAL),
            datagram.get(field::RESP_NONCE),
            datagram.get(field::RESP_CIPHERTEXT),
        ) else {
            return Err(JoinError::Truncated { len });
        };
        if len < MIN_RESPONSE_LEN {
            return Err(JoinError::Truncated { len });
        }
        if ephemeral != self.ephemeral_public {
            return Err(JoinError::WrongAttempt);
        }
        let body = open(&self.response_key, nonce, header, ciphertext)
            .ok_or(JoinError::ResponseNotAuthentic)?;
        serde_json::from_slice(&body).map_err(|e| JoinError::BadBody(e.to_string()))
    }
}

/// A request the relay has decrypted and authenticated, ready to be answered.
pub struct OpenedRequest {
    /// The node's static public key (its WireGuard identity), proven by the request.
    pub node_public: [u8; 32],
    /// The request's ephemeral public key: what [`ReplayGuard`] remembers.
    pub ephemeral_public: [u8; 32],
    /// The decrypted request.
    pub request: JoinRequest,
    response_key: [u8; 32],
}

impl fmt::Debug for OpenedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedRequest")
            .field("node_public", &self.node_public)
            .field("ephemeral_public", &self.ephemeral_public)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// Decrypts and authenticates a join request with the relay's static key, and checks its age.
///
/// This is the public-key work (two X25519 operations); the relay runs [`cookie::Gate::check`]
/// first, which checks the MACs at the end that this function leaves alone.
pub fn open_request(
    relay_static: &StaticSecret,
    datagram: &[u8],
    now: u64,
) -> Result<OpenedRequest, JoinError> {
    let len = datagram.len();
    if len > MAX_REQUEST_LEN {
        return Err(JoinError::TooLarge {
            len,
            max: MAX_REQUEST_LEN,
        });
    }
    match datagram.get(field::MAGIC) {
        None => return Err(JoinError::Truncated { len }),
        Some(m) if m != REQUEST_MAGIC => return Err(JoinError::NotARequest),
        Some(_) => {}
    }
    if len < MIN_REQUEST_LEN {
        return Err(JoinError::Truncated { len });
    }
    // The MACs at the end are the gate's ([`cookie::Gate`]); the AEAD covers what is before.
    let (Some(header), Some(ephemeral), Some(node), Some(ciphertext)) = (
        datagram.get(..field::REQ_CIPHERTEXT.start),
        array32(datagram.get(field::EPHEMERAL)),
        array32(datagram.get(field::REQ_NODE_STATIC)),
        datagram.get(field::REQ_CIPHERTEXT.start..len - MACS_LEN),
    ) else {
        return Err(JoinError::Truncated { len });
    };

    let dh_ephemeral = relay_static.diffie_hellman(&PublicKey::from(ephemeral));
    let dh_static = relay_static.diffie_hellman(&PublicKey::from(node));
    if !dh_ephemeral.was_contributory() || !dh_static.was_contributory() {
        return Err(JoinError::WeakKey);
    }
    let relay_public = PublicKey::from(relay_static).to_bytes();
    let keys = derive_keys(
        &ephemeral,
        &node,
        &relay_public,
        dh_ephemeral.as_bytes(),
        dh_static.as_bytes(),
    );
    let body = open(&keys.request, &[0u8; 12], header, ciphertext)
        .ok_or(JoinError::RequestNotAuthentic)?;
    let request: JoinRequest =
        serde_json::from_slice(&body).map_err(|e| JoinError::BadBody(e.to_string()))?;
    let skew = now.abs_diff(request.timestamp);
    if skew > MAX_CLOCK_SKEW_SECS {
        return Err(JoinError::Stale { skew });
    }
    Ok(OpenedRequest {
        node_public: node,
        ephemeral_public: ephemeral,
        request,
        response_key: keys.response,
    })
}

impl OpenedRequest {
    /// Encrypts the answer for the node that made this request.
    ///
    /// A rejection reason too long for [`MAX_RESPONSE_LEN`] is shortened. Each call picks a
    /// fresh random nonce from `rng`, so answering the same request twice never reuses one.
    pub fn seal_response(&self, response: &JoinResponse, rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        self.seal_response_with_nonce(response, nonce)
    }

    fn seal_response_with_nonce(&self, response: &JoinResponse, nonce: [u8; 12]) -> Vec<u8> {
        let body = response_body(response);
        let mut datagram = Vec::with_capacity(MIN_RESPONSE_LEN + body.len());
        datagram.extend_from_slice(&RESPONSE_MAGIC);
        datagram.extend_from_slice(&self.ephemeral_public);
        let ciphertext = seal(&self.response_key, &nonce, &datagram, &body);
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&ciphertext);
        datagram
    }
}

/// Remembers recent requests by ephemeral key so that a replayed request is refused.
///
/// An entry is kept for [`REPLAY_WINDOW_SECS`] (twice the allowed clock skew) after it was
/// inserted: a request accepted at relay time `t` carries a timestamp of at most
/// `t + MAX_CLOCK_SKEW_SECS`, so after `t + REPLAY_WINDOW_SECS` its replay fails the timestamp
/// check in [`open_request`] with [`JoinError::Stale`]. The guard holds at most `capacity`
/// entries; beyond that the oldest is evicted, which under a flood of fresh requests can let a
/// replay through inside the window (the relay then answers under a fresh nonce, readable only by
/// the node that made the request, and re-registering the same key is idempotent).
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    order: VecDeque<([u8; 32], u64)>,
    seen: HashSet<[u8; 32]>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayGuard {
    /// A guard with room for [`REPLAY_GUARD_CAPACITY`] requests.
    pub fn new() -> Self {
        Self::with_capacity(REPLAY_GUARD_CAPACITY)
    }

    /// A guard with room for `capacity` requests (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ReplayGuard {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records a request's ephemeral key; false if it was seen within the window (a replay).
    pub fn check_and_insert(&mut self, ephemeral_public: &[u8; 32], now: u64) -> bool {
        self.expire(now);
        if self.seen.contains(ephemeral_public) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some((oldest, _)) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back((*ephemeral_public, now));
        self.seen.insert(*ephemeral_public);
        true
    }

    /// Number of requests remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no request is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(key, inserted)) = self.order.front() {
            if now.saturating_sub(inserted) <= REPLAY_WINDOW_SECS {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

/// The two single-use AEAD keys of one join attempt.
struct Keys {
    request: [u8; 32],
    response: [u8; 32],
}

/// HKDF (RFC 5869) with keyed BLAKE2s-256 as the PRF, salted with the transcript hash.
fn derive_keys(
    ephemeral: &[u8; 32],
    node: &[u8; 32],
    relay: &[u8; 32],
    dh_ephemeral: &[u8; 32],
    dh_static: &[u8; 32],
) -> Keys {
    let mut transcript = Blake2s256::default();
    for part in [PROTOCOL, &REQUEST_MAGIC, ephemeral, node, relay] {
        Update::update(&mut transcript, part);
    }
    let salt: [u8; 32] = transcript.finalize_fixed().into();
    let prk = prf(&salt, &[dh_ephemeral, dh_static]);
    let request = prf(&prk, &[&[1]]);
    let response = prf(&prk, &[&request, &[2]]);
    Keys { request, response }
}

/// Keyed BLAKE2s-256 over the concatenation of `parts`.
fn prf(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Blake2sMac256::new(key.into());
    for part in parts {
        Update::update(&mut mac, part);
    }
    mac.finalize_fixed().into()
}

fn seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    // Encryption fails only for plaintexts of more than 256 GiB.
    cipher
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default()
}

fn open(key: &[u8; 32], nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let nonce: &[u8; 12] = nonce.try_into().ok()?;
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

fn array32(bytes: Option<&[u8]>) -> Option<[u8; 32]> {
    bytes.and_then(|b| b.try_into().ok())
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Structs of strings and integers always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The JSON body of a response, with an over-long rejection reason shortened to fit.
fn response_body(response: &JoinResponse) -> Vec<u8> {
    let mut body = to_json(response);
    if let JoinResponse::Rejected { reason } = response {
        let mut reason = reason.clone();
        while body.len() > MAX_RESPONSE_BODY && !reason.is_empty() {
            let mut cut = reason.len() / 2;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            body = to_json(&JoinResponse::Rejected {
                reason: reason.clone(),
            });
        }
    }
    body
}

/// Serde for a 32-byte secret as unpadded base64url.
mod secret_base64 {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secret: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(secret))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| D::Error::custom("token_secret is not base64url"))?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("token_secret is not 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    const NOW: u64 = 1_700_000_000;

    fn relay() -> StaticSecret {
        StaticSecret::from([1u8; 32])
    }

    fn node() -> StaticSecret {
        StaticSecret::from([2u8; 32])
    }

    fn public(secret: &StaticSecret) -> [u8; 32] {
        PublicKey::from(secret).to_bytes()
    }

    fn request() -> JoinRequest {
        JoinRequest {
            token_id: "0123456789abcdef".into(),
            token_secret: [0xa5; 32],
            name: Some("laptop".into()),
            hint: None,
            timestamp: NOW,
        }
    }

    fn accepted() -> JoinResponse {
        JoinResponse::Accepted {
            node_name: "laptop".into(),
            address: "100.64.1.0".into(),
            prefix: "100.64.1.0/26".into(),
            network: "100.64.0.0/10".into(),
            domain: "ovl.internal".into(),
            relay_address: "100.64.0.1".into(),
            mtu: 1420,
        }
    }

    /// The test vector's attempt: fixed static and ephemeral keys.
    fn vector_attempt() -> (JoinInitiator, Vec<u8>) {
        JoinInitiator::with_ephemeral(
            &node(),
            public(&relay()),
            &request(),
            StaticSecret::from([3u8; 32]),
        )
        .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Computed independently (Python `cryptography` and `hashlib`), not by this code; it ends
    /// with `mac1` and an all-zero `mac2`.
    static REQUEST_VECTOR: &str = "
        4f564a015dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e01
        24b3ef22ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba0587
        0e587d5939fbe28e3ed6387484d9b3d48557591f17bf80ce2171133a9d45d84a
        5d39ae42d4ee020b539bc2192918d3e528326ac3620ed1af4029d13434c913ab
        480fe7a9e742e804e4bac35916e41de9cdd37837af2ea26b89821cbddcd86870
        15f28b54f3e3318dce607c453aafe60f33f212c5055425b376fd62ba6abb516b
        3d96267aa3a7526e61fa531f8f73ebcaa01200f30d6033ecc62caaa3543dfdc3
        6eda18993c8f4f00000000000000000000000000000000";
    /// The answer `accepted()` with nonce `[4; 12]`, computed the same way.
    static RESPONSE_VECTOR: &str = "
        4f564a025dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e01
        24b3ef22040404040404040404040404b8aca09b809e7ac588b93d7d44eb301c
        cfe49c948b3aa144c3ea44d88586e97dd68bffbeee9885af88d5ca0f09a2b58e
        645eea5765075b840180e5d2e6f08c0bb6309819ed27c344c07726d5ec2c85d3
        8f54d3e7ff2cac79adb13b258d61cf0636f815af3a87819df560873cc9a39c37
        cdadbd82d1c60556673ea49f02c4297263eded2988277a3629565bc3d0d29c95
        c6698a5c9a44a0c6f659fa585aa57fa9c109f0c6aa325b2e4f6b505b348e5228
        47fb7cd18115319f0132980b791529787a6fd9bf";

    #[test]
    fn test_emit_request() {
        let (_, datagram) = vector_attempt();
        assert_eq!(
            hex(&datagram),
            REQUEST_VECTOR.split_whitespace().collect::<String>()
        );
    }

    #[test]
    fn test_parse_request() {
        let opened = open_request(&relay(), &unhex(REQUEST_VECTOR), NOW).unwrap();
        assert_eq!(opened.request, request());
        assert_eq!(opened.node_public, public(&node()));
        assert_eq!(
            opened.ephemeral_public,
            public(&StaticSecret::from([3u8; 32]))
        );
    }

    #[test]
    fn test_emit_response() {
        let (_, datagram) = vector_attempt();
        let opened = open_request(&relay(), &datagram, NOW).unwrap();
        let response = opened.seal_response_with_nonce(&accepted(), [4u8; 12]);
        assert_eq!(
            hex(&response),
            RESPONSE_VECTOR.split_whitespace().collect::<String>()
        );
    }

    #[test]
    fn test_parse_response() {
        let (initiator, _) = vector_attempt();
        assert_eq!(
            initiator.open_response(&unhex(RESPONSE_VECTOR)),
            Ok(accepted())
        );
    }

    #[test]
    fn layout() {
        let (initiator, datagram) = vector_attempt();
        assert_eq!(&datagram[field::MAGIC], b"OVJ\x01");
        assert_eq!(&datagram[field::EPHEMERAL], &initiator.ephemeral_public());
        assert_eq!(&datagram[field::REQ_NODE_STATIC], &public(&node()));
        let body = to_json(&request());
        assert_eq!(datagram.len(), 68 + body.len() + TAG_LEN + MACS_LEN);
        // Nothing of the body is in the clear.
        assert!(!datagram.windows(6).any(|w| w == b"laptop"));
        let opened = open_request(&relay(), &datagram, NOW).unwrap();
        let response = opened.seal_response(&accepted(), &mut OsRng);
        assert_eq!(&response[field::MAGIC], b"OVJ\x02");
        assert_eq!(&response[field::EPHEMERAL], &initiator.ephemeral_public());
        assert_eq!(response.len(), 48 + to_json(&accepted()).len() + TAG_LEN);
    }

    #[test]
    fn body_json() {
        let json = String::from_utf8(to_json(&JoinResponse::Rejected {
            reason: "no".into(),
        }))
        .unwrap();
        assert_eq!(json, r#"{"result":"rejected","reason":"no"}"#);
        let json = String::from_utf8(to_json(&JoinRequest {
            name: None,
            hint: None,
            ..request()
        }))
        .unwrap();
        assert_eq!(
            json,
            r#"{"token_id":"0123456789abcdef","token_secret":"paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU","timestamp":1700000000}"#
        );
    }

    #[test]
    fn roundtrip_accept_and_reject() {
        let node = StaticSecret::random_from_rng(OsRng);
        let relay = StaticSecret::random_from_rng(OsRng);
        for response in [
            accepted(),
            JoinResponse::Rejected {
                reason: "the token has expired".into(),
            },
        ] {
            let (initiator, datagram) =
                JoinInitiator::new(&node, public(&relay), &request(), &mut OsRng).unwrap();
            assert!(is_join_message(&datagram));
            let opened = open_request(&relay, &datagram, NOW + 5).unwrap();
            assert_eq!(opened.node_public, public(&node));
            assert_eq!(opened.request, request());
            let reply = opened.seal_response(&response, &mut OsRng);
            assert!(is_join_message(&reply));
            assert_eq!(initiator.open_response(&reply), Ok(response));
        }
    }

    #[test]
    fn cookie_and_notices_reach_the_attempt() {
        let (initiator, datagram) = vector_attempt();
        let relay_public = public(&relay());
        let mut gate = cookie::Gate::new(relay_public, NOW, &mut OsRng);
        let from: std::net::SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let cookie::Verdict::NeedCookie(reply) = gate.check(from, &datagram, NOW, true, &mut OsRng)
        else {
            panic!("no cookie");
        };
        let Ok(Reply::Cookie(c)) = initiator.open_reply(&reply) else {
            panic!("cookie reply not understood");
        };
        let again = initiator.with_cookie(&datagram, &c);
        assert_eq!(
            again[..again.len() - MAC_LEN],
            datagram[..datagram.len() - MAC_LEN]
        );
        assert_eq!(
            gate.check(from, &again, NOW, true, &mut OsRng),
            cookie::Verdict::Pass { proven: true }
        );
        // The request with mac2 still opens.
        assert!(open_request(&relay(), &again, NOW).is_ok());
        let notice = Notice::WrongKey.encode(&initiator.ephemeral_public());
        assert_eq!(
            initiator.open_reply(&notice),
            Ok(Reply::Notice(Notice::WrongKey))
        );
        let other = Notice::Busy.encode(&[0; 32]);
        assert!(initiator.open_reply(&other).is_err());
        let response = open_request(&relay(), &datagram, NOW)
            .unwrap()
            .seal_response(&accepted(), &mut OsRng);
        assert_eq!(
            initiator.open_reply(&response),
            Ok(Reply::Response(accepted()))
        );
        // A request for another relay key fails mac1 at that relay.
        let mut other_gate = cookie::Gate::new([9; 32], NOW, &mut OsRng);
        assert_eq!(
            other_gate.check(from, &datagram, NOW, false, &mut OsRng),
            cookie::Verdict::WrongKey
        );
    }

    #[test]
    fn fresh_ephemeral_per_attempt() {
        let (a, da) =
            JoinInitiator::new(&node(), public(&relay()), &request(), &mut OsRng).unwrap();
        let (b, db) =
            JoinInitiator::new(&node(), public(&relay()), &request(), &mut OsRng).unwrap();
        assert_ne!(a.ephemeral_public(), b.ephemeral_public());
        assert_ne!(da, db);
        // A response to one attempt does not open in the other.
        let reply = open_request(&relay(), &da, NOW)
            .unwrap()
            .seal_response(&accepted(), &mut OsRng);
        assert_eq!(b.open_response(&reply), Err(JoinError::WrongAttempt));
    }

    #[test]
    fn tampered_request_fails() {
        let (_, datagram) = vector_attempt();
        // The MACs at the end are the gate's to check (see the cookie module's tests).
        for i in 0..datagram.len() - MACS_LEN {
            for bit in [0x01, 0x80] {
                let mut bad = datagram.clone();
                bad[i] ^= bit;
                assert!(open_request(&relay(), &bad, NOW).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn tampered_response_fails() {
        let (initiator, datagram) = vector_attempt();
        let reply = open_request(&relay(), &datagram, NOW)
            .unwrap()
            .seal_response(&accepted(), &mut OsRng);
        for i in 0..reply.len() {
            for bit in [0x01, 0x80] {
                let mut bad = reply.clone();
                bad[i] ^= bit;
                assert!(initiator.open_response(&bad).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn wrong_relay_key_cannot_open() {
        let (_, datagram) = vector_attempt();
        let other = StaticSecret::from([9u8; 32]);
        assert_eq!(
            open_request(&other, &datagram, NOW).unwrap_err(),
            JoinError::RequestNotAuthentic
        );
    }

    #[test]
    fn impostor_response_fails() {
        let (initiator, datagram) = vector_attempt();
        // The impostor sees the request and does everything it can without the relay's private
        // key: it derives keys with its own static key from the public parts of the request.
        let impostor = StaticSecret::from([9u8; 32]);
        let ephemeral: [u8; 32] = datagram[field::EPHEMERAL].try_into().unwrap();
        let node_public: [u8; 32] = datagram[field::REQ_NODE_STATIC].try_into().unwrap();
        let keys = derive_keys(
            &ephemeral,
            &node_public,
            &public(&impostor),
            impostor
                .diffie_hellman(&PublicKey::from(ephemeral))
                .as_bytes(),
            impostor
                .diffie_hellman(&PublicKey::from(node_public))
                .as_bytes(),
        );
        let forged = OpenedRequest {
            node_public,
            ephemeral_public: ephemeral,
            request: request(),
            response_key: keys.response,
        }
        .seal_response(&accepted(), &mut OsRng);
        assert_eq!(
            initiator.open_response(&forged),
            Err(JoinError::ResponseNotAuthentic)
        );
        // A genuine response of the impostor to a request made for it does not fit either.
        let (_, for_impostor) = JoinInitiator::with_ephemeral(
            &node(),
            public(&impostor),
            &request(),
            StaticSecret::from([3u8; 32]),
        )
        .unwrap();
        let reply = open_request(&impostor, &for_impostor, NOW)
            .unwrap()
            .seal_response(&accepted(), &mut OsRng);
        assert_eq!(
            initiator.open_response(&reply),
            Err(JoinError::ResponseNotAuthentic)
        );
    }

    #[test]
    fn request_for_another_node_key_fails() {
        // Swapping the node key in a request (claiming another identity) breaks decryption.
        let (_, mut datagram) = vector_attempt();
        let other = public(&StaticSecret::from([7u8; 32]));
        datagram[field::REQ_NODE_STATIC].copy_from_slice(&other);
        assert_eq!(
            open_request(&relay(), &datagram, NOW).unwrap_err(),
            JoinError::RequestNotAuthentic
        );
    }

    #[test]
    fn weak_keys_refused() {
        assert_eq!(
            JoinInitiator::new(&node(), [0u8; 32], &request(), &mut OsRng).unwrap_err(),
            JoinError::WeakKey
        );
        for range in [field::EPHEMERAL, field::REQ_NODE_STATIC] {
            let (_, mut datagram) = vector_attempt();
            datagram[range].fill(0);
            assert_eq!(
                open_request(&relay(), &datagram, NOW).unwrap_err(),
                JoinError::WeakKey
            );
        }
    }

    #[test]
    fn stale_refused() {
        let (_, datagram) = vector_attempt();
        for now in [NOW - MAX_CLOCK_SKEW_SECS, NOW, NOW + MAX_CLOCK_SKEW_SECS] {
            assert!(open_request(&relay(), &datagram, now).is_ok());
        }
        assert_eq!(
            open_request(&relay(), &datagram, NOW + MAX_CLOCK_SKEW_SECS + 1).unwrap_err(),
            JoinError::Stale { skew: 121 }
        );
        assert_eq!(
            open_request(&relay(), &datagram, NOW - 1000).unwrap_err(),
            JoinError::Stale { skew: 1000 }
        );
        assert!(matches!(
            open_request(&relay(), &datagram, 0),
            Err(JoinError::Stale { .. })
        ));
    }

    #[test]
    fn replay_refused() {
        let (_, datagram) = vector_attempt();
        let mut guard = ReplayGuard::new();
        let opened = open_request(&relay(), &datagram, NOW).unwrap();
        assert!(guard.check_and_insert(&opened.ephemeral_public, NOW));
        let again = open_request(&relay(), &datagram, NOW + 30).unwrap();
        assert!(!guard.check_and_insert(&again.ephemeral_public, NOW + 30));
        // Once the guard forgets it, the timestamp check refuses it.
        let later = NOW + REPLAY_WINDOW_SECS + 1;
        assert!(matches!(
            open_request(&relay(), &datagram, later),
            Err(JoinError::Stale { .. })
        ));
        // A request from the future is remembered until its timestamp is too old too.
        let mut guard = ReplayGuard::new();
        let early = NOW - MAX_CLOCK_SKEW_SECS;
        assert!(guard.check_and_insert(&opened.ephemeral_public, early));
        let last_ok = NOW + MAX_CLOCK_SKEW_SECS;
        assert!(open_request(&relay(), &datagram, last_ok).is_ok());
        assert!(!guard.check_and_insert(&opened.ephemeral_public, last_ok));
    }

    #[test]
    fn replay_guard_expires_and_is_bounded() {
        let mut guard = ReplayGuard::with_capacity(3);
        let key = |n: u8| [n; 32];
        assert!(guard.check_and_insert(&key(1), 100));
        assert!(guard.check_and_insert(&key(2), 101));
        assert!(guard.check_and_insert(&key(3), 102));
        assert_eq!(guard.len(), 3);
        assert!(guard.check_and_insert(&key(4), 103)); // evicts 1
        assert_eq!(guard.len(), 3);
        assert!(!guard.check_and_insert(&key(4), 104));
        assert!(guard.check_and_insert(&key(1), 104)); // evicts 2
        assert!(!guard.check_and_insert(&key(3), 100 + REPLAY_WINDOW_SECS));
        // Expired: everything inserted more than the window ago.
        assert!(guard.check_and_insert(&key(3), 104 + REPLAY_WINDOW_SECS + 1));
        assert_eq!(guard.len(), 1);
        assert!(ReplayGuard::default().is_empty());
        assert_eq!(ReplayGuard::with_capacity(0).capacity, 1);
    }

    #[test]
    fn is_join_message_vs_wireguard() {
        assert!(is_join_message(b"OVJ\x01rest"));
        assert!(is_join_message(b"OVJ\x02"));
        assert!(!is_join_message(b"OVJ"));
        assert!(!is_join_message(b"OVJ\x03...."));
        assert!(!is_join_message(&[]));
        for kind in 1u32..=4 {
            let mut wg = kind.to_le_bytes().to_vec();
            wg.extend_from_slice(&[0u8; 144]);
            assert!(!is_join_message(&wg));
        }
    }

    #[test]
    fn wrong_direction_refused() {
        let (initiator, datagram) = vector_attempt();
        let reply = open_request(&relay(), &datagram, NOW)
            .unwrap()
            .seal_response(&accepted(), &mut OsRng);
        assert_eq!(
            open_request(&relay(), &reply, NOW).unwrap_err(),
            JoinError::NotARequest
        );
        assert_eq!(
            initiator.open_response(&datagram).unwrap_err(),
            JoinError::NotAResponse
        );
    }

    #[test]
    fn oversized_refused_before_crypto() {
        let mut big = REQUEST_MAGIC.to_vec();
        big.resize(MAX_REQUEST_LEN + 1, 0);
        assert_eq!(
            open_request(&relay(), &big, NOW).unwrap_err(),
            JoinError::TooLarge {
                len: MAX_REQUEST_LEN + 1,
                max: MAX_REQUEST_LEN
            }
        );
        let (initiator, _) = vector_attempt();
        let mut big = RESPONSE_MAGIC.to_vec();
        big.resize(MAX_RESPONSE_LEN + 1, 0);
        assert!(matches!(
            initiator.open_response(&big),
            Err(JoinError::TooLarge { .. })
        ));
        // A request with a huge name is built but refused.
        let long = JoinRequest {
            name: Some("n".repeat(2000)),
            hint: None,
            ..request()
        };
        let (_, datagram) =
            JoinInitiator::new(&node(), public(&relay()), &long, &mut OsRng).unwrap();
        assert!(matches!(
            open_request(&relay(), &datagram, NOW),
            Err(JoinError::TooLarge { .. })
        ));
    }

    #[test]
    fn long_rejection_reason_is_shortened() {
        let (initiator, datagram) = vector_attempt();
        let opened = open_request(&relay(), &datagram, NOW).unwrap();
        for reason in ["é".repeat(5000), "\u{1}".repeat(3000), "x".repeat(1200)] {
            let reply = opened.seal_response(&JoinResponse::Rejected { reason }, &mut OsRng);
            assert!(reply.len() <= MAX_RESPONSE_LEN, "{}", reply.len());
            match initiator.open_response(&reply) {
                Ok(JoinResponse::Rejected { reason }) => assert!(!reason.is_empty()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_body_refused() {
        // A well-encrypted body that is not a JoinRequest.
        let (_, datagram) = vector_attempt();
        let ephemeral: [u8; 32] = datagram[field::EPHEMERAL].try_into().unwrap();
        let relay = relay();
        let keys = derive_keys(
            &ephemeral,
            &public(&node()),
            &public(&relay),
            relay.diffie_hellman(&PublicKey::from(ephemeral)).as_bytes(),
            node()
                .diffie_hellman(&PublicKey::from(public(&relay)))
                .as_bytes(),
        );
        let header = &datagram[..field::REQ_CIPHERTEXT.start];
        let mut bad = header.to_vec();
        bad.extend(seal(&keys.request, &[0; 12], header, br#"{"token_id":1}"#));
        bad.extend_from_slice(&[0; MACS_LEN]);
        assert!(matches!(
            open_request(&relay, &bad, NOW),
            Err(JoinError::BadBody(_))
        ));
    }

    #[test]
    fn truncation_never_panics() {
        let (initiator, datagram) = vector_attempt();
        let reply = open_request(&relay(), &datagram, NOW)
            .unwrap()
            .seal_response(&accepted(), &mut OsRng);
        for n in 0..datagram.len() {
            assert!(open_request(&relay(), &datagram[..n], NOW).is_err(), "{n}");
        }
        for n in 0..reply.len() {
            assert!(initiator.open_response(&reply[..n]).is_err(), "{n}");
        }
        assert_eq!(
            open_request(&relay(), &datagram[..MIN_REQUEST_LEN - 1], NOW).unwrap_err(),
            JoinError::Truncated {
                len: MIN_REQUEST_LEN - 1
            }
        );
    }

    #[test]
    fn random_garbage_never_panics() {
        let (initiator, _) = vector_attempt();
        let relay = relay();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let len = (next() % 1400) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match round % 3 {
                0 => bytes.splice(0..0, REQUEST_MAGIC).for_each(drop),
                1 => bytes.splice(0..0, RESPONSE_MAGIC).for_each(drop),
                _ => {}
            }
            assert!(open_request(&relay, &bytes, NOW).is_err());
            assert!(initiator.open_response(&bytes).is_err());
            let _ = is_join_message(&bytes);
        }
    }

    #[test]
    fn errors_are_one_sentence() {
        let errors = [
            JoinError::TooLarge {
                len: 2000,
                max: 1200,
            },
            JoinError::Truncated { len: 3 },
            JoinError::NotARequest,
            JoinError::NotAResponse,
            JoinError::WeakKey,
            JoinError::RequestNotAuthentic,
            JoinError::ResponseNotAuthentic,
            JoinError::WrongAttempt,
            JoinError::BadBody("x".into()),
            JoinError::Stale { skew: 500 },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.ends_with('.'), "{s}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = format!("{:?}", request());
        assert!(s.contains("<redacted>") && !s.contains("paWl"));
        let (initiator, datagram) = vector_attempt();
        assert!(!format!("{initiator:?}").contains("response_key"));
        let opened = open_request(&relay(), &datagram, NOW).unwrap();
        assert!(!format!("{opened:?}").contains("response_key"));
    }
}
