use super::sync::MIN_PULL_BYTES;
use super::*;
use std::collections::BTreeSet;

fn pool() -> Ipv4Prefix {
    "100.64.0.0/22".parse().unwrap()
}

fn prefix_a() -> Ipv4Prefix {
    "100.64.4.0/26".parse().unwrap()
}

fn prefix_b() -> Ipv4Prefix {
    "100.64.4.64/26".parse().unwrap()
}

fn reg() -> Registry {
    Registry::new(RegistryConfig::new(pool()), 7)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn remote(name: &str, port: u16, target: &str) -> RemoteEntry {
    RemoteEntry {
        name: name.into(),
        port,
        target: target.into(),
    }
}

/// A small deterministic generator for randomized tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn sorted(r: &Registry) -> Vec<ServiceInstance> {
    r.instances().cloned().collect()
}

/// Pulls until up to date, checking every reply's size.
fn sync(view: &mut RegistryView, r: &Registry, max_bytes: usize) -> usize {
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "sync does not terminate");
        let delta = r.pull(&view.next_pull(), max_bytes);
        let len = serde_json::to_vec(&delta).unwrap().len();
        assert!(len <= max_bytes, "reply of {len} bytes exceeds {max_bytes}");
        if view.apply(delta).unwrap() == Applied::UpToDate {
            return rounds;
        }
    }
}

