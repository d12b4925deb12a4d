//! Who may join and as what: WireGuard keys, join tokens, the join handshake and the wg-quick
//! format for stock WireGuard peers.

pub mod join;
pub mod key;
pub mod token;
pub mod wgconfig;
