//! The node's DNS server (`dns::answer`) on any bytes, over UDP and over TCP, with a fixed
//! context: twelve instances of `orders` (local, remote, on peers, tagged), a remote `users`, a
//! UDP service `metrics`, a tagged-only `billing`, and five nodes, in `ovl.internal`.
//! Also `dns::on_demand_candidate` on the same bytes, and the `AnswerCache`: it never panics,
//! and a hit for the query it just remembered is exactly the reply computed for it. And the
//! bytes as an upstream's reply: `upstream::StaleCache` (a stale copy parses and carries the
//! query's id), `servfail`/`refused` (replies like any other), `explain::summarize`.
//!
//! Properties: never panics; queries under 12 bytes are dropped; a reply is a DNS response that
//! parses, carries the query's id and opcode and at most the query's question, and fits: 512
//! bytes over UDP without EDNS, the EDNS size (at most `EDNS_PAYLOAD`) with it, 65535 over TCP.
//! Only a query that parses is forwarded. UDP and TCP agree: the same outcome kind, the UDP
//! reply is never longer, and a TCP reply of at most 512 bytes is exactly the UDP reply (the
//! transport only changes the size limit). An on-demand candidate is a valid label of a name
//! that is answered here, not forwarded.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use overlay_core::names::dns::{
    answer, explain, on_demand_candidate, refused, servfail, upstream, AnswerCache, DnsContext,
    DnsOutcome, EDNS_PAYLOAD,
};
use overlay_core::names::registry::{valid_label, Protocol, ServiceInstance};

struct World {
    instances: Vec<ServiceInstance>,
    nodes: Vec<(String, Ipv4Addr)>,
}

fn inst(
    name: &str,
    tag: Option<&str>,
    node: Option<&str>,
    addr: [u8; 4],
    protocol: Protocol,
) -> ServiceInstance {
    ServiceInstance {
        name: name.into(),
        tag: tag.map(Into::into),
        node: node.map(Into::into),
        address: Ipv4Addr::from(addr),
        port: 8080,
        protocol,
        callback_url: None,
        target: node.is_none().then(|| format!("{name}.svc:8080")),
        registered: 0,
    }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let tcp = Protocol::Tcp;
        let mut instances = vec![
            inst("orders", None, Some("nodea"), [100, 64, 4, 2], tcp),
            inst("orders", None, None, [100, 64, 0, 2], tcp),
            inst("orders", None, Some("nodeb"), [100, 64, 4, 66], tcp),
            inst("orders", Some("v2"), Some("nodeb"), [100, 64, 4, 67], tcp),
            inst("users", None, None, [100, 64, 0, 3], tcp),
            inst(
                "metrics",
                None,
                Some("nodea"),
                [100, 64, 4, 3],
                Protocol::Udp,
            ),
            inst(
                "billing",
                Some("canary"),
                Some("nodec"),
                [100, 64, 4, 130],
                tcp,
            ),
        ];
        // Enough SRV records that a UDP answer without EDNS must be truncated.
        for (i, node) in ["nodec", "noded", "nodee"].iter().enumerate() {
            for (j, tag) in [None, Some("v3"), Some("blue")].iter().enumerate() {
                let i = i as u8;
                let j = j as u8;
                instances.push(inst(
                    "orders",
                    *tag,
                    Some(node),
                    [100, 64, 4, 128 + 64 * (i / 2) + 10 * (i % 2) + j],
                    tcp,
                ));
            }
        }
        instances.truncate(16);
        let nodes = vec![
            ("nodea".into(), Ipv4Addr::new(100, 64, 4, 1)),
            ("nodeb".into(), Ipv4Addr::new(100, 64, 4, 65)),
            ("nodec".into(), Ipv4Addr::new(100, 64, 4, 129)),
            ("noded".into(), Ipv4Addr::new(100, 64, 4, 193)),
            ("nodee".into(), Ipv4Addr::new(100, 64, 5, 1)),
        ];
        World { instances, nodes }
    })
}

