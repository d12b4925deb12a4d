//! A simulated node: its own boringtun `Tunn` towards the hub, at an outer address.

use super::{secret, Sim};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use std::net::{Ipv4Addr, SocketAddr};

/// What a node received (decrypted packets) and what the hub sent to others meanwhile.
pub type Exchange = (Vec<Vec<u8>>, Vec<(SocketAddr, Vec<u8>)>);

/// A node with static key [`secret`]`(key)`, at outer address `10.0.0.<key>:<port>`.
pub struct SimNode {
    /// Its tunnel to the hub.
    pub tunn: Tunn,
    /// Where it sends from.
    pub addr: SocketAddr,
    /// Its overlay address.
    pub ip: Ipv4Addr,
    buf: Vec<u8>,
}

impl SimNode {
    /// A node with key `key` for the hub with public key `relay`.
    pub fn new(relay: [u8; 32], key: u8, ip: Ipv4Addr, port: u16) -> SimNode {
        SimNode {
            tunn: Tunn::new(
                secret(key),
                PublicKey::from(relay),
                None,
                None,
                u32::from(key),
                None,
            ),
            addr: SocketAddr::from(([10, 0, 0, key], port)),
            ip,
            buf: vec![0; 65536],
        }
    }

    /// Sends `packet` through the tunnel and runs the exchange until quiet.
    pub fn send(&mut self, sim: &mut Sim, packet: &[u8]) -> Exchange {
        let mut to_hub = Vec::new();
        if let TunnResult::WriteToNetwork(d) = self.tunn.encapsulate(packet, &mut self.buf) {
            to_hub.push(d.to_vec());
        }
        self.pump(sim, to_hub)
    }

    /// Hands `to_hub` to the hub and whatever the node answers, until quiet (at most 20 rounds).
    pub fn pump(&mut self, sim: &mut Sim, mut to_hub: Vec<Vec<u8>>) -> Exchange {
        let mut received = Vec::new();
        let mut others = Vec::new();
        for _ in 0..20 {
            if to_hub.is_empty() {
                break;
            }
            let mut out = Vec::new();
            for d in to_hub.drain(..) {
                out.extend(sim.datagram(self.addr, &d));
            }
            for (to, d) in out {
                if to != self.addr {
                    others.push((to, d));
                    continue;
                }
                let (back, got) = self.receive(&d);
                to_hub.extend(back);
                received.extend(got);
            }
        }
        (received, others)
    }

    /// Decrypts one datagram from the hub: what the node sends back, and the packets it got.
    pub fn receive(&mut self, d: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut back = Vec::new();
        let mut got = Vec::new();
        let mut r = self.tunn.decapsulate(None, d, &mut self.buf);
        loop {
            match r {
                TunnResult::WriteToNetwork(p) => back.push(p.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) => got.push(p.to_vec()),
                _ => break,
            }
            r = self.tunn.decapsulate(None, &[], &mut self.buf);
        }
        (back, got)
    }

    /// A fresh handshake initiation, as it goes on the wire (and as an eavesdropper records it).
    pub fn initiation(&mut self) -> Vec<u8> {
        match self.tunn.format_handshake_initiation(&mut self.buf, true) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => Vec::new(),
        }
    }
}
