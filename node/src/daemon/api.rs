//! The daemon's control socket: one JSON request per line, one JSON response per line.
//!
//! The socket is created mode 0600 in the run directory; every connection's peer credentials
//! are checked as well, so only root and the user the node belongs to get an answer.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const MAX_REQUEST: u64 = 64 * 1024;

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Connection state and counters.
    Status,
    /// Stop the daemon (`overlay down`).
    Shutdown,
    /// Deregister from the relay, then stop (`overlay leave`).
    Leave,
    /// Every service instance the node knows (`overlay services`).
    Services,
    /// What a name resolves to and why (`overlay resolve`).
    Resolve {
        /// The name asked about.
        name: String,
    },
    /// Register a local service: it gets an overlay address, a DNS name and a listener on
    /// `address:port` that forwards to `127.0.0.1:target` (`overlay register`, `overlay dev`).
    Register {
        /// Service name (a DNS label).
        name: String,
        /// Optional variant tag (a DNS label).
        #[serde(default)]
        tag: Option<String>,
        /// The port callers use.
        port: u16,
        /// The local port the process listens on; `None` registers the name without a listener
        /// (the service listens on its overlay address itself).
        #[serde(default)]
        target: Option<u16>,
        /// Start the listener holding new connections (the process is not ready yet); a later
        /// `Target` releases them.
        #[serde(default)]
        hold: bool,
    },
    /// Point a service's listener at a new local port, or hold new connections (`None`) while
    /// the process restarts; held connections wait until a target is set again.
    Target {
        /// Service name.
        name: String,
        /// Tag.
        #[serde(default)]
        tag: Option<String>,
        /// The new local port, or `None` to hold.
        target: Option<u16>,
    },
    /// After a restart pointed the listener at the new process: let the connections that went to
    /// `port` (the old process) finish until `timeout_ms` passes, then close them cleanly.
    /// Answers with counts: `open`, `drained`, `closed`, `websockets`.
    Drain {
        /// Service name.
        name: String,
        /// Tag.
        #[serde(default)]
        tag: Option<String>,
        /// The old process's local port.
        port: u16,
        /// How long the old connections may stay.
        timeout_ms: u64,
    },
    /// Captured exchanges and flows (`overlay traffic`): `query` holds the inspector's filters,
    /// `after` and `limit` (`service=api&after=12`).
    Traffic {
        /// URL query with filters.
        #[serde(default)]
        query: String,
    },
    /// The web inspector's URL (`overlay inspect`).
    Inspect,
    /// Send the remote environment's callers of `service` (through the relay's front) to this
    /// node's instance: every connection, or requests with `header` (`NAME=VALUE`).
    Intercept {
        /// The service.
        service: String,
        /// `NAME=VALUE`.
        #[serde(default)]
        header: Option<String>,
    },
    /// End this node's intercept of `service`.
    InterceptStop {
        /// The service.
        service: String,
    },
    /// Every node's intercepts.
    Intercepts,
    /// Remove a local service and its listener.
    Unregister {
        /// Service name.
        name: String,
        /// Tag.
        #[serde(default)]
        tag: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// It worked.
    Ok {
        /// The result.
        data: serde_json::Value,
    },
    /// It did not.
    Error {
        /// What went wrong, one sentence.
        message: String,
    },
}

/// Answers requests; implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, req: Request) -> impl std::future::Future<Output = Response> + Send;
}

/// Serves the control socket at `path`, allowing root and `owner_uid`.
pub async fn serve<H: Handler>(
    path: &Path,
    owner_uid: Option<u32>,
    handler: std::sync::Arc<H>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        overlay_sys::statefile::ensure_dir(dir, 0o755)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot create the control socket {}: {e}", path.display()))?;
    // Root and the owner only: the owner gets the socket through its ownership.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(uid) = owner_uid {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: c is a valid NUL-terminated path; -1 leaves the group unchanged.
        unsafe { libc::chown(c.as_ptr(), uid, u32::MAX) };
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let allowed = match stream.peer_cred() {
            Ok(c) => c.uid() == 0 || Some(c.uid()) == owner_uid,
            Err(_) => false,
        };
        if !allowed {
            tracing::warn!("refused a control connection from another user");
            continue;
        }
        let h = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, h).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

async fn handle<H: Handler>(stream: UnixStream, h: std::sync::Arc<H>) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_REQUEST)).lines();
    while let Some(line) = lines.next_line().await? {
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => h.handle(req).await,
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        };
        let mut out = serde_json::to_vec(&resp)?;
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

/// Sends one request to the daemon and returns its data.
pub async fn call(path: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "the overlay daemon is not running ({}: {e}); start it with `sudo overlay up`",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let answer = BufReader::new(r)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the daemon closed the connection without answering"))?;
    match serde_json::from_str::<Response>(&answer)? {
        Response::Ok { data } => Ok(data),
        Response::Error { message } => Err(anyhow::anyhow!("{message}")),
    }
}
