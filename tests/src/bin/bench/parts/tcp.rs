//! Part `tcp` (issue 20): the overlay over a WebSocket stream where UDP cannot pass, against
//! UDP in the same run, and how fast `auto` falls back once UDP to the relay is dropped.

use super::dataplane::{overlay_setup, runs, world};
use crate::ctx::{run as run_in, Ctx};
use crate::ovl::RELAY_PORT;
use crate::report::{host_desc, now_utc, write_json};
use crate::stats::{fmt, met, ratio};
use serde::Serialize;

const TCP_PORT: u16 = 8300;

#[derive(Serialize)]
struct Targets {
    tcp_udp_ratio: f64,
    fallback_first_datagram_ms: f64,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    udp_mbps: Option<f64>,
    tcp_mbps: Option<f64>,
    tcp_udp_ratio: Option<f64>,
    fallback_first_datagram_ms: Option<f64>,
    setups: Vec<crate::net::Setup>,
    targets: Targets,
}

/// The `us=N` of the node's "first datagram over the stream" log line, in ms.
fn fallback_ms(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|l| l.contains("first datagram over the stream"))?;
    let plain: String = strip_ansi(line);
    let us = plain
        .split_whitespace()
        .find_map(|w| w.strip_prefix("us="))?;
    us.trim_matches(|c: char| !c.is_ascii_digit())
        .parse::<f64>()
        .ok()
        .map(|us| (us / 10.0).round() / 100.0)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn run(ctx: &Ctx) {
    tracing::info!(
        "part tcp: {} s x {} iperf3 runs per setup, UDP and the stream in the same run",
        ctx.o.time,
        runs(ctx)
    );
    let dp = world(ctx, "tcp");
    let hub = dp.w.hub.ip.clone();
    let url = format!("http://{hub}:{TCP_PORT}/overlay");
    let listen = format!("{hub}:{TCP_PORT}");
    let relay_flags = ["--tcp-listen", listen.as_str()];
    let mut setups = vec![overlay_setup(
        ctx,
        &dp,
        "tcp_udp",
        "overlay over UDP (baseline)",
        &["--transport", "udp"],
        false,
        &relay_flags,
        None,
        || {},
    )];
    setups.push(overlay_setup(
        ctx,
        &dp,
        "tcp_tcp",
        "overlay over the stream (--transport tcp)",
        &["--transport", "tcp", "--relay-url", &url],
        false,
        &relay_flags,
        None,
        || {},
    ));
    // auto with UDP to the relay dropped in a: the node gives up on UDP after ~3 s and logs how
    // long the first datagram over the stream took after that.
    let nft = format!(
        "nft -f - <<'NFT'\ntable inet ovbtcp {{ chain out {{ type filter hook output priority 0; ip daddr {hub} udp dport {RELAY_PORT} drop; }}; }}\nNFT"
    );
    setups.push(overlay_setup(
        ctx,
        &dp,
        "tcp_fallback",
        "auto, UDP dropped in a (ping only)",
        &["--transport", "auto", "--relay-url", &url],
        true,
        &relay_flags,
        Some("info"),
        || {
            if !run_in(&dp.w, &dp.a, 10, &nft).status.success() {
                ctx.fail("tcp", "nft could not drop UDP to the relay in a");
            }
        },
    ));
    let fb = std::fs::read_to_string(ctx.log("node-tcp_fallback-a.log"))
        .ok()
        .and_then(|l| fallback_ms(&l));
    let tput = |id: &str| {
        setups
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.throughput_mbps)
    };
    let r = ratio(tput("tcp_tcp"), tput("tcp_udp"));
    let (when, host) = (now_utc(), host_desc());
    let t = super::dataplane::setups_table(&setups);
    let what = format!(
        "iperf3 TCP, 1 stream, {} s per run (after 1 s warm-up), median of {} run(s)",
        ctx.o.time,
        runs(ctx)
    );
    let lines = format!(
        "stream / UDP throughput: {} (target >= 0.5: {})\n\
         giving up on UDP -> first datagram over the stream: {} ms (target < 1000: {})",
        fmt(r, 3),
        met(r, |v| v >= 0.5),
        fmt(fb, 2),
        met(fb, |v| v < 1000.0)
    );
    println!("\ntcp: {host}\n{what}\n\n{}\n{lines}", t.plain());
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {what}.\n\n{}\n{lines}",
        t.markdown()
    );
    write_json(
        &ctx.out,
        "tcp",
        &Results {
            part: "tcp",
            time: when,
            host,
            udp_mbps: tput("tcp_udp"),
            tcp_mbps: tput("tcp_tcp"),
            tcp_udp_ratio: r,
            fallback_first_datagram_ms: fb,
            setups,
            targets: Targets {
                tcp_udp_ratio: 0.5,
                fallback_first_datagram_ms: 1000.0,
            },
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_line() {
        let l = "x\n\u{1b}[2m2026\u{1b}[0m INFO first datagram over the stream \u{1b}[3mus\u{1b}[0m\u{1b}[2m=\u{1b}[0m640\n";
        assert_eq!(fallback_ms(l), Some(0.64));
        assert_eq!(fallback_ms("nothing"), None);
    }
}
