//! The node daemon's local API: what the `overlay` CLI and `overlay dev` ask the daemon, and
//! what it answers. `overlay status --json`, `overlay services --json`, `overlay register
//! --json`, `overlay traffic --json` and `overlay inspect --json` print these replies, so their
//! field names are the contract in DESIGN.md ("JSON output").

use super::requests;
use crate::names::dns::explain;
use crate::names::resolver::{Resolution, ServiceListing};
use crate::net::prefix::Ipv4Prefix;
use crate::traffic::capture::record::Summary;
pub use crate::transport::control::InterceptStarted;
use crate::transport::stream::transport::{Mode, Transport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A request to the daemon, as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum DaemonRequest {
    /// See [`Status`].
    Status(Status),
    /// See [`Shutdown`].
    Shutdown(Shutdown),
    /// See [`Leave`].
    Leave(Leave),
    /// See [`Services`].
    Services(Services),
    /// See [`Resolve`].
    Resolve(Resolve),
    /// See [`Register`].
    Register(Register),
    /// See [`Target`].
    Target(Target),
    /// See [`Drain`].
    Drain(Drain),
    /// See [`Traffic`].
    Traffic(Traffic),
    /// See [`Inspect`].
    Inspect(Inspect),
    /// See [`Record`].
    Record(Record),
    /// See [`Unregister`].
    Unregister(Unregister),
    /// See [`Intercept`].
    Intercept(Intercept),
    /// See [`InterceptStop`].
    InterceptStop(InterceptStop),
    /// See [`Intercepts`].
    Intercepts(Intercepts),
}

requests!(DaemonRequest {
    Status => StatusReply,
    Shutdown => Stopping,
    Leave => Left,
    Services => Vec<ServiceListing>,
    Resolve => ResolveReply,
    Register => Registered,
    Target => Retargeted,
    Drain => DrainReport,
    Traffic => TrafficPage,
    Inspect => InspectReply,
    Record => Recording,
    Unregister => Unregistered,
    Intercept => InterceptStarted,
    InterceptStop => InterceptStopped,
    Intercepts => Vec<crate::intercept::Intercept>,
});

/// Connection state and counters (`overlay status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {}

/// Stop the daemon (`overlay down`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {}

/// Deregister from the relay, then stop (`overlay leave`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {}

/// Every service instance the node knows (`overlay services`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {}

/// What a name resolves to and why (`overlay resolve`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolve {
    /// The name asked about.
    pub name: String,
}

/// Register a local service: it gets an overlay address, a DNS name and a listener on
/// `address:port` that forwards to `127.0.0.1:target` (`overlay register`, `overlay dev`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Service name (a DNS label).
    pub name: String,
    /// Optional variant tag (a DNS label).
    #[serde(default)]
    pub tag: Option<String>,
    /// The port callers use.
    pub port: u16,
    /// The local port the process listens on; `None` registers the name without a listener
    /// (the service listens on its overlay address itself).
    #[serde(default)]
    pub target: Option<u16>,
    /// Start the listener holding new connections (the process is not ready yet); a later
    /// [`Target`] releases them.
    #[serde(default)]
    pub hold: bool,
}

/// Point a service's listener at a new local port, or hold new connections (`None`) while
/// the process restarts; held connections wait until a target is set again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Service name.
    pub name: String,
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// The new local port, or `None` to hold.
    pub target: Option<u16>,
}

/// After a restart pointed the listener at the new process: let the connections that went to
/// `port` (the old process) finish until `timeout_ms` passes, then close them cleanly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Service name.
    pub name: String,
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// The old process's local port.
    pub port: u16,
    /// How long the old connections may stay.
    pub timeout_ms: u64,
}

/// Captured exchanges and flows (`overlay traffic`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// The inspector's filters, `after` and `limit` as a URL query (`service=api&after=12`).
    #[serde(default)]
    pub query: String,
}

/// The web inspector's URL (`overlay inspect`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspect {}

/// Pause or resume the capture (`overlay traffic --pause`, `--resume`): while paused, new
/// connections are not recorded; connections open when it pauses are recorded to their end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Record (true) or pause (false).
    pub on: bool,
}

/// Remove a local service and its listener (`overlay unregister`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unregister {
    /// Service name.
    pub name: String,
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
}

/// Send the remote environment's callers of `service` (through the relay's front) to this
/// node's instance: every connection, or only requests with `header` (`overlay intercept`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intercept {
    /// The service.
    pub service: String,
    /// `NAME=VALUE`, as the user wrote it (the daemon checks it).
    #[serde(default)]
    pub header: Option<String>,
}

/// End this node's intercept of `service` (`overlay intercept SERVICE --stop`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptStop {
    /// The service.
    pub service: String,
}

/// Every node's intercepts (`overlay intercept --list`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intercepts {}

/// The answer to [`InterceptStop`] (`overlay intercept SERVICE --stop --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptStopped {
    /// The service.
    pub service: String,
    /// Whether this node had intercepted it (and no longer does).
    pub stopped: bool,
}

