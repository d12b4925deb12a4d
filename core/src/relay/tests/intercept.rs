//! Intercepts on the hub: who may start and stop what, what the fronts route, and every way
//! an intercept ends (stop, leave, a stopped instance, silence, a front gone, a restart keeps it).

use super::*;
use crate::intercept::HeaderMatch;
use crate::relay::catalog::Front;
use crate::transport::control::InterceptStarted;

fn fronts() -> Vec<Front> {
    vec![Front {
        service: "orders".into(),
        listen: "0.0.0.0:18080".parse().unwrap(),
        address: "orders-backend:8080".into(),
    }]
}

/// A hub with the front of `orders` and two nodes, a and b, each running `orders`.
fn setup() -> (Sim, SimNode, SimNode) {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let ib = add(&mut sim, "b", 2);
    let now = sim.now();
    sim.hub.set_fronts(fronts(), now);
    sim.drain();
    let mut a = node(&sim, 1, ia, 1000);
    let mut b = node(&sim, 2, ib, 2000);
    for (n, ip) in [(&mut a, ia), (&mut b, ib)] {
        let r = ask(&mut sim, n, ip, register("orders"));
        assert!(matches!(r, ControlReply::Ok { .. }), "{r:?}");
    }
    (sim, a, b)
}

fn register(name: &str) -> ControlRequest {
    ControlRequest::Register {
        name: name.into(),
        tag: None,
        port: 8080,
        protocol: crate::names::registry::Protocol::Tcp,
    }
}

fn intercept(header: Option<&str>) -> ControlRequest {
    ControlRequest::Intercept {
        service: "orders".into(),
        header: header.map(|h| HeaderMatch::parse(h).unwrap()),
    }
}

/// Sends one control request from `n` and returns the relay's reply to it.
fn ask(sim: &mut Sim, n: &mut SimNode, ip: Ipv4Addr, request: ControlRequest) -> ControlReply {
    let id = 77;
    let (got, _) = n.send(sim, &control_packet(ip, id, request));
    replies(&got)
        .into_iter()
        .find(|r| r.id() == id)
        .unwrap_or_else(|| panic!("no reply"))
}

fn error(r: ControlReply) -> String {
    match r {
        ControlReply::Error { message, .. } => message,
        other => panic!("not an error: {other:?}"),
    }
}

fn plan(sim: &Sim) -> crate::intercept::FrontPlan {
    sim.hub.front_routes()[0].plan.clone()
}

#[test]
fn a_node_intercepts_with_its_own_instance_and_the_front_follows() {
    let (mut sim, mut a, _) = setup();
    let ia = a.ip;
    let changes = sim.front_changes;
    let r = ask(&mut sim, &mut a, ia, intercept(None));
    let ControlReply::Ok { data, .. } = r else {
        panic!("{r:?}")
    };
    let started: InterceptStarted = serde_json::from_value(data).unwrap();
    assert_eq!(started.intercept.node, "a");
    assert_eq!(started.front, "0.0.0.0:18080");
    let inst = sim
        .hub
        .services()
        .into_iter()
        .find(|i| i.node.as_deref() == Some("a"))
        .unwrap();
    assert_eq!(started.target, format!("{}:8080", inst.address));
    assert!(sim.front_changes > changes);
    let p = plan(&sim);
    assert_eq!(p.default.as_ref().map(|t| t.node.as_str()), Some("a"));
    assert!(!p.needs_http());
    // Durable: in the written state, and after a restart.
    assert_eq!(sim.store.state().unwrap().intercepts.len(), 1);
    let mut again = sim.restart(2).unwrap();
    assert_eq!(again.hub.intercepts().len(), 1);
    // The restarted hub has no fronts until its catalog is read.
    let now = again.now();
    again.hub.set_fronts(fronts(), now);
    assert_eq!(again.hub.front_routes()[0].plan, p);
}

#[test]
fn bad_requests_get_one_sentence_each() {
    let (mut sim, mut a, _) = setup();
    let ia = a.ip;
    let e = error(ask(
        &mut sim,
        &mut a,
        ia,
        ControlRequest::Intercept {
            service: "billing".into(),
            header: None,
        },
    ));
    assert!(
        e.contains("no front for a service named 'billing'") && e.contains("orders"),
        "{e}"
    );
    // A service with a front that this node does not run.
    let now = sim.now();
    let mut f = fronts();
    f.push(Front {
        service: "billing".into(),
        listen: "0.0.0.0:18081".parse().unwrap(),
        address: "b:1".into(),
    });
    sim.hub.set_fronts(f, now);
    let e = error(ask(
        &mut sim,
        &mut a,
        ia,
        ControlRequest::Intercept {
            service: "billing".into(),
            header: None,
        },
    ));
    assert!(e.contains("runs no instance of billing"), "{e}");
    // A header that a forged request carries unchecked.
    let e = error(ask(
        &mut sim,
        &mut a,
        ia,
        ControlRequest::Intercept {
            service: "orders".into(),
            header: Some(HeaderMatch {
                name: "Content-Length".into(),
                value: "1".into(),
            }),
        },
    ));
    assert!(e.contains("not a header name"), "{e}");
    assert!(!e.contains('\n'), "one sentence: {e}");
    assert!(sim.hub.intercepts().is_empty());
}

