//! Names: the service registry the relay keeps and nodes mirror, the node's DNS answers and
//! its resolver for everything else.

pub mod dns;
pub mod registry;
pub mod resolver;
