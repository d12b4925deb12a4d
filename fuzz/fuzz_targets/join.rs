//! The join exchange (`join`), both ends:
//!
//! * `open_request(&relay_secret, data, NOW)`: what the relay does with any datagram that starts
//!   like a join request, with a fixed relay key and a fixed clock;
//! * `JoinInitiator::open_response(data)`: what a joining node does with the answer;
//! * roundtrips with the input as content: a rejection reason and an accepted node name sealed by
//!   the relay and opened by the node, and (for one input in 32, it costs five X25519
//!   operations) a request whose token id, name and hint come from the input, made by
//!   `JoinInitiator::new` and opened by `open_request`.
//!
//! Properties: never panics; size caps are checked before anything else; what opens is what was
//! sealed; an opened request's keys are the ones in its header and its timestamp is within the
//! allowed skew. The seeds (fuzz/seeds/join/, made by fuzz/seedgen) hold valid requests for this
//! relay key and NOW, so mutations start from the authenticated path.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use overlay_core::identity::join::{
    self, open_request, JoinError, JoinInitiator, JoinRequest, JoinResponse, OpenedRequest,
    MAX_CLOCK_SKEW_SECS, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, REQUEST_MAGIC, RESPONSE_MAGIC,
};
use x25519_dalek::{PublicKey, StaticSecret};

/// The relay's clock, unix seconds; the seeds' requests carry this timestamp.
const NOW: u64 = 1_700_000_000;
/// The relay's static secret (the same as in the unit-test vectors of core/src/identity/join.rs).
const RELAY_SECRET: [u8; 32] = [1; 32];
/// The node's static secret.
const NODE_SECRET: [u8; 32] = [2; 32];
/// `[0xa5; 32]` as unpadded base64url, the token secret of the unit-test vectors.
const TOKEN_SECRET_B64: &str = "paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU";
/// Response header (magic, ephemeral key, nonce) and AEAD tag around the JSON body.
const RESPONSE_OVERHEAD: usize = 4 + 32 + 12 + 16;

struct Fixture {
    relay: StaticSecret,
    relay_public: [u8; 32],
    node: StaticSecret,
    node_public: [u8; 32],
    /// One join attempt of the node, and the relay's side of it.
    initiator: JoinInitiator,
    opened: OpenedRequest,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let relay = StaticSecret::from(RELAY_SECRET);
        let relay_public = PublicKey::from(&relay).to_bytes();
        let node = StaticSecret::from(NODE_SECRET);
        let node_public = PublicKey::from(&node).to_bytes();
        let req = request("0123456789abcdef", Some("laptop"), None, NOW);
        let (initiator, datagram) =
            JoinInitiator::new(&node, relay_public, &req, &mut rand_core::OsRng).unwrap();
        let opened = open_request(&relay, &datagram, NOW).unwrap();
        Fixture {
            relay,
            relay_public,
            node,
            node_public,
            initiator,
            opened,
        }
    })
}

/// A request built through serde, so that fields added to `JoinRequest` later (with serde
/// defaults) do not break this target; `hint` is ignored by versions without it.
fn request(token_id: &str, name: Option<&str>, hint: Option<&str>, timestamp: u64) -> JoinRequest {
    serde_json::from_value(serde_json::json!({
        "token_id": token_id,
        "token_secret": TOKEN_SECRET_B64,
        "name": name,
        "hint": hint,
        "timestamp": timestamp,
    }))
    .expect("a JoinRequest from its JSON form")
}

/// The relay side on untrusted bytes.
fn check_open_request(f: &Fixture, data: &[u8]) {
    let result = open_request(&f.relay, data, NOW);
    if data.len() > MAX_REQUEST_LEN {
        assert!(
            matches!(result, Err(JoinError::TooLarge { .. })),
            "{result:?}"
        );
        return;
    }
    let Ok(opened) = result else {
        return;
    };
    assert!(join::is_join_message(data) && data.starts_with(&REQUEST_MAGIC));
    assert_eq!(&opened.ephemeral_public[..], &data[4..36]);
    assert_eq!(&opened.node_public[..], &data[36..68]);
    let skew = NOW.abs_diff(opened.request.timestamp);
    assert!(
        skew <= MAX_CLOCK_SKEW_SECS,
        "accepted a request {skew} s off"
    );
    // The relay's answer fits, is a join message, and is not taken for a request.
    let reply = opened.seal_response(
        &JoinResponse::Rejected {
            reason: "no".into(),
        },
        &mut rand_core::OsRng,
    );
    assert!(reply.len() <= MAX_RESPONSE_LEN && reply.starts_with(&RESPONSE_MAGIC));
    assert_eq!(
        open_request(&f.relay, &reply, NOW).unwrap_err(),
        JoinError::NotARequest
    );
}

/// The node side on untrusted bytes.
fn check_open_response(f: &Fixture, data: &[u8]) {
    let result = f.initiator.open_response(data);
    if data.len() > MAX_RESPONSE_LEN {
        assert!(
            matches!(result, Err(JoinError::TooLarge { .. })),
            "{result:?}"
        );
        return;
    }
    if result.is_ok() {
        assert!(data.starts_with(&RESPONSE_MAGIC));
        assert_eq!(&data[4..36], &f.initiator.ephemeral_public()[..]);
    }
}