#[test]
fn labels() {
    for ok in ["orders", "a", "v2", "a-b", "0", &"x".repeat(63)] {
        assert!(valid_label(ok), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "Orders",
        "a.b",
        "a_b",
        "ä",
        " a",
        &"x".repeat(64),
    ] {
        assert!(!valid_label(bad), "{bad}");
    }
}

#[test]
fn targets_and_urls() {
    assert!(valid_target("orders.staging.svc.cluster.local:8080"));
    assert!(valid_target("10.0.0.5:80"));
    assert!(valid_target("[fd00::1]:443"));
    assert!(!valid_target("orders"));
    assert!(!valid_target("orders:0"));
    assert!(!valid_target(":80"));
    assert!(!valid_target("a b:80"));
    assert!(!valid_target("[nope]:80"));
    assert!(!valid_target(&format!("{}:80", "a".repeat(MAX_TARGET_LEN))));
    assert!(valid_callback_url("http://relay:30001"));
    assert!(!valid_callback_url("http://a b"));
    assert!(!valid_callback_url("http://\"x"));
    assert!(!valid_callback_url(""));
}

#[test]
fn register_allocates_inside_the_prefix_after_the_node() {
    let mut r = reg();
    let a = r
        .register("nodea", prefix_a(), "orders", None, 8080, Protocol::Tcp)
        .unwrap();
    assert_eq!(a.address, ip("100.64.4.2"));
    assert_eq!(a.node.as_deref(), Some("nodea"));
    assert_eq!(a.key(), ServiceKey::node("nodea", "orders", None));
    let b = r
        .register(
            "nodea",
            prefix_a(),
            "orders",
            Some("v2"),
            8080,
            Protocol::Tcp,
        )
        .unwrap();
    assert_eq!(b.address, ip("100.64.4.3"));
    let c = r
        .register("nodeb", prefix_b(), "orders", None, 8080, Protocol::Udp)
        .unwrap();
    assert_eq!(c.address, ip("100.64.4.66"));
    assert_eq!(r.seq(), 3);
    assert_eq!(r.len(), 3);
    assert_eq!(r.node_instances("nodea").count(), 2);
}

#[test]
fn reregistering_is_idempotent_and_port_changes_are_upserts() {
    let mut r = reg();
    let a = r
        .register("nodea", prefix_a(), "api", None, 80, Protocol::Tcp)
        .unwrap();
    let again = r
        .register("nodea", prefix_a(), "api", None, 80, Protocol::Tcp)
        .unwrap();
    assert_eq!(a, again);
    assert_eq!(r.seq(), 1);
    let moved = r
        .register("nodea", prefix_a(), "api", None, 81, Protocol::Tcp)
        .unwrap();
    assert_eq!(moved.address, a.address);
    assert_eq!(moved.port, 81);
    assert_eq!(r.seq(), 2);
}

#[test]
fn same_key_same_address_after_unregister_and_restart() {
    let mut r = reg();
    let first = r
        .register("nodea", prefix_a(), "api", None, 80, Protocol::Tcp)
        .unwrap();
    r.register("nodea", prefix_a(), "db", None, 5432, Protocol::Tcp)
        .unwrap();
    assert!(r.unregister("nodea", "api", None));
    assert!(!r.unregister("nodea", "api", None));
    // A newcomer does not take api's remembered address while free ones remain.
    let other = r
        .register("nodea", prefix_a(), "cache", None, 6379, Protocol::Tcp)
        .unwrap();
    assert_ne!(other.address, first.address);
    let back = r
        .register("nodea", prefix_a(), "api", None, 80, Protocol::Tcp)
        .unwrap();
    assert_eq!(back.address, first.address);

    r.unregister("nodea", "api", None);
    let json = serde_json::to_string(&r.snapshot()).unwrap();
    let state: RegistryState = serde_json::from_str(&json).unwrap();
    let mut r2 = Registry::restore(state, RegistryConfig::new(pool()), 8).unwrap();
    assert_eq!(r2.seq(), r.seq());
    assert_eq!(sorted(&r2), sorted(&r));
    let after = r2
        .register("nodea", prefix_a(), "api", None, 80, Protocol::Tcp)
        .unwrap();
    assert_eq!(after.address, first.address);
}

#[test]
fn full_prefix_reuses_the_oldest_free_allocation() {
    let mut cfg = RegistryConfig::new(pool());
    cfg.max_per_node = 100;
    let mut r = Registry::new(cfg, 1);
    let names: Vec<String> = (0..62).map(|i| format!("s{i}")).collect();
    let mut addrs = BTreeSet::new();
    for n in &names {
        let i = r
            .register("nodea", prefix_a(), n, None, 80, Protocol::Tcp)
            .unwrap();
        assert!(prefix_a().contains(i.address));
        assert!(i.address != ip("100.64.4.0") && i.address != ip("100.64.4.1"));
        addrs.insert(i.address);
    }
    assert_eq!(addrs.len(), 62);
    let err = r
        .register("nodea", prefix_a(), "extra", None, 80, Protocol::Tcp)
        .unwrap_err();
    assert!(matches!(err, RegistryError::PrefixFull { .. }));
    assert!(err.to_string().contains("100.64.4.0/26"));

    let s5 = r
        .get(&ServiceKey::node("nodea", "s5", None))
        .unwrap()
        .address;
    let s9 = r
        .get(&ServiceKey::node("nodea", "s9", None))
        .unwrap()
        .address;
    r.unregister("nodea", "s9", None);
    r.unregister("nodea", "s5", None);
    let x = r
        .register("nodea", prefix_a(), "x", None, 80, Protocol::Tcp)
        .unwrap();
    assert_eq!(x.address, s9, "the longest-unused allocation goes first");
    assert_eq!(r.allocation(&ServiceKey::node("nodea", "s9", None)), None);
    let y = r
        .register("nodea", prefix_a(), "y", None, 80, Protocol::Tcp)
        .unwrap();
    assert_eq!(y.address, s5);
    assert!(r
        .register("nodea", prefix_a(), "s9", None, 80, Protocol::Tcp)
        .is_err());
}

#[test]
fn limits() {
    let mut r = reg();
    for i in 0..MAX_PER_NODE {
        r.register(
            "nodea",
            prefix_a(),
            &format!("s{i}"),
            None,
            80,
            Protocol::Tcp,
        )
        .unwrap();
    }
    let err = r
        .register("nodea", prefix_a(), "one-more", None, 80, Protocol::Tcp)
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::NodeLimit {
            node: "nodea".into(),
            max: MAX_PER_NODE
        }
    );
    // Re-registering an existing one is still fine.
    r.register("nodea", prefix_a(), "s0", None, 80, Protocol::Tcp)
        .unwrap();

    let mut cfg = RegistryConfig::new(pool());
    cfg.max_total = 2;
    let mut r = Registry::new(cfg, 1);
    r.register("nodea", prefix_a(), "a", None, 80, Protocol::Tcp)
        .unwrap();
    r.set_remote(vec![remote("b", 80, "b:80")]);
    assert_eq!(
        r.register("nodeb", prefix_b(), "c", None, 80, Protocol::Tcp),
        Err(RegistryError::GlobalLimit(2))
    );
    let up = r.set_remote(vec![remote("b", 80, "b:80"), remote("d", 80, "d:80")]);
    assert_eq!(up.rejected, vec![RegistryError::GlobalLimit(2)]);
}

