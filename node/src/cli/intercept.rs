//! `overlay intercept`: the remote environment's callers of a service reach this laptop's
//! instance, all of them or only requests with a header; `--list` shows every laptop's
//! intercepts, `--stop` ends this one's.

use crate::daemon::api;
use clap::Args;
use overlay_core::api::daemon::{Intercept, InterceptStop, Intercepts};
use overlay_sys::local_api::to_json_pretty;

/// Flags of `overlay intercept`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("mode").args(["stop", "list"]))]
pub struct InterceptArgs {
    /// The service (a catalog service with a front on the relay) that this laptop runs with
    /// `overlay dev` or `overlay run`.
    #[arg(required_unless_present = "list")]
    service: Option<String>,
    /// Only requests carrying this header with exactly this value (per request on HTTP/1.1,
    /// per stream on HTTP/2 and gRPC); without it, every connection.
    #[arg(long, value_name = "NAME=VALUE", conflicts_with_all = ["stop", "list"])]
    header: Option<String>,
    /// End this laptop's intercept of SERVICE: its callers go back to the remote service.
    #[arg(long)]
    stop: bool,
    /// List the active intercepts of every laptop, with their owner.
    #[arg(long)]
    list: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `overlay intercept`.
pub async fn run(args: InterceptArgs) -> anyhow::Result<()> {
    if args.list {
        let list = api::call(Intercepts {}).await?;
        if args.json {
            println!("{}", to_json_pretty(&list)?);
            return Ok(());
        }
        if list.is_empty() {
            println!("no intercepts: every front forwards to its remote service");
            return Ok(());
        }
        println!("{:<20} {:<16} {:<32} SINCE", "SERVICE", "NODE", "REQUESTS");
        for i in list {
            let what = match &i.header {
                Some(h) => format!("with {h}"),
                None => "all (no header)".into(),
            };
            println!(
                "{:<20} {:<16} {:<32} {}",
                i.service,
                i.node,
                what,
                ago(i.since)
            );
        }
        return Ok(());
    }
    // clap makes SERVICE required without --list.
    let service = args.service.unwrap_or_default();
    if args.stop {
        let stopped = api::call(InterceptStop {
            service: service.clone(),
        })
        .await?;
        if args.json {
            println!("{}", to_json_pretty(&stopped)?);
        } else if stopped.stopped {
            println!("{service} is no longer intercepted by this laptop: its callers reach the remote {service} again");
        } else {
            println!("this laptop did not intercept {service}");
        }
        return Ok(());
    }
    let s = api::call(Intercept {
        service: service.clone(),
        header: args.header,
    })
    .await?;
    if args.json {
        println!("{}", to_json_pretty(&s)?);
        return Ok(());
    }
    let what = match &s.intercept.header {
        Some(h) => format!("requests with {h}"),
        None => "every connection".into(),
    };
    println!(
        "intercepting {service}: {what} arriving at the relay's front {} now go to this laptop's {service} ({})",
        s.front, s.target
    );
    println!("stop with: overlay intercept {service} --stop");
    Ok(())
}

/// How long ago unix time `since` was, roughly.
fn ago(since: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(since);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}
