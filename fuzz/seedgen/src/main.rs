//! Writes the seeds of the fuzz targets into fuzz/seeds/<target>/.
//!
//! Usage: cargo run --manifest-path fuzz/seedgen/Cargo.toml [-- [OUT_DIR] [--only T1,T2]]
//!
//! `--only` writes the seeds of the named targets and leaves the others alone.
//!
//! The join seeds are real requests for the relay key and clock that fuzz_targets/join.rs uses
//! (`RELAY_SECRET`, `NOW`); keep the constants below in step with it. Each run picks fresh
//! ephemeral keys, so the join seeds differ from run to run but are all equally valid. The same
//! holds for the relay_hub seeds (module `hub`), which follow fuzz_targets/relay_hub.rs.

mod hub;
mod other;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use overlay_core::identity::join::{open_request, JoinInitiator, JoinRequest, JoinResponse};
use overlay_core::identity::token::Token;
use overlay_core::identity::wgconfig::{Interface, Peer, WgConfig};
use overlay_core::net::wire::{
    build_echo_request, build_ipv4, build_tcp, build_udp, tcp_flags, IpProtocol,
};
use x25519_dalek::{PublicKey, StaticSecret};

/// Must match fuzz_targets/join.rs.
const NOW: u64 = 1_700_000_000;
const RELAY_SECRET: [u8; 32] = [1; 32];
const NODE_SECRET: [u8; 32] = [2; 32];
const TOKEN_SECRET_B64: &str = "paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU";

/// The targets `--only` names; `None`: all.
static ONLY: OnceLock<Option<Vec<String>>> = OnceLock::new();

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    if ONLY
        .get()
        .and_then(Option::as_ref)
        .is_some_and(|only| !only.iter().any(|t| t == target))
    {
        return;
    }
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
    println!("{target}/{name}: {} bytes", bytes.len());
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn request(name: Option<&str>, hint: Option<&str>) -> JoinRequest {
    serde_json::from_value(serde_json::json!({
        "token_id": "0123456789abcdef",
        "token_secret": TOKEN_SECRET_B64,
        "name": name,
        "hint": hint,
        "timestamp": NOW,
    }))
    .unwrap()
}

fn wg_message(kind: u8, len: usize, receiver_at: usize, receiver: u32) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[0] = kind;
    if receiver_at > 0 {
        d[receiver_at..receiver_at + 4].copy_from_slice(&receiver.to_le_bytes());
    }
    d
}