/// `overlay status --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Whether the relay answers.
    pub state: LinkState,
    /// The node's name.
    pub node: String,
    /// The node's overlay address.
    pub address: Ipv4Addr,
    /// The node's prefix.
    pub prefix: Ipv4Prefix,
    /// The overlay's domain.
    pub domain: String,
    /// The way to the relay.
    pub relay: RelayStatus,
    /// The transport in use (a running daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// The transports allowed.
    pub transport_mode: Mode,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// What only a running daemon knows; absent when the node is down.
    #[serde(flatten)]
    pub running: Option<Running>,
}

/// `state` in `overlay status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// The relay answered within the liveness window.
    Connected,
    /// The daemon runs, the relay has not answered lately.
    Connecting,
    /// No daemon runs.
    Down,
}

/// `relay` in `overlay status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// The relay's UDP endpoint in use (the first known one when down).
    pub endpoint: Option<String>,
    /// The relay's URL for the transport over TCP, if it has one.
    pub url: Option<String>,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<u64>,
    /// Seconds since the relay last sent anything that authenticated.
    #[serde(default)]
    pub last_seen_secs: Option<u64>,
}

/// The part of `overlay status` a running daemon adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Packets dropped, by reason (reasons with none are left out).
    pub drops: BTreeMap<String, u64>,
    /// Quick CPU wake-ups around traffic.
    pub cpu_latency: CpuLatency,
    /// The daemon's process id.
    pub pid: u32,
    /// Routes of another VPN that took the overlay's range or DNS address since the start.
    pub route_conflicts: Vec<String>,
}

/// `cpu_latency` in `overlay status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuLatency {
    /// `auto`, `on` or `off`.
    pub mode: String,
    /// Whether the request is held now.
    pub held: bool,
    /// How many times it was taken.
    pub holds: u64,
    /// The round-trip floor to the relay that `auto` decides by, in microseconds.
    pub relay_rtt_us: Option<u64>,
}

/// The answer to [`Shutdown`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    /// Always true: the daemon stops after answering.
    pub stopping: bool,
}

/// The answer to [`Leave`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// The node that left.
    pub left: String,
}

/// `overlay resolve`: the DNS server's own answer, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveReply {
    /// The name asked about.
    pub name: String,
    /// The rule that decided, in words.
    pub explanation: String,
    /// The query the system resolver would make and its answer; absent for a name that is not
    /// a DNS name.
    #[serde(flatten)]
    pub answer: Option<DnsAnswer>,
}

/// The DNS side of [`ResolveReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// The name the DNS server was asked (after the search domain).
    pub qname: String,
    /// Its reply.
    #[serde(flatten)]
    pub reply: explain::Summary,
    /// What the resolver rules decided.
    pub resolution: Resolution,
}

/// The answer to [`Register`] (`overlay register --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Service name.
    pub name: String,
    /// Tag.
    pub tag: Option<String>,
    /// Its overlay address.
    pub address: Ipv4Addr,
    /// The port callers use.
    pub port: u16,
    /// Its DNS name.
    pub hostname: String,
    /// Where the remote environment calls it back, if the relay offers that.
    pub callback_url: Option<String>,
}

/// The answer to [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retargeted {
    /// Service name.
    pub name: String,
    /// Tag.
    pub tag: Option<String>,
    /// The local port new connections go to; `None` holds them.
    pub target: Option<u16>,
    /// When holding: whether the old process's requests finished within the wait.
    pub drained: bool,
}

/// The answer to [`Drain`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Connections the old process had when the drain began.
    pub open: usize,
    /// Of those, closed by their own ends within the timeout.
    pub drained: usize,
    /// Closed by the drain when the timeout passed.
    pub closed: usize,
    /// Of the closed ones, WebSocket connections that got close code 1012.
    pub websockets: usize,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.drained == 1 { "" } else { "s" };
        write!(
            f,
            "{} connection{s} drained, {} closed",
            self.drained, self.closed
        )?;
        if self.websockets > 0 {
            write!(f, " ({} WebSocket with code 1012)", self.websockets)?;
        }
        Ok(())
    }
}

/// The answer to [`Traffic`]; also the inspector's `/api/exchanges`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficPage {
    /// The records after the query's `after`, oldest first.
    pub records: Vec<Summary>,
    /// The newest record's id (ask with `after=latest` for what comes next).
    pub latest: u64,
    /// Matching records older than this page remain (ask with `before=oldest`).
    #[serde(default)]
    pub more: bool,
    /// The oldest id this page looked at.
    #[serde(default)]
    pub oldest: Option<u64>,
    /// Records that matched (a group counts all of its members).
    #[serde(default)]
    pub matched: usize,
}

/// The answer to [`Inspect`] (`overlay inspect --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectReply {
    /// The inspector's URL; `None` when it does not run.
    pub url: Option<String>,
    /// The token that opens it (with the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The answer to [`Record`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The capture records now.
    pub on: bool,
    /// It recorded before the request.
    pub was: bool,
}

/// The answer to [`Unregister`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unregistered {
    /// The service removed.
    pub removed: String,
    /// Its tag.
    pub tag: Option<String>,
}
