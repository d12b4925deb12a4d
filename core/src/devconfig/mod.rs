//! `overlay dev` configuration: `overlay.toml`, Procfiles, `.env` files and the environment each
//! service gets.
//!
//! Everything here is pure: parsers take the file's text (and its name, for messages), so every
//! refusal carries `file:line: reason` and is decided before any process starts. The driver in
//! `node/src/dev` reads the files, spawns the processes and calls back in here for decisions
//! (start order, environment, which files a `watch` glob matches, restart backoff, log lines).
//!
//! ```toml
//! [services.api]
//! command = "./target/debug/api"
//! build = "cargo build --bin api"
//! port = 8080
//! env = { RUST_LOG = "debug" }
//! depends_on = ["db"]
//! health = { http = "/healthz", timeout = "30s" }   # or { tcp = true }, or { tcp = false }
//! watch = ["src/**"]
//! tag = "v2"
//! name = "api"
//! stop_timeout = "5s"
//! drain = "10s"
//! ```

pub mod dotenv;
pub mod env;
pub mod glob;
pub mod health;
pub mod logline;
mod order;
mod procfile;
pub mod sockets;
mod toml_file;

#[cfg(test)]
mod tests;

pub use glob::Glob;

use std::time::Duration;

/// The port callers use when a service does not name one (every Procfile entry, and
/// `overlay.toml` services without `port`).
pub const DEFAULT_PORT: u16 = 80;

/// How long a service has to become healthy after it starts, unless `health.timeout` says.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a service has to exit after SIGTERM before it gets SIGKILL, unless `stop_timeout` says.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connections the old process has may stay open after a restart, unless `drain`
/// says; then they are closed (WebSocket clients get close code 1012).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// The longest wait between restarts of a service that keeps crashing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the runner knows a started process is ready for traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// A TCP connection to `127.0.0.1:$PORT` succeeds.
    Tcp,
    /// `GET path` on `127.0.0.1:$PORT` answers with a status below 500.
    Http(String),
    /// Ready as soon as it is started (`health = { tcp = false }`: workers that do not listen).
    None,
}

/// One service of a configuration, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its key in the file (`[services.KEY]` or the Procfile name): what `overlay restart`,
    /// `overlay logs` and `depends_on` use. Unique within a file.
    pub key: String,
    /// The service name callers use (a DNS label).
    pub name: String,
    /// The variant tag (a DNS label), if any.
    pub tag: Option<String>,
    /// The shell command that runs it (`sh -c`).
    pub command: String,
    /// The shell command that builds it, run before every start.
    pub build: Option<String>,
    /// The port callers use on its overlay address.
    pub port: u16,
    /// Its own environment (wins over `.env` and `SERVICE_*`).
    pub env: Vec<(String, String)>,
    /// The services that must be healthy before it starts.
    pub depends_on: Vec<Dependency>,
    /// The readiness check.
    pub health: Health,
    /// Whether `health` was written down: an implicit TCP check that times out only warns
    /// (the service may not listen at all), an explicit one fails the start.
    pub health_explicit: bool,
    /// How long the readiness check may take.
    pub health_timeout: Duration,
    /// How long the process has between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// How long the old process keeps its open connections after a restart.
    pub drain: Duration,
    /// File globs, relative to the config's directory, that restart it when they change.
    pub watch: Vec<Glob>,
    /// The line of the file where it is defined.
    pub line: usize,
}

impl ServiceSpec {
    /// A service with defaults for everything but key, name and command (`overlay run`, tests).
    pub fn new(key: &str, command: &str) -> Self {
        ServiceSpec {
            key: key.to_string(),
            name: key.to_string(),
            tag: None,
            command: command.to_string(),
            build: None,
            port: DEFAULT_PORT,
            env: Vec::new(),
            depends_on: Vec::new(),
            health: Health::Tcp,
            health_explicit: false,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            drain: DEFAULT_DRAIN,
            watch: Vec::new(),
            line: 0,
        }
    }