fn main() {
    let mut out: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--only" {
            let list = args.next().expect("--only needs a list of targets");
            only = Some(list.split(',').map(str::to_string).collect::<Vec<_>>());
        } else {
            out = PathBuf::from(a);
        }
    }
    ONLY.set(only).unwrap();

    // join: valid requests (they open with the target's relay key at NOW) and a response shape.
    let relay = StaticSecret::from(RELAY_SECRET);
    let relay_public = PublicKey::from(&relay).to_bytes();
    let node = StaticSecret::from(NODE_SECRET);
    for (file, req) in [
        ("request-name", request(Some("laptop"), None)),
        ("request-hint", request(None, Some("build-host"))),
        ("request-bare", request(None, None)),
    ] {
        let (_, datagram) =
            JoinInitiator::new(&node, relay_public, &req, &mut rand_core::OsRng).unwrap();
        let opened = open_request(&relay, &datagram, NOW).expect("seed request opens");
        assert!(opened.request == req);
        write(&out, "join", file, &datagram);
        if file == "request-name" {
            let reply = opened.seal_response(
                &JoinResponse::Accepted {
                    node_name: "laptop".into(),
                    address: "100.64.4.1".into(),
                    prefix: "100.64.4.0/26".into(),
                    network: "100.64.0.0/10".into(),
                    domain: "ovl.internal".into(),
                    relay_address: "100.64.0.1".into(),
                    mtu: 1420,
                },
                &mut rand_core::OsRng,
            );
            write(&out, "join", "response-accepted", &reply);
        }
    }

    // datagram: each WireGuard message shape, a join magic, and IPv4 packets the peer table of
    // the target routes each way (a = 100.64.4.0/26, b = 100.64.4.64/26, relay 100.64.0.1).
    write(&out, "datagram", "wg-init", &wg_message(1, 148, 0, 0));
    write(
        &out,
        "datagram",
        "wg-response",
        &wg_message(2, 92, 8, 1 << 8),
    );
    write(&out, "datagram", "wg-cookie", &wg_message(3, 64, 4, 2 << 8));
    write(&out, "datagram", "wg-data", &wg_message(4, 64, 4, 1 << 8));
    write(&out, "datagram", "join-magic", b"OVJ\x01");
    let relay_addr = ip("100.64.0.1");
    write(
        &out,
        "datagram",
        "echo-to-relay",
        &build_echo_request(ip("100.64.4.1"), relay_addr, 7, 1, b"ping-data"),
    );
    write(
        &out,
        "datagram",
        "tcp-a-to-b",
        &build_ipv4(
            ip("100.64.4.1"),
            ip("100.64.4.65"),
            IpProtocol::Tcp,
            &[0; 20],
        ),
    );
    write(
        &out,
        "datagram",
        "udp-spoofed",
        &build_ipv4(ip("10.0.0.1"), ip("100.64.4.65"), IpProtocol::Udp, &[0; 8]),
    );
    let mut options = build_echo_request(ip("100.64.4.70"), relay_addr, 1, 2, b"x");
    // IHL 6: a header with 4 bytes of options (checksums are not recomputed: shape only).
    options[0] = 0x46;
    options.splice(20..20, [1, 1, 1, 0]);
    let total = options.len() as u16;
    options[2..4].copy_from_slice(&total.to_be_bytes());
    write(&out, "datagram", "ipv4-options", &options);
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    write(&out, "datagram", "ipv6", &v6);

    // wire: the packets above, and whole TCP and UDP packets with valid checksums, a SYN, a
    // fragment and an echo request with IP options.
    write(&out, "wire", "ipv6", &v6);
    write(&out, "wire", "ipv4-options", &options);
    let (a, s) = (
        SocketAddrV4::new(ip("100.64.4.1"), 40000),
        SocketAddrV4::new(ip("100.64.0.2"), 8080),
    );
    let ping = build_echo_request(*a.ip(), relay_addr, 7, 1, b"ping-data");
    write(&out, "wire", "echo-request", &ping);
    write(
        &out,
        "wire",
        "tcp-syn",
        &build_tcp(a, s, 1000, tcp_flags::SYN, b""),
    );
    let get = build_tcp(
        a,
        s,
        1001,
        tcp_flags::ACK | tcp_flags::PSH,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    write(&out, "wire", "tcp-data", &get);
    let fin = build_tcp(s, a, 5000, tcp_flags::FIN | tcp_flags::ACK, b"");
    write(&out, "wire", "tcp-fin", &fin);
    let udp = build_udp(*a.ip(), 5353, relay_addr, 4100, br#"{"id":1,"op":"ping"}"#);
    write(&out, "wire", "udp-control", &udp);
    let mut frag = udp.clone();
    frag[6] = 0x20; // more fragments follow
    write(&out, "wire", "udp-fragment", &frag);

    // token: a token as `token create` prints it, an IPv6 one, another version.
    let relay_key = PublicKey::from(&StaticSecret::from([1u8; 32])).to_bytes();
    let token = Token {
        relay_key,
        endpoints: vec!["relay.example.com:51820".into(), "192.0.2.7:51820".into()],
        url: Some("https://relay.example.com/overlay".into()),
        network: "100.64.0.0/10".into(),
        domain: "ovl.internal".into(),
        id: "0123456789abcdef".into(),
        secret: [0xa5; 32],
    };
    write(&out, "token", "token", token.encode().as_bytes());
    let v6 = Token {
        endpoints: vec!["[2001:db8::1]:51820".into()],
        network: "fd00::/64".into(),
        ..token.clone()
    };
    write(
        &out,
        "token",
        "token-v6",
        format!("  {}\n", v6.encode()).as_bytes(),
    );
    write(&out, "token", "version-2", b"ovl2_eyJ9");

    // wgconfig: the file `peer add --wireguard-config` prints, and a hand-written one.
    let config = WgConfig {
        interface: Interface {
            private_key: [3; 32],
            addresses: vec![(ip("100.64.4.1"), 32)],
            mtu: Some(1420),
            listen_port: Some(51820),
            dns: vec!["100.100.100.100".into(), "ovl.internal".into()],
        },
        peers: vec![
            Peer {
                public_key: [1; 32],
                preshared_key: Some([4; 32]),
                endpoint: Some("10.77.0.1:51820".into()),
                allowed_ips: vec!["100.64.0.0/10".parse().unwrap()],
                persistent_keepalive: Some(25),
            },
            Peer {
                public_key: [2; 32],
                ..Peer::default()
            },
        ],
    };
    write(&out, "wgconfig", "rendered", config.render(true).as_bytes());
    write(
        &out,
        "wgconfig",
        "hand-written",
        b"# comment\n[interface]\nprivatekey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= ; inline\n\
          Address = 100.64.4.1, 100.64.4.2/31\nTable = off\nPostUp = true\n\n\
          [Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\r\n\
          Endpoint = [2001:db8::1]:51820\nAllowedIPs = 100.64.0.0/10,10.0.0.0/8\n\
          PersistentKeepalive = off\n",
    );

    hub::seeds(&out);
    other::seeds(&out);
}