#[test]
fn invalid_registrations() {
    let mut r = reg();
    let p = prefix_a();
    assert!(matches!(
        r.register("Node", p, "a", None, 1, Protocol::Tcp),
        Err(RegistryError::InvalidNode(_))
    ));
    assert!(matches!(
        r.register("n", p, "a_b", None, 1, Protocol::Tcp),
        Err(RegistryError::InvalidName(_))
    ));
    assert!(matches!(
        r.register("n", p, "a", Some("-"), 1, Protocol::Tcp),
        Err(RegistryError::InvalidTag(_))
    ));
    assert!(matches!(
        r.register("n", p, "a", None, 0, Protocol::Tcp),
        Err(RegistryError::InvalidPort(_))
    ));
    let tiny: Ipv4Prefix = "100.64.8.0/31".parse().unwrap();
    assert_eq!(
        r.register("n", tiny, "a", None, 1, Protocol::Tcp),
        Err(RegistryError::PrefixTooSmall(tiny))
    );
    assert_eq!(r.seq(), 0);
    let msg = RegistryError::InvalidName("A".into()).to_string();
    assert!(msg.contains("'A' is not a valid service name"), "{msg}");
}

#[test]
fn remote_catalog_diffs_and_keeps_addresses() {
    let mut r = reg();
    let up = r.set_remote(vec![
        remote("orders", 8080, "orders.staging:8080"),
        remote("users", 80, "users.staging:80"),
    ]);
    assert_eq!(up.changes, 2);
    assert!(up.rejected.is_empty());
    let orders = r.get(&ServiceKey::remote("orders")).unwrap().clone();
    assert_eq!(orders.address, ip("100.64.0.2"));
    assert_eq!(orders.target.as_deref(), Some("orders.staging:8080"));
    assert!(orders.is_remote());

    let seq = r.seq();
    let same = r.set_remote(vec![
        remote("users", 80, "users.staging:80"),
        remote("orders", 8080, "orders.staging:8080"),
    ]);
    assert_eq!(same.changes, 0);
    assert_eq!(r.seq(), seq);

    let up = r.set_remote(vec![remote("orders", 9090, "orders.prod:9090")]);
    assert_eq!(up.changes, 2, "orders changed, users removed");
    let o2 = r.get(&ServiceKey::remote("orders")).unwrap();
    assert_eq!((o2.address, o2.port), (orders.address, 9090));
    assert!(r.get(&ServiceKey::remote("users")).is_none());

    let state = r.snapshot();
    let mut r2 = Registry::restore(state, RegistryConfig::new(pool()), 9).unwrap();
    r2.set_remote(vec![
        remote("orders", 9090, "orders.prod:9090"),
        remote("users", 80, "users.staging:80"),
    ]);
    assert_eq!(
        r2.get(&ServiceKey::remote("users")).unwrap().address,
        ip("100.64.0.3"),
        "users gets its old address back after a restart"
    );
}

#[test]
fn remote_pool_skips_reserved_and_rejects_bad_entries() {
    let mut cfg = RegistryConfig::new(pool());
    cfg.reserved.push(ip("100.64.0.2"));
    let mut r = Registry::new(cfg, 1);
    let up = r.set_remote(vec![
        remote("a", 80, "a:80"),
        remote("a", 81, "a:81"),
        remote("Bad", 80, "b:80"),
        remote("c", 80, "no-port"),
        remote("d", 0, "d:80"),
    ]);
    assert_eq!(up.changes, 1);
    assert_eq!(up.rejected.len(), 4);
    assert_eq!(up.rejected[0], RegistryError::DuplicateRemote("a".into()));
    assert_eq!(
        r.get(&ServiceKey::remote("a")).unwrap().address,
        ip("100.64.0.3")
    );

    let small: Ipv4Prefix = "100.64.0.0/30".parse().unwrap();
    let mut r = Registry::new(RegistryConfig::new(small), 1);
    let up = r.set_remote(vec![remote("a", 80, "a:80"), remote("b", 80, "b:80")]);
    assert_eq!(up.changes, 2);
    let up = r.set_remote(vec![
        remote("a", 80, "a:80"),
        remote("b", 80, "b:80"),
        remote("c", 80, "c:80"),
    ]);
    assert_eq!(up.rejected, vec![RegistryError::RemotePoolFull(small)]);
}

