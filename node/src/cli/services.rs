//! `overlay services`, `overlay resolve`, `overlay register`, `overlay unregister`.

use crate::daemon::api::{self, Request};
use crate::paths;
use clap::Args;

/// Flags of `overlay services`.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `overlay register`.
#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Service name (lower-case letters, digits, '-').
    name: String,
    /// The port callers use.
    #[arg(long)]
    port: u16,
    /// A variant tag (`v2` makes it reachable as `v2.NAME`).
    #[arg(long)]
    tag: Option<String>,
    /// Forward the overlay address to this local port (127.0.0.1); without it the service
    /// listens on its overlay address itself.
    #[arg(long)]
    target: Option<u16>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `overlay unregister`.
#[derive(Args, Debug)]
pub struct UnregisterArgs {
    /// Service name.
    name: String,
    /// The variant tag.
    #[arg(long)]
    tag: Option<String>,
}

async fn call(req: Request) -> anyhow::Result<serde_json::Value> {
    api::call(&paths::control_socket(), &req).await
}

/// `overlay services`.
pub async fn list(args: ServicesArgs) -> anyhow::Result<()> {
    let data = call(Request::Services).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<6} {:<12} {:<7} {:<21} {:<32} CALLBACK",
        "NAME", "TAG", "NODE", "WHERE", "ADDRESS", "HOSTNAME"
    );
    for s in data.as_array().into_iter().flatten() {
        let f = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        println!(
            "{:<16} {:<6} {:<12} {:<7} {:<21} {:<32} {}",
            f("name"),
            f("tag"),
            f("node"),
            f("where"),
            // A name found on demand has no port: any port reaches that host.
            match s["port"].as_u64() {
                Some(p) => format!("{}:{p}", f("address")),
                None => f("address"),
            },
            f("hostname"),
            f("callback_url")
        );
    }
    Ok(())
}

/// `overlay resolve NAME`.
pub async fn resolve(name: String) -> anyhow::Result<()> {
    let data = call(Request::Resolve { name }).await?;
    println!("{}", data["explanation"].as_str().unwrap_or_default());
    // The DNS server's answer to the name the system resolver asks.
    if let Some(qname) = data["qname"].as_str() {
        let answers: Vec<&str> = data["answers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        let rcode = data["rcode"].as_str().unwrap_or("no answer");
        if answers.is_empty() {
            println!("{qname}: {rcode}");
        }
        for a in answers {
            println!("{qname}: {a}");
        }
    }
    Ok(())
}

/// `overlay register`.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let data = call(Request::Register {
        name: args.name,
        tag: args.tag,
        port: args.port,
        target: args.target,
        hold: false,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        println!(
            "{} is at {}:{} ({})",
            data["hostname"].as_str().unwrap_or_default(),
            data["address"].as_str().unwrap_or_default(),
            data["port"],
            match data["callback_url"].as_str() {
                Some(u) => format!("callback {u}"),
                None => "no callback address".into(),
            }
        );
    }
    Ok(())
}

/// `overlay unregister`.
pub async fn unregister(args: UnregisterArgs) -> anyhow::Result<()> {
    call(Request::Unregister {
        name: args.name.clone(),
        tag: args.tag,
    })
    .await?;
    println!("unregistered {}", args.name);
    Ok(())
}
