//! The admin socket (`<state>/admin.sock`, mode 0600): one JSON request per line, one JSON
//! response per line. The `overlay-relay` subcommands are its clients.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// Largest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// A request to the running relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Register a peer with this name and public key.
    PeerAdd {
        /// Unique name.
        name: String,
        /// Base64 public key.
        public_key: String,
    },
    /// Remove a peer by name.
    PeerRemove {
        /// Its name.
        name: String,
    },
    /// List peers with their counters.
    Nodes,
    /// Relay-wide counters.
    Stats,
    /// Create a join token.
    TokenCreate {
        /// Joins it allows.
        uses: u32,
        /// Lifetime in seconds.
        ttl_secs: u64,
        /// Prefix for node names.
        name_prefix: Option<String>,
    },
    /// List tokens.
    TokenList,
    /// List every service instance.
    Services,
    /// Revoke a token.
    TokenRevoke {
        /// Its id.
        id: String,
    },
}

/// The answer: a JSON value or one sentence saying what went wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AdminResponse {
    /// It worked.
    Ok {
        /// The result.
        data: serde_json::Value,
    },
    /// It did not.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// A request with the channel its answer goes back on.
pub type AdminCall = (AdminRequest, oneshot::Sender<AdminResponse>);

/// Serves the admin socket, handing each request to the hub through `tx`.
pub async fn serve(
    path: &Path,
    tx: std::sync::mpsc::Sender<AdminCall>,
    wake: std::sync::Arc<overlay_sys::wake::Wake>,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot create the admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let tx = tx.clone();
        let wake = wake.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, tx, &wake).await {
                tracing::debug!("admin connection: {e}");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    tx: std::sync::mpsc::Sender<AdminCall>,
    wake: &overlay_sys::wake::Wake,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_REQUEST as u64)).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(req) => {
                let (otx, orx) = oneshot::channel();
                tx.send((req, otx))
                    .map_err(|_| anyhow::anyhow!("the relay is shutting down"))?;
                // The hub thread sleeps in poll(2) between datagrams: wake it for this request.
                wake.wake();
                orx.await.unwrap_or(AdminResponse::Error {
                    message: "the relay is shutting down".into(),
                })
            }
            Err(e) => AdminResponse::Error {
                message: format!("bad admin request: {e}"),
            },
        };
        let mut out = serde_json::to_vec(&response)?;
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to the relay behind `path` and returns its data, or its error as text.
pub async fn call(path: &Path, req: &AdminRequest) -> anyhow::Result<serde_json::Value> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the relay's admin socket {} ({e}); is `overlay-relay serve` running with the same --state?",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut lines = BufReader::new(r).lines();
    let answer = lines.next_line().await?.ok_or_else(|| {
        anyhow::anyhow!("the relay closed the admin connection without answering")
    })?;
    match serde_json::from_str::<AdminResponse>(&answer)? {
        AdminResponse::Ok { data } => Ok(data),
        AdminResponse::Error { message } => Err(anyhow::anyhow!("{message}")),
    }
}