#[test]
fn on_demand_services_expire_and_yield_to_the_catalog() {
    let mut r = reg();
    let a = r
        .add_on_demand("search", "search:9200", 9200, 100, 60)
        .unwrap();
    assert_eq!(r.next_expiry(), Some(160));
    let seq = r.seq();
    let again = r
        .add_on_demand("search", "search:9200", 9200, 150, 60)
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(r.seq(), seq, "a refresh is not a change");
    assert_eq!(r.next_expiry(), Some(210));
    assert_eq!(r.expire(209), 0);

    // The catalog does not remove on-demand names it does not list...
    r.set_remote(vec![remote("orders", 80, "orders:80")]);
    assert!(r.get(&ServiceKey::remote("search")).is_some());
    // ...and persists them with their expiry.
    let r2 = Registry::restore(r.snapshot(), RegistryConfig::new(pool()), 2).unwrap();
    assert_eq!(r2.next_expiry(), Some(210));

    assert_eq!(r.expire(210), 1);
    assert!(r.get(&ServiceKey::remote("search")).is_none());
    assert_eq!(r.next_expiry(), None);

    // A catalog entry wins over an on-demand lookup of the same name.
    let o = r.add_on_demand("orders", "elsewhere:1", 1, 0, 10).unwrap();
    assert_eq!(o.target.as_deref(), Some("orders:80"));
    assert_eq!(r.next_expiry(), None);
    // An on-demand name that the catalog then lists becomes a catalog entry.
    let s = r
        .add_on_demand("search", "search:9200", 9200, 300, 60)
        .unwrap();
    assert_eq!(s.address, a.address, "stable across expiry");
    r.set_remote(vec![
        remote("orders", 80, "orders:80"),
        remote("search", 9200, "search:9200"),
    ]);
    assert_eq!(r.expire(10_000), 0);
    assert!(matches!(
        r.add_on_demand("x", "bad", 1, 0, 1),
        Err(RegistryError::InvalidTarget(..))
    ));
    // An on-demand name without a port of its own: port 0, target `host:0`; only on demand.
    let h = r.add_on_demand("cache", "cache:0", 0, 0, 10).unwrap();
    assert_eq!((h.port, h.known_port()), (0, None));
    assert!(matches!(
        r.add_on_demand("y", "bad host:0", 0, 0, 1),
        Err(RegistryError::InvalidTarget(..))
    ));
    assert!(matches!(
        r.set_remote(vec![remote("z", 0, "z:0")]).rejected.first(),
        Some(RegistryError::InvalidPort(_))
    ));
}

#[test]
fn remove_node_and_callback_urls() {
    let mut r = reg();
    r.register("nodea", prefix_a(), "a", None, 80, Protocol::Tcp)
        .unwrap();
    let b = r
        .register("nodea", prefix_a(), "b", Some("v2"), 80, Protocol::Tcp)
        .unwrap();
    r.register("nodeb", prefix_b(), "a", None, 80, Protocol::Tcp)
        .unwrap();
    let key = b.key();
    r.set_callback_url(&key, Some("http://relay:30001".into()))
        .unwrap();
    let seq = r.seq();
    r.set_callback_url(&key, Some("http://relay:30001".into()))
        .unwrap();
    assert_eq!(r.seq(), seq);
    assert_eq!(
        r.get(&key).unwrap().callback_url.as_deref(),
        Some("http://relay:30001")
    );
    // Re-registering keeps the callback URL.
    r.register("nodea", prefix_a(), "b", Some("v2"), 81, Protocol::Tcp)
        .unwrap();
    assert!(r.get(&key).unwrap().callback_url.is_some());
    assert!(matches!(
        r.set_callback_url(&key, Some("a b".into())),
        Err(RegistryError::InvalidCallbackUrl(_))
    ));
    let ghost = ServiceKey::node("nodec", "x", None);
    assert_eq!(
        r.set_callback_url(&ghost, None),
        Err(RegistryError::NotRegistered(ghost.clone()))
    );

    assert_eq!(r.remove_node("nodea"), 2);
    assert_eq!(r.len(), 1);
    assert_eq!(r.allocation(&key), Some(b.address));
    let back = r
        .register("nodea", prefix_a(), "b", Some("v2"), 80, Protocol::Tcp)
        .unwrap();
    assert_eq!(back.address, b.address);
}

#[test]
fn restore_rejects_contradictions() {
    let mut r = reg();
    r.register("nodea", prefix_a(), "a", None, 80, Protocol::Tcp)
        .unwrap();
    let mut s = r.snapshot();
    s.allocations.push(AllocationRecord {
        key: ServiceKey::node("nodea", "b", None),
        address: ip("100.64.4.2"),
        last_used: 0,
    });
    let err = Registry::restore(s, RegistryConfig::new(pool()), 1).unwrap_err();
    assert!(matches!(err, RegistryError::CorruptState(_)));

    let mut s = r.snapshot();
    s.instances[0].address = ip("100.64.4.9");
    assert!(Registry::restore(s, RegistryConfig::new(pool()), 1).is_err());

    let mut s = r.snapshot();
    s.instances.push(s.instances[0].clone());
    assert!(Registry::restore(s, RegistryConfig::new(pool()), 1).is_err());

    // Instances without allocations (older files) get one.
    let mut s = r.snapshot();
    s.allocations.clear();
    let r2 = Registry::restore(s, RegistryConfig::new(pool()), 1).unwrap();
    assert_eq!(
        r2.allocation(&ServiceKey::node("nodea", "a", None)),
        Some(ip("100.64.4.2"))
    );
    let empty: RegistryState = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, RegistryState::default());
}

