use super::conn::ConnMeta;
use super::pcap;
use super::record::*;
use super::tcp::{FlowKey, TcpEnd, TcpEvent, TcpLimits, Tracker};
use super::*;
use crate::net::wire::{build_tcp, tcp_flags as flags};
use crate::traffic::http1::{Limits, Protocol, Side};
use std::net::{Ipv4Addr, SocketAddrV4};

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 65);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 9);

fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, fl: u8, data: &[u8]) -> Vec<u8> {
    let (src, dst) = (
        SocketAddrV4::new(src.0, src.1),
        SocketAddrV4::new(dst.0, dst.1),
    );
    build_tcp(src, dst, seq, fl, data)
}

fn key() -> FlowKey {
    FlowKey {
        client: SocketAddrV4::new(A, 40000),
        server: SocketAddrV4::new(B, 80),
    }
}

fn stream(t: &mut Tracker) -> (Vec<u8>, Vec<u8>, Vec<TcpEvent>) {
    let (mut c, mut s, mut other) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(e) = t.poll() {
        match e {
            TcpEvent::Data(_, Side::Client, d) => c.extend(d),
            TcpEvent::Data(_, Side::Server, d) => s.extend(d),
            e => other.push(e),
        }
    }
    (c, s, other)
}

/// A connection whose sequence numbers wrap, with reordering and a retransmission.
#[test]
fn reassembles_out_of_order_retransmitted_and_wrapping() {
    let mut t = Tracker::new(TcpLimits::default());
    let (c, s) = ((A, 40000), (B, 80));
    let cs = u32::MAX - 3; // client data starts at MAX-2 and wraps
    let ss = 1000u32;
    t.packet(&tcp(c, s, cs, flags::SYN, b""), 0, |_| true);
    t.packet(&tcp(s, c, ss, flags::SYN | flags::ACK, b""), 0, |_| true);
    let d0 = cs.wrapping_add(1);
    t.packet(
        &tcp(c, s, d0.wrapping_add(5), flags::ACK, b"world"),
        1,
        |_| true,
    );
    t.packet(&tcp(c, s, d0, flags::ACK, b"hello"), 1, |_| true);
    t.packet(&tcp(c, s, d0, flags::ACK, b"hello"), 1, |_| true); // retransmission
    t.packet(
        &tcp(c, s, d0.wrapping_add(3), flags::ACK, b"loworld!"),
        1,
        |_| true,
    ); // overlap
    t.packet(&tcp(s, c, ss + 1, flags::ACK, b"ok"), 2, |_| true);
    t.packet(
        &tcp(c, s, d0.wrapping_add(11), flags::FIN | flags::ACK, b""),
        3,
        |_| true,
    );
    t.packet(&tcp(s, c, ss + 3, flags::FIN | flags::ACK, b""), 3, |_| {
        true
    });
    let (cd, sd, ev) = stream(&mut t);
    assert_eq!(cd, b"helloworld!");
    assert_eq!(sd, b"ok");
    assert_eq!(
        ev,
        vec![TcpEvent::Open(key()), TcpEvent::Close(key(), TcpEnd::Fin)]
    );
    assert!(t.is_empty());
}

#[test]
fn a_lost_segment_becomes_a_gap() {
    let limits = TcpLimits {
        max_out_of_order: 10,
        ..TcpLimits::default()
    };
    let mut t = Tracker::new(limits);
    let (c, s) = ((A, 40000), (B, 80));
    t.packet(&tcp(c, s, 0, flags::SYN, b""), 0, |_| true);
    // Bytes 1..=4 never come.
    t.packet(&tcp(c, s, 5, flags::ACK, b"abcdef"), 1, |_| true);
    t.packet(&tcp(c, s, 11, flags::ACK, b"ghijkl"), 1, |_| true);
    let (cd, _, ev) = stream(&mut t);
    assert_eq!(cd, b"abcdefghijkl");
    assert!(
        ev.contains(&TcpEvent::Gap(key(), Side::Client, 4)),
        "{ev:?}"
    );
    // A hole still open when both sides finished is a gap too.
    let mut t = Tracker::new(TcpLimits::default());
    t.packet(&tcp(c, s, 0, flags::SYN, b""), 0, |_| true);
    t.packet(&tcp(s, c, 0, flags::SYN | flags::ACK, b""), 0, |_| true);
    t.packet(&tcp(c, s, 4, flags::ACK | flags::FIN, b"xy"), 1, |_| true);
    t.packet(&tcp(s, c, 1, flags::ACK | flags::FIN, b""), 1, |_| true);
    let (cd, _, ev) = stream(&mut t);
    assert_eq!(cd, b"xy");
    assert!(
        ev.contains(&TcpEvent::Gap(key(), Side::Client, 3)),
        "{ev:?}"
    );
    assert!(ev.contains(&TcpEvent::Close(key(), TcpEnd::Fin)));
}

