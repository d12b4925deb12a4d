//! `overlay dev` and friends: the local service runner (docs/dev.md).
//!
//! The decisions live in `overlay_core::devconfig` (config files, start order, environment,
//! globs, backoff, log line format); this module is the driver:
//! - [`cli`]: the subcommands `dev`, `run`, `logs`, `ps`, `restart`, `stop`, `start`;
//! - [`supervisor`]: one task per service, owning its process and registration;
//! - [`service`]: the commands, state and handle of a service task;
//! - [`process`]: process groups, builds, health checks;
//! - [`registrar`]: the requests to the node daemon (register, hold/target, unregister);
//! - [`output`] and [`logview`]: the interleaved terminal output, log files, `overlay logs`;
//! - [`ps`]: the `overlay ps` table;
//! - [`session`]: the per-user socket `overlay restart` talks to;
//! - [`watch`]: restarts on file changes;
//! - [`user`]: dropping from sudo to the invoking user, and that user's directories.

mod cli;
mod logview;
mod output;
mod process;
mod ps;
mod registrar;
mod service;
mod session;
mod supervisor;
mod user;
mod watch;

pub use cli::{
    control, dev, logs, ps, run, Action, DevArgs, LogsArgs, PsArgs, RunArgs, ServiceArg,
};
