//! Seeds of the dns, catalog, devconfig and control targets.

use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use overlay_core::intercept::{HeaderMatch, Intercept, InterceptError};
use overlay_core::names::registry::Protocol;
use overlay_core::transport::control::{
    self, Caller, ControlMessage, ControlReply, ControlRequest, InterceptPage, InterceptStarted,
    InterceptStopped,
};

use crate::write;

fn query(name: &str, qtype: RecordType, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((size, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_version(version);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn dns(out: &Path) {
    let w = |name: &str, bytes: &[u8]| write(out, "dns", name, bytes);
    use RecordType::*;
    w("a-service", &query("orders.ovl.internal.", A, None));
    w("a-bare-label", &query("orders.", A, None));
    w(
        "a-tagged-node",
        &query("v2.orders.nodeb.ovl.internal.", A, None),
    );
    w("a-node", &query("nodeb.ovl.internal.", A, None));
    w("a-ns-host", &query("ns.ovl.internal.", A, None));
    w("aaaa-service", &query("orders.ovl.internal.", AAAA, None));
    w("txt-service", &query("users.ovl.internal.", TXT, None));
    w("srv-tcp", &query("_orders._tcp.ovl.internal.", SRV, None));
    w(
        "srv-tcp-edns",
        &query("_orders._tcp.ovl.internal.", SRV, Some((4096, 0))),
    );
    w(
        "srv-udp",
        &query("_metrics._udp.ovl.internal.", SRV, Some((1232, 0))),
    );
    w(
        "any-service",
        &query("orders.ovl.internal.", ANY, Some((512, 0))),
    );
    w("soa-apex", &query("ovl.internal.", SOA, None));
    w("ns-apex", &query("OVL.Internal.", NS, None));
    w("nxdomain", &query("nothing.ovl.internal.", A, None));
    w("nodata-parent", &query("_tcp.ovl.internal.", A, None));
    w("tag-only-parent", &query("billing.ovl.internal.", A, None));
    w("forward", &query("example.com.", A, None));
    w("axfr", &query("ovl.internal.", AXFR, None));
    w(
        "edns-version-1",
        &query("orders.ovl.internal.", A, Some((1232, 1))),
    );
    let mut chaos = Message::new(7, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("orders.ovl.internal.").unwrap(), TXT);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    w("class-chaos", &chaos.to_vec().unwrap());
    let mut two = Message::new(8, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("orders.ovl.internal.").unwrap(),
        A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("users.ovl.internal.").unwrap(),
        A,
    ));
    w("two-questions", &two.to_vec().unwrap());
    let mut status = Message::new(9, MessageType::Query, OpCode::Status);
    status.add_query(Query::query(
        Name::from_ascii("orders.ovl.internal.").unwrap(),
        A,
    ));
    w("opcode-status", &status.to_vec().unwrap());
    // A compression pointer to the question name, in a second question.
    let mut ptr = query("orders.ovl.internal.", A, None);
    ptr[5] = 2;
    ptr.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1]);
    w("compression-pointer", &ptr);
    w("header-only", &[0xbe, 0xef, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

fn catalog(out: &Path) {
    let w = |name: &str, text: &str| write(out, "catalog", name, text.as_bytes());
    // Found by the fuzzer: a TOML syntax error the toml crate gives no message for.
    write(
        out,
        "catalog",
        "regression-empty-reason",
        b"[services.a]\n# r\xff\xffote servi\xff\t\0)t = 0\n",
    );
    let good = |name: &str, text: &str| {
        let entries = overlay_core::relay::catalog::parse(text).expect("a valid catalog seed parses");
        assert!(!entries.is_empty());
        w(name, text);
    };
    good(
        "catalog",
        "# remote services\n[services.orders]\naddress = \"orders.staging.svc.cluster.local:8080\"\n\n\
         [services.inventory]\naddress = \"10.1.2.3:9000\"\nport = 80\n\n\
         [services.ipv6]\naddress = \"[2001:db8::5]:443\"\n",
    );
    good("inline", "services = { redis = { address = \"redis:6379\" }, pg = { address = \"pg_1.db:5432\", port = 5432 } }\n");
    w("bad-name", "[services.Bad_Name]\naddress = \"x:1\"\n");
    w("no-port", "[services.a]\naddress = \"host:0\"\nport = 0\n");
    w(
        "unknown-field",
        "[services.orders]\naddress = \"x:1\"\ncolour = 1\n",
    );
}

fn devconfig(out: &Path) {
    use overlay_core::devconfig::{dotenv, DevConfig};
    let w = |name: &str, text: &str| write(out, "devconfig", name, text.as_bytes());
    let toml = |name: &str, text: &str| {
        let c =
            DevConfig::parse_toml("overlay.toml", text).expect("a valid overlay.toml seed parses");
        assert_eq!(c.services.len(), 3);
        w(name, text);
    };
    let procfile = |name: &str, text: &str| {
        DevConfig::parse_procfile("Procfile", text).expect("a valid Procfile seed parses");
        w(name, text);
    };
    let env = |name: &str, text: &str| {
        assert_eq!(
            dotenv::parse(".env", text)
                .expect("a valid .env seed parses")
                .len(),
            6
        );
        w(name, text);
    };
    toml(
        "overlay-toml",
        r#"# overlay dev
[services.db]
command = "postgres -D data"
port = 5432
health = { tcp = true, timeout = "1m" }
stop_timeout = 10

[services.api]
command = "./target/debug/api"
build = "cargo build --bin api"
port = 8080
env = { RUST_LOG = "debug", WORKERS = 4, RATIO = 0.5, VERBOSE = true }
depends_on = ["db"]
health = { http = "/healthz", timeout = "30s" }
watch = ["src/**", "Cargo.toml", "migrations/*.sql", "assets/[a-z]?.png", "[!.]*"]
tag = "v2"
name = "api"
stop_timeout = "5s"

[services.worker_1]
command = "sh -c 'while true; do sleep 1; done'"
name = "worker"
health = { tcp = false }
depends_on = ["api", "db"]
"#,
    );
    w(
        "overlay-toml-cycle",
        "[services.a]\ncommand = \"a\"\ndepends_on = [\"b\"]\n[services.b]\ncommand = \"b\"\ndepends_on = [\"c\"]\n[services.c]\ncommand = \"c\"\ndepends_on = [\"a\"]\n",
    );
    w(
        "overlay-toml-errors",
        "[services.\"bad key\"]\ncommand = \"\"\nport = 70000\nenv = { PORT = \"1\", OVERLAY_X = 2 }\nhealth = { http = \"x y\", tcp = true }\nwatch = [\"/abs\", \"[unclosed\"]\n",
    );
    procfile(
        "procfile",
        "# Procfile\nweb: bundle exec rails server -p $PORT\nworker: bundle exec sidekiq # comment stays\nRelease-Task: ./release.sh\n\n",
    );
    env(
        "dotenv",
        "# .env\nexport DATABASE_URL=postgres://localhost/dev\nSECRET='single # quoted'\nMULTI=\"line\\nnext\\t\\\"q\\\" \\\\ end\" # comment\nEMPTY=\nSPACED = value with spaces #comment\n_X=1\n",
    );
    w(
        "dotenv-errors",
        "NOEQUALS\n1BAD=x\nQ=\"open\nS='open\nT=\"a\" b\n",
    );
}

fn control(out: &Path) {
    let w = |name: &str, bytes: &[u8]| {
        assert!(
            control::parse_request(bytes).is_ok() || control::parse_reply(bytes).is_ok(),
            "control seed {name} does not parse"
        );
        write(out, "control", name, bytes)
    };
    let req = |id, request| control::encode(&ControlMessage { id, request });
    w("ping", &req(1, ControlRequest::Ping));
    w("leave", &req(2, ControlRequest::Leave));
    w(
        "register",
        &req(
            3,
            ControlRequest::Register {
                name: "api".into(),
                tag: Some("v2".into()),
                port: 8080,
                protocol: Protocol::Udp,
            },
        ),
    );
    w(
        "register-defaults",
        br#"{"id":4,"op":"register","name":"api","port":80}"#,
    );
    w(
        "unregister",
        &req(
            5,
            ControlRequest::Unregister {
                name: "api".into(),
                tag: None,
            },
        ),
    );
    w("pull-snapshot", br#"{"id":6,"op":"pull","want":{"pull":"snapshot","after":{"node":"a","name":"api","tag":null}}}"#);
    w(
        "pull-changes",
        br#"{"id":7,"op":"pull","want":{"pull":"changes","epoch":12345678901234,"seq":9}}"#,
    );
    w(
        "lookup",
        &req(
            8,
            ControlRequest::Lookup {
                name: "redis.default.svc.cluster.local".into(),
            },
        ),
    );
    w(
        "reply-ok",
        &control::encode(&ControlReply::Ok {
            id: 9,
            data: serde_json::json!({"name": "api", "address": "100.64.4.2", "port": 8080, "ratio": 0.1, "list": [1, -2, 3.5e10, null, true]}),
        }),
    );
    w(
        "reply-notice",
        br#"{"status":"ok","id":0,"data":{"epoch":1,"seq":2}}"#,
    );
    w(
        "reply-error",
        &control::encode(&ControlReply::Error {
            id: 10,
            message: "there is no node named 'x'".into(),
            code: None,
        }),
    );
    w("reply-no-data", br#"{"status":"ok","id":11}"#);
    intercepts(&w);
    // Found by the fuzzer: serde_json quotes a decoded newline in its message.
    write(
        out,
        "control",
        "regression-newline-in-error",
        br#"{"status":"e\nt"}"#,
    );
}

/// The intercept requests (with and without a header, stop, list) and the relay's replies to
/// them: what `overlay intercept` sends and reads (node/src/daemon/intercept.rs).
fn intercepts(w: &dyn Fn(&str, &[u8])) {
    let req = |id, request| control::encode(&ControlMessage { id, request });
    let ok = |id, data: serde_json::Value| control::encode(&ControlReply::Ok { id, data });
    let alice = HeaderMatch::parse("x-dev=alice").unwrap();
    w(
        "intercept-header",
        &req(
            12,
            ControlRequest::Intercept {
                service: "orders".into(),
                header: Some(alice.clone()),
            },
        ),
    );
    w(
        "intercept-all",
        &req(
            13,
            ControlRequest::Intercept {
                service: "orders".into(),
                header: None,
            },
        ),
    );
    w(
        "intercept-stop",
        &req(
            14,
            ControlRequest::InterceptStop {
                service: "orders".into(),
            },
        ),
    );
    w("intercepts", &req(15, ControlRequest::Intercepts { skip: 0 }));
    // The default skip written out, and a later page.
    w("intercepts-skip", br#"{"id":16,"op":"intercepts","skip":40}"#);
    let held = |node: &str, header: Option<HeaderMatch>, seq| Intercept {
        service: "orders".into(),
        node: node.into(),
        tag: (node == "beta").then(|| "v2".to_string()),
        header,
        since: 1_700_000_000,
        seq,
    };
    let started = InterceptStarted {
        intercept: held("alpha", Some(alice.clone()), 1),
        front: "10.78.0.1:18080".into(),
        target: "100.64.4.2:8080".into(),
    };
    w(
        "reply-intercept-started",
        &ok(12, serde_json::to_value(&started).unwrap()),
    );
    let all = InterceptStarted {
        intercept: held("beta", None, 2),
        target: "100.64.4.66:8080".into(),
        ..started
    };
    w(
        "reply-intercept-started-all",
        &ok(13, serde_json::to_value(&all).unwrap()),
    );
    w(
        "reply-intercept-stopped",
        &ok(
            14,
            serde_json::to_value(InterceptStopped { stopped: true }).unwrap(),
        ),
    );
    let list = [
        held("alpha", Some(alice), 1),
        held("beta", None, 2),
        held("gamma", Some(HeaderMatch::parse("X-Dev: bob").unwrap()), 3),
    ];
    w(
        "reply-intercept-page",
        &ok(
            15,
            serde_json::to_value(InterceptPage::of(&list, 0)).unwrap(),
        ),
    );
    w(
        "reply-intercept-page-end",
        &ok(
            16,
            serde_json::to_value(InterceptPage::of(&list, 40)).unwrap(),
        ),
    );
    let taken = InterceptError::Taken {
        service: "orders".into(),
        holder: "alpha".into(),
    };
    w(
        "reply-intercept-taken",
        &control::encode(&ControlReply::error(13, &taken.to_string())),
    );
    // The notice that goes before an intercepted request's connection to the node.
    let notice = Caller {
        service: "100.64.4.2:8080".parse().unwrap(),
        port: 20001,
        address: "10.78.0.1:40312".into(),
        forwarded_for: Some("203.0.113.7".into()),
        via: Some("front".into()),
    }
    .notice();
    w("reply-caller-notice-front", &notice);
}

pub fn seeds(out: &Path) {
    dns(out);
    catalog(out);
    devconfig(out);
    control(out);
}
