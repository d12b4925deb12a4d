//! Wire bytes of the local API: each request and reply next to the JSON it must emit and parse
//! from. The `--json` outputs print these replies, so the JSON here is the contract's.

use super::admin::{AdminRequest, PeerAdd, TokenCreate};
use super::daemon::*;
use super::session::{self, SessionRequest};
use super::{Answer, Request};
use crate::names::dns::explain;
use crate::names::resolver::{Resolution, ServiceListing, Where};
use crate::traffic::capture::record::{Direction, Summary, SummaryKind};
use crate::transport::stream::transport::{Mode, Transport};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Debug;

/// `value` emits `wire` and parses back from it.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, wire: Value) {
    assert_eq!(serde_json::to_value(value).unwrap(), wire, "emit");
    assert_eq!(&serde_json::from_value::<T>(wire).unwrap(), value, "parse");
}

#[test]
fn test_requests() {
    round_trip(&Status {}.into_wire(), json!({"cmd": "status"}));
    round_trip(
        &Register {
            name: "api".into(),
            tag: Some("v2".into()),
            port: 8080,
            target: Some(18080),
            hold: true,
        }
        .into_wire(),
        json!({"cmd": "register", "name": "api", "tag": "v2", "port": 8080, "target": 18080,
               "hold": true}),
    );
    round_trip(
        &Drain {
            name: "api".into(),
            tag: None,
            port: 18080,
            timeout_ms: 5000,
        }
        .into_wire(),
        json!({"cmd": "drain", "name": "api", "tag": null, "port": 18080, "timeout_ms": 5000}),
    );
    // The relay's load generator writes this line by hand.
    round_trip(
        &PeerAdd {
            name: "load-1".into(),
            public_key: "k".into(),
        }
        .into_wire(),
        json!({"cmd": "peer_add", "name": "load-1", "public_key": "k"}),
    );
    round_trip(
        &TokenCreate {
            uses: 2,
            ttl_secs: 60,
            name_prefix: None,
        }
        .into_wire(),
        json!({"cmd": "token_create", "uses": 2, "ttl_secs": 60, "name_prefix": null}),
    );
    round_trip(
        &Intercept {
            service: "orders".into(),
            header: Some("x-dev=alice".into()),
        }
        .into_wire(),
        json!({"cmd": "intercept", "service": "orders", "header": "x-dev=alice"}),
    );
    round_trip(
        &InterceptStop {
            service: "orders".into(),
        }
        .into_wire(),
        json!({"cmd": "intercept_stop", "service": "orders"}),
    );
    round_trip(&Intercepts {}.into_wire(), json!({"cmd": "intercepts"}));
    round_trip(&session::List {}.into_wire(), json!({"cmd": "list"}));
    round_trip(
        &session::Restart {
            service: "api".into(),
        }
        .into_wire(),
        json!({"cmd": "restart", "service": "api"}),
    );
}

