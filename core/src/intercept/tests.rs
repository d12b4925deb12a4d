use super::*;

fn new(service: &str, node: &str, header: Option<&str>) -> NewIntercept {
    NewIntercept {
        service: service.into(),
        node: node.into(),
        tag: None,
        header: header.map(|h| HeaderMatch::parse(h).unwrap()),
    }
}

fn target(node: &str, last: u8) -> Target {
    Target {
        node: node.into(),
        addr: SocketAddrV4::new([100, 64, 4, last].into(), 8080),
    }
}

#[test]
fn header_specs_parse_and_bad_ones_are_refused() {
    let h = HeaderMatch::parse("X-Dev=alice").unwrap();
    assert_eq!((h.name.as_str(), h.value.as_str()), ("x-dev", "alice"));
    assert_eq!(h.to_string(), "x-dev=alice");
    // curl's way, spaces around the value, '=' inside the value.
    assert_eq!(HeaderMatch::parse("x-dev: bob").unwrap().value, "bob");
    assert_eq!(
        HeaderMatch::parse("baggage=user=a b").unwrap().value,
        "user=a b"
    );
    for (spec, want) in [
        ("x-dev", "NotNameValue"),
        ("=a", "BadName"),
        ("x dev=a", "BadName"),
        (":authority=a", "BadName"),
        ("Content-Length=1", "BadName"),
        ("connection=close", "BadName"),
        ("proxy-authorization=x", "BadName"),
        ("x-dev=", "BadValue"),
        ("x-dev=a\u{7f}", "BadValue"),
        ("x-dev=é", "BadValue"),
    ] {
        let e = HeaderMatch::parse(spec).unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "{spec}: {e:?}");
        assert!(!e.to_string().contains('\n'), "one sentence: {e}");
    }
    assert!(HeaderMatch::parse(&format!("x={}", "v".repeat(257))).is_err());
    assert!(HeaderMatch::parse(&format!("{}=v", "n".repeat(65))).is_err());
    // What came over the wire is checked the same way.
    let forged = HeaderMatch {
        name: "x dev".into(),
        value: "a".into(),
    };
    assert!(forged.checked().is_err());
}

#[test]
fn matching_is_exact_per_field_and_case_insensitive_in_the_name() {
    let h = HeaderMatch::parse("x-dev=alice").unwrap();
    let m = |fields: &[(&str, &str)]| h.matches(fields.iter().copied());
    assert!(m(&[("X-Dev", "alice")]));
    assert!(m(&[("accept", "*/*"), ("x-dev", " alice ")]));
    assert!(m(&[("x-dev", "bob, alice")]), "a joined list");
    assert!(
        m(&[("x-dev", "bob"), ("x-dev", "alice")]),
        "repeated fields"
    );
    assert!(!m(&[("x-dev", "Alice")]), "values are exact");
    assert!(!m(&[("x-dev", "alice2")]));
    assert!(!m(&[("x-devs", "alice")]));
    assert!(!m(&[]));
}

#[test]
fn one_headerless_intercept_per_service_and_distinct_headers() {
    let mut t = InterceptTable::default();
    t.add(new("orders", "alice", None), 10).unwrap();
    // Another node without a header: refused, naming the holder.
    let e = t.add(new("orders", "bob", None), 11).unwrap_err();
    assert_eq!(
        e,
        InterceptError::Taken {
            service: "orders".into(),
            holder: "alice".into()
        }
    );
    assert!(e.to_string().contains("node alice"), "{e}");
    // With a header it may, and another service is free.
    t.add(new("orders", "bob", Some("x-dev=bob")), 12).unwrap();
    t.add(new("billing", "bob", None), 12).unwrap();
    // The same header and value as another node: refused; another value is fine.
    let e = t
        .add(new("orders", "carol", Some("X-Dev=bob")), 13)
        .unwrap_err();
    assert!(
        matches!(e, InterceptError::SameHeader { ref holder, .. } if holder == "bob"),
        "{e}"
    );
    t.add(new("orders", "carol", Some("x-dev=carol")), 13)
        .unwrap();
    assert_eq!(t.of_service("orders").count(), 3);
}

