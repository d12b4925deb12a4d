//! Join tokens: the one line a person pastes into `overlay join`.
//!
//! A token is `ovl1_` followed by the unpadded base64url encoding of a compact JSON payload:
//!
//! ```text
//! {"relay_key":"<base64 std, 32 bytes>","endpoints":["host:port",...],"network":"100.64.0.0/10",
//!  "domain":"ovl.internal","id":"<16 lowercase hex>","secret":"<base64url, 32 bytes>"}
//! ```
//!
//! The digit in the prefix is the format version. Unknown payload fields are ignored, so later
//! versions of the same format may add optional fields. The relay stores only
//! [`hash_secret`] of the secret and checks a presented secret with [`verify_secret`].
//!
//! Contract: [`Token::parse`] accepts any string, returns an error for anything that is not a
//! well-formed token, and never panics (see the `never_panics_*` tests and the fuzz target).

use std::fmt;
use std::net::IpAddr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2sMac256;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The prefix of every token of the current format.
pub const PREFIX: &str = "ovl1_";

/// The longest token (after trimming whitespace) that [`Token::parse`] looks at.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Key of the keyed BLAKE2s that hashes token secrets (domain separation).
const HASH_CONTEXT: &[u8] = b"overlay token v1";

/// A decoded join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The relay's X25519 (WireGuard) public key.
    pub relay_key: [u8; 32],
    /// Where the relay listens, as `host:port`; at least one.
    pub endpoints: Vec<String>,
    /// The relay's URL for the overlay over an HTTP upgrade (`--public-url`), where UDP
    /// cannot pass; absent in tokens of relays without one (and in older tokens).
    pub url: Option<String>,
    /// The overlay network, e.g. `100.64.0.0/10`.
    pub network: String,
    /// The overlay DNS domain, e.g. `ovl.internal`.
    pub domain: String,
    /// The token id (16 lowercase hex characters), shown by `token list`.
    pub id: String,
    /// The token secret; the relay keeps only its hash.
    pub secret: [u8; 32],
}

/// Why a string is not a usable join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not start with `ovl<N>_`.
    #[error("this is not an overlay join token (a token starts with \"{PREFIX}\")")]
    NotAToken,
    /// A token of another format version.
    #[error("this join token has format version {version}, which this version of overlay does not support; upgrade overlay")]
    UnsupportedVersion {
        /// The version digits found in the prefix.
        version: String,
    },
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error(
        "the join token is {len} characters long, more than the {MAX_TOKEN_LEN} a token can have"
    )]
    TooLong {
        /// Length after trimming whitespace.
        len: usize,
    },
    /// Not base64url, or cut short.
    #[error("the join token is damaged or truncated; copy the whole line again")]
    BadBase64,
    /// The decoded payload is not the expected JSON or a field is malformed.
    #[error("the join token's content is invalid: {0}")]
    BadPayload(String),
    /// The relay key or the secret does not have 32 bytes.
    #[error("the join token's {field} is {len} bytes long instead of 32")]
    BadKeyLength {
        /// Which field: `relay key` or `secret`.
        field: &'static str,
        /// The decoded length.
        len: usize,
    },
    /// The relay key is a low-order point, with which no secret key can be agreed.
    #[error("the join token's relay key is not a usable X25519 public key")]
    WeakRelayKey,
    /// The endpoint list is empty.
    #[error("the join token lists no relay endpoint")]
    NoEndpoints,
}

/// The JSON payload as it is on the wire.
#[derive(Serialize, Deserialize)]
struct Payload {
    relay_key: String,
    endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    network: String,
    domain: String,
    id: String,
    secret: String,
}