    /// Its DNS name without the domain: `name` or `tag.name`.
    pub fn label(&self) -> String {
        match &self.tag {
            Some(t) => format!("{t}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Its DNS name in `domain`: `name.domain` or `tag.name.domain`.
    pub fn hostname(&self, domain: &str) -> String {
        let domain = domain.trim_end_matches('.');
        if domain.is_empty() {
            self.label()
        } else {
            format!("{}.{domain}", self.label())
        }
    }
}

/// One `depends_on` entry: the key of another service, and the line it is written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The key of the service depended on.
    pub key: String,
    /// Where the entry is written.
    pub line: usize,
}

/// A validated configuration: the services in start order (dependencies first, then file order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevConfig {
    /// The file it came from, as given (for messages).
    pub file: String,
    /// The services, in the order they start.
    pub services: Vec<ServiceSpec>,
}

impl DevConfig {
    /// Parses `text`, read from `file`: TOML when the name ends in `.toml`, a Procfile otherwise.
    pub fn parse(file: &str, text: &str) -> Result<DevConfig, ConfigError> {
        if file.ends_with(".toml") {
            Self::parse_toml(file, text)
        } else {
            Self::parse_procfile(file, text)
        }
    }

    /// Parses an `overlay.toml`.
    pub fn parse_toml(file: &str, text: &str) -> Result<DevConfig, ConfigError> {
        let services = toml_file::parse(file, text)?;
        Self::finish(file, services)
    }

    /// Parses a Procfile (`name: command` per line).
    pub fn parse_procfile(file: &str, text: &str) -> Result<DevConfig, ConfigError> {
        let services = procfile::parse(file, text)?;
        Self::finish(file, services)
    }

    /// A configuration of services built in code (`overlay run`), checked like a file.
    pub fn from_services(file: &str, services: Vec<ServiceSpec>) -> Result<DevConfig, ConfigError> {
        Self::finish(file, services)
    }

    fn finish(file: &str, services: Vec<ServiceSpec>) -> Result<DevConfig, ConfigError> {
        if services.is_empty() {
            return Err(ConfigError::new(
                file,
                1,
                "there are no services; add a [services.NAME] table with a command",
            ));
        }
        order::check_unique(file, &services)?;
        let services = order::start_order(file, services)?;
        Ok(DevConfig {
            file: file.to_string(),
            services,
        })
    }

    /// The services whose name is their key mapped by [`dns_name`] (`clock_worker` runs as
    /// `clock-worker`), to be said once at start.
    pub fn mapped_names(&self) -> Vec<&ServiceSpec> {
        self.services
            .iter()
            .filter(|s| s.key != s.name && dns_name(&s.key).as_deref() == Ok(s.name.as_str()))
            .collect()
    }

    /// The service with this key, or with this `name` / `tag.name` when that is unambiguous.
    pub fn find(&self, wanted: &str) -> Option<&ServiceSpec> {
        if let Some(s) = self.services.iter().find(|s| s.key == wanted) {
            return Some(s);
        }
        let mut by_label = self.services.iter().filter(|s| s.label() == wanted);
        match (by_label.next(), by_label.next()) {
            (Some(s), None) => Some(s),
            _ => None,
        }
    }
}

/// Why a configuration was refused: where, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// The 1-based line.
    pub line: usize,
    /// One sentence: what is wrong and what to do.
    pub reason: String,
}

impl ConfigError {
    /// An error at `line` of `file`.
    pub fn new(file: &str, line: usize, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            line: line.max(1),
            reason: reason.into(),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Whether `s` is usable as a service key: 1 to 63 of `A-Z a-z 0-9 - _` (it names log files and
/// is typed on the command line).
pub fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The DNS name of a Procfile process type or an `overlay.toml` key, by the one rule overlay uses:
/// lower case, `_` as `-` (`clock_worker` and `Clock_Worker` are `clock-worker`). `Err` carries
/// the mapped text when even that is no DNS label (`_web` maps to `-web`).
pub fn dns_name(key: &str) -> Result<String, String> {
    let mapped = key.to_ascii_lowercase().replace('_', "-");
    if valid_label(&mapped) {
        Ok(mapped)
    } else {
        Err(mapped)
    }
}

/// Whether `s` is a DNS label as overlay uses them (see [`crate::names::registry::valid_label`]).
pub fn valid_label(s: &str) -> bool {
    crate::names::registry::valid_label(s)
}

/// Whether `s` is an environment variable name: a letter or `_`, then letters, digits or `_`.
pub fn valid_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// How long to wait before restarting a service that crashed `crashes` times in a row:
/// 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
pub fn restart_backoff(crashes: u32) -> Duration {
    let exp = crashes.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// How long a process has to stay up for its crash count to reset.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
