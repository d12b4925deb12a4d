//! The session socket: `overlay restart|stop|start SERVICE` from another terminal reach the
//! running `overlay dev` through a Unix socket in the user's session directory (mode 0600,
//! peer credentials checked). Each session has its own socket, `<pid>.sock`; clients ask each
//! one for the service.

use super::supervisor::{Cmd, Handle, ServiceState};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const MAX_REQUEST: u64 = 4096;

/// A request to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum SessionRequest {
    /// The session's services.
    List,
    /// Build and restart one.
    Restart {
        /// Key, `name` or `tag.name`.
        service: String,
    },
    /// Stop one.
    Stop {
        /// Key, `name` or `tag.name`.
        service: String,
    },
    /// Start one.
    Start {
        /// Key, `name` or `tag.name`.
        service: String,
    },
}

/// A session's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// Whether it worked.
    pub ok: bool,
    /// What happened or went wrong (may span lines: a failed build's output).
    pub message: String,
    /// The services (for `list`).
    #[serde(default)]
    pub services: Vec<ServiceState>,
}

/// A listening session socket; the file is removed on drop.
pub struct Server {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Server {
    /// Creates `<dir>/<pid>.sock`.
    pub fn bind(dir: &Path) -> anyhow::Result<Server> {
        super::user::private_dir(dir)?;
        let path = dir.join(format!("{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| {
            anyhow::anyhow!("cannot create the session socket {}: {e}", path.display())
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Server { path, listener })
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(
        &self,
        services: Vec<Handle>,
        find: impl Fn(&str) -> Option<String> + Clone + Send + 'static,
    ) {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let allowed = stream
                .peer_cred()
                .map(|c| c.uid() == me || c.uid() == 0)
                .unwrap_or(false);
            if !allowed {
                tracing::warn!("refused a session connection from another user");
                continue;
            }
            let services = services.clone();
            let find = find.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &services, find).await {
                    tracing::debug!("session connection: {e}");
                }
            });
        }
    }
}

async fn answer(
    stream: UnixStream,
    services: &[Handle],
    find: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_REQUEST)).lines();
    let Some(line) = lines.next_line().await? else {
        return Ok(());
    };
    let resp = match serde_json::from_str::<SessionRequest>(&line) {
        Err(e) => SessionResponse {
            ok: false,
            message: format!("bad request: {e}"),
            ..Default::default()
        },
        Ok(SessionRequest::List) => SessionResponse {
            ok: true,
            message: String::new(),
            services: services.iter().map(Handle::snapshot).collect(),
        },
        Ok(req) => {
            let (wanted, make): (&str, fn(super::supervisor::Reply) -> Cmd) = match &req {
                SessionRequest::Restart { service } => (service, Cmd::Restart),
                SessionRequest::Stop { service } => (service, Cmd::Stop),
                SessionRequest::Start { service } => (service, Cmd::Start),
                SessionRequest::List => ("", Cmd::Start),
            };
            let handle = find(wanted).and_then(|k| services.iter().find(|h| h.key == k));
            match handle {
                None => SessionResponse {
                    ok: false,
                    message: format!("this session has no service {wanted}"),
                    ..Default::default()
                },
                Some(h) => match h.ask(make).await {
                    Ok(m) => SessionResponse {
                        ok: true,
                        message: m,
                        ..Default::default()
                    },
                    Err(m) => SessionResponse {
                        ok: false,
                        message: m,
                        ..Default::default()
                    },
                },
            }
        }
    };
    let mut out = serde_json::to_vec(&resp)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}

/// Sends one request to the session at `path`.
pub async fn call(path: &Path, req: &SessionRequest) -> std::io::Result<SessionResponse> {
    let stream = UnixStream::connect(path).await?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let answer = BufReader::new(r)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| {
            std::io::Error::other("the session closed the connection without answering")
        })?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
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
        match call(&p, &SessionRequest::List).await {
            Ok(r) => out.push((p, r.services)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&p);
            }
            Err(e) => tracing::debug!("session {}: {e}", p.display()),
        }
    }
    out
}
