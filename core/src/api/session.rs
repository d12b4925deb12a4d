//! An `overlay dev` session's API: what `overlay ps` and `overlay restart|stop|start SERVICE`
//! ask a running session from another terminal, and what it answers. `overlay ps --json`
//! prints the [`ServiceState`] list.

use super::requests;
use serde::{Deserialize, Serialize};

/// A request to a session, as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum SessionRequest {
    /// See [`List`].
    List(List),
    /// See [`Restart`].
    Restart(Restart),
    /// See [`Stop`].
    Stop(Stop),
    /// See [`Start`].
    Start(Start),
}

requests!(SessionRequest {
    List => Vec<ServiceState>,
    Restart => Done,
    Stop => Done,
    Start => Done,
});

/// The session's services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {}

/// Build and restart one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// Key, `name` or `tag.name`.
    pub service: String,
}

/// Stop one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Key, `name` or `tag.name`.
    pub service: String,
}

/// Start one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Key, `name` or `tag.name`.
    pub service: String,
}

/// What a restart, stop or start did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// What happened, in words.
    pub message: String,
}

/// What the session knows about a service (`overlay ps`, and the service a restart is for).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Its key in the config.
    pub key: String,
    /// Its name.
    pub name: String,
    /// Its tag.
    pub tag: Option<String>,
    /// `starting`, `running`, `restarting`, `crashed`, `stopped` or `failed`.
    pub state: String,
    /// The pid of its process group.
    pub pid: Option<i32>,
    /// The local port its process listens on.
    pub local_port: Option<u16>,
    /// Its overlay address, `ip:port`.
    pub address: Option<String>,
    /// How many times it was started after the first.
    pub restarts: u32,
    /// Whether it is a worker (listens nowhere).
    #[serde(default)]
    pub worker: bool,
    /// How its last process ended (`exit status 1`, `signal 9`), if one did.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// When that was, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub last_exit_ms: Option<u64>,
}
