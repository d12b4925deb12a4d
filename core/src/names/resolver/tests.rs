use super::*;

fn inst(name: &str, tag: Option<&str>, node: Option<&str>, addr: &str) -> ServiceInstance {
    ServiceInstance {
        name: name.into(),
        tag: tag.map(Into::into),
        node: node.map(Into::into),
        address: addr.parse().unwrap(),
        port: 8080,
        protocol: Protocol::Tcp,
        callback_url: None,
        target: node.is_none().then(|| format!("{name}.staging:8080")),
        registered: 0,
    }
}

fn nodes() -> Vec<(String, Ipv4Addr)> {
    vec![
        ("me".into(), "100.64.4.1".parse().unwrap()),
        ("alpha".into(), "100.64.4.65".parse().unwrap()),
        ("zeta".into(), "100.64.4.129".parse().unwrap()),
    ]
}

/// `orders` everywhere, `v2.orders` on zeta and here, `billing` only on peers, `pay` only remote.
fn world() -> Vec<ServiceInstance> {
    vec![
        inst("orders", None, Some("zeta"), "100.64.4.130"),
        inst("orders", None, Some("alpha"), "100.64.4.66"),
        inst("orders", None, None, "100.64.0.2"),
        inst("orders", None, Some("me"), "100.64.4.2"),
        inst("orders", Some("v2"), Some("zeta"), "100.64.4.131"),
        inst("orders", Some("v2"), Some("me"), "100.64.4.3"),
        inst("billing", None, Some("zeta"), "100.64.4.132"),
        inst("billing", None, Some("alpha"), "100.64.4.67"),
        inst("pay", None, None, "100.64.0.3"),
        inst("pay", None, Some("alpha"), "100.64.4.68"),
        inst("beta", Some("v3"), Some("alpha"), "100.64.4.69"),
    ]
}

fn one(r: Resolution) -> (Ipv4Addr, Rule) {
    match r {
        Resolution::Found { chosen } => {
            assert_eq!(chosen.len(), 1);
            (chosen[0].0.address, chosen[0].1)
        }
        other => panic!("expected one instance, got {other:?}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn local_instance_wins() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    for q in [
        "orders",
        "orders.",
        "orders.ovl.internal",
        "ORDERS.Ovl.Internal.",
    ] {
        assert_eq!(
            one(r.resolve(q)),
            (ip("100.64.4.2"), Rule::LocalInstance),
            "{q}"
        );
    }
}

#[test]
fn remote_beats_peers() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "elsewhere", "ovl.internal.");
    assert_eq!(
        one(r.resolve("orders.ovl.internal")),
        (ip("100.64.0.2"), Rule::RemoteInstance)
    );
    assert_eq!(
        one(r.resolve("pay.ovl.internal")),
        (ip("100.64.0.3"), Rule::RemoteInstance)
    );
    // On alpha, alpha's own pay is local and wins over remote.
    let r = Resolver::new(&w, &n, "alpha", "ovl.internal");
    assert_eq!(
        one(r.resolve("pay")),
        (ip("100.64.4.68"), Rule::LocalInstance)
    );
}

#[test]
fn peers_in_node_name_order() {
    let (mut w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("billing.ovl.internal")),
        (ip("100.64.4.67"), Rule::PeerInstance)
    );
    w.reverse();
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("billing")),
        (ip("100.64.4.67"), Rule::PeerInstance)
    );
}

#[test]
fn node_qualified_names() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("orders.zeta.ovl.internal")),
        (ip("100.64.4.130"), Rule::NodeQualified)
    );
    assert_eq!(
        one(r.resolve("orders.ME.ovl.internal.")),
        (ip("100.64.4.2"), Rule::NodeQualified)
    );
    assert_eq!(
        one(r.resolve("v2.orders.zeta.ovl.internal")),
        (ip("100.64.4.131"), Rule::NodeQualified)
    );
    assert_eq!(
        r.resolve("orders.nowhere.ovl.internal"),
        Resolution::NxDomain
    );
    assert_eq!(
        r.resolve("v9.orders.zeta.ovl.internal"),
        Resolution::NxDomain
    );
    assert_eq!(r.resolve("a.b.c.d.ovl.internal"), Resolution::NxDomain);
}

#[test]
fn tagged_variants_follow_the_same_precedence() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("v2.orders.ovl.internal")),
        (ip("100.64.4.3"), Rule::Tagged)
    );
    let r = Resolver::new(&w, &n, "alpha", "ovl.internal");
    assert_eq!(r.resolve("v2.orders"), Resolution::NotInDomain);
    assert_eq!(
        one(r.resolve("v2.orders.ovl.internal")),
        (ip("100.64.4.3"), Rule::Tagged),
        "peers registered together: node-name order, me before zeta"
    );
    assert_eq!(r.resolve("v7.orders.ovl.internal"), Resolution::NxDomain);
}

