//! The transport against a real socket in a temporary directory.

use super::*;
use overlay_core::api::session::{Done, List, Restart, ServiceState, SessionRequest, Stop};

/// Lists one service, restarts `api`, refuses the rest, and takes its time over `stop`.
struct Fake;

impl Handler for Fake {
    type Request = SessionRequest;

    async fn handle(&self, request: SessionRequest) -> Answer {
        match request {
            SessionRequest::List(r) => r.ok(vec![ServiceState {
                key: "api".into(),
                ..Default::default()
            }]),
            SessionRequest::Restart(r) => {
                let result = match r.service.as_str() {
                    "api" => Ok(Done {
                        message: "restarted api".into(),
                    }),
                    other => Err(format!("this session has no service {other}")),
                };
                r.answer(result)
            }
            SessionRequest::Stop(r) => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                r.ok(Done {
                    message: "late".into(),
                })
            }
            SessionRequest::Start(r) => r.answer(Err::<Done, _>("no")),
        }
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("overlay-local-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn endpoint(path: &Path) -> Endpoint<'_> {
    Endpoint {
        path,
        server: "the session",
        serves: "its user and root",
        start: "start one with `overlay dev`",
    }
}

fn start(path: &Path, access: Access) -> tokio::task::JoinHandle<()> {
    let l = Listener::bind(path, access).unwrap();
    tokio::spawn(l.serve(Arc::new(Fake)))
}

#[tokio::test]
async fn typed_calls_and_refusals() {
    let dir = Dir::new("calls");
    let path = dir.0.join("s.sock");
    let server = start(&path, Access::private(None));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let e = endpoint(&path);
    let list = e.call(List {}).await.unwrap();
    assert_eq!(list[0].key, "api");
    let done = e
        .call(Restart {
            service: "api".into(),
        })
        .await
        .unwrap();
    assert_eq!(done.message, "restarted api");
    let err = e
        .call(Restart {
            service: "db".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Refused(_)));
    assert_eq!(err.to_string(), "this session has no service db");
    let err = e
        .call_within(
            Stop {
                service: "api".into(),
            },
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Timeout { .. }), "{err}");
    // Dropping the server removes its socket; nobody listens any more.
    server.abort();
    let _ = server.await;
    assert!(!path.exists());
    let err = e.call(List {}).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the session is not running ({}); start one with `overlay dev`",
            path.display()
        )
    );
}

#[tokio::test]
async fn a_user_the_socket_does_not_answer_is_told_so() {
    let dir = Dir::new("denied");
    let path = dir.0.join("s.sock");
    let nobody = Access {
        allowed: Allowed {
            root: false,
            uids: vec![],
        },
        ..Access::private(None)
    };
    let _server = start(&path, nobody);
    let err = endpoint(&path).call(List {}).await.unwrap_err();
    assert!(matches!(err, ApiError::PermissionDenied { .. }), "{err}");
    assert!(
        err.to_string().contains("this socket answers only nobody"),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_an_error() {
    let dir = Dir::new("bad");
    let path = dir.0.join("s.sock");
    let _server = start(&path, Access::private(None));
    let ask = |bytes: Vec<u8>| {
        let path = path.clone();
        async move {
            let s = UnixStream::connect(&path).await.unwrap();
            let (r, mut w) = s.into_split();
            // The server may answer before reading everything: a failed write is fine.
            let _ = w.write_all(&bytes).await;
            match read_line(r, MAX_ANSWER).await.unwrap() {
                Line::Full(b) => serde_json::from_slice::<Answer>(&b).unwrap(),
                _ => panic!("no answer"),
            }
        }
    };
    let mut big = vec![b' '; MAX_REQUEST + 10];
    big.push(b'\n');
    assert_eq!(
        ask(big).await,
        Answer::Error {
            message: "the request is longer than 64 KiB".into()
        }
    );
    let Answer::Error { message } = ask(b"{\"cmd\":\"reboot\"}\n".to_vec()).await else {
        panic!("accepted")
    };
    assert!(message.starts_with("bad request: "), "{message}");
}

#[test]
fn allowed_users() {
    let a = Allowed {
        root: true,
        uids: vec![1000],
    };
    assert!(a.admits(0) && a.admits(1000) && !a.admits(1001));
    assert_eq!(a.describe(), "root and uid 1000");
    let me = Allowed::root_me_and(Some(4343));
    assert!(me.admits(0) && me.admits(4343) && me.admits(effective_uid()));
}

#[test]
fn json_output_keeps_its_key_order() {
    #[derive(serde::Serialize)]
    struct R {
        zeta: u8,
        alpha: u8,
    }
    assert_eq!(
        to_json_pretty(&R { zeta: 1, alpha: 2 }).unwrap(),
        "{\n  \"alpha\": 2,\n  \"zeta\": 1\n}"
    );
}