#[test]
fn instance_json_field_names() {
    let i = ServiceInstance {
        name: "api".into(),
        tag: None,
        node: Some("nodea".into()),
        address: ip("100.64.4.2"),
        port: 8080,
        protocol: Protocol::Udp,
        callback_url: Some("http://relay:30001".into()),
        target: None,
        registered: 7,
    };
    let v = serde_json::to_value(&i).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "api", "tag": null, "node": "nodea", "address": "100.64.4.2",
            "port": 8080, "protocol": "udp", "callback_url": "http://relay:30001", "target": null,
            "registered": 7})
    );
    assert_eq!(serde_json::from_value::<ServiceInstance>(v).unwrap(), i);
    assert_eq!(i.hostname("ovl.internal."), "api.nodea.ovl.internal");
    let key = ServiceKey::node("nodea", "api", Some("v2"));
    assert_eq!(key.to_string(), "v2.api on node nodea");
    assert_eq!(ServiceKey::remote("x").to_string(), "x (remote)");
    let c = serde_json::to_string(&Change::Remove(ServiceKey::remote("x"))).unwrap();
    assert_eq!(c, r#"{"op":"remove","node":null,"name":"x","tag":null}"#);
}

#[test]
fn up_to_date_view_gets_an_empty_delta() {
    let mut r = reg();
    r.register("nodea", prefix_a(), "a", None, 80, Protocol::Tcp)
        .unwrap();
    let mut v = RegistryView::new();
    sync(&mut v, &r, MIN_PULL_BYTES);
    assert_eq!(v.position(), r.position());
    assert_eq!(
        r.changes_since(r.position(), MIN_PULL_BYTES),
        Delta::Changes {
            epoch: 7,
            from: 1,
            to: 1,
            changes: vec![],
            more: false
        }
    );
    r.unregister("nodea", "a", None);
    let d = r.pull(&v.next_pull(), MIN_PULL_BYTES);
    assert!(
        matches!(&d, Delta::Changes { from: 1, to: 2, changes, more: false, .. } if changes.len() == 1)
    );
    assert_eq!(v.apply(d).unwrap(), Applied::UpToDate);
    assert!(v.instances().is_empty());
    assert_eq!(v.seq(), 2);
}

#[test]
fn deltas_page_within_the_byte_budget() {
    let mut r = reg();
    let mut v = RegistryView::new();
    sync(&mut v, &r, MIN_PULL_BYTES);
    for i in 0..40 {
        r.register(
            "nodea",
            prefix_a(),
            &format!("svc-{i}"),
            None,
            80,
            Protocol::Tcp,
        )
        .unwrap();
    }
    let rounds = sync(&mut v, &r, MIN_PULL_BYTES);
    assert!(rounds > 1, "40 changes do not fit one datagram");
    assert_eq!(v.instances(), sorted(&r).as_slice());
    assert_eq!(v.position(), r.position());
}

#[test]
fn old_positions_and_other_epochs_get_snapshots() {
    let mut cfg = RegistryConfig::new(pool());
    cfg.log_capacity = 8;
    let mut r = Registry::new(cfg.clone(), 1);
    let mut v = RegistryView::new();
    sync(&mut v, &r, MIN_PULL_BYTES);
    for i in 0..30 {
        r.register(
            "nodea",
            prefix_a(),
            &format!("s{i}"),
            None,
            80,
            Protocol::Tcp,
        )
        .unwrap();
    }
    assert_eq!(r.log_base(), 22);
    assert!(matches!(
        r.pull(&v.next_pull(), MIN_PULL_BYTES),
        Delta::Snapshot { after: None, .. }
    ));
    sync(&mut v, &r, MIN_PULL_BYTES);
    assert_eq!(v.instances(), sorted(&r).as_slice());

    // The relay restarts (new epoch, empty log): the view gets a snapshot again.
    let mut r2 = Registry::restore(r.snapshot(), cfg, 2).unwrap();
    r2.unregister("nodea", "s3", None);
    assert!(matches!(
        r2.pull(&v.next_pull(), MIN_PULL_BYTES),
        Delta::Snapshot { epoch: 2, .. }
    ));
    sync(&mut v, &r2, MIN_PULL_BYTES);
    assert_eq!(v.instances(), sorted(&r2).as_slice());
    assert_eq!(v.position().epoch, 2);

    // A view ahead of a relay that lost state gets a snapshot too.
    let r3 = Registry::new(RegistryConfig::new(pool()), 2);
    assert!(matches!(
        r3.pull(&v.next_pull(), MIN_PULL_BYTES),
        Delta::Snapshot { .. }
    ));
    sync(&mut v, &r3, MIN_PULL_BYTES);
    assert!(v.instances().is_empty());
}

