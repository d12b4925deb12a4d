//! The command-line clients: each subcommand that asks the daemon, the relay (through the
//! daemon) or an `overlay dev` session for something and prints the answer. The servers they
//! talk to are in `crate::daemon`, `crate::dev` and `crate::traffic`.

pub mod dev;
pub mod intercept;
pub mod join;
pub mod lifecycle;
pub mod ps;
pub mod services;
pub mod status;
pub mod traffic;
