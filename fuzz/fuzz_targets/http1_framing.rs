//! Request framing against a reference: the capture must read a request head exactly as
//! httparse (hyper's parser, a strict server's) does, and frame its body as RFC 9112, 6.3 says
//! a strict server does, marking what is ambiguous instead of guessing.
//!
//! - httparse parses a complete head: ours does too, ends it at the same byte, and has the
//!   same method, target, version and fields; its framing equals the reference's, computed
//!   here from httparse's fields.
//! - httparse refuses the head, or needs more bytes: ours has not made a request of it, or
//!   has marked it ambiguous for a folded line (obs-fold: httparse refuses it in a request;
//!   ours keeps the head to show, with the reason, and frames no body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::traffic::http1::{
    request_framing, Framing, HttpError, Kind, Limits, MessageParser, OBS_FOLD,
};

/// RFC 9112, 6.1 and 6.3, as a strict server reads a request; `None`: refused or ambiguous.
fn reference(version: u8, headers: &[httparse::Header<'_>]) -> Option<Framing> {
    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| {
                String::from_utf8_lossy(h.value)
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let te = values("transfer-encoding");
    let cl = values("content-length");
    if !te.is_empty() {
        let chunked = te
            .iter()
            .filter(|c| c.eq_ignore_ascii_case("chunked"))
            .count();
        let ok = cl.is_empty()
            && version == 1
            && chunked == 1
            && te.last().is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
            && te.iter().all(|c| !c.is_empty());
        return ok.then_some(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Some(Framing::None),
        [one] if !one.is_empty() && one.bytes().all(|b| b.is_ascii_digit()) => {
            one.parse().ok().map(Framing::Length)
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    const MAX_HEADERS: usize = 32;
    let limits = Limits {
        body_cap: 1 << 16,
        max_head_bytes: 1 << 16,
        max_headers: MAX_HEADERS,
    };
    let mut ours = MessageParser::new(Kind::Request, limits);
    let result = ours.parse(data);
    // Ours read a head: the request, with the byte its body starts at.
    let our_head = match &result {
        Ok((used, Some(m))) => Some((m.head.clone(), *used)),
        Ok((used, None)) => ours.current_head().cloned().map(|h| (h, *used)),
        Err(HttpError::Ambiguous(_) | HttpError::TransferEncoding | HttpError::ContentLength) => {
            ours.take_partial().map(|m| (m.head, usize::MAX))
        }
        Err(_) => None,
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => {
            let Some((head, used)) = our_head else {
                panic!("httparse read a request head that ours refused: {result:?}");
            };
            if used != usize::MAX {
                assert_eq!(used, n, "the head ends at another byte");
            }
            assert_eq!(head.method.as_deref(), req.method);
            assert_eq!(head.target.as_deref(), req.path);
            let version = req.version.unwrap_or(9);
            assert_eq!(head.version, format!("HTTP/1.{version}"));
            let theirs: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            // Folded lines are left out of ours and refused by httparse, so never here.
            assert_eq!(head.headers.to_vec(), theirs);
            let framing = request_framing(&head).ok();
            assert_eq!(framing, reference(version, req.headers), "framing differs");
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            let folded = matches!(result, Err(HttpError::Ambiguous(why)) if why == OBS_FOLD);
            assert!(
                our_head.is_none() || folded,
                "ours read a request head that httparse did not: {result:?}"
            );
        }
    }
});