#[test]
fn snapshot_paging_converges_while_the_registry_changes() {
    let mut cfg = RegistryConfig::new(pool());
    cfg.max_per_node = 62;
    let mut r = Registry::new(cfg, 3);
    for i in 0..30 {
        r.register(
            "nodea",
            prefix_a(),
            &format!("s{i:02}"),
            None,
            80,
            Protocol::Tcp,
        )
        .unwrap();
    }
    let mut v = RegistryView::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let first = r.pull(&Pull::Snapshot { after: None }, MIN_PULL_BYTES);
    assert!(matches!(first, Delta::Snapshot { more: true, .. }));
    let mut next = v.apply(first).unwrap();
    let mut rounds = 0;
    while next == Applied::PullAgain {
        rounds += 1;
        assert!(rounds < 1000);
        // Churn between pulls: removals before and after the cursor, additions, changes.
        let i = rng.below(40);
        match rng.below(3) {
            0 => {
                r.unregister("nodea", &format!("s{i:02}"), None);
            }
            1 => {
                let _ = r.register(
                    "nodea",
                    prefix_a(),
                    &format!("s{i:02}"),
                    None,
                    80,
                    Protocol::Tcp,
                );
            }
            _ => {
                let _ = r.register(
                    "nodea",
                    prefix_a(),
                    &format!("s{i:02}"),
                    None,
                    81,
                    Protocol::Tcp,
                );
            }
        }
        next = v.apply(r.pull(&v.next_pull(), MIN_PULL_BYTES)).unwrap();
    }
    assert_eq!(v.instances(), sorted(&r).as_slice());
    assert_eq!(v.position(), r.position());
}

#[test]
fn the_view_refuses_deltas_that_do_not_fit() {
    let mut r = reg();
    r.register("nodea", prefix_a(), "a", None, 80, Protocol::Tcp)
        .unwrap();
    let mut v = RegistryView::new();
    sync(&mut v, &r, MIN_PULL_BYTES);
    let old = r.changes_since(Position { epoch: 7, seq: 0 }, MIN_PULL_BYTES);
    r.register("nodea", prefix_a(), "b", None, 80, Protocol::Tcp)
        .unwrap();
    r.register("nodea", prefix_a(), "c", None, 80, Protocol::Tcp)
        .unwrap();
    let before = v.clone();

    // Entirely old: stale.
    assert_eq!(v.apply(old.clone()), Err(ViewError::Stale));
    // Starting after the view: a gap.
    let gap = r.changes_since(Position { epoch: 7, seq: 2 }, MIN_PULL_BYTES);
    assert_eq!(v.apply(gap), Err(ViewError::Gap { seq: 1, from: 2 }));
    // Another epoch.
    let other = Delta::Changes {
        epoch: 99,
        from: 1,
        to: 1,
        changes: vec![],
        more: false,
    };
    assert!(matches!(v.apply(other), Err(ViewError::OtherEpoch { .. })));
    // Counts that do not match.
    let bad = Delta::Changes {
        epoch: 7,
        from: 1,
        to: 5,
        changes: vec![],
        more: false,
    };
    assert!(matches!(v.apply(bad), Err(ViewError::Malformed(_))));
    // A continuation page without a snapshot in progress.
    let page = r.snapshot_page(Some(&ServiceKey::node("nodea", "a", None)), MIN_PULL_BYTES);
    assert_eq!(v.apply(page), Err(ViewError::Stale));
    // Pages out of order.
    let Delta::Snapshot {
        epoch,
        seq,
        mut instances,
        ..
    } = r.snapshot_page(None, MIN_PULL_BYTES)
    else {
        panic!("not a snapshot");
    };
    instances.reverse();
    let shuffled = Delta::Snapshot {
        epoch,
        seq,
        after: None,
        instances,
        more: false,
    };
    assert!(matches!(v.apply(shuffled), Err(ViewError::Malformed(_))));
    assert_eq!(v.instances(), before.instances());
    assert_eq!(v.position(), before.position());

    // Overlapping changes (a retried pull) apply only what is new; duplicates are stale.
    let overlap = r.changes_since(Position { epoch: 7, seq: 0 }, MIN_PULL_BYTES);
    assert_eq!(v.apply(overlap.clone()).unwrap(), Applied::UpToDate);
    assert_eq!(v.instances(), sorted(&r).as_slice());
    assert_eq!(v.apply(overlap), Err(ViewError::Stale));
    assert_eq!(v.apply(old), Err(ViewError::Stale));
    assert_eq!(v.instances(), sorted(&r).as_slice());
}

