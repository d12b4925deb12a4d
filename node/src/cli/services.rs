//! `overlay services`, `overlay resolve`, `overlay register`, `overlay unregister`.

use crate::daemon::api;
use clap::Args;
use overlay_core::api::daemon::{Register, Resolve, Services, Unregister};
use overlay_sys::local_api::to_json_pretty;

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

/// `overlay services`.
pub async fn list(args: ServicesArgs) -> anyhow::Result<()> {
    let list = api::call(Services {}).await?;
    if args.json {
        println!("{}", to_json_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<6} {:<12} {:<7} {:<21} {:<32} CALLBACK",
        "NAME", "TAG", "NODE", "WHERE", "ADDRESS", "HOSTNAME"
    );
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for s in &list {
        println!(
            "{:<16} {:<6} {:<12} {:<7} {:<21} {:<32} {}",
            s.name,
            or_dash(&s.tag),
            or_dash(&s.node),
            s.where_.as_str(),
            // A name found on demand has no port: any port reaches that host.
            match s.port {
                Some(p) => format!("{}:{p}", s.address),
                None => s.address.to_string(),
            },
            s.hostname,
            or_dash(&s.callback_url)
        );
    }
    Ok(())
}

/// `overlay resolve NAME`.
pub async fn resolve(name: String) -> anyhow::Result<()> {
    let r = api::call(Resolve { name }).await?;
    println!("{}", r.explanation);
    // The DNS server's answer to the name the system resolver asks.
    if let Some(a) = r.answer {
        if a.reply.answers.is_empty() {
            println!("{}: {}", a.qname, a.reply.rcode);
        }
        for answer in &a.reply.answers {
            println!("{}: {answer}", a.qname);
        }
    }
    Ok(())
}

/// `overlay register`.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let r = api::call(Register {
        name: args.name,
        tag: args.tag,
        port: args.port,
        target: args.target,
        hold: false,
    })
    .await?;
    if args.json {
        println!("{}", to_json_pretty(&r)?);
    } else {
        println!(
            "{} is at {}:{} ({})",
            r.hostname,
            r.address,
            r.port,
            match &r.callback_url {
                Some(u) => format!("callback {u}"),
                None => "no callback address".into(),
            }
        );
    }
    Ok(())
}

/// `overlay unregister`.
pub async fn unregister(args: UnregisterArgs) -> anyhow::Result<()> {
    api::call(Unregister {
        name: args.name.clone(),
        tag: args.tag,
    })
    .await?;
    println!("unregistered {}", args.name);
    Ok(())
}