#[test]
fn follows_only_chosen_syns_and_bounds_connections() {
    let limits = TcpLimits {
        max_connections: 2,
        idle_ms: 100,
        ..TcpLimits::default()
    };
    let mut t = Tracker::new(limits);
    // Mid-stream packets and refused SYNs are ignored.
    t.packet(&tcp((A, 1), (B, 80), 5, flags::ACK, b"x"), 0, |_| true);
    t.packet(&tcp((A, 2), (B, 80), 5, flags::SYN, b""), 0, |_| false);
    assert!(t.is_empty());
    for port in 10..13 {
        t.packet(
            &tcp((A, port), (B, 80), 5, flags::SYN, b""),
            u64::from(port),
            |_| true,
        );
    }
    assert_eq!(t.len(), 2);
    let (_, _, ev) = stream(&mut t);
    assert!(ev
        .iter()
        .any(|e| matches!(e, TcpEvent::Close(k, TcpEnd::Evicted) if k.client.port() == 10)));
    t.expire(1000);
    assert!(t.is_empty());
    // RST closes at once; garbage never panics.
    t.packet(&tcp((A, 20), (B, 80), 5, flags::SYN, b""), 0, |_| true);
    t.packet(&tcp((B, 80), (A, 20), 5, flags::RST, b""), 0, |_| true);
    assert!(t.is_empty());
    for n in 0..64 {
        t.packet(&vec![0x45; n], 0, |_| true);
    }
}

fn meta() -> ConnMeta {
    ConnMeta {
        service: "api".into(),
        direction: Direction::In,
        client: "100.64.0.9:5000".into(),
        client_name: Some("web".into()),
        server: "100.64.4.66:8080".into(),
        server_name: Some("api".into()),
    }
}

fn capture(client: &[u8], server: &[u8]) -> Vec<Record> {
    let mut c = ConnectionCapture::new(meta(), Limits::default(), 10);
    c.data(Side::Client, client, 11);
    c.data(Side::Server, server, 15);
    c.close(FlowEnd::Closed, 20);
    std::iter::from_fn(|| c.poll()).collect()
}

