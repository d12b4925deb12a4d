//! overlay-sys: the operating-system and command-line edge that the node and the relay share.
//!
//! `overlay-core` decides and never touches the system; this crate is the small set of system
//! calls both binaries make the same way: socket buffer sizes and fragmentation (`sockbuf`),
//! batched UDP with GRO and GSO (`udp`), a wake-up for threads that sleep in `poll(2)` (`wake`),
//! crash-safe state files (`statefile`), interface addresses through rtnetlink (`netlink`), the local API's Unix-socket transport with its
//! peer-credential check (`local_api`), and the CLI reference, man page and completions made
//! from each binary's clap definition (`cliref`).

pub mod cliref;
pub mod local_api;
pub mod netlink;
pub mod sockbuf;
pub mod statefile;
pub mod udp;
pub mod wake;