#[test]
fn worst_case_items_fit_one_datagram() {
    let long = |c: char| c.to_string().repeat(63);
    let inst = ServiceInstance {
        name: long('n'),
        tag: Some(long('t')),
        node: Some(long('o')),
        address: ip("255.255.255.255"),
        port: 65535,
        protocol: Protocol::Tcp,
        callback_url: Some("u".repeat(MAX_CALLBACK_URL_LEN)),
        target: Some("h".repeat(MAX_TARGET_LEN)),
        registered: u64::MAX,
    };
    let snap = Delta::Snapshot {
        epoch: u64::MAX,
        seq: u64::MAX,
        after: Some(inst.key()),
        instances: vec![inst.clone()],
        more: false,
    };
    let changes = Delta::Changes {
        epoch: u64::MAX,
        from: u64::MAX,
        to: u64::MAX,
        changes: vec![Change::Upsert(inst)],
        more: false,
    };
    for d in [snap, changes] {
        let len = serde_json::to_vec(&d).unwrap().len();
        assert!(len <= MIN_PULL_BYTES, "{len} bytes");
    }
}

#[test]
fn randomized_sync_with_lost_replies_converges() {
    let mut cfg = RegistryConfig::new(pool());
    cfg.log_capacity = 16;
    let mut r = Registry::new(cfg, 11);
    let mut rng = Rng(12345);
    let mut views = [RegistryView::new(), RegistryView::new()];
    let mut snapshots = 0;
    for step in 0..3000u64 {
        let i = rng.below(20);
        let node = if rng.below(2) == 0 { "nodea" } else { "nodeb" };
        let prefix = if node == "nodea" {
            prefix_a()
        } else {
            prefix_b()
        };
        match rng.below(8) {
            0 | 1 => {
                let _ = r.register(
                    node,
                    prefix,
                    &format!("s{i}"),
                    None,
                    80 + rng.below(2) as u16,
                    Protocol::Tcp,
                );
            }
            2 => {
                r.unregister(node, &format!("s{i}"), None);
            }
            3 => {
                let _ = r.add_on_demand(&format!("r{i}"), "h:1", 1, step, rng.below(50));
            }
            4 => {
                r.expire(step);
            }
            5 => {
                let n = rng.below(5);
                r.set_remote(
                    (0..n)
                        .map(|k| remote(&format!("c{k}"), 80, "c:80"))
                        .collect(),
                );
            }
            _ => {}
        }
        for (n, v) in views.iter_mut().enumerate() {
            // The second view pulls rarely, so it falls behind the log.
            if n == 1 && step % 9 != 0 {
                continue;
            }
            // A pull whose reply is sometimes lost or delivered twice.
            let d = r.pull(&v.next_pull(), 400 + rng.below(800) as usize);
            snapshots += usize::from(matches!(d, Delta::Snapshot { .. }));
            match rng.below(4) {
                0 => {}
                1 => {
                    let _ = v.apply(d.clone());
                    let _ = v.apply(d);
                }
                _ => {
                    let _ = v.apply(d);
                }
            }
        }
    }
    assert!(snapshots > 10, "only {snapshots} snapshot pages");
    for v in views.iter_mut() {
        sync(v, &r, MIN_PULL_BYTES);
        assert_eq!(v.instances(), sorted(&r).as_slice());
    }
}

#[test]
fn services_cannot_take_node_names() {
    let mut r = reg();
    r.add_node("lap1");
    r.add_node("lap2");
    let taken = |e: RegistryError| match e {
        RegistryError::NameTaken { name, owner } => (name, owner),
        other => panic!("not NameTaken: {other:?}"),
    };
    let e = r
        .register("lap1", prefix_a(), "lap2", None, 80, Protocol::Tcp)
        .unwrap_err();
    assert!(e.to_string().contains("belongs to node lap2"), "{e}");
    assert_eq!(taken(e), ("lap2".into(), NameOwner::Node("lap2".into())));
    // Any tag, and the node's own name too.
    for (name, tag) in [("lap2", Some("v2")), ("lap1", None)] {
        let e = r
            .register("lap1", prefix_a(), name, tag, 80, Protocol::Tcp)
            .unwrap_err();
        assert!(matches!(e, RegistryError::NameTaken { .. }), "{e}");
    }
    // The DNS server's own label.
    let e = r
        .register("lap1", prefix_a(), "ns", None, 80, Protocol::Tcp)
        .unwrap_err();
    assert_eq!(taken(e).1, NameOwner::Reserved);
    // Catalog entries and on-demand names that name a node are not applied.
    let up = r.set_remote(vec![
        remote("lap2", 80, "lap2.staging:80"),
        remote("orders", 80, "orders.staging:80"),
    ]);
    assert_eq!(up.changes, 1);
    assert!(matches!(up.rejected[..], [RegistryError::NameTaken { .. }]));
    assert!(r
        .add_on_demand("lap1", "lap1.staging:80", 80, 0, 60)
        .is_err());
    assert_eq!(r.len(), 1);
    // Nothing changed for the refusals.
    assert_eq!(r.seq(), 1);
    // Once the node left, its name is free.
    r.forget_node("lap2");
    r.register("lap1", prefix_a(), "lap2", None, 80, Protocol::Tcp)
        .unwrap();
}

