//! The in-tunnel control channel (`control`), both directions:
//!
//! * `parse_request(data)`: what the relay does with the payload of every UDP datagram a node
//!   sends to the control port;
//! * `parse_reply(data)`: what a node does with the relay's answers and notices;
//! * the same bytes as an inner packet: `control::owner` (the node's data path: the daemon's
//!   control channel or the applications') and `control::reply_payload` (what the daemon's
//!   control client takes from the data path).
//!
//! Properties: never panics; payloads over `MAX_CONTROL_LEN` are refused as `TooLarge` before
//! any parsing; what parses encodes (`control::encode`) to bytes that
//! parse back to the same message (`parse_request(&encode(&m)) == m`, the same for replies), and
//! encoding is stable. The only exception allowed: an encoding longer than `MAX_CONTROL_LEN`
//! (defaults written out, `1e1` becoming `10.0`) is refused as `TooLarge`. As a packet: the
//! owner is the daemon exactly for UDP to or from the relay's address; a payload the daemon
//! takes comes from a whole datagram the daemon owns; and any payload the relay sends as a
//! control datagram reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::net::wire::{self, IpProtocol};
use overlay_core::transport::control::{
    encode, owner, parse_reply, parse_request, reply_payload, ControlError, ControlReply, Owner,
    CONTROL_PORT, MAX_CONTROL_LEN,
};
use std::net::Ipv4Addr;

const NODE: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
use serde_json::Value;

fn check_error(data: &[u8], e: &ControlError) {
    if data.len() > MAX_CONTROL_LEN {
        assert_eq!(e, &ControlError::TooLarge(data.len()));
    } else {
        assert!(
            !matches!(e, ControlError::TooLarge(_)),
            "{e:?} for {} bytes",
            data.len()
        );
    }
    // Not checked: that the message is one line. serde_json quotes the offending input in its
    // messages, decoded (`unknown variant `a\nb``), so a message can hold any text of the
    // request, newlines included (see docs/security.md on the length of such replies).
    assert!(!e.to_string().is_empty());
}

/// Equality of JSON values where floats may differ in the last bit: serde_json's default float
/// parser is not exact (the `float_roundtrip` feature is off), which is serde_json's business,
/// not the control channel's.
fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| value_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

fn reply_eq(a: &ControlReply, b: &ControlReply) -> bool {
    match (a, b) {
        (ControlReply::Ok { id: i, data: x }, ControlReply::Ok { id: j, data: y }) => {
            i == j && value_eq(x, y)
        }
        _ => a == b,
    }
}

fn check_request(data: &[u8]) {
    let m = match parse_request(data) {
        Ok(m) => m,
        Err(e) => return check_error(data, &e),
    };
    let bytes = encode(&m);
    assert!(!bytes.is_empty(), "a parsed request does not encode: {m:?}");
    match parse_request(&bytes) {
        Ok(again) => {
            assert_eq!(
                again,
                m,
                "request roundtrip: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(encode(&again), bytes, "request encoding is not stable");
        }
        Err(ControlError::TooLarge(n)) => {
            assert!(n > MAX_CONTROL_LEN && n == bytes.len());
        }
        Err(e) => panic!(
            "an encoded request does not parse: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

fn check_reply(data: &[u8]) {
    let r = match parse_reply(data) {
        Ok(r) => r,
        Err(e) => return check_error(data, &e),
    };
    let bytes = encode(&r);
    assert!(!bytes.is_empty(), "a parsed reply does not encode: {r:?}");
    match parse_reply(&bytes) {
        Ok(again) => {
            assert!(
                reply_eq(&again, &r),
                "reply roundtrip: {r:?} became {again:?}\n{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(again.id(), r.id());
            let twice = encode(&again);
            // Stable once floats have settled (see value_eq).
            assert!(
                parse_reply(&twice).is_ok_and(|x| reply_eq(&x, &r)),
                "reply encoding is not stable"
            );
        }
        Err(ControlError::TooLarge(n)) => {
            assert!(n > MAX_CONTROL_LEN && n == bytes.len());
        }
        Err(e) => panic!(
            "an encoded reply does not parse: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

fn check_packet(data: &[u8]) {
    if let Ok(p) = wire::ipv4(data) {
        let daemons =
            p.next_header() == IpProtocol::Udp && (p.src_addr() == RELAY || p.dst_addr() == RELAY);
        assert_eq!(owner(&p, RELAY) == Owner::Daemon, daemons);
    }
    if let Some(payload) = reply_payload(data, NODE, RELAY) {
        let p = wire::ipv4(data).expect("a reply's packet is valid");
        assert!(!wire::is_fragment(&p));
        assert_eq!(owner(&p, RELAY), Owner::Daemon);
        assert!(payload.len() + 28 <= data.len());
    }
    if data.len() <= MAX_CONTROL_LEN {
        let p = wire::build_udp(RELAY, CONTROL_PORT, NODE, CONTROL_PORT, data);
        assert_eq!(reply_payload(&p, NODE, RELAY), Some(data));
    }
}

fuzz_target!(|data: &[u8]| {
    check_request(data);
    check_reply(data);
    check_packet(data);
});
