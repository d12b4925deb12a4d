//! `overlay dev` and friends: the local service runner (docs/dev.md).
//!
//! The decisions live in `overlay_core::devconfig` (config files, start order, environment,
//! globs, backoff, log line format); this module is the driver:
//! - [`cli`]: the subcommands `dev` and `run` (their clients `logs`, `ps`, `restart`, `stop`,
//!   `start` are in `crate::cli::dev`);
//! - [`supervisor`]: one task per service, owning its process and registration;
//! - [`service`]: the commands, state and handle of a service task;
//! - [`process`]: process groups, builds, health checks;
//! - [`registrar`]: the requests to the node daemon (register, hold/target, unregister);
//! - [`output`] and [`logview`]: the interleaved terminal output, log files, `overlay logs`;
//! - [`session`]: the per-user socket `overlay restart` talks to;
//! - [`watch`]: restarts on file changes;
//! - [`user`]: dropping from sudo to the invoking user, and that user's directories.

mod cli;
pub mod logview;
pub mod output;
mod process;
mod registrar;
mod service;
pub mod session;
pub mod supervisor;
pub mod user;
mod watch;

pub use cli::{dev, run, DevArgs, RunArgs};