#[test]
fn connection_capture_gives_exchanges_and_flows() {
    let r = capture(
        b"GET /x HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(r.len(), 1);
    let s = r[0].summary();
    assert_eq!(
        (
            s.method.as_deref(),
            s.path.as_deref(),
            s.status,
            s.duration_ms
        ),
        (Some("GET"), Some("/x"), Some(200), Some(4))
    );
    assert_eq!(s.line(), "#0 in  api        web -> api GET /x 200 2B 4ms");
    // Not HTTP: one flow record.
    let r = capture(b"\x00\x01binary", b"\x02");
    assert_eq!(r.len(), 1);
    match &r[0].kind {
        RecordKind::Flow {
            protocol,
            bytes_up,
            bytes_down,
            ..
        } => assert_eq!((*protocol, *bytes_up, *bytes_down), (Protocol::Tcp, 8, 1)),
        k => panic!("{k:?}"),
    }
    // A gap ends HTTP parsing and marks the flow incomplete.
    let mut c = ConnectionCapture::new(meta(), Limits::default(), 0);
    c.data(Side::Client, b"GET / HTTP/1.1\r\n\r\n", 1);
    c.gap(Side::Server, 100, 2);
    c.data(Side::Server, b"HTTP/1.1 200 OK\r\n\r\n", 3);
    c.close(FlowEnd::Closed, 4);
    let r: Vec<_> = std::iter::from_fn(|| c.poll()).collect();
    assert_eq!(r.len(), 2);
    assert!(matches!(
        r[1].kind,
        RecordKind::Flow {
            incomplete: true,
            bytes_down: 119,
            ..
        }
    ));
}

/// Exchanges stay with the decoder until polled; records that must follow them (a flow at
/// the close) still come after them, however often the caller polls.
#[test]
fn records_come_in_order_whenever_they_are_polled() {
    let client: &[u8] = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let server: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbnot http";
    let kinds = |r: &[Record]| -> Vec<String> {
        r.iter()
            .map(|r| match r.request() {
                Some(q) => q.head.path().to_string(),
                None => "flow".to_string(),
            })
            .collect()
    };
    let at_end = capture(client, server);
    assert_eq!(kinds(&at_end), ["/a", "/b", "flow"]);
    let mut c = ConnectionCapture::new(meta(), Limits::default(), 10);
    let mut each = Vec::new();
    c.data(Side::Client, client, 11);
    assert!(!c.has_record(), "requests wait for their responses");
    each.extend(std::iter::from_fn(|| c.poll()));
    let (first, rest) = server.split_at(40);
    c.data(Side::Server, first, 12);
    assert!(c.has_record(), "the first response ended in this read");
    c.data(Side::Server, rest, 13);
    c.close(FlowEnd::Closed, 20);
    each.extend(std::iter::from_fn(|| c.poll()));
    assert!(!c.has_record());
    assert_eq!(kinds(&each), kinds(&at_end));
}

#[test]
fn test_emit_record_json() {
    let r = capture(
        b"POST /o HTTP/1.1\r\nContent-Length: 3\r\n\r\n\xff\x00\x01",
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    );
    let v = serde_json::to_value(&r[0]).expect("json");
    assert_eq!(v["type"], "exchange");
    assert_eq!(v["direction"], "in");
    assert_eq!(v["request"]["method"], "POST");
    assert_eq!(v["request"]["body"]["base64"], "/wAB");
    assert_eq!(v["response"]["status"], 201);
    assert_eq!(v["response"]["body"]["text"], "{}");
    assert_eq!(v["response"]["headers"][0][0], "Content-Length");
}

#[test]
fn ring_evicts_oldest_within_its_cap() {
    let one = capture(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n").remove(0);
    let size = one.size();
    let mut ring = Ring::new(size * 3);
    for _ in 0..10 {
        ring.push(one.clone());
    }
    assert_eq!(ring.len(), 3);
    assert!(ring.used() <= size * 3);
    assert!(ring.get(7).is_none() && ring.get(8).is_some());
    let ids: Vec<u64> = ring
        .list(&Filter::default(), 0, 100)
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![8, 9, 10]);
    let ids: Vec<u64> = ring
        .list(&Filter::default(), 8, 1)
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![10]);
    ring.clear();
    assert!(ring.is_empty());
    assert_eq!(ring.push(one), 11);
}