fn check_reply(query: &[u8], request: Option<&Message>, reply: &[u8], tcp: bool) {
    let m = match Message::from_vec(reply) {
        Ok(m) => m,
        Err(e) => panic!("the reply does not parse: {e}"),
    };
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(&reply[..2], &query[..2], "the reply has another id");
    let limit = match (tcp, request) {
        (true, _) => usize::from(u16::MAX),
        (false, Some(r)) if r.edns.is_none() => 512,
        (false, _) => usize::from(EDNS_PAYLOAD),
    };
    assert!(
        reply.len() <= limit,
        "{} bytes over {} (limit {limit})",
        reply.len(),
        if tcp { "TCP" } else { "UDP" }
    );
    // The opcode is echoed (it is in the query's header, which always parses here).
    assert_eq!(
        reply[2] & 0x78,
        query[2] & 0x78,
        "the reply has another opcode"
    );
    assert!(
        m.queries.len() <= 1,
        "{} questions in a reply",
        m.queries.len()
    );
    if let (Some(q), Some(r)) = (m.queries.first(), request) {
        assert_eq!(
            Some(q),
            r.queries.first(),
            "the reply answers another question"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let ctx = DnsContext {
        instances: &w.instances,
        nodes: &w.nodes,
        local_node: "nodea",
        domain: "ovl.internal",
        server_addr: Ipv4Addr::new(100, 100, 100, 100),
        ttl: 5,
        serial: 42,
        network: overlay_core::net::prefix::Ipv4Prefix::new(Ipv4Addr::new(100, 64, 0, 0), 10).ok(),
    };
    let request = Message::from_vec(data).ok();
    let udp = answer(data, &ctx, false);
    let tcp = answer(data, &ctx, true);
    if data.len() < 12 {
        assert_eq!(udp, DnsOutcome::Drop);
        assert_eq!(tcp, DnsOutcome::Drop);
    }
    match (&udp, &tcp) {
        (DnsOutcome::Reply(u), DnsOutcome::Reply(t)) => {
            check_reply(data, request.as_ref(), u, false);
            check_reply(data, request.as_ref(), t, true);
            assert!(
                u.len() <= t.len(),
                "the UDP reply ({}) is longer than the TCP one ({})",
                u.len(),
                t.len()
            );
            if t.len() <= 512 {
                assert_eq!(
                    u, t,
                    "a TCP reply that fits in 512 bytes differs from the UDP reply"
                );
            }
        }
        (DnsOutcome::Forward, DnsOutcome::Forward) => {
            assert!(request.is_some(), "forwarded a query that does not parse");
        }
        (DnsOutcome::Drop, DnsOutcome::Drop) => {}
        (u, t) => panic!("UDP and TCP disagree: {u:?} over UDP, {t:?} over TCP"),
    }
    if let Some(label) = on_demand_candidate(data, &ctx) {
        assert!(valid_label(&label), "candidate {label:?} is not a label");
        assert!(request.is_some());
        assert_ne!(
            tcp,
            DnsOutcome::Forward,
            "a candidate for a name that is forwarded"
        );
    }
    let mut cache = AnswerCache::new(1 << 16);
    cache.remember(data, 1, &udp, false);
    let mut out = vec![0u8; usize::from(u16::MAX)];
    if let Some(n) = cache.reply(data, 1, &mut out) {
        assert_eq!(
            DnsOutcome::Reply(out[..n].to_vec()),
            udp,
            "a cache hit differs from the reply computed for the same query"
        );
    }
    // Upstream replies are outside input too: the bytes as a reply to the query they carry,
    // kept for serving stale, the stale copy, SERVFAIL/REFUSED built for them, and the summary
    // `overlay resolve` prints.
    let _ = upstream::try_next(data);
    let _ = upstream::matches_query(data, data);
    let mut stale = upstream::StaleCache::new(1 << 14);
    stale.remember(data, data, 0);
    if let Some(r) = stale.stale_reply(data, 1) {
        let m = Message::from_vec(&r).expect("a stale reply parses");
        assert_eq!(
            Some(m.metadata.id),
            data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
        );
    }
    for (out, tcp) in [(servfail(data, false), false), (refused(data, true), true)] {
        if let DnsOutcome::Reply(r) = out {
            check_reply(data, request.as_ref(), &r, tcp);
        }
    }
    let _ = explain::summarize(data);
});
