//! The session socket: `overlay restart|stop|start SERVICE` and `overlay ps` from another
//! terminal reach the running `overlay dev` through a Unix socket in the user's session
//! directory (`overlay_core::api::session` over `overlay_sys::local_api`: mode 0600, answering
//! only its user and root). Each session has its own socket, `<pid>.sock`; clients ask each
//! one for the service.

use super::supervisor::{Cmd, Handle, Reply, ServiceState};
use overlay_core::api::session::{Done, List, SessionRequest};
use overlay_core::api::{Answer, Request};
use overlay_sys::local_api::{Access, ApiError, Endpoint, Handler, Listener};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long listing a session's services may take (a session that does not answer is skipped).
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The session socket at `path`, as its clients' errors name it.
pub fn endpoint(path: &Path) -> Endpoint<'_> {
    Endpoint {
        path,
        server: "the overlay dev session",
        serves: "its user and root",
        start: "start one with `overlay dev`",
    }
}

/// Creates this session's socket, `<dir>/<pid>.sock`.
pub fn bind(dir: &Path) -> anyhow::Result<Listener> {
    super::user::private_dir(dir)?;
    let path = dir.join(format!("{}.sock", std::process::id()));
    Ok(Listener::bind(&path, Access::private(None))?)
}

/// Answers a session's requests: its services, found by key, name or `tag.name`.
pub struct Session<F> {
    services: Vec<Handle>,
    find: F,
}

impl<F: Fn(&str) -> Option<String>> Session<F> {
    /// The session of `services`; `find` gives the key a client's service name stands for.
    pub fn new(services: Vec<Handle>, find: F) -> Self {
        Session { services, find }
    }

    /// Hands `wanted` the command `make` builds and waits for what it did.
    async fn ask(&self, wanted: &str, make: fn(Reply) -> Cmd) -> Result<Done, String> {
        let handle = (self.find)(wanted)
            .and_then(|k| self.services.iter().find(|h| h.key == k))
            .ok_or_else(|| format!("this session has no service {wanted}"))?;
        let message = handle.ask(make).await?;
        Ok(Done { message })
    }
}

impl<F: Fn(&str) -> Option<String> + Send + Sync + 'static> Handler for Session<F> {
    type Request = SessionRequest;

    async fn handle(&self, request: SessionRequest) -> Answer {
        match request {
            SessionRequest::List(r) => r.ok(self.services.iter().map(Handle::snapshot).collect()),
            SessionRequest::Restart(r) => r.answer(self.ask(&r.service, Cmd::Restart).await),
            SessionRequest::Stop(r) => r.answer(self.ask(&r.service, Cmd::Stop).await),
            SessionRequest::Start(r) => r.answer(self.ask(&r.service, Cmd::Start).await),
        }
    }
}

/// The sockets of the running sessions in `dir`; sockets nobody listens on are removed.
pub async fn sessions(dir: &Path) -> Vec<(PathBuf, Vec<ServiceState>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    paths.sort();
    for p in paths {
        match endpoint(&p).call_within(List {}, LIST_TIMEOUT).await {
            Ok(list) => out.push((p, list)),
            Err(ApiError::NotRunning { .. }) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(e) => tracing::debug!("{e}"),
        }
    }
    out
}