#[test]
fn node_names_and_services_sharing_them() {
    let (mut w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        r.resolve("alpha.ovl.internal"),
        Resolution::Node {
            name: "alpha".into(),
            address: ip("100.64.4.65")
        }
    );
    assert!(matches!(r.resolve("zeta"), Resolution::Node { .. }));
    // The relay refuses such a service; should a view still hold one, the node keeps its name.
    w.push(inst("alpha", None, Some("zeta"), "100.64.4.140"));
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        r.resolve("alpha.ovl.internal"),
        Resolution::Node {
            name: "alpha".into(),
            address: ip("100.64.4.65")
        },
        "a node's name is never shadowed by a service"
    );
    // The node-qualified form still names a service on a node, never a tag of a node's name.
    assert_eq!(
        one(r.resolve("orders.alpha.ovl.internal")),
        (ip("100.64.4.66"), Rule::NodeQualified)
    );
}

fn registered(mut i: ServiceInstance, seq: u64) -> ServiceInstance {
    i.registered = seq;
    i
}

#[test]
fn the_first_registered_peer_stays_preferred() {
    let n = nodes();
    // zeta registered orders first; alpha (which sorts first) came later.
    let w = vec![
        registered(inst("orders", None, Some("zeta"), "100.64.4.130"), 3),
        registered(inst("orders", None, Some("alpha"), "100.64.4.66"), 9),
    ];
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("orders.ovl.internal")),
        (ip("100.64.4.130"), Rule::PeerInstance),
        "a newcomer whose node name sorts first does not take over"
    );
    let Resolution::Srv { chosen, .. } = r.resolve("_orders._tcp.ovl.internal") else {
        panic!("not an SRV name");
    };
    let order: Vec<Ipv4Addr> = chosen.iter().map(|(i, _)| i.address).collect();
    assert_eq!(
        order,
        vec![ip("100.64.4.130"), ip("100.64.4.66")],
        "SRV priorities follow"
    );
    let listed: Vec<Option<String>> = listing(&w, "me", "ovl.internal")
        .into_iter()
        .map(|l| l.node)
        .collect();
    assert_eq!(listed, vec![Some("zeta".into()), Some("alpha".into())]);
    // Once zeta's instance is gone, alpha's is next.
    let r = Resolver::new(&w[1..], &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("orders.ovl.internal")),
        (ip("100.64.4.66"), Rule::PeerInstance)
    );
    // On alpha its own instance is local: preferred there, and that is no takeover elsewhere.
    let r = Resolver::new(&w, &n, "alpha", "ovl.internal");
    assert_eq!(
        one(r.resolve("orders.ovl.internal")),
        (ip("100.64.4.66"), Rule::LocalInstance)
    );
    // Remote still beats every peer, however early.
    let mut w2 = w.clone();
    w2.push(registered(inst("orders", None, None, "100.64.0.2"), 50));
    let r = Resolver::new(&w2, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("orders.ovl.internal")),
        (ip("100.64.0.2"), Rule::RemoteInstance)
    );
    // Tagged variants follow the same order.
    let w3 = vec![
        registered(inst("orders", Some("v2"), Some("zeta"), "100.64.4.131"), 4),
        registered(inst("orders", Some("v2"), Some("alpha"), "100.64.4.67"), 5),
    ];
    let r = Resolver::new(&w3, &n, "me", "ovl.internal");
    assert_eq!(
        one(r.resolve("v2.orders.ovl.internal")),
        (ip("100.64.4.131"), Rule::Tagged)
    );
}

#[test]
fn srv_lists_every_instance_preferred_first() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    let Resolution::Srv {
        name,
        protocol,
        chosen,
    } = r.resolve("_orders._tcp.ovl.internal")
    else {
        panic!("not an SRV name");
    };
    assert_eq!((name.as_str(), protocol), ("orders", Protocol::Tcp));
    let got: Vec<(Ipv4Addr, Rule)> = chosen.iter().map(|(i, r)| (i.address, *r)).collect();
    assert_eq!(
        got,
        vec![
            (ip("100.64.4.2"), Rule::LocalInstance),
            (ip("100.64.0.2"), Rule::RemoteInstance),
            (ip("100.64.4.66"), Rule::PeerInstance),
            (ip("100.64.4.130"), Rule::PeerInstance),
            (ip("100.64.4.3"), Rule::Tagged),
            (ip("100.64.4.131"), Rule::Tagged),
        ]
    );
    assert!(matches!(
        r.resolve("_ORDERS._TCP.ovl.internal."),
        Resolution::Srv { .. }
    ));
    assert_eq!(r.resolve("_orders._udp.ovl.internal"), Resolution::NxDomain);
    assert_eq!(
        r.resolve("_orders._sctp.ovl.internal"),
        Resolution::NxDomain
    );
    assert_eq!(r.resolve("_nope._tcp.ovl.internal"), Resolution::NxDomain);
    assert_eq!(r.resolve("_tcp.ovl.internal"), Resolution::NoRecords);

    let mut w = w;
    w.push(ServiceInstance {
        protocol: Protocol::Udp,
        ..inst("dns", None, Some("alpha"), "100.64.4.70")
    });
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert!(matches!(
        r.resolve("_dns._udp.ovl.internal"),
        Resolution::Srv { protocol: Protocol::Udp, ref chosen, .. } if chosen.len() == 1
    ));
    assert_eq!(r.resolve("_dns._tcp.ovl.internal"), Resolution::NxDomain);
}