#[test]
fn headers_share_a_service_but_one_takes_it_without_a_header() {
    let (mut sim, mut a, mut b) = setup();
    let (ia, ib) = (a.ip, b.ip);
    assert!(matches!(
        ask(&mut sim, &mut a, ia, intercept(None)),
        ControlReply::Ok { .. }
    ));
    let e = error(ask(&mut sim, &mut b, ib, intercept(None)));
    assert!(e.contains("by node a"), "{e}");
    assert!(matches!(
        ask(&mut sim, &mut b, ib, intercept(Some("x-dev=b"))),
        ControlReply::Ok { .. }
    ));
    let p = plan(&sim);
    assert!(p.needs_http());
    let to = |fields: &[(&str, &str)]| p.route(fields.iter().copied()).map(|t| t.node.clone());
    assert_eq!(to(&[("x-dev", "b")]).as_deref(), Some("b"));
    assert_eq!(to(&[]).as_deref(), Some("a"));
    // The listing shows both, with their owners.
    let r = ask(&mut sim, &mut b, ib, ControlRequest::Intercepts { skip: 0 });
    let ControlReply::Ok { data, .. } = r else {
        panic!("{r:?}")
    };
    let page: control::InterceptPage = serde_json::from_value(data).unwrap();
    let owners: Vec<&str> = page.intercepts.iter().map(|i| i.node.as_str()).collect();
    assert_eq!(owners, ["a", "b"]);
}

#[test]
fn only_the_owner_stops_an_intercept_and_leaving_or_stopping_the_instance_ends_it() {
    let (mut sim, mut a, mut b) = setup();
    let (ia, ib) = (a.ip, b.ip);
    ask(&mut sim, &mut a, ia, intercept(None));
    ask(&mut sim, &mut b, ib, intercept(Some("x-dev=b")));
    let stop = || ControlRequest::InterceptStop {
        service: "orders".into(),
    };
    // b's stop ends b's own, never a's.
    let r = ask(&mut sim, &mut b, ib, stop());
    assert!(
        matches!(r, ControlReply::Ok { ref data, .. } if data["stopped"] == true),
        "{r:?}"
    );
    let r = ask(&mut sim, &mut b, ib, stop());
    assert!(
        matches!(r, ControlReply::Ok { ref data, .. } if data["stopped"] == false),
        "{r:?}"
    );
    assert_eq!(sim.hub.intercepts().len(), 1);
    assert_eq!(sim.hub.intercepts()[0].node, "a");
    // a stops its instance: the intercept ends with it.
    ask(
        &mut sim,
        &mut a,
        ia,
        ControlRequest::Unregister {
            name: "orders".into(),
            tag: None,
        },
    );
    assert!(sim.hub.intercepts().is_empty());
    assert_eq!(plan(&sim), Default::default());
    // b intercepts again and leaves.
    ask(&mut sim, &mut b, ib, intercept(None));
    assert_eq!(sim.hub.intercepts().len(), 1);
    ask(&mut sim, &mut b, ib, ControlRequest::Leave);
    assert!(sim.hub.intercepts().is_empty());
    assert!(sim.store.state().unwrap().intercepts.is_empty());
}

#[test]
fn a_silent_node_loses_its_intercepts_a_talking_one_keeps_them() {
    let (mut sim, mut a, mut b) = setup();
    let (ia, ib) = (a.ip, b.ip);
    ask(&mut sim, &mut a, ia, intercept(None));
    ask(&mut sim, &mut b, ib, intercept(Some("x-dev=b")));
    // a pings every 3 s; b says nothing.
    for n in 1..=4 {
        sim.advance(Duration::from_secs(3));
        a.send(&mut sim, &build_echo_request(ia, RELAY, 1, n, b""));
    }
    let left: Vec<&str> = sim
        .hub
        .intercepts()
        .iter()
        .map(|i| i.node.as_str())
        .collect();
    assert_eq!(left, ["a"]);
    assert!(!plan(&sim).needs_http());
    assert_eq!(sim.store.state().unwrap().intercepts.len(), 1);
    // a goes quiet too.
    sim.advance(INTERCEPT_SILENCE + Duration::from_millis(200));
    assert!(sim.hub.intercepts().is_empty());
}

#[test]
fn a_front_removed_from_the_catalog_ends_its_intercepts() {
    let (mut sim, mut a, _) = setup();
    let ia = a.ip;
    ask(&mut sim, &mut a, ia, intercept(None));
    let now = sim.now();
    sim.hub.set_fronts(Vec::new(), now);
    sim.drain();
    assert!(sim.hub.intercepts().is_empty());
    assert!(sim.hub.front_routes().is_empty());
    assert!(sim.store.state().unwrap().intercepts.is_empty());
}
