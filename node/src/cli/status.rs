//! `overlay status`: the connection state, from the daemon.

use crate::daemon::api;
use crate::paths;
use crate::settings::NodeFiles;
use clap::Args;
use overlay_core::api::daemon::{LinkState, RelayStatus, Status, StatusReply};
use overlay_core::transport::stream::transport::Transport;
use overlay_sys::local_api::{to_json_pretty, ApiError};

/// Flags of `overlay status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the daemon's status.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let st = match api::call(Status {}).await {
        Ok(st) => st,
        // No daemon: say so, with what the node would be, rather than fail. (A daemon that
        // refuses this user or does not answer is an error, not a node that is down.)
        Err(e @ ApiError::NotRunning { .. }) => {
            let Ok(s) = NodeFiles::new(&paths::state_dir()).load() else {
                return Err(e.into());
            };
            StatusReply {
                state: LinkState::Down,
                node: s.name,
                address: s.address,
                prefix: s.prefix,
                domain: s.domain,
                relay: RelayStatus {
                    endpoint: s.endpoints.first().cloned(),
                    url: s.url,
                    last_handshake_secs: None,
                    last_seen_secs: None,
                },
                transport: None,
                transport_mode: s.transport,
                rx_bytes: 0,
                tx_bytes: 0,
                running: None,
            }
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", to_json_pretty(&st)?);
    } else {
        print!("{}", text(&st));
    }
    Ok(())
}

/// The status as lines for a person.
fn text(st: &StatusReply) -> String {
    let state = match st.state {
        LinkState::Connected => "connected",
        LinkState::Connecting => "connecting",
        LinkState::Down => "down",
    };
    let endpoint = st.relay.endpoint.as_deref().unwrap_or("-");
    let hs = st
        .relay
        .last_handshake_secs
        .map(|s| format!("{s}s ago"))
        .unwrap_or_else(|| "never".into());
    let cpu = st.running.as_ref().map(|r| &r.cpu_latency);
    let rtt = cpu
        .and_then(|c| c.relay_rtt_us)
        .map(|us| format!(", round trip {us} µs"))
        .unwrap_or_default();
    let mut out = format!(
        "state:     {state}\nnode:      {}\naddress:   {} (prefix {})\ndomain:    {}\n\
         relay:     {endpoint}, last handshake {hs}{rtt}\n",
        st.node, st.address, st.prefix, st.domain
    );
    for c in st.running.iter().flat_map(|r| &r.route_conflicts) {
        out.push_str(&format!("conflict:  {c}\n"));
    }
    let mode = st.transport_mode;
    match (st.transport, &st.relay.url) {
        (Some(Transport::Tcp), Some(u)) => {
            out.push_str(&format!("transport: tcp, over {u} (allowed: {mode})\n"))
        }
        (Some(t), Some(u)) => out.push_str(&format!(
            "transport: {t} (allowed: {mode}; relay URL {u})\n"
        )),
        (Some(t), None) => {
            out.push_str(&format!("transport: {t} (the relay has no URL for tcp)\n"))
        }
        (None, _) => {}
    }
    out.push_str(&format!(
        "traffic:   rx {} bytes, tx {} bytes\n",
        st.rx_bytes, st.tx_bytes
    ));
    if let Some(c) = cpu {
        out.push_str(&format!(
            "cpu wake:  {}; quick wake-ups {} (taken {} times)\n",
            c.mode,
            if c.held { "held now" } else { "not held" },
            c.holds
        ));
    }
    out
}