#[test]
fn domain_boundaries() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    assert_eq!(r.resolve("ovl.internal"), Resolution::Apex);
    assert_eq!(r.resolve("OVL.INTERNAL."), Resolution::Apex);
    assert_eq!(r.resolve("example.com"), Resolution::NotInDomain);
    assert_eq!(r.resolve("orders.example.com"), Resolution::NotInDomain);
    assert_eq!(r.resolve("ovl.internal.evil.com"), Resolution::NotInDomain);
    assert_eq!(r.resolve("internal"), Resolution::NotInDomain);
    assert_eq!(r.resolve(""), Resolution::NotInDomain);
    assert_eq!(r.resolve("."), Resolution::NotInDomain);
    // A bare name is ours only if we know it; otherwise upstream may (e.g. `localhost`).
    assert_eq!(r.resolve("localhost"), Resolution::NotInDomain);
    assert_eq!(r.resolve("unknown.ovl.internal"), Resolution::NxDomain);
    assert_eq!(r.resolve("a..b.ovl.internal"), Resolution::NxDomain);
    assert_eq!(r.resolve("v2.orders"), Resolution::NotInDomain);
    // Labels with dots inside (from the wire) never match.
    assert_eq!(
        r.resolve_labels(&["v2.orders", "ovl", "internal"]),
        Resolution::NxDomain
    );
}

#[test]
fn names_with_only_children_have_no_records() {
    let (w, n) = (world(), nodes());
    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    // Only v3.beta runs: beta itself exists as a parent.
    assert_eq!(r.resolve("beta.ovl.internal"), Resolution::NoRecords);
    assert_eq!(r.resolve("beta.alpha.ovl.internal"), Resolution::NoRecords);
    assert_eq!(r.resolve("beta"), Resolution::NotInDomain);
}

#[test]
fn where_and_descriptions() {
    let (w, n) = (world(), nodes());
    let local = &w[3];
    assert_eq!(where_(local, "me"), Where::Local);
    assert_eq!(where_(local, "ME"), Where::Local);
    assert_eq!(where_(local, "alpha"), Where::Peer);
    assert_eq!(where_(&w[2], "me"), Where::Remote);
    assert_eq!(Where::Peer.to_string(), "peer");

    let r = Resolver::new(&w, &n, "me", "ovl.internal");
    let d = |q: &str| r.resolve(q).describe(q, "me", "ovl.internal");
    assert_eq!(
        d("orders"),
        "orders runs on this node at 100.64.4.2:8080 (local instance preferred over remote and peers)"
    );
    assert_eq!(
        d("billing"),
        "billing resolves to the instance on node alpha at 100.64.4.67:8080 \
         (no local or remote instance; peers in registration order, the first stays preferred)"
    );
    assert!(
        d("v2.orders.ovl.internal").starts_with("v2.orders resolves to the instance on this node")
    );
    assert!(d("orders.zeta.ovl.internal").contains("picks the node explicitly"));
    assert!(d("zeta.ovl.internal").contains("is node zeta at 100.64.4.129"));
    assert!(d("example.com").contains("outside ovl.internal"));
    assert!(d("nope.ovl.internal").contains("no service or node is named"));
    assert!(d("_orders._tcp.ovl.internal").contains("6 tcp instance(s) of orders"));
    assert!(d("ovl.internal.").contains("zone itself"));
    let r2 = Resolver::new(&w, &n, "zeta", "ovl.internal");
    assert_eq!(
        r2.resolve("pay").describe("pay", "zeta", "ovl.internal"),
        "pay resolves to the instance in the remote environment at 100.64.0.3:8080 \
         (no local instance; remote preferred over peers)"
    );
    for rule in [
        Rule::LocalInstance,
        Rule::RemoteInstance,
        Rule::PeerInstance,
        Rule::NodeQualified,
        Rule::Tagged,
        Rule::NodeAddress,
    ] {
        assert!(!rule.describe().is_empty());
    }
}

#[test]
fn services_listing_json() {
    let mut w = world();
    w[3].callback_url = Some("http://relay:30001".into());
    let list = listing(&w, "me", "ovl.internal");
    assert_eq!(list.len(), w.len());
    let orders: Vec<&ServiceListing> = list.iter().filter(|l| l.name == "orders").collect();
    assert_eq!(orders[0].where_, Where::Local);
    assert_eq!(orders[1].where_, Where::Remote);
    assert_eq!(orders[1].hostname, "orders.ovl.internal");
    assert_eq!(orders[5].hostname, "v2.orders.zeta.ovl.internal");
    let v = serde_json::to_value(orders[0]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "orders", "tag": null, "node": "me", "where": "local",
            "address": "100.64.4.2", "port": 8080, "hostname": "orders.me.ovl.internal",
            "callback_url": "http://relay:30001"})
    );
}