#[test]
fn a_node_holds_one_intercept_per_service_and_repeats_change_nothing() {
    let mut t = InterceptTable::default();
    let first = t
        .add(new("orders", "alice", Some("x-dev=a")), 10)
        .unwrap()
        .clone();
    // A retried request: the same intercept, same start.
    let again = t
        .add(new("orders", "alice", Some("x-dev=a")), 20)
        .unwrap()
        .clone();
    assert_eq!(first, again);
    // Another header replaces it (and goes to the back of the order).
    t.add(new("orders", "bob", Some("x-dev=b")), 21).unwrap();
    let moved = t.add(new("orders", "alice", None), 22).unwrap().clone();
    assert_eq!((moved.header, moved.since), (None, 22));
    assert_eq!(t.list().len(), 2);
    assert!(moved.seq > first.seq);
}

#[test]
fn only_the_owner_ends_an_intercept_and_leaving_ends_all_of_a_node() {
    let mut t = InterceptTable::default();
    t.add(new("orders", "alice", None), 1).unwrap();
    t.add(new("billing", "alice", Some("x-dev=a")), 1).unwrap();
    t.add(new("orders", "bob", Some("x-dev=b")), 1).unwrap();
    // bob cannot end alice's.
    assert_eq!(t.remove("bob", "billing"), None);
    assert_eq!(t.list().len(), 3);
    assert!(t.remove("bob", "orders").is_some());
    assert_eq!(t.remove_node("alice").len(), 2);
    assert!(t.list().is_empty());
}

#[test]
fn limits_hold() {
    let mut t = InterceptTable::default();
    for n in 0..MAX_PER_SERVICE {
        t.add(
            new("orders", &format!("n{n}"), Some(&format!("x-dev=v{n}"))),
            1,
        )
        .unwrap();
    }
    let e = t
        .add(new("orders", "late", Some("x-dev=late")), 1)
        .unwrap_err();
    assert!(matches!(e, InterceptError::Full(_)), "{e}");
    // A node that holds one may still replace it.
    t.add(new("orders", "n0", Some("x-dev=other")), 2).unwrap();
}

#[test]
fn restore_keeps_good_entries_and_their_order() {
    let mut t = InterceptTable::default();
    t.add(new("orders", "alice", Some("x-dev=a")), 1).unwrap();
    t.add(new("orders", "bob", None), 2).unwrap();
    let mut saved = t.list().to_vec();
    saved.reverse();
    saved.push(Intercept {
        service: "Bad Name".into(),
        node: "x".into(),
        tag: None,
        header: None,
        since: 0,
        seq: 9,
    });
    let back = InterceptTable::restore(saved);
    assert_eq!(back.list(), t.list());
    // New intercepts come after the restored ones.
    let mut back = back;
    let c = back
        .add(new("orders", "carol", Some("x-dev=c")), 3)
        .unwrap();
    assert!(c.seq >= 2);
}

#[test]
fn routing_precedence_header_first_then_headerless_then_remote() {
    let mut t = InterceptTable::default();
    t.add(new("orders", "bob", Some("x-dev=bob")), 1).unwrap();
    t.add(new("orders", "alice", None), 2).unwrap();
    t.add(new("orders", "carol", Some("x-team=red")), 3)
        .unwrap();
    t.add(new("billing", "dave", None), 3).unwrap();
    let addr = |i: &Intercept| match i.node.as_str() {
        "bob" => Some(target("bob", 2).addr),
        "alice" => Some(target("alice", 66).addr),
        "carol" => Some(target("carol", 130).addr),
        _ => None,
    };
    let plan = FrontPlan::build(&t, "orders", addr);
    assert!(plan.needs_http());
    let route =
        |fields: &[(&str, &str)]| plan.route(fields.iter().copied()).map(|t| t.node.clone());
    assert_eq!(route(&[("x-dev", "bob")]).as_deref(), Some("bob"));
    assert_eq!(route(&[("x-team", "red")]).as_deref(), Some("carol"));
    // Both headers: the older intercept wins.
    assert_eq!(
        route(&[("x-team", "red"), ("x-dev", "bob")]).as_deref(),
        Some("bob")
    );
    assert_eq!(route(&[("x-dev", "nobody")]).as_deref(), Some("alice"));
    // Without the header-less one, the rest goes to the remote address.
    t.remove("alice", "orders");
    let plan = FrontPlan::build(&t, "orders", addr);
    assert_eq!(plan.route([("x-dev", "nobody")].into_iter()), None);
    // An intercept whose instance is gone takes nothing.
    t.remove("bob", "orders");
    let plan = FrontPlan::build(&t, "orders", |_| None);
    assert_eq!(plan, FrontPlan::default());
    assert!(!plan.needs_http());
    // billing: every connection to dave, no need to look at requests... but dave has no address
    // here, so it stays remote.
    assert_eq!(FrontPlan::build(&t, "billing", addr).default, None);
}
