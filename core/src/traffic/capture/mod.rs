//! Traffic capture for the inspector: what a connection carried, as records in a bounded ring.
//!
//! - [`record`]: the exchange and flow records, and their one-line summaries.
//! - [`conn`]: turns one connection's bytes (both directions) into records.
//! - [`tcp`]: passive TCP reassembly from IPv4 packets seen on the TUN.
//! - [`h2`]: HTTP/2 streams (and HPACK) of a connection; [`grpc`] on top of it, with
//!   [`protobuf`] messages decoded without a schema.
//! - [`ring`]: the bounded store (a byte cap; the oldest records go first), its bodies in a
//!   [`bodylog`] written in sequence.
//! - [`filter`]: the inspector's and `overlay traffic`'s filters.
//! - [`mask`]: credentials masked in what the inspector shows.
//! - [`access`]: who may use the inspector (its secret, Host and Origin checks).
//! - [`pcap`]: the pcap file format (`LINKTYPE_RAW`), for `overlay capture`.

pub mod access;
pub mod bodylog;
pub mod conn;
pub mod filter;
pub mod grpc;
pub mod h2;
pub mod mask;
pub mod pcap;
pub mod protobuf;
pub mod record;
pub mod ring;
pub mod schema;
pub mod synth;
pub mod tcp;
#[cfg(test)]
mod tests;
pub mod ws;

pub use conn::ConnectionCapture;
pub use filter::Filter;
pub use record::{
    Body, Direction, FlowEnd, MessageRecord, Process, Record, RecordKind, RemoteCaller, Summary,
};
pub use ring::Ring;