/// Relay seals, node opens: a rejection with `reason`, and an acceptance naming `name`.
fn check_response_roundtrip(f: &Fixture, text: &str, mtu: u16) {
    let reason = text.to_string();
    let reply = f.opened.seal_response(
        &JoinResponse::Rejected {
            reason: reason.clone(),
        },
        &mut rand_core::OsRng,
    );
    assert!(
        reply.len() <= MAX_RESPONSE_LEN,
        "rejection of {} bytes",
        reply.len()
    );
    match f.initiator.open_response(&reply) {
        Ok(JoinResponse::Rejected { reason: got }) => {
            assert!(
                reason.starts_with(&got),
                "the reason changed, not just shortened"
            );
            assert!(
                reason.is_empty() || !got.is_empty(),
                "the reason was cut to nothing"
            );
            let full = serde_json::to_vec(&JoinResponse::Rejected {
                reason: reason.clone(),
            })
            .unwrap();
            if full.len() + RESPONSE_OVERHEAD <= MAX_RESPONSE_LEN {
                assert_eq!(got, reason, "a reason that fits was shortened");
            }
        }
        other => panic!("sealed rejection opened as {other:?}"),
    }

    let accepted = JoinResponse::Accepted {
        node_name: text.to_string(),
        address: "100.64.4.1".into(),
        prefix: "100.64.4.0/26".into(),
        network: "100.64.0.0/10".into(),
        domain: "ovl.internal".into(),
        relay_address: "100.64.0.1".into(),
        mtu,
    };
    let reply = f.opened.seal_response(&accepted, &mut rand_core::OsRng);
    let opened = f.initiator.open_response(&reply);
    if reply.len() <= MAX_RESPONSE_LEN {
        assert_eq!(opened, Ok(accepted));
    } else {
        // Nothing shortens an acceptance: the relay must not hand out names this long.
        assert!(
            matches!(opened, Err(JoinError::TooLarge { .. })),
            "{opened:?}"
        );
    }
}

/// Node makes a request from the input, relay opens it.
fn check_request_roundtrip(f: &Fixture, data: &[u8], text: &str) {
    let mut parts = text.splitn(3, '\0');
    let token_id = parts.next().unwrap_or("");
    let name = parts.next().filter(|s| !s.is_empty());
    let hint = parts.next().filter(|s| !s.is_empty());
    // Timestamps from 255 s early to 255 s late: both sides of the allowed skew.
    let offset =
        i64::from(data.get(1).copied().unwrap_or(0)) * if data.len() % 2 == 0 { 1 } else { -1 };
    let timestamp = NOW.saturating_add_signed(offset);
    let req = request(token_id, name, hint, timestamp);
    let (initiator, datagram) =
        JoinInitiator::new(&f.node, f.relay_public, &req, &mut rand_core::OsRng)
            .expect("the fixed relay key is not weak");
    let result = open_request(&f.relay, &datagram, NOW);
    if datagram.len() > MAX_REQUEST_LEN {
        assert!(
            matches!(result, Err(JoinError::TooLarge { .. })),
            "{result:?}"
        );
        return;
    }
    if offset.unsigned_abs() > MAX_CLOCK_SKEW_SECS {
        assert_eq!(
            result.unwrap_err(),
            JoinError::Stale {
                skew: offset.unsigned_abs()
            }
        );
        return;
    }
    let opened = match result {
        Ok(opened) => opened,
        Err(e) => panic!("a request made by JoinInitiator::new does not open: {e}"),
    };
    assert!(opened.request == req, "the request changed on the way");
    assert_eq!(opened.node_public, f.node_public);
    assert_eq!(opened.ephemeral_public, initiator.ephemeral_public());
    let reply = opened.seal_response(
        &JoinResponse::Rejected {
            reason: "roundtrip".into(),
        },
        &mut rand_core::OsRng,
    );
    assert_eq!(
        initiator.open_response(&reply),
        Ok(JoinResponse::Rejected {
            reason: "roundtrip".into()
        })
    );
    // The fixture's attempt cannot open an answer to another attempt.
    assert_eq!(
        f.initiator.open_response(&reply),
        Err(JoinError::WrongAttempt)
    );
}

/// The cheap checks in front: the relay's gate on any datagram, and the node's `open_reply`.
/// The gate never panics and never answers with more than it got; a request the fixture's
/// node made passes `mac1`, and its cookie round trip proves the address.
fn check_gate(f: &Fixture, data: &[u8]) {
    use join::cookie::{Gate, Verdict};
    let mut rng = rand_core::OsRng;
    let mut gate = Gate::new(f.relay_public, NOW, &mut rng);
    let from: std::net::SocketAddr = "10.0.0.1:4000".parse().unwrap();
    for need_cookie in [false, true] {
        if let Verdict::NeedCookie(reply) = gate.check(from, data, NOW, need_cookie, &mut rng) {
            assert!(reply.len() < data.len(), "a cookie reply amplifies");
        }
    }
    let _ = f.initiator.open_reply(data);
    if data.first().is_some_and(|b| b & 0x1f == 1) {
        let req = request("0123456789abcdef", None, Some("fuzz"), NOW);
        let (initiator, d) =
            JoinInitiator::new(&f.node, f.relay_public, &req, &mut rand_core::OsRng).unwrap();
        let Verdict::NeedCookie(reply) = gate.check(from, &d, NOW, true, &mut rng) else {
            panic!("no cookie for a fresh request under load");
        };
        let Ok(join::Reply::Cookie(c)) = initiator.open_reply(&reply) else {
            panic!("the node does not take the relay's cookie");
        };
        let again = initiator.with_cookie(&d, &c);
        assert_eq!(
            gate.check(from, &again, NOW, true, &mut rng),
            Verdict::Pass { proven: true }
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    check_open_request(f, data);
    check_open_response(f, data);
    check_gate(f, data);
    let text = String::from_utf8_lossy(data);
    let mtu = u16::from_le_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    check_response_roundtrip(f, &text, mtu);
    if data.first().is_some_and(|b| b & 0x1f == 0) {
        check_request_roundtrip(f, data, &text);
    }
});