#[test]
fn test_parse_requests_with_fields_left_out() {
    let r: DaemonRequest =
        serde_json::from_value(json!({"cmd": "register", "name": "api", "port": 80})).unwrap();
    assert_eq!(
        r,
        DaemonRequest::Register(Register {
            name: "api".into(),
            tag: None,
            port: 80,
            target: None,
            hold: false,
        })
    );
    let r: DaemonRequest = serde_json::from_value(json!({"cmd": "traffic"})).unwrap();
    assert_eq!(r, DaemonRequest::Traffic(Traffic::default()));
    let r: AdminRequest = serde_json::from_value(json!({"cmd": "nodes"})).unwrap();
    assert_eq!(r, AdminRequest::Nodes(Default::default()));
    for bad in [
        json!({"cmd": "nope"}),
        json!({"name": "api"}),
        json!({"cmd": "register", "name": "api"}),
        json!({"cmd": "register", "name": "api", "port": 70000}),
    ] {
        assert!(
            serde_json::from_value::<DaemonRequest>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    assert!(serde_json::from_value::<SessionRequest>(json!({"cmd": "stop"})).is_err());
}

#[test]
fn test_answers() {
    round_trip(
        &Answer::Ok {
            data: Left {
                left: "laptop".into(),
            },
        },
        json!({"status": "ok", "data": {"left": "laptop"}}),
    );
    round_trip(
        &Answer::<Left>::Error {
            message: "no".into(),
        },
        json!({"status": "error", "message": "no"}),
    );
    round_trip(
        &Answer::<Left>::Denied {
            message: "root only".into(),
        },
        json!({"status": "denied", "message": "root only"}),
    );
    // A server answers with the reply its request promises.
    let r = Unregister {
        name: "api".into(),
        tag: None,
    };
    let ok = r.ok(Unregistered {
        removed: "api".into(),
        tag: None,
    });
    assert_eq!(
        serde_json::to_value(ok).unwrap(),
        json!({"status": "ok", "data": {"removed": "api", "tag": null}})
    );
    let err = r.answer(Err::<Unregistered, _>("api is not registered on this node"));
    assert_eq!(
        err,
        Answer::Error {
            message: "api is not registered on this node".into()
        }
    );
}

fn status_up() -> StatusReply {
    StatusReply {
        state: LinkState::Connected,
        node: "laptop".into(),
        address: "100.64.0.64".parse().unwrap(),
        prefix: "100.64.0.64/26".parse().unwrap(),
        domain: "ovl.internal".into(),
        relay: RelayStatus {
            endpoint: Some("10.0.0.1:51820".into()),
            url: None,
            last_handshake_secs: Some(3),
            last_seen_secs: None,
        },
        transport: Some(Transport::Udp),
        transport_mode: Mode::Auto,
        rx_bytes: 10,
        tx_bytes: 20,
        running: Some(Running {
            rx_packets: 1,
            tx_packets: 2,
            drops: [("local_control".to_string(), 9)].into_iter().collect(),
            cpu_latency: CpuLatency {
                mode: "auto".into(),
                held: false,
                holds: 0,
                relay_rtt_us: Some(150),
            },
            pid: 42,
            route_conflicts: vec![],
        }),
    }
}

#[test]
fn test_status() {
    round_trip(
        &status_up(),
        json!({
            "state": "connected",
            "node": "laptop",
            "address": "100.64.0.64",
            "prefix": "100.64.0.64/26",
            "domain": "ovl.internal",
            "relay": {"endpoint": "10.0.0.1:51820", "url": null, "last_handshake_secs": 3,
                      "last_seen_secs": null},
            "transport": "udp",
            "transport_mode": "auto",
            "rx_bytes": 10,
            "tx_bytes": 20,
            "rx_packets": 1,
            "tx_packets": 2,
            "drops": {"local_control": 9},
            "cpu_latency": {"mode": "auto", "held": false, "holds": 0, "relay_rtt_us": 150},
            "pid": 42,
            "route_conflicts": [],
        }),
    );
    // No daemon: what the node would be, from its settings.
    let down = StatusReply {
        state: LinkState::Down,
        relay: RelayStatus {
            last_handshake_secs: None,
            ..status_up().relay
        },
        transport: None,
        rx_bytes: 0,
        tx_bytes: 0,
        running: None,
        ..status_up()
    };
    round_trip(
        &down,
        json!({
            "state": "down",
            "node": "laptop",
            "address": "100.64.0.64",
            "prefix": "100.64.0.64/26",
            "domain": "ovl.internal",
            "relay": {"endpoint": "10.0.0.1:51820", "url": null, "last_handshake_secs": null,
                      "last_seen_secs": null},
            "transport_mode": "auto",
            "rx_bytes": 0,
            "tx_bytes": 0,
        }),
    );
}

#[test]
fn test_services() {
    let list = vec![ServiceListing {
        name: "api".into(),
        tag: None,
        node: Some("laptop".into()),
        where_: Where::Local,
        address: "100.64.0.65".parse().unwrap(),
        port: Some(8080),
        hostname: "api.ovl.internal".into(),
        callback_url: Some("http://relay:30001".into()),
    }];
    round_trip(
        &list,
        json!([{"name": "api", "tag": null, "node": "laptop", "where": "local",
                "address": "100.64.0.65", "port": 8080, "hostname": "api.ovl.internal",
                "callback_url": "http://relay:30001"}]),
    );
}

#[test]
fn test_resolve() {
    round_trip(
        &ResolveReply {
            name: "a b".into(),
            explanation: "'a b' is not a DNS name".into(),
            answer: None,
        },
        json!({"name": "a b", "explanation": "'a b' is not a DNS name"}),
    );
    round_trip(
        &ResolveReply {
            name: "nope".into(),
            explanation: "nope.ovl.internal is not a known name".into(),
            answer: Some(DnsAnswer {
                qname: "nope.ovl.internal".into(),
                reply: explain::Summary {
                    rcode: "NXDOMAIN".into(),
                    answers: vec![],
                },
                resolution: Resolution::NxDomain,
            }),
        },
        json!({"name": "nope", "qname": "nope.ovl.internal", "rcode": "NXDOMAIN", "answers": [],
               "explanation": "nope.ovl.internal is not a known name",
               "resolution": {"result": "nx_domain"}}),
    );
}

#[test]
fn test_register_and_inspect() {
    round_trip(
        &Registered {
            name: "api".into(),
            tag: None,
            address: "100.64.0.65".parse().unwrap(),
            port: 8080,
            hostname: "api.ovl.internal".into(),
            callback_url: None,
        },
        json!({"name": "api", "tag": null, "address": "100.64.0.65", "port": 8080,
               "hostname": "api.ovl.internal", "callback_url": null}),
    );
    round_trip(
        &InspectReply {
            url: Some("http://127.0.0.1:4141".into()),
            token: Some("ab".into()),
        },
        json!({"url": "http://127.0.0.1:4141", "token": "ab"}),
    );
    round_trip(
        &InspectReply {
            url: None,
            token: None,
        },
        json!({"url": null}),
    );
    round_trip(
        &Recording {
            on: false,
            was: true,
        },
        json!({"on": false, "was": true}),
    );
    round_trip(
        &Record { on: false }.into_wire(),
        json!({"cmd": "record", "on": false}),
    );
    let d = DrainReport {
        open: 3,
        drained: 1,
        closed: 2,
        websockets: 1,
    };
    round_trip(
        &d,
        json!({"open": 3, "drained": 1, "closed": 2, "websockets": 1}),
    );
    assert_eq!(
        d.to_string(),
        "1 connection drained, 2 closed (1 WebSocket with code 1012)"
    );
}

#[test]
fn test_traffic() {
    let page = TrafficPage {
        records: vec![Summary {
            id: 7,
            kind: SummaryKind::Exchange,
            service: "api".into(),
            direction: Direction::In,
            client: "100.64.0.2:5000".into(),
            client_name: None,
            server: "100.64.0.65:8080".into(),
            server_name: Some("api".into()),
            started_ms: 1,
            duration_ms: Some(4),
            method: Some("GET".into()),
            path: Some("/x".into()),
            status: Some(200),
            request_bytes: 0,
            response_bytes: 2,
            truncated: false,
            error: None,
            protocol: None,
            version: None,
            client_process: None,
            remote_caller: None,
            grpc_method: None,
            grpc_status: None,
            grpc_status_name: None,
            messages: None,
            group: None,
            count: None,
            first_id: None,
        }],
        latest: 7,
        more: true,
        oldest: Some(7),
        matched: 1,
    };
    round_trip(
        &page,
        json!({"latest": 7, "more": true, "oldest": 7, "matched": 1, "records": [{
            "id": 7, "type": "exchange", "service": "api", "direction": "in",
            "client": "100.64.0.2:5000", "client_name": null, "server": "100.64.0.65:8080",
            "server_name": "api", "started_ms": 1, "duration_ms": 4, "method": "GET",
            "path": "/x", "status": 200, "request_bytes": 0, "response_bytes": 2,
            "truncated": false, "error": null, "protocol": null}]}),
    );
    assert_eq!(
        page.records[0].line(),
        "#7 in  api        100.64.0.2:5000 -> api GET /x 200 2B 4ms"
    );
}

#[test]
fn test_traffic_group_row() {
    let g = crate::traffic::capture::ring::FlowGroup {
        group: "db|out|api|100.64.0.70:5432|tcp".into(),
        id: 9,
        first_id: 3,
        count: 4,
        service: "api".into(),
        direction: Direction::Out,
        client_name: Some("api".into()),
        server: "100.64.0.70:5432".into(),
        server_name: Some("db".into()),
        protocol: crate::traffic::http1::Protocol::Tcp,
        request_bytes: 100,
        response_bytes: 2000,
        started_ms: 5,
    };
    let row = g.summary();
    assert_eq!(row.kind, SummaryKind::Group);
    let v = serde_json::to_value(&row).unwrap_or_default();
    assert_eq!(v["type"], "group");
    assert_eq!(v["group"], "db|out|api|100.64.0.70:5432|tcp");
    assert_eq!(v["count"], 4);
    assert_eq!(v["first_id"], 3);
    let back: Summary = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, row);
    assert_eq!(
        row.line(),
        "#9 out api        api -> db tcp x4 up 100B down 2000B (flows collapsed)"
    );
}
