//! `overlay status`: the connection state, from the daemon.

use crate::control::{self, Request};
use crate::paths;
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
    let data = control::call(&paths::control_socket(), &Request::Status).await?;
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
    println!("relay:     {endpoint}, last handshake {hs}");
    println!(
        "traffic:   rx {} bytes, tx {} bytes",
        n("rx_bytes"),
        n("tx_bytes")
    );
    Ok(())
}
