//! The node's sans-IO side: its tunnel to the relay ([`tunnel`]).

pub mod cpu_latency;
pub mod tunnel;

#[cfg(test)]
mod tests;

pub use tunnel::{
    Config, Counters, Dropped, Event, Next, Outbound, Received, Status, Transmit, Tunnel, Via,
};