#[test]
fn name_owner_covers_every_kind_of_name() {
    let mut r = reg();
    r.add_node("lap1");
    assert_eq!(r.name_owner("lap1"), Some(NameOwner::Node("lap1".into())));
    assert_eq!(r.name_owner("ns"), Some(NameOwner::Reserved));
    assert_eq!(r.name_owner("orders"), None);
    r.register("lap1", prefix_a(), "orders", Some("v2"), 80, Protocol::Tcp)
        .unwrap();
    r.set_remote(vec![remote("db", 5432, "db.staging:5432")]);
    let owner = r.name_owner("orders").unwrap();
    assert_eq!(
        owner,
        NameOwner::Service(ServiceKey::node("lap1", "orders", Some("v2")))
    );
    assert_eq!(owner.to_string(), "the service v2.orders on node lap1");
    assert_eq!(
        r.name_owner("db").unwrap().to_string(),
        "the service db (remote)"
    );
    r.unregister("lap1", "orders", Some("v2"));
    assert_eq!(
        r.name_owner("orders"),
        None,
        "only live services hold names"
    );
}

#[test]
fn instances_keep_their_registration_rank() {
    let mut r = reg();
    let z = r
        .register("zeta", prefix_b(), "orders", None, 80, Protocol::Tcp)
        .unwrap();
    let a = r
        .register("alpha", prefix_a(), "orders", None, 80, Protocol::Tcp)
        .unwrap();
    assert_eq!((z.registered, a.registered), (1, 2));
    // Registering again, even with another port, keeps the rank.
    let z2 = r
        .register("zeta", prefix_b(), "orders", None, 81, Protocol::Tcp)
        .unwrap();
    assert_eq!(z2.registered, 1);
    r.set_callback_url(&z.key(), Some("http://relay:30000".into()))
        .unwrap();
    assert_eq!(r.get(&z.key()).unwrap().registered, 1);
    // It survives a relay restart and reaches every node's view.
    let r2 = Registry::restore(r.snapshot(), RegistryConfig::new(pool()), 8).unwrap();
    assert_eq!(r2.get(&z.key()).unwrap().registered, 1);
    let mut v = RegistryView::new();
    sync(&mut v, &r2, MIN_PULL_BYTES);
    let ranks: Vec<(Option<String>, u64)> = v
        .instances()
        .iter()
        .map(|i| (i.node.clone(), i.registered))
        .collect();
    assert_eq!(
        ranks,
        vec![(Some("alpha".into()), 2), (Some("zeta".into()), 1)]
    );
    // Leaving and coming back is a new registration: it goes to the back.
    let mut r3 = r2;
    r3.unregister("zeta", "orders", None);
    let z3 = r3
        .register("zeta", prefix_b(), "orders", None, 80, Protocol::Tcp)
        .unwrap();
    assert!(z3.registered > a.registered, "{z3:?}");
    // An instance saved before the field existed ranks first (0).
    let old: ServiceInstance = serde_json::from_str(
        r#"{"name":"x","tag":null,"node":"n","address":"100.64.4.9","port":1}"#,
    )
    .unwrap();
    assert_eq!(old.registered, 0);
}

#[test]
fn services_saved_under_node_names_are_evicted() {
    let mut r = reg();
    r.register("lap1", prefix_a(), "lap2", None, 80, Protocol::Tcp)
        .unwrap();
    r.register("lap1", prefix_a(), "api", None, 80, Protocol::Tcp)
        .unwrap();
    r.add_node("lap2");
    assert_eq!(
        r.evict_taken_names(),
        vec![ServiceKey::node("lap1", "lap2", None)]
    );
    let left: Vec<&str> = r.instances().map(|i| i.name.as_str()).collect();
    assert_eq!(left, vec!["api"]);
    assert!(r.evict_taken_names().is_empty());
}
