//! `overlay status`: the connection state, from the daemon.

use crate::daemon::api::{self, Request};
use crate::paths;
use crate::settings::NodeFiles;
use clap::Args;

/// Flags of `overlay status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the daemon's status.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let data = match api::call(&paths::control_socket(), &Request::Status).await {
        Ok(d) => d,
        Err(e) => {
            // No daemon: say so, with what the node would be, rather than fail.
            let Ok(s) = NodeFiles::new(&paths::state_dir()).load() else {
                return Err(e);
            };
            serde_json::json!({
                "state": "down",
                "node": s.name,
                "address": s.address.to_string(),
                "prefix": s.prefix.to_string(),
                "domain": s.domain,
                "relay": {"endpoint": s.endpoints.first(), "url": s.url, "last_handshake_secs": null},
                "transport_mode": s.transport,
                "rx_bytes": 0,
                "tx_bytes": 0,
            })
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    let s = |k: &str| {
        data.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let relay = data.get("relay");
    let endpoint = relay
        .and_then(|r| r.get("endpoint"))
        .and_then(|v| v.as_str())
        .unwrap_or("-");
    let hs = relay
        .and_then(|r| r.get("last_handshake_secs"))
        .and_then(|v| v.as_u64())
        .map(|s| format!("{s}s ago"))
        .unwrap_or_else(|| "never".into());
    let n = |k: &str| data.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    println!("state:     {}", s("state"));
    println!("node:      {}", s("node"));
    println!("address:   {} (prefix {})", s("address"), s("prefix"));
    println!("domain:    {}", s("domain"));
    let cpu = data.get("cpu_latency");
    let cpu_u64 = |k: &str| cpu.and_then(|c| c.get(k)).and_then(|v| v.as_u64());
    let rtt = cpu_u64("relay_rtt_us")
        .map(|us| format!(", round trip {us} µs"))
        .unwrap_or_default();
    println!("relay:     {endpoint}, last handshake {hs}{rtt}");
    for c in data
        .get("route_conflicts")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
    {
        println!("conflict:  {c}");
    }
    let url = relay.and_then(|r| r.get("url")).and_then(|v| v.as_str());
    let mode = s("transport_mode");
    match (data.get("transport").and_then(|v| v.as_str()), url) {
        (Some("tcp"), Some(u)) => println!("transport: tcp, over {u} (allowed: {mode})"),
        (Some(t), Some(u)) => println!("transport: {t} (allowed: {mode}; relay URL {u})"),
        (Some(t), None) => println!("transport: {t} (the relay has no URL for tcp)"),
        (None, _) => {}
    }
    println!(
        "traffic:   rx {} bytes, tx {} bytes",
        n("rx_bytes"),
        n("tx_bytes")
    );
    if let Some(mode) = cpu.and_then(|c| c.get("mode")).and_then(|v| v.as_str()) {
        let held = cpu.and_then(|c| c.get("held")).and_then(|v| v.as_bool()) == Some(true);
        println!(
            "cpu wake:  {mode}; quick wake-ups {} (taken {} times)",
            if held { "held now" } else { "not held" },
            cpu_u64("holds").unwrap_or(0)
        );
    }
    Ok(())
}
