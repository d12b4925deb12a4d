//! The one transport of the local API (`overlay_core::api`): JSON lines over a Unix socket,
//! one request and one answer per connection, for the node daemon's socket, the relay's admin
//! socket and `overlay dev` session sockets.
//!
//! A server's socket is made by [`Listener::bind`] with an [`Access`]: file mode (0600), owner,
//! and the users whose connections it answers. File permissions keep other users from
//! connecting at all; the peer-credential check (`SO_PEERCRED`) on every connection holds even
//! where they do not (a socket made before the owner was known, a process with
//! `CAP_DAC_OVERRIDE` that is not root). Requests are at most [`MAX_REQUEST`] bytes and must
//! arrive within [`IO_TIMEOUT`]; a client reads at most [`MAX_ANSWER`] bytes and waits
//! [`CALL_TIMEOUT`] unless told otherwise. Clients get typed replies or an [`ApiError`] that
//! says in one sentence what happened and what to do.

use overlay_core::api::{Answer, Request};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Largest request line a server reads.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest answer line a client reads (a relay's node or token list runs to megabytes).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// How long a server waits for a client's request line, and for it to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Endpoint::call`] waits for an answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed accept (out of file descriptors), how long the server waits before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The users whose connections a server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Whether root may.
    pub root: bool,
    /// Other users who may.
    pub uids: Vec<u32>,
}

impl Allowed {
    /// Root, the user this process runs as, and `owner` if given.
    pub fn root_me_and(owner: Option<u32>) -> Allowed {
        let mut uids = vec![effective_uid()];
        uids.extend(owner);
        uids.retain(|&u| u != 0);
        uids.dedup();
        Allowed { root: true, uids }
    }

    /// Whether `uid` may.
    pub fn admits(&self, uid: u32) -> bool {
        (self.root && uid == 0) || self.uids.contains(&uid)
    }

    /// `root and uid 1000`, for the refusal.
    fn describe(&self) -> String {
        let mut who: Vec<String> = self.root.then(|| "root".to_string()).into_iter().collect();
        who.extend(self.uids.iter().map(|u| format!("uid {u}")));
        match who.len() {
            0 => "nobody".into(),
            _ => who.join(" and "),
        }
    }
}

/// How a server's socket is made and whom it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The socket file's mode.
    pub mode: u32,
    /// The socket file's owner, when not this process's user (root serving a user).
    pub owner: Option<u32>,
    /// Whose connections are answered.
    pub allowed: Allowed,
}

impl Access {
    /// Mode 0600, owned by `owner` if given; answers root, this process's user and `owner`.
    pub fn private(owner: Option<u32>) -> Access {
        Access {
            mode: 0o600,
            owner,
            allowed: Allowed::root_me_and(owner),
        }
    }
}

/// Why a server's socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket could not be created.
    #[error("cannot create the socket {}: {source}", path.display())]
    Create {
        /// The socket.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Its mode or owner could not be set.
    #[error("cannot protect the socket {} (mode, owner): {source}", path.display())]
    Protect {
        /// The socket.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// A connection from a user the socket does not answer.
#[derive(Debug)]
pub struct Refused {
    /// The connection, to tell it so.
    pub stream: UnixStream,
    /// The user, when the kernel said.
    pub uid: Option<u32>,
}

/// Answers one server's requests.
pub trait Handler: Send + Sync + 'static {
    /// The server's request enum (`overlay_core::api::*::*Request`).
    type Request: DeserializeOwned + Send;

    /// Answers one request.
    fn handle(&self, request: Self::Request) -> impl Future<Output = Answer> + Send;
}

/// A server's socket; the file is removed when it is dropped.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    inner: UnixListener,
    allowed: Allowed,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listener {
    /// Creates the socket at `path` (replacing a stale one) with `access`. Needs a tokio
    /// runtime.
    pub fn bind(path: &Path, access: Access) -> Result<Listener, BindError> {
        let _ = std::fs::remove_file(path);
        let inner = UnixListener::bind(path).map_err(|source| BindError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        // From here on the file is removed on every way out.
        let listener = Listener {
            path: path.to_path_buf(),
            inner,
            allowed: access.allowed,
        };
        let protect = |source| BindError::Protect {
            path: path.to_path_buf(),
            source,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
            .map_err(protect)?;
        if let Some(uid) = access.owner {
            std::os::unix::fs::chown(path, Some(uid), None).map_err(protect)?;
        }
        Ok(listener)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection: `Ok` from a user the socket answers, `Err` from anyone else.
    pub async fn accept(&self) -> Result<UnixStream, Refused> {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    return match uid {
                        Some(u) if self.allowed.admits(u) => Ok(stream),
                        _ => Err(Refused { stream, uid }),
                    };
                }
                Err(e) => {
                    tracing::warn!("{}: accept failed: {e}", self.path.display());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Answers requests with `handler`, each connection in its own task, until dropped.
    pub async fn serve<H: Handler>(self, handler: Arc<H>) {
        let denied = format!("this socket answers only {}", self.allowed.describe());
        loop {
            match self.accept().await {
                Ok(stream) => {
                    let h = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer_one(stream, &*h).await {
                            tracing::debug!("local API connection: {e}");
                        }
                    });
                }
                Err(refused) => {
                    tracing::warn!(
                        uid = ?refused.uid,
                        "refused a connection to {}",
                        self.path.display()
                    );
                    let answer = Answer::Denied {
                        message: denied.clone(),
                    };
                    tokio::spawn(async move {
                        let _ = send_answer(refused.stream, &answer).await;
                    });
                }
            }
        }
    }
}

/// Reads one request from `stream`, answers it and closes.
async fn answer_one<H: Handler>(stream: UnixStream, handler: &H) -> io::Result<()> {
    let (r, w) = stream.into_split();
    let line = match tokio::time::timeout(IO_TIMEOUT, read_line(r, MAX_REQUEST)).await {
        Ok(line) => line?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no request")),
    };
    let answer = match line {
        Line::Empty => return Ok(()),
        Line::TooLong => Answer::Error {
            message: format!("the request is longer than {} KiB", MAX_REQUEST / 1024),
        },
        Line::Full(bytes) => match serde_json::from_slice::<H::Request>(&bytes) {
            Ok(request) => handler.handle(request).await,
            Err(e) => Answer::Error {
                message: format!("bad request: {e}"),
            },
        },
    };
    send_answer(w, &answer).await
}

/// Writes `answer` as one line, within [`IO_TIMEOUT`].
async fn send_answer(mut w: impl tokio::io::AsyncWrite + Unpin, answer: &Answer) -> io::Result<()> {
    let mut out = serde_json::to_vec(answer)?;
    out.push(b'\n');
    match tokio::time::timeout(IO_TIMEOUT, w.write_all(&out)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "answer not taken")),
    }
}

/// One line read with a size limit.
enum Line {
    /// The connection closed before anything came.
    Empty,
    /// More than the limit came without a newline.
    TooLong,
    /// A line (without its newline, or the last bytes before the connection closed).
    Full(Vec<u8>),
}

async fn read_line(r: impl AsyncRead + Unpin, limit: usize) -> io::Result<Line> {
    let mut reader = BufReader::new(r.take(limit as u64 + 1));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).await?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > limit {
        return Ok(Line::TooLong);
    }
    Ok(if buf.is_empty() {
        Line::Empty
    } else {
        Line::Full(buf)
    })
}

/// Where a client finds a server, and how errors name it.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    /// The server's socket.
    pub path: &'a Path,
    /// What listens there, as errors name it: `the overlay daemon`.
    pub server: &'static str,
    /// Whom it answers: `root and the user who joined`.
    pub serves: &'static str,
    /// The next step when it is not running: `start it with ``sudo overlay up```.
    pub start: &'static str,
}

/// Why a call to a local server failed; each says what happened in one sentence.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing listens on the socket.
    #[error("{server} is not running ({}); {start}", path.display())]
    NotRunning {
        /// The server.
        server: &'static str,
        /// Its socket.
        path: PathBuf,
        /// How to start it.
        start: &'static str,
    },
    /// The socket or the server does not serve this user.
    #[error("{server} answers only {serves} ({}: {reason})", path.display())]
    PermissionDenied {
        /// The server.
        server: &'static str,
        /// Whom it answers.
        serves: &'static str,
        /// Its socket.
        path: PathBuf,
        /// What the system or the server said.
        reason: String,
    },
    /// The server understood the request and refused it; its own sentence.
    #[error("{0}")]
    Refused(String),
    /// No answer in time.
    #[error("{server} did not answer within {} s", timeout.as_secs())]
    Timeout {
        /// The server.
        server: &'static str,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The connection closed before an answer.
    #[error("{server} closed the connection without answering; see its log")]
    NoAnswer {
        /// The server.
        server: &'static str,
    },
    /// An answer that does not parse as the request's reply.
    #[error("{server} gave an answer this program does not understand ({detail}); are both from the same release?")]
    BadAnswer {
        /// The server.
        server: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// The socket failed otherwise.
    #[error("cannot talk to {server} on {}: {source}", path.display())]
    Io {
        /// The server.
        server: &'static str,
        /// Its socket.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl Endpoint<'_> {
    /// Sends `request` and waits up to [`CALL_TIMEOUT`] for its reply.
    pub async fn call<R: Request>(&self, request: R) -> Result<R::Reply, ApiError> {
        self.call_within(request, CALL_TIMEOUT).await
    }

    /// Sends `request` and waits up to `timeout` for its reply.
    pub async fn call_within<R: Request>(
        &self,
        request: R,
        timeout: Duration,
    ) -> Result<R::Reply, ApiError> {
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout {
                server: self.server,
                timeout,
            }),
        }
    }

    async fn exchange<R: Request>(&self, request: R) -> Result<R::Reply, ApiError> {
        let stream = UnixStream::connect(self.path)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_vec(&request.into_wire()).map_err(|e| self.io(e.into()))?;
        line.push(b'\n');
        w.write_all(&line).await.map_err(|e| self.io(e))?;
        let bytes = match read_line(r, MAX_ANSWER).await.map_err(|e| self.io(e))? {
            Line::Empty => {
                return Err(ApiError::NoAnswer {
                    server: self.server,
                })
            }
            Line::TooLong => {
                return Err(self.bad(format!("longer than {} MiB", MAX_ANSWER >> 20)));
            }
            Line::Full(bytes) => bytes,
        };
        match serde_json::from_slice::<Answer<R::Reply>>(&bytes) {
            Ok(Answer::Ok { data }) => Ok(data),
            Ok(Answer::Error { message }) => Err(ApiError::Refused(message)),
            Ok(Answer::Denied { message }) => Err(self.denied(message)),
            Err(e) => Err(self.bad(e.to_string())),
        }
    }

    fn connect_error(&self, e: io::Error) -> ApiError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ApiError::NotRunning {
                server: self.server,
                path: self.path.to_path_buf(),
                start: self.start,
            },
            io::ErrorKind::PermissionDenied => self.denied(e.to_string()),
            _ => self.io(e),
        }
    }

    fn denied(&self, reason: String) -> ApiError {
        ApiError::PermissionDenied {
            server: self.server,
            serves: self.serves,
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn bad(&self, detail: String) -> ApiError {
        ApiError::BadAnswer {
            server: self.server,
            detail,
        }
    }

    fn io(&self, source: io::Error) -> ApiError {
        ApiError::Io {
            server: self.server,
            path: self.path.to_path_buf(),
            source,
        }
    }
}

/// A reply as `--json` prints it: indented, keys in alphabetical order (as the outputs have
/// always been, whatever order the reply type declares its fields in).
pub fn to_json_pretty<T: serde::Serialize>(reply: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::to_value(reply)?)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests;
