//! WireGuard keys as they appear in files and on the command line (standard base64, 32 bytes).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Why a key did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64 or not 32 bytes.
    #[error("'{0}' is not a WireGuard key (44 characters of base64, as printed by `wg genkey`)")]
    Invalid(String),
}

/// Decodes a base64 WireGuard key.
pub fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let invalid = || KeyError::Invalid(shorten(text));
    if text.len() != 44 {
        return Err(invalid());
    }
    let bytes = STANDARD.decode(text).map_err(|_| invalid())?;
    bytes.try_into().map_err(|_| invalid())
}

/// Encodes a key as base64.
pub fn encode(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

/// A short, log-friendly form of a key (first 8 characters of its base64).
pub fn short(key: &[u8; 32]) -> String {
    let mut s = encode(key);
    s.truncate(8);
    s
}

fn shorten(text: &str) -> String {
    text.chars().take(48).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let k = [7u8; 32];
        assert_eq!(decode(&encode(&k)).unwrap(), k);
        assert_eq!(short(&k).len(), 8);
    }

    #[test]
    fn rejects() {
        assert!(decode("abc").is_err());
        assert!(decode(&"A".repeat(44)).is_err()); // 33 bytes
        assert!(decode("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").is_err());
    }
}
