//! `token::Token::parse` on any text (the bytes are decoded as lossy UTF-8, as a pasted line
//! would be). Properties: never panics; every error is one sentence (the contract in
//! docs/protocol.md); a token that parses encodes to a token that parses to the same fields,
//! and encoding is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::identity::token::{Token, MAX_TOKEN_LEN, PREFIX};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let t = match Token::parse(&text) {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.is_empty() && !msg.contains('\n'),
                "error is not one line: {msg:?}"
            );
            assert!(!msg.ends_with('.'), "error is not one sentence: {msg:?}");
            return;
        }
    };
    assert!(!t.endpoints.is_empty());
    let encoded = t.encode();
    assert!(encoded.starts_with(PREFIX));
    assert!(
        encoded.len() <= MAX_TOKEN_LEN,
        "a parsed token re-encodes to {} characters, more than a token can have",
        encoded.len()
    );
    let again = match Token::parse(&encoded) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded token does not parse: {e}\n{encoded}"),
    };
    assert_eq!(again.relay_key, t.relay_key, "relay_key");
    assert_eq!(again.endpoints, t.endpoints, "endpoints");
    assert_eq!(again.network, t.network, "network");
    assert_eq!(again.domain, t.domain, "domain");
    assert_eq!(again.id, t.id, "id");
    assert_eq!(again.secret, t.secret, "secret");
    assert!(again == t);
    assert_eq!(again.encode(), encoded, "encoding is not stable");
});