impl Token {
    /// Parses a token as pasted by a person (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: text.len() });
        }
        let body = match text.strip_prefix(PREFIX) {
            Some(body) => body,
            None => return Err(version_error(text)),
        };
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::BadBase64)?;
        let payload: Payload = serde_json::from_slice(&json).map_err(|e| {
            if e.is_eof() {
                TokenError::BadBase64
            } else {
                TokenError::BadPayload(e.to_string())
            }
        })?;
        Token::from_payload(payload)
    }

    /// Encodes the token as the one line printed by `overlay-relay token create`.
    pub fn encode(&self) -> String {
        let payload = Payload {
            relay_key: STANDARD.encode(self.relay_key),
            endpoints: self.endpoints.clone(),
            url: self.url.clone(),
            network: self.network.clone(),
            domain: self.domain.clone(),
            id: self.id.clone(),
            secret: URL_SAFE_NO_PAD.encode(self.secret),
        };
        // A struct of strings always serializes.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    fn from_payload(p: Payload) -> Result<Token, TokenError> {
        let bad = |what: &str| TokenError::BadPayload(what.to_string());
        let relay_key = decode_32(&STANDARD, &p.relay_key, "relay key")?;
        if !is_usable_public_key(&relay_key) {
            return Err(TokenError::WeakRelayKey);
        }
        let secret = decode_32(&URL_SAFE_NO_PAD, &p.secret, "secret")?;
        if p.endpoints.is_empty() {
            return Err(TokenError::NoEndpoints);
        }
        if let Some(e) = p.endpoints.iter().find(|e| !is_endpoint(e)) {
            return Err(TokenError::BadPayload(format!(
                "endpoint {:?} is not host:port",
                shorten(e)
            )));
        }
        if let Some(u) = &p.url {
            crate::transport::stream::url::RelayUrl::parse(u)
                .map_err(|e| TokenError::BadPayload(e.to_string()))?;
        }
        if !is_cidr(&p.network) {
            return Err(TokenError::BadPayload(format!(
                "network {:?} is not a CIDR such as 100.64.0.0/10",
                shorten(&p.network)
            )));
        }
        if !is_domain(&p.domain) {
            return Err(TokenError::BadPayload(format!(
                "domain {:?} is not a DNS name",
                shorten(&p.domain)
            )));
        }
        if !is_token_id(&p.id) {
            return Err(bad("the token id is not 16 lowercase hex characters"));
        }
        Ok(Token {
            relay_key,
            endpoints: p.endpoints,
            url: p.url,
            network: p.network,
            domain: p.domain,
            id: p.id,
            secret,
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("relay_key", &STANDARD.encode(self.relay_key))
            .field("endpoints", &self.endpoints)
            .field("url", &self.url)
            .field("network", &self.network)
            .field("domain", &self.domain)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Generates a token id: 8 random bytes as 16 lowercase hex characters.
pub fn generate_id(rng: &mut impl CryptoRngCore) -> String {
    let mut bytes = [0u8; 8];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Generates a token secret from `rng` (the OS generator in the relay).
pub fn generate_secret(rng: &mut impl CryptoRngCore) -> [u8; 32] {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    secret
}

/// Hashes a token secret for storage: BLAKE2s-256 keyed with `"overlay token v1"` (zero-padded).
pub fn hash_secret(secret: &[u8; 32]) -> [u8; 32] {
    let mut mac = Blake2sMac256::new(&pad_key(HASH_CONTEXT).into());
    Update::update(&mut mac, secret);
    mac.finalize_fixed().into()
}

/// Checks a presented secret against a stored hash in constant time.
pub fn verify_secret(secret: &[u8; 32], stored_hash: &[u8; 32]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

/// Whether `key` is an X25519 public key that yields a secret shared key (not a low-order point).
pub(crate) fn is_usable_public_key(key: &[u8; 32]) -> bool {
    // A clamped scalar is a multiple of the cofactor, so it maps every point of small order to
    // the identity (all-zero output) and every other point to a non-zero output.
    let probe = x25519_dalek::StaticSecret::from([0x42u8; 32]);
    probe
        .diffie_hellman(&x25519_dalek::PublicKey::from(*key))
        .was_contributory()
}

/// BLAKE2s keys are up to 32 bytes; the context is zero-padded to exactly 32.
fn pad_key(context: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    let n = context.len().min(32);
    key[..n].copy_from_slice(&context[..n]);
    key
}

fn version_error(text: &str) -> TokenError {
    let version = text
        .strip_prefix("ovl")
        .and_then(|rest| rest.split_once('_'))
        .map(|(digits, _)| digits)
        .filter(|d| !d.is_empty() && d.len() <= 8 && d.bytes().all(|b| b.is_ascii_digit()));
    match version {
        Some(v) => TokenError::UnsupportedVersion {
            version: v.to_string(),
        },
        None => TokenError::NotAToken,
    }
}

fn decode_32<E: Engine>(
    engine: &E,
    text: &str,
    field: &'static str,
) -> Result<[u8; 32], TokenError> {
    let bytes = engine
        .decode(text)
        .map_err(|_| TokenError::BadPayload(format!("the {field} is not valid base64")))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| TokenError::BadKeyLength { field, len })
}

fn is_endpoint(e: &str) -> bool {
    let Some((host, port)) = e.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host.contains(|c: char| c.is_whitespace() || c == '/')
        && matches!(port.parse::<u16>(), Ok(p) if p != 0)
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    matches!(len.parse::<u8>(), Ok(l) if l <= max)
}

fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_token_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    /// Relay public key of the test vector: X25519 base point times the scalar [1; 32].
    fn relay_key() -> [u8; 32] {
        *x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([1u8; 32])).as_bytes()
    }

    fn sample() -> Token {
        Token {
            relay_key: relay_key(),
            endpoints: vec!["relay.example.com:51820".into(), "192.0.2.7:51820".into()],
            url: None,
            network: "100.64.0.0/10".into(),
            domain: "ovl.internal".into(),
            id: "0123456789abcdef".into(),
            secret: [0xa5; 32],
        }
    }

    /// Encodes an arbitrary JSON payload as a token.
    fn with_json(json: &str) -> String {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    fn sample_json() -> serde_json::Value {
        serde_json::json!({
            "relay_key": STANDARD.encode(relay_key()),
            "endpoints": ["relay.example.com:51820"],
            "network": "100.64.0.0/10",
            "domain": "ovl.internal",
            "id": "0123456789abcdef",
            "secret": URL_SAFE_NO_PAD.encode([0xa5u8; 32]),
        })
    }

    fn with_field(field: &str, value: serde_json::Value) -> String {
        let mut v = sample_json();
        v[field] = value;
        with_json(&v.to_string())
    }

    static VECTOR_JSON: &str = concat!(
        r#"{"relay_key":"pOCSkrZRwni5dyxWn1+puxPZBrRqtoyd+dwrRAn4ogk=","#,
        r#""endpoints":["relay.example.com:51820","192.0.2.7:51820"],"#,
        r#""network":"100.64.0.0/10","domain":"ovl.internal","id":"0123456789abcdef","#,
        r#""secret":"paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU"}"#
    );

    #[test]
    fn test_emit() {
        assert_eq!(sample().encode(), with_json(VECTOR_JSON));
    }

    #[test]
    fn test_parse() {
        assert_eq!(Token::parse(&with_json(VECTOR_JSON)), Ok(sample()));
    }

    #[test]
    fn roundtrip_and_whitespace() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with("ovl1_"));
        assert_eq!(Token::parse(&format!("  \n{text}\r\n\t")), Ok(t));
    }

    #[test]
    fn roundtrip_generated() {
        let t = Token {
            id: generate_id(&mut OsRng),
            secret: generate_secret(&mut OsRng),
            endpoints: vec!["[2001:db8::1]:51820".into()],
            network: "fd00::/64".into(),
            ..sample()
        };
        assert_eq!(Token::parse(&t.encode()), Ok(t));
    }

    #[test]
    fn the_url_roundtrips_and_old_tokens_have_none() {
        let t = Token {
            url: Some("https://relay.example.com/overlay".into()),
            ..sample()
        };
        assert_eq!(Token::parse(&t.encode()), Ok(t));
        assert_eq!(
            Token::parse(&with_json(VECTOR_JSON)).map(|t| t.url),
            Ok(None)
        );
        let bad = with_field("url", serde_json::json!("ftp://relay/"));
        assert!(matches!(Token::parse(&bad), Err(TokenError::BadPayload(_))));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = sample_json();
        v["later"] = serde_json::json!({"x": 1});
        assert!(Token::parse(&with_json(&v.to_string())).is_ok());
    }

    #[test]
    fn debug_redacts_secret() {
        let s = format!("{:?}", sample());
        assert!(s.contains("<redacted>"));
        assert!(!s.contains(&URL_SAFE_NO_PAD.encode([0xa5u8; 32])));
    }

    #[test]
    fn error_not_a_token() {
        for text in [
            "",
            "   ",
            "hello",
            "ovl_abc",
            "ovlx_abc",
            "OVL1_abc",
            "wg genkey",
        ] {
            assert_eq!(Token::parse(text), Err(TokenError::NotAToken), "{text:?}");
        }
    }

    #[test]
    fn error_unsupported_version() {
        assert_eq!(
            Token::parse("ovl2_eyJ9"),
            Err(TokenError::UnsupportedVersion {
                version: "2".into()
            })
        );
        assert!(matches!(
            Token::parse("ovl10_"),
            Err(TokenError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn error_too_long() {
        let text = format!("{PREFIX}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            Token::parse(&text),
            Err(TokenError::TooLong {
                len: MAX_TOKEN_LEN + PREFIX.len()
            })
        );
    }

    #[test]
    fn error_bad_base64() {
        assert_eq!(Token::parse("ovl1_!!!!"), Err(TokenError::BadBase64));
        assert_eq!(Token::parse("ovl1_eyJ+"), Err(TokenError::BadBase64)); // '+' is not url-safe
        let full = sample().encode();
        // Cut off: either invalid base64 or JSON ending early.
        assert_eq!(
            Token::parse(&full[..full.len() - 10]),
            Err(TokenError::BadBase64)
        );
        assert_eq!(Token::parse(PREFIX), Err(TokenError::BadBase64));
    }

    #[test]
    fn error_bad_payload() {
        let cases = [
            with_json("[1,2,3]"),
            with_json("{}"),
            with_field("endpoints", serde_json::json!("relay:1")),
            with_field("endpoints", serde_json::json!(["relay"])),
            with_field("endpoints", serde_json::json!(["relay:0"])),
            with_field("endpoints", serde_json::json!([":51820"])),
            with_field("network", serde_json::json!("100.64.0.0")),
            with_field("network", serde_json::json!("100.64.0.0/33")),
            with_field("domain", serde_json::json!("")),
            with_field("domain", serde_json::json!("a..b")),
            with_field("id", serde_json::json!("0123456789ABCDEF")),
            with_field("id", serde_json::json!("0123")),
            with_field("relay_key", serde_json::json!("not base64!")),
            with_field("secret", serde_json::json!("+/+/")),
        ];
        for text in cases {
            let err = Token::parse(&text).unwrap_err();
            assert!(matches!(err, TokenError::BadPayload(_)), "{err:?}");
        }
    }

    #[test]
    fn error_bad_key_length() {
        let short = with_field("relay_key", serde_json::json!(STANDARD.encode([9u8; 31])));
        assert_eq!(
            Token::parse(&short),
            Err(TokenError::BadKeyLength {
                field: "relay key",
                len: 31
            })
        );
        let long = with_field(
            "secret",
            serde_json::json!(URL_SAFE_NO_PAD.encode([9u8; 33])),
        );
        assert_eq!(
            Token::parse(&long),
            Err(TokenError::BadKeyLength {
                field: "secret",
                len: 33
            })
        );
    }

    #[test]
    fn error_weak_relay_key() {
        for point in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let text = with_field("relay_key", serde_json::json!(STANDARD.encode(point)));
            assert_eq!(Token::parse(&text), Err(TokenError::WeakRelayKey));
        }
    }

    #[test]
    fn error_no_endpoints() {
        let text = with_field("endpoints", serde_json::json!([]));
        assert_eq!(Token::parse(&text), Err(TokenError::NoEndpoints));
    }

    #[test]
    fn errors_are_one_sentence() {
        let errors = [
            TokenError::NotAToken,
            TokenError::UnsupportedVersion {
                version: "2".into(),
            },
            TokenError::TooLong { len: 5000 },
            TokenError::BadBase64,
            TokenError::BadPayload("x".into()),
            TokenError::BadKeyLength {
                field: "secret",
                len: 3,
            },
            TokenError::WeakRelayKey,
            TokenError::NoEndpoints,
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.ends_with('.'), "{s}");
        }
    }

    #[test]
    fn never_panics_on_truncation() {
        let full = sample().encode();
        for n in 0..full.len() {
            assert!(Token::parse(&full[..n]).is_err(), "prefix of length {n}");
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let full = sample().encode().into_bytes();
        for round in 0..4000 {
            let len = (rng.next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if round % 2 == 0 {
                // Random bytes after a valid prefix, and single-byte corruptions of a real token.
                bytes.splice(0..0, PREFIX.bytes());
                let mut t = full.clone();
                let i = (rng.next() as usize) % t.len();
                t[i] = rng.next() as u8;
                let _ = Token::parse(&String::from_utf8_lossy(&t));
            }
            let _ = Token::parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn secret_hash_and_verify() {
        let secret = generate_secret(&mut OsRng);
        let hash = hash_secret(&secret);
        assert_ne!(hash, secret);
        assert!(verify_secret(&secret, &hash));
        let mut other = secret;
        other[31] ^= 1;
        assert!(!verify_secret(&other, &hash));
        assert!(!verify_secret(&secret, &[0u8; 32]));
    }

    #[test]
    fn secret_hash_vector() {
        // Keyed BLAKE2s-256, key "overlay token v1" zero-padded to 32 bytes, message [0; 32].
        assert_eq!(
            hex(&hash_secret(&[0u8; 32])),
            "647bd0fdba345a41ee5857c2cd8dd458da49fc7d77a9c72b356c38e73a61b40e"
        );
    }

    #[test]
    fn generated_ids_and_secrets_differ() {
        let id = generate_id(&mut OsRng);
        assert!(is_token_id(&id));
        assert_ne!(id, generate_id(&mut OsRng));
        assert_ne!(generate_secret(&mut OsRng), generate_secret(&mut OsRng));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A tiny deterministic generator for garbage input.
    pub(crate) struct XorShift(pub u64);

    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }
}