#[test]
fn ring_bodies_live_in_its_log_within_its_cap() {
    let exchange = |i: u32| {
        let body = format!("{i:0>1000}");
        let req = format!("POST /{i} HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{body}");
        capture(
            req.as_bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
        .remove(0)
    };
    let cap = 256 << 10;
    let mut ring = Ring::new(cap);
    for i in 0..2000 {
        ring.push(exchange(i));
        assert!(ring.used() <= cap, "record {i}: {} bytes held", ring.used());
    }
    assert!(
        ring.evicted() > 0 && ring.len() > 100,
        "{} held",
        ring.len()
    );
    // Every record still held has its own bodies, though they share blocks.
    for r in ring.list(&Filter::default(), 0, usize::MAX) {
        let n = r.id - 1;
        let req = r.request().expect("an exchange");
        assert_eq!(
            req.body.data,
            format!("{n:0>1000}").as_bytes(),
            "record {}",
            r.id
        );
        let resp = r.response().expect("answered");
        assert_eq!(&resp.body.data[..], b"ok");
    }
    // A clone taken for a reply outlives the record's eviction.
    let kept = ring.get(ring.next_id() - 1).cloned().expect("the newest");
    for i in 2000..4000 {
        ring.push(exchange(i));
    }
    assert!(ring.get(kept.id).is_none());
    assert_eq!(kept.request().map(|m| m.body.data.len()), Some(1000));
    ring.clear();
    assert_eq!(ring.used(), 0);
}

#[test]
fn a_body_viewed_in_a_shared_read_is_copied_once_into_the_ring() {
    // The read as the splice shares it: the response's body whole in it. Whether the ring's
    // log takes the body (64 KiB ring) or not (a ring too small for a log), the stored record
    // holds no view of the read, which goes back to its owner.
    for cap in [64 << 10, 16 << 10] {
        let mut ring = Ring::new(cap);
        let mut c = ConnectionCapture::new(meta(), Limits::default(), 10);
        c.data(Side::Client, b"GET /a HTTP/1.1\r\n\r\n", 11);
        let mut buf = bytes::BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        buf.extend_from_slice(&[b'x'; 1000]);
        let read = buf.split().freeze();
        c.data_in(Side::Server, &read, Some(&read), 12);
        let r = c.poll().expect("an exchange");
        let body = &r.response().expect("answered").body.data;
        assert_eq!(
            body.as_ptr(),
            read[read.len() - 1000..].as_ptr(),
            "a view first"
        );
        let id = ring.push(r);
        let start = read.as_ptr();
        drop(read);
        // No view of the read is left: its memory is the splice's again, for the next read.
        buf.reserve(4096);
        assert_eq!(
            buf.as_ptr(),
            start,
            "ring {cap}: the stored record still holds the read"
        );
        let stored = ring.get(id).and_then(|r| r.response()).expect("stored");
        assert_eq!(&stored.body.data[..], &[b'x'; 1000][..]);
        assert!(ring.used() <= cap);
    }
}

#[test]
fn filters_match_fields() {
    let r = capture(
        b"POST /orders/7?x=1 HTTP/1.1\r\nX-Trace: abc\r\nContent-Length: 4\r\n\r\nBODY",
        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
    )
    .remove(0);
    let yes = [
        "",
        "service=api",
        "direction=in",
        "method=post",
        "status=503",
        "status=5xx",
        "path=%2Forders",
        "text=x-trace",
        "q=body",
        "text=web",
    ];
    for q in yes {
        assert!(Filter::from_query(q).matches(&r), "{q}");
    }
    let no = [
        "service=web",
        "direction=out",
        "method=GET",
        "status=2xx",
        "status=error",
        "path=/users",
        "text=nothing",
    ];
    for q in no {
        assert!(!Filter::from_query(q).matches(&r), "{q}");
    }
    assert_eq!(filter::percent_decode("a%20b+c%zz%"), "a b c%zz%");
}

#[test]
fn test_emit_pcap() {
    let h = pcap::file_header();
    assert_eq!(&h[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    assert_eq!(u32::from_le_bytes([h[20], h[21], h[22], h[23]]), 101);
    let mut out = Vec::new();
    pcap::write_packet(&mut out, 1_500_000, &[0x45, 0, 0, 20]);
    assert_eq!(out.len(), 16 + 4);
    assert_eq!(&out[..8], &[1, 0, 0, 0, 0x20, 0xa1, 0x07, 0]);
    assert_eq!(&out[8..16], &[4, 0, 0, 0, 4, 0, 0, 0]);
}

fn run(chunks: &[(Side, &[u8])]) -> Vec<Record> {
    let mut c = ConnectionCapture::new(meta(), Limits::default(), 0);
    for (i, (side, d)) in chunks.iter().enumerate() {
        c.data(*side, d, i as u64 + 1);
    }
    c.close(FlowEnd::Closed, 100);
    std::iter::from_fn(|| c.poll()).collect()
}

#[test]
fn websocket_messages_after_the_101_are_recorded() {
    let mut client =
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec();
    // The client's first frame comes before the answer: held, then read as WebSocket.
    client.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    let mut server =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec();
    server.extend_from_slice(&[0x81, 0x03, b'y', b'o', b'!']);
    let close = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8];
    let r = run(&[
        (Side::Client, &client),
        (Side::Server, &server),
        (Side::Client, &close),
    ]);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[0].summary().status, Some(101));
    let s = r[1].summary();
    assert_eq!(
        (s.protocol, s.messages, s.path.as_deref()),
        (Some(Protocol::Websocket), Some(3), Some("/chat"))
    );
    let v = serde_json::to_value(&r[1]).unwrap();
    let m = &v["websocket"]["messages"];
    assert_eq!(
        (m[0]["from"].as_str(), m[0]["text"].as_str()),
        (Some("client"), Some("hi"))
    );
    assert_eq!(
        (m[1]["from"].as_str(), m[1]["text"].as_str()),
        (Some("server"), Some("yo!"))
    );
    assert_eq!(v["websocket"]["close"]["code"], 1000);
}

#[test]
fn a_refused_upgrade_stays_http1() {
    let client = b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let server = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let r = run(&[(Side::Client, client), (Side::Server, server)]);
    let paths: Vec<_> = r
        .iter()
        .map(|r| (r.summary().path, r.summary().status))
        .collect();
    assert_eq!(
        paths,
        [
            (Some("/a".into()), Some(200)),
            (Some("/b".into()), Some(204))
        ]
    );
}

#[test]
fn h2c_prior_knowledge_and_upgrade_become_exchanges() {
    use crate::traffic::capture::h2::frame::{emit, flag, kind, PREFACE};
    let mut enc = loona_hpack::Encoder::new();
    let block = enc.encode([
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/h2"),
        (b":scheme", b"http"),
        (b":authority", b"api"),
    ]);
    let mut client = PREFACE.to_vec();
    emit(&mut client, kind::SETTINGS, 0, 0, &[]);
    emit(
        &mut client,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    );
    let mut senc = loona_hpack::Encoder::new();
    let resp = senc.encode([(&b":status"[..], &b"200"[..])]);
    let mut server = Vec::new();
    emit(&mut server, kind::SETTINGS, 0, 0, &[]);
    emit(&mut server, kind::HEADERS, flag::END_HEADERS, 1, &resp);
    emit(&mut server, kind::DATA, flag::END_STREAM, 1, b"two");
    // Prior knowledge, the preface split over two reads.
    let r = run(&[
        (Side::Client, &client[..3]),
        (Side::Client, &client[3..]),
        (Side::Server, &server),
    ]);
    assert_eq!(r.len(), 1, "{r:#?}");
    let s = r[0].summary();
    assert_eq!(
        (s.path.as_deref(), s.status, s.version.as_deref()),
        (Some("/h2"), Some(200), Some("HTTP/2"))
    );
    assert_eq!(s.line(), "#0 in  api        web -> api GET /h2 200 3B 1ms");
    // Upgrade: the 101 is one exchange, stream 1 another, with the answer.
    let up = b"GET /h2 HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let mut answer =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    answer.extend_from_slice(&server);
    let mut preface = PREFACE.to_vec();
    emit(&mut preface, kind::SETTINGS, 0, 0, &[]);
    let r = run(&[
        (Side::Client, up),
        (Side::Server, &answer),
        (Side::Client, &preface),
    ]);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[0].summary().status, Some(101));
    let s = r[1].summary();
    assert_eq!(
        (s.path.as_deref(), s.status, s.response_bytes),
        (Some("/h2"), Some(200), 3)
    );
}

#[test]
fn an_h2_server_that_speaks_first_is_still_http2() {
    use crate::traffic::capture::h2::frame::{emit, flag, kind, PREFACE};
    let mut server = Vec::new();
    emit(&mut server, kind::SETTINGS, 0, 0, &[]);
    let mut client = PREFACE.to_vec();
    emit(&mut client, kind::SETTINGS, 0, 0, &[]);
    let block =
        loona_hpack::Encoder::new().encode([(&b":method"[..], &b"GET"[..]), (b":path", b"/first")]);
    emit(
        &mut client,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    );
    let r = run(&[(Side::Server, &server), (Side::Client, &client)]);
    assert_eq!(r[0].summary().path.as_deref(), Some("/first"), "{r:#?}");
    // A server that speaks first in another protocol stays a TCP flow.
    let r = run(&[
        (Side::Server, b"220 smtp ready\r\n"),
        (Side::Client, b"EHLO x\r\n"),
    ]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].summary().protocol, Some(Protocol::Tcp));
}
