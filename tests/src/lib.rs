//! End-to-end test worlds: network namespaces joined by a bridge, running the real binaries.
//!
//! A [`World`] owns everything it creates (namespaces, `/etc/netns/NAME` files, processes,
//! temporary directories) and removes all of it on drop, also when a test panics. Addresses
//! exist only inside the namespaces, so the host's routes and DNS are never touched.

pub mod overlay;
pub mod world;

pub use world::{Host, World};
